"""The Task seam: ``setup()`` hands the model builder a frozen spec; tasks never hold the
model; optional abilities are protocols; a tagger's CRF travels in the model's output."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from conftest import compose_config, tiny

from rnnexp.config import build, choices
from rnnexp.data.text import IGNORE
from rnnexp.errors import RnnexpError
from rnnexp.nn.crf import CRFScores
from rnnexp.nn.model import build_model
from rnnexp.tasks import Generates, LabelsSentences, Task, TaskSpec, WritesPredictions
from rnnexp.train.updates import ema_of

ABILITIES = {
    "charlm": {Generates},
    "sentiment": {LabelsSentences, WritesPredictions},
    "ner": {LabelsSentences, WritesPredictions},
}


@pytest.mark.parametrize("name", choices("task"))
def test_every_task_sets_up_a_frozen_spec_and_declares_its_abilities(name: str) -> None:
    cfg = compose_config(*tiny(name))
    task: Task = build(cfg.task, "task")
    spec = task.setup()
    assert isinstance(spec, TaskSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.output_size = 3  # type: ignore[misc]
    model = build_model(cfg, spec)  # from the spec alone
    assert model.head.out_features == spec.output_size
    found = {p for p in (Generates, LabelsSentences, WritesPredictions) if isinstance(task, p)}
    assert found == ABILITIES.get(name, set())
    assert "bind" not in dir(type(task))  # the model is never handed back


def test_the_builder_takes_a_spec_not_a_task() -> None:
    assert list(inspect.signature(build_model).parameters) == ["cfg", "spec"]
    with pytest.raises(RnnexpError, match="unknown input kind 'bytes'"):
        TaskSpec("bytes", 4, 2)  # type: ignore[arg-type]
    with pytest.raises(RnnexpError, match="unknown head"):
        TaskSpec("linear", 4, 2, head="first_step")  # type: ignore[arg-type]


def test_setup_with_a_state_reads_no_data_file(tmp_path) -> None:
    cfg = compose_config(*tiny("sentiment"))
    trained = build(cfg.task, "task")
    fresh = trained.setup()
    gone = tmp_path / "gone.tsv"
    moved = compose_config(*tiny("sentiment"), f"task.data.train_path={gone}",
                           f"task.data.dev_path={gone}")  # fmt: skip
    restored = build(moved.task, "task")
    assert restored.setup(trained.state_dict()) == fresh


def test_a_crf_read_out_carries_the_crf_that_the_ner_loss_and_decoding_use() -> None:
    cfg = compose_config(*tiny("ner"))
    task = build(cfg.task, "task")
    torch.manual_seed(0)
    model = build_model(cfg, task.setup())
    batch = next(task.train_stream(4, seed=0))
    output, _ = model(batch.inputs, lengths=batch.lengths)
    assert isinstance(output, CRFScores) and output.crf is model.crf
    mask = batch.targets != IGNORE
    expected = model.crf.nll(output.emissions, batch.targets, mask).mean()
    torch.testing.assert_close(task.loss(output, batch), expected)
    assert [len(p) for p in task.decode(output, batch)] == batch.lengths.tolist()
    # the averaged weights score with their own (averaged) transitions
    averaged = ema_of(model, 0.9).module
    scored, _ = averaged(batch.inputs, lengths=batch.lengths)
    assert scored.crf is averaged.crf and scored.crf is not model.crf
