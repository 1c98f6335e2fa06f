"""What every task handler promises: the registry's class, validated inputs and parameters, one
JSON-able output per input, warm-up, order independence, and train/serve token-id parity."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
import torch

from rayformers.data.pipeline import to_arrow
from rayformers.serving.checkpoint import build_handler, load_checkpoint
from rayformers.serving.errors import InputError
from rayformers.tasks import TASK_NAMES, get_task
from rayformers.tasks.handler import Handler
from tests.task_examples import CASES, TRAIN_ROWS


@pytest.fixture(scope="module")
def handlers(tiny_checkpoint):
    made: dict[tuple[str, str], Handler] = {}

    def get(task: str, method: str = "full") -> Handler:
        if (task, method) not in made:
            made[task, method] = build_handler(load_checkpoint(str(tiny_checkpoint(task, method=method))))
        return made[task, method]

    return get


def assert_same(a: Any, b: Any, tol: float = 1e-5) -> None:
    """Equal structures; floats within `tol`."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=tol)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y, tol)
    else:
        assert a == b


@pytest.mark.parametrize("task", TASK_NAMES)
def test_every_task_names_a_handler_with_the_contract(task):
    spec = get_task(task)
    assert issubclass(spec.handler, Handler)
    assert spec.Parameters.model_config.get("extra") == "forbid"
    pydantic.TypeAdapter(spec.Input)  # a pydantic-compatible input type
    spec.Parameters()  # every parameter has a default


@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("task", TASK_NAMES)
def test_one_json_output_per_input_in_input_order(handlers, task, method):
    handler = handlers(task, method)
    handler.warmup()
    inputs, parameters = CASES[task]
    together = handler.predict(inputs, parameters)
    assert len(together) == len(inputs) and handler.last_batch_size == len(inputs)
    json.dumps(together)
    # Sorting the batch by length (and padding it) must not change any input's own answer.
    for item, output in zip(inputs, together, strict=True):
        assert_same(handler.predict([item], parameters), [output])


@pytest.mark.parametrize("task", TASK_NAMES)
def test_empty_and_malformed_inputs_are_input_errors(handlers, task):
    handler = handlers(task)
    with pytest.raises(InputError) as caught:
        handler.predict([], CASES[task][1])
    assert caught.value.field == "inputs"
    with pytest.raises(InputError, match=r"inputs\[1\]"):
        handler.predict([CASES[task][0][0], 42], CASES[task][1])
    with pytest.raises(InputError, match="wrap it in a list"):
        handler.predict(CASES[task][0][0], CASES[task][1])


@pytest.mark.parametrize("task", TASK_NAMES)
def test_unknown_parameter_is_named(handlers, task):
    with pytest.raises(pydantic.ValidationError, match="temprature"):
        handlers(task).predict(CASES[task][0][:1], {**CASES[task][1], "temprature": 0.5})


@pytest.mark.parametrize(
    ("task", "bad"),
    [
        ("text-classification", {"top_k": 0}),
        ("text-classification", {"function_to_apply": "tanh"}),
        ("token-classification", {"aggregation_strategy": "longest"}),
        ("question-answering", {"max_answer_len": 0}),
        ("fill-mask", {"top_k": -1}),
        ("text-generation", {"temperature": -0.1}),
        ("text-generation", {"max_new_tokens": 1025}),
        ("text-generation", {"stop": [""]}),
        ("summarization", {"num_beams": 0}),
        ("zero-shot-classification", {"hypothesis_template": "no slot", "candidate_labels": ["a"]}),
        ("zero-shot-classification", {"candidate_labels": ["a", " "]}),
        ("zero-shot-classification", {"hypothesis_template": "{} {x}", "candidate_labels": ["a"]}),
        ("zero-shot-classification", {"hypothesis_template": "{:>99999999}", "candidate_labels": ["a"]}),
        ("zero-shot-classification", {"hypothesis_template": "{0.__class__}", "candidate_labels": ["a"]}),
        ("zero-shot-classification", {"hypothesis_template": "{}{}", "candidate_labels": ["a"]}),
        ("zero-shot-classification", {"hypothesis_template": "{", "candidate_labels": ["a"]}),
        ("feature-extraction", {"pooling": "max"}),
        ("text-ranking", {"top_n": 0}),
    ],
)
def test_bad_parameter_values_are_validation_errors(handlers, task, bad):
    with pytest.raises(pydantic.ValidationError, match=next(iter(bad))):
        handlers(task).predict(CASES[task][0][:1], bad)


