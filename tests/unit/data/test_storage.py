"""Locations on local disk and on S3 (a local moto server): what run directories and shards use."""

from __future__ import annotations

import os

import pytest

from rayformers.data.storage import Location, is_remote


def test_local_paths_and_file_uris_are_absolute_local_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = Location.parse("runs")
    assert here.local and here.path == os.path.join(str(tmp_path), "runs") and str(here) == here.path
    assert Location.parse(f"file://{tmp_path}/runs").path == here.path
    assert (here / "x" / "summary.json").path == os.path.join(here.path, "x", "summary.json")
    assert not is_remote("runs") and not is_remote("file:///tmp") and is_remote("s3://b/runs")


def test_local_text_and_emptiness(tmp_path):
    run = Location.parse(tmp_path / "run")
    assert run.is_empty_dir() and not run.exists()
    (run / "tokenized" / "manifest.json").write_text("{}\n")
    assert run.exists() and not run.is_empty_dir()
    assert (run / "tokenized" / "manifest.json").read_text() == "{}\n"
    assert run.download() == tmp_path / "run"  # a local directory is used where it is


def test_s3_uri_keeps_its_options_on_every_derived_uri(s3_uri):
    root = Location.parse(s3_uri("runs"))
    assert not root.local and root.path.endswith("/runs")
    checkpoint = root.at(root.path + "/demo/checkpoint_000010")
    assert str(checkpoint).startswith("s3://") and "/demo/checkpoint_000010?" in str(checkpoint)
    assert str(checkpoint).split("?", 1)[1] == s3_uri("runs").split("?", 1)[1]
    # ... so the derived URI opens the same bucket on the same server (what serving does with it).
    (checkpoint / "rayformers.json").write_text('{"task": "fill-mask"}')
    again = Location.parse(str(checkpoint))
    assert (again / "rayformers.json").read_text() == '{"task": "fill-mask"}'


def test_s3_directories_upload_and_download(s3_uri, tmp_path):
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.bin").write_bytes(b"\x00\x01")
    target = Location.parse(s3_uri("runs/events"))
    assert target.is_empty_dir()
    target.upload(source)
    assert not target.is_empty_dir() and (target / "sub" / "b.bin").exists()
    copy = target.download(tmp_path / "copy")
    assert (copy / "a.txt").read_text() == "a" and (copy / "sub" / "b.bin").read_bytes() == b"\x00\x01"


def test_an_unknown_scheme_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"nosuch://bucket/runs.*s3://bucket/dir"):
        Location.parse("nosuch://bucket/runs")


def test_a_local_copy_of_cloud_storage_is_removed_when_its_block_ends(s3_uri, tmp_path):
    source = tmp_path / "adapter"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    remote = Location.parse(s3_uri("adapters/one"))
    remote.upload(source)
    with remote.local_copy() as copy:
        assert (copy / "adapter_config.json").read_text() == "{}" and copy != source
    assert not copy.exists()  # a replica that loaded an adapter keeps no stray download
    with Location.parse(source).local_copy() as here:
        assert here == source  # a local directory is read where it is, and never removed
    assert source.exists()
