"""Label maps are derived deterministically and recorded as they are."""

from __future__ import annotations

from rayformers.manifest import LabelMap, PreprocessSettings, label_key


def test_label_maps():
    assert LabelMap.from_values(["pos", "neg", "pos"]).names == ["neg", "pos"]
    assert LabelMap.from_values([1, 0, 2]).label2id == {"0": 0, "1": 1, "2": 2}
    assert LabelMap.from_values(["1", "3"]).names == ["1", "3"]  # not 0..K-1: sorted like any names
    assert LabelMap.from_values([True, False]).names == ["false", "true"]
    assert [label_key(v) for v in (1, 1.0, "1", " a ")] == ["1", "1", "1", "a"]


def test_settings_round_trip_through_json():
    s = PreprocessSettings(task="token-classification", max_length=64, labels=LabelMap(names=["O", "B-X"]))
    again = PreprocessSettings.model_validate_json(s.model_dump_json())
    assert again == s and again.label2id == {"O": 0, "B-X": 1}
