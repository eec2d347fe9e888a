"""The char LM task: Unicode vocabulary, char-rnn batches with carried state, full-pass
metrics, exact resume, word level, and the checked download."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rnnexp.config import build
from rnnexp.data import download
from rnnexp.data.streams import Stream
from rnnexp.data.vocab import EOS, UNK, split_tokens
from rnnexp.errors import RnnexpError
from rnnexp.nn.generation import generate, prompt_ids
from rnnexp.nn.model import build_model
from rnnexp.tasks import charlm
from rnnexp.tasks.base import Calibrates
from rnnexp.tasks.charlm import CharLMTask, TextStream, encode
from rnnexp.train.callbacks import Calibration, Run
from rnnexp.train.checkpoint import Checkpoint, restore
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord

# accents, an em dash, CJK, a non-BMP emoji: all must survive as single characters
UNICODE_TEXT = "Café crème — déjà vu. 東京は雨。🙂\nNaïve façade — 北京。\n" * 60


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "unicode.txt"
    path.write_text(UNICODE_TEXT, encoding="utf-8")
    return path


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*tiny("charlm"), *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="charlm", cell=cfg.cell.name))


def losses(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars("train/loss")}


def test_vocabulary_is_unicode_characters_and_round_trips(corpus: Path) -> None:
    task = CharLMTask(data={"path": str(corpus)})
    tokens = task.vocab.tokens
    assert {"é", "—", "東", "🙂", "\n"} <= set(tokens) and all(len(t) == 1 for t in tokens)
    spec = task.setup()
    assert tokens == sorted(tokens) and spec.input_size == spec.output_size == len(tokens)
    ids, missing = encode(task.vocab, UNICODE_TEXT)
    assert not missing and task.vocab.decode(ids.tolist()) == UNICODE_TEXT
    # the contiguous split covers the text in order: train + val + test == all of it
    parts = [task.split(s) for s in ("train", "val", "test")]
    assert torch.equal(torch.cat(parts), ids)
    assert len(parts[1]) == int(len(UNICODE_TEXT) * 0.05) == len(parts[2])


def test_unicode_survives_checkpoint_and_sampling(tmp_path: Path, corpus: Path) -> None:
    run(tmp_path, f"task.data.path={corpus}")
    restored = restore(tmp_path, "last")  # needs no data file: the vocabulary is saved
    assert restored.task._splits is None
    assert restored.task.vocab == CharLMTask(data={"path": str(corpus)}).vocab
    (text,) = generate(restored.model, restored.task.vocab, "Café — 東京", 40, seed=3)
    assert text.startswith("Café — 東京") and len(text) == len("Café — 東京") + 40
    assert set(text) <= set(restored.task.vocab.tokens)


def test_thirty_steps_lower_the_loss(tmp_path: Path) -> None:
    metrics = run(tmp_path, "train.max_steps=30", "train.eval_every=30", "optim.lr=0.03",
                  "sched=constant", "model.hidden_size=32", "train.batch_size=8",
                  "task.seq_len=16")  # fmt: skip
    curve = losses(tmp_path)
    vocab = len(set(Path(download.cache_dir(), "tinyshakespeare", "input.txt").read_text()))
    assert curve[1] == pytest.approx(math.log(vocab), rel=0.1)  # about uniform at first
    assert sum(curve[s] for s in range(26, 31)) / 5 < 0.7 * curve[1]
    assert metrics["final"]["loss"] < 0.7 * curve[1]
    final = metrics["final"]
    assert final["bits_per_char"] == pytest.approx(final["loss"] / math.log(2))
    assert final["perplexity"] == pytest.approx(math.exp(final["loss"]))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    text = events.Tensors("samples/text_summary")[-1]  # samples logged at each evaluation
    assert text.step == 30 and "sample 2" in text.tensor_proto.string_val[0].decode()


def test_batches_are_parallel_streams_with_state_carried_within_an_epoch() -> None:
    tokens = torch.arange(1000)
    stream = TextStream(tokens, batch_size=4, seq_len=10, seed=0)
    assert isinstance(stream, Stream)
    first = next(stream)
    assert first.reset_state and first.inputs.shape == (4, 10)
    assert torch.equal(first.targets, first.inputs + 1)  # next-token targets
    second = next(stream)
    assert not second.reset_state
    assert torch.equal(second.inputs[:, 0], first.inputs[:, -1] + 1)  # each stream continues
    starts = first.inputs[:, 0]
    assert (starts.diff() == (1000 - stream.offset) // 4).all()  # 4 contiguous quarters
    flags = [next(stream).reset_state for _ in range(2 * stream.batches_per_epoch)]
    assert sum(flags) == 2 and stream.epoch == 2  # one reset per epoch


def test_stream_state_resumes_with_the_very_next_batch() -> None:
    a = TextStream(torch.arange(5000), batch_size=8, seq_len=7, seed=1)
    for _ in range(130):  # past an epoch boundary: a new random offset
        next(a)
    b = TextStream(torch.arange(5000), batch_size=8, seq_len=7, seed=1)
    b.load_state_dict(a.state_dict())
    for _ in range(100):
        x, y = next(a), next(b)
        assert torch.equal(x.inputs, y.inputs) and x.reset_state == y.reset_state


def test_carried_state_changes_training(tmp_path: Path, monkeypatch) -> None:
    """A stateful run (TBPTT, state carried) differs from one that resets every batch."""
    run(tmp_path / "carried", "train.max_steps=4", "train.eval_every=4")
    original = TextStream.__next__

    def always_reset(self):
        batch = original(self)
        batch.reset_state = True
        return batch

    monkeypatch.setattr(TextStream, "__next__", always_reset)
    run(tmp_path / "reset", "train.max_steps=4", "train.eval_every=4")
    carried, reset = losses(tmp_path / "carried"), losses(tmp_path / "reset")
    assert carried[1] == reset[1]  # the first batch starts from zeros in both
    assert all(carried[s] != reset[s] for s in (2, 3, 4))


def test_resume_repeats_the_uninterrupted_run(tmp_path: Path) -> None:
    common = ["cell=lstm", "model.num_layers=2", "model.dropout=0.2", "model.weight_drop=0.3",
              "sched=constant"]  # fmt: skip
    run(tmp_path / "whole", *common, "train.max_steps=20")
    run(tmp_path / "first", *common, "train.max_steps=10")
    run(tmp_path / "rest", *common, "train.max_steps=20", f"train.resume={tmp_path / 'first'}")
    whole, first, rest = (losses(tmp_path / d) for d in ("whole", "first", "rest"))
    assert {**first, **rest} == whole  # bit for bit: data position and carried state restored


def test_evaluation_is_one_full_pass_with_the_state_carried(corpus: Path) -> None:
    cfg = compose_config(*tiny("charlm"), f"task.data.path={corpus}", "task.eval_batch_size=1",
                         "task.num_val=null", "model.hidden_size=16")  # fmt: skip
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup()).eval()
    tokens = task.split("val")
    with torch.no_grad():  # the whole split as one sequence, in one call
        logits, _ = model(tokens[:-1].unsqueeze(0))
        expected = torch.nn.functional.cross_entropy(logits[0], tokens[1:]).item()
    assert task.evaluate(model, "val", torch.device("cpu"))["loss"] == pytest.approx(expected)
    task.eval_batch_size = 7  # streams that do not divide the split: padding is ignored
    zero = build_model(cfg, task.setup()).eval()
    torch.nn.init.zeros_(zero.head.weight), torch.nn.init.zeros_(zero.head.bias)
    uniform = task.evaluate(zero, "val", torch.device("cpu"))
    assert uniform["loss"] == pytest.approx(math.log(len(task.vocab)))


def test_calibration_finds_the_val_minimising_temperature(tmp_path: Path, corpus: Path) -> None:
    run(tmp_path, f"task.data.path={corpus}", "model.hidden_size=16", "optim.lr=0.03")
    restored = restore(tmp_path, "last")
    task, model, cpu = restored.task, restored.model, torch.device("cpu")
    assert task.calibrate(model, cpu) is None  # task.calibrate=false: nothing to do
    task.calibrate_temperature = True
    as_trained = task.calibrate(model, cpu)

    def val_loss(temperature: float) -> float:
        scaled = copy.deepcopy(model)
        scaled.temperature.fill_(temperature)
        return task.evaluate(scaled, "val", cpu)["loss"]

    temperature = as_trained["temperature"]
    assert as_trained["val_loss_before"] == pytest.approx(val_loss(1.0))
    assert as_trained["val_loss"] == pytest.approx(val_loss(temperature), rel=1e-6)
    assert as_trained["val_loss"] < as_trained["val_loss_before"]
    assert val_loss(temperature) < min(val_loss(temperature * 1.02), val_loss(temperature / 1.02))
    with torch.no_grad():  # logits 3 times larger: the same fit at 3 times the temperature
        model.head.weight.mul_(3.0), model.head.bias.mul_(3.0)
    overconfident = task.calibrate(model, cpu)
    assert overconfident["temperature"] == pytest.approx(3 * temperature, rel=1e-3)
    assert overconfident["val_loss"] == pytest.approx(as_trained["val_loss"], rel=1e-6)


def test_calibrated_runs_score_and_restore_with_the_temperature_and_resume_exactly(
    tmp_path: Path,
) -> None:
    common = ["task.calibrate=true", "model.hidden_size=16", "sched=constant"]
    metrics = run(tmp_path / "whole", *common, "train.max_steps=20")
    calibration = metrics["calibration"]
    assert (
        calibration["temperature"] > 0 and calibration["val_loss"] <= calibration["val_loss_before"]
    )
    # the checkpoint's model divides its logits by T: restore needs no calibration code
    calibrated = restore(tmp_path / "whole", "last")
    assert calibrated.model.temperature.item() == pytest.approx(calibration["temperature"])
    assert calibrated.checkpoint.calibration == calibration
    cpu = torch.device("cpu")
    assert calibrated.task.evaluate(calibrated.model, "test", cpu)["loss"] == pytest.approx(
        metrics["final"]["loss"]
    )
    plain = copy.deepcopy(calibrated.model)
    plain.temperature.fill_(1.0)  # the weights as trained
    assert calibrated.task.evaluate(plain, "test", cpu)["loss"] == pytest.approx(
        metrics["final_uncalibrated"]["loss"]
    )
    assert restore(tmp_path / "whole", "best").checkpoint.calibration == calibration
    # the files keep the trained weights: resuming a calibrated run is still exact
    run(tmp_path / "first", *common, "train.max_steps=10")
    run(tmp_path / "rest", *common, "train.max_steps=20", f"train.resume={tmp_path / 'first'}")
    whole, first, rest = (losses(tmp_path / d) for d in ("whole", "first", "rest"))
    assert {**first, **rest} == whole
    assert isinstance(calibrated.task, Calibrates)  # the protocol the callback checks


def test_an_earlier_best_checkpoint_gets_its_own_temperature(tmp_path: Path) -> None:
    common = ["task.calibrate=true", "model.hidden_size=16", "sched=constant"]
    run(tmp_path / "ten", *common, "train.max_steps=10")
    run(tmp_path / "twenty", *common, "train.max_steps=20")
    folder = tmp_path / "mixed" / "checkpoints"  # best.pt from step 10, last.pt from step 20
    folder.mkdir(parents=True)
    for source, name in (("ten", "best.pt"), ("twenty", "last.pt")):
        shutil.copy(tmp_path / source / "checkpoints" / "last.pt", folder / name)
    later, earlier = (restore(tmp_path / d, "last") for d in ("twenty", "ten"))
    for restored in (later, earlier):
        restored.model.temperature.fill_(1.0)  # the trained weights
    cpu = torch.device("cpu")
    fitted = later.task.calibrate(later.model, cpu)
    callback = Calibration()  # as the loop calls it after step 20, in the mixed folder
    callback.run = Run(later.cfg, folder.parent, later.task, later.model, later.model, cpu,
                       RunRecord(folder.parent, task="charlm", cell="lstm"), 0, 20)  # fmt: skip
    callback.on_test_start(20)
    assert later.model.temperature.item() == pytest.approx(fitted["temperature"])
    last, best = (Checkpoint.load(folder / name) for name in ("last.pt", "best.pt"))
    assert last.calibration == pytest.approx(fitted)
    assert best.calibration == pytest.approx(earlier.task.calibrate(earlier.model, cpu))
    assert best.calibration["temperature"] != pytest.approx(fitted["temperature"])
    assert best.model["temperature"].item() == pytest.approx(best.calibration["temperature"])


def test_speaker_lines_script_splits_the_loss_by_kind_of_line(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "speaker_lines", Path(__file__).parents[2] / "tasks" / "charlm" / "speaker_lines.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    found = [m.group() for m in script.SPEAKER_LINE.finditer("x\n\nALICE:\nhi\nBOB:\n")]
    assert found == ["ALICE:\n"]  # a speaker line follows a blank line
    play = tmp_path / "play.txt"  # CELIA speaks only at the end: in the test text
    play.write_text("\n\nALICE:\nGood day.\n\nBOB:\nAnd to you.\n" * 60
                    + "\n\nCELIA:\nGood day.\n" * 4)  # fmt: skip
    run(tmp_path / "run", f"task.data.path={play}", "model.hidden_size=16")
    restored = restore(tmp_path / "run", "last")
    val, test = (script.split_losses(restored, split) for split in ("val", "test"))
    assert val["unseen_share"] == 0 and test["unseen_share"] > 0.1
    for m in (val, test):
        share, speaker, other = m["speaker_share"], m["speaker_loss"], m["other_loss"]
        assert 0 < share < 1
        assert m["loss"] == pytest.approx(share * speaker + (1 - share) * other, rel=1e-4)
    assert test["unseen_part"] == pytest.approx(test["unseen_share"] * test["unseen_loss"])


def test_word_level_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("the cat sat\nthe dog sat down\n\nthe end\n" * 30, encoding="utf-8")
    task = CharLMTask(data={"path": str(path)}, level="word", vocab_size=5)
    vocab = task.vocab
    assert vocab.tokens[:2] == [UNK, EOS] and vocab.tokens[2:] == ["the", "sat", "cat"]
    assert task.setup().input_kind == "embedding"
    ids, _ = encode(vocab, split_tokens("the dog sat\nthe end", "word"))
    assert vocab.decode(ids.tolist()) == "the <unk> sat\nthe <unk>"
    assert prompt_ids(vocab, "the zebra") == [vocab.index["the"], vocab.unk_id]


def test_held_out_characters_missing_from_training_become_unknown(tmp_path: Path) -> None:
    path = tmp_path / "late.txt"
    path.write_text("abc" * 200 + "xyz" * 4, encoding="utf-8")  # x, y, z: the test text only
    task = CharLMTask(data={"path": str(path), "val_fraction": 0.02, "test_fraction": 0.02})
    assert task.vocab.unk == charlm.UNK_CHAR and task.vocab.unk_id == len(task.vocab) - 1
    assert (task.split("test") == task.vocab.unk_id).all()


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1") * 100)
    short = tmp_path / "short.txt"
    short.write_text("tiny", encoding="utf-8")
    cases = [
        (dict(data={"path": str(tmp_path / "nope.txt")}), "no such file"),
        (dict(data={"path": str(latin1)}), "not UTF-8"),
        (dict(data={"path": str(short)}), "too short"),
        (dict(data={"val_fraction": 0.6, "test_fraction": 0.5}), "val_fraction"),
        (dict(data={"colour": "red"}), "has no key colour"),
        (dict(data={"name": "war_and_peace"}), "not a known corpus"),
        (dict(level="byte"), "task.level"),
    ]
    for kwargs, message in cases:
        with pytest.raises(RnnexpError, match=message):
            CharLMTask(**kwargs).split("train")
    with pytest.raises(RnnexpError, match="too short for train.batch_size"):
        CharLMTask(seq_len=1000).train_stream(64, 0)


def test_download_checks_the_checksum_and_leaves_nothing_when_wrong(tmp_path: Path) -> None:
    source = tmp_path / "source.txt"
    source.write_text("To be, or not to be — 東京\n", encoding="utf-8")
    url, cache = source.as_uri(), tmp_path / "cache"
    with pytest.raises(RnnexpError, match="checksum mismatch") as err:
        download.fetch(url, "0" * 64, "corpus/input.txt", cache, hint="or pass task.data.path=FILE")
    assert "task.data.path" in str(err.value) and "\n" not in str(err.value)
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no partial, no bad file
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    path = download.fetch(url, good, "corpus/input.txt", cache, progress=False)
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in cache.rglob("*") if p.is_file()] == ["input.txt"]


def test_offline_download_names_task_data_path(tmp_path: Path, monkeypatch) -> None:
    entry = {"url": "http://127.0.0.1:9/input.txt", "sha256": "0" * 64, "file": "x/input.txt"}
    monkeypatch.setitem(charlm.CORPORA, "tinyshakespeare", entry)
    task = CharLMTask(data={"cache_dir": str(tmp_path)})
    with pytest.raises(RnnexpError, match=r"cannot download .*task\.data\.path=FILE"):
        task.split("train")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