@pytest.mark.parametrize("task", sorted(TRAIN_ROWS))
def test_handler_feeds_the_model_the_training_token_ids(handlers, task):
    """Serving tokenizes through the training preprocessing: same raw text, same ids."""
    handler = handlers(task)
    loaded = handler.loaded
    fed: list[torch.Tensor] = []
    # A decoder's later forwards are generation steps: only its first sees the prompt. Encoders may
    # forward in several micro-batches.
    prompt_only = task == "text-generation"

    def capture(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if not (fed and prompt_only):
            ids = kwargs["input_ids"]
            mask = kwargs.get("attention_mask")  # generate drops an all-ones mask
            mask = torch.ones_like(ids) if mask is None else mask
            fed.extend(row[m.bool()] for row, m in zip(ids, mask, strict=True))

    # Encoder-decoders get their ids in the encoder pass; the decoder steps never see them.
    module = loaded.model.get_encoder() if loaded.model.config.is_encoder_decoder else loaded.model
    hook = module.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        handler.predict(CASES[task][0][:1], CASES[task][1])
    finally:
        hook.remove()
    train = loaded.task.preprocess(TRAIN_ROWS[task], loaded.tokenizer, loaded.settings, "train")
    expected = to_arrow(train).column("input_ids").to_pylist()  # as the shards hold them
    if task == "text-generation":
        # Training appends end-of-text to each row; a prompt to continue must not end with it.
        assert expected[0][-1] == loaded.tokenizer.eos_token_id
        expected = [expected[0][:-1]]
    assert sorted(row.tolist() for row in fed) == sorted(expected)


def test_zero_shot_parity_with_training_pairs(handlers):
    handler = handlers("zero-shot-classification")
    loaded = handler.loaded
    fed: list[list[int]] = []
    hook = loaded.model.register_forward_pre_hook(
        lambda m, a, kw: fed.extend(
            r[k.bool()].tolist() for r, k in zip(kw["input_ids"], kw["attention_mask"], strict=True)
        ),
        with_kwargs=True,
    )
    try:
        handler.predict(["I love football"], {"candidate_labels": ["sports", "food"]})
    finally:
        hook.remove()
    rows = {
        "text": ["I love football"] * 2,
        "text_pair": ["This example is sports.", "This example is food."],
        "label": ["entailment"] * 2,
    }
    train = loaded.task.preprocess(rows, loaded.tokenizer, loaded.settings, "train")
    assert fed == to_arrow(train).column("input_ids").to_pylist()


def test_adapters_switch_handler_outputs(tiny_checkpoint):
    first = tiny_checkpoint("zero-shot-classification", method="lora", adapter_seed=1)
    second = tiny_checkpoint("zero-shot-classification", method="lora", adapter_seed=2)
    loaded = load_checkpoint(str(first), adapters={"b": str(second)})
    handler = build_handler(loaded)
    inputs, parameters = CASES["zero-shot-classification"]
    with loaded.using(None):
        own = handler.predict(inputs, parameters)
    with loaded.using("b"):
        other = handler.predict(inputs, parameters)
    assert own[0]["scores"] != pytest.approx(other[0]["scores"], abs=1e-4)
    assert_same(other, build_handler(load_checkpoint(str(second))).predict(inputs, parameters), 1e-4)
