"""`rnnexp sample`: the one-step path equals the full forward for every kind of cell,
same seed -> same text, prime errors, <unk> never sampled, the CLI."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config, run_cli, tiny

from rnnexp.cells import create
from rnnexp.cli.main import main
from rnnexp.cli.sample import sample_run
from rnnexp.data.vocab import UNK, Vocab
from rnnexp.errors import RnnexpError
from rnnexp.nn.generation import (
    LSTMStepper,
    Settings,
    Stepper,
    choose,
    generate,
    gumbel_noise,
    stepper_for,
)
from rnnexp.nn.model import OneHot, SequenceModel
from rnnexp.train.checkpoint import restore
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord

VOCAB = 11
CELLS = [
    ("lstm", {}),
    ("gru", {}),
    ("elman", {}),
    ("elman", {"nonlinearity": "relu", "learn_h0": True}),
    ("gru", {"reset_after": False}),
    ("gru_minimal", {}),
    ("lstm_peephole", {}),
    ("lstm_fgr", {}),
    ("lstm_cifg", {"learn_h0": True}),
    ("irnn", {}),
    ("jordan", {"elman": True}),
    ("clockwork", {}),
    ("esn", {"leak_rate": 0.5}),
]


def lm(cell: str, options: dict, encoder: str = "onehot", layers: int = 2) -> SequenceModel:
    torch.manual_seed(0)
    if encoder == "onehot":
        enc, size = OneHot(VOCAB), VOCAB
    else:
        enc, size = torch.nn.Embedding(VOCAB, 5), 5
    rnn = create(cell, size, 12, num_layers=layers, **options)
    model = SequenceModel(enc, rnn, torch.nn.Linear(12, VOCAB), "every_step", False, 0.0)
    with torch.no_grad():  # learned initial states away from zero, so that they count
        for name, param in model.named_parameters():
            if name.endswith(("h0", "c0")):
                param.normal_()
    return model.eval()


@pytest.mark.parametrize(("cell", "options"), CELLS, ids=[f"{c}{o or ''}" for c, o in CELLS])
@pytest.mark.parametrize("encoder", ["onehot", "embedding"])
def test_stepping_one_token_at_a_time_equals_the_full_forward(cell, options, encoder) -> None:
    model = lm(cell, options, encoder)
    tokens = torch.randint(VOCAB, (20,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model(tokens.unsqueeze(0))  # (1, 20, V)
    with torch.inference_mode():
        stepper = Stepper(model)
        assert len(stepper.layers) == 2  # the cell's own per-step form, layer by layer
        got = [stepper.prime(tokens[:3].tolist())]
        got += [stepper.step(int(t)) for t in tokens[3:]]
    torch.testing.assert_close(torch.stack(got), expected[0, 2:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("layers", "encoder"), [(1, "onehot"), (2, "embedding"), (3, "onehot")])
def test_the_lstm_stepper_equals_the_full_forward(layers, encoder, threads) -> None:
    model = lm("lstm", {}, encoder, layers=layers)
    tokens = torch.randint(VOCAB, (20,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = model(tokens.unsqueeze(0))  # (1, 20, V)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the weights are cut in one column block per thread
    try:
        with torch.inference_mode():
            stepper = stepper_for(model)
            assert isinstance(stepper, LSTMStepper) and stepper.blocks == threads
            got = [stepper.prime(tokens[:3].tolist())]
            got += [stepper.step(int(t)) for t in tokens[3:]]
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(torch.stack(got), expected[0, 2:], atol=1e-5, rtol=1e-4)


def test_the_lstm_stepper_is_only_for_torch_lstms_it_can_run() -> None:
    assert LSTMStepper.suits(lm("lstm", {}))
    for cell, options in [("gru", {}), ("lstm_cifg", {}), ("lstm_peephole", {})]:
        assert not LSTMStepper.suits(lm(cell, options))
        assert type(stepper_for(lm(cell, options))) is Stepper
    model = lm("lstm", {}, layers=1)
    model.rnn = torch.nn.LSTM(VOCAB, 12, batch_first=True, bias=False)
    assert not LSTMStepper.suits(model)


def test_unknown_modules_fall_back_to_one_step_calls() -> None:
    model = lm("lstm", {}, layers=1)
    model.rnn = torch.nn.LSTM(VOCAB, 12, batch_first=True, proj_size=0, bias=False)
    tokens = list(range(8))
    with torch.no_grad():
        expected, _ = model(torch.tensor([tokens]))
    with torch.inference_mode():
        stepper = Stepper(model)
        assert len(stepper.layers) == 1  # the generic form: the whole module, one step
        got = [stepper.prime(tokens[:2])] + [stepper.step(t) for t in tokens[2:]]
    torch.testing.assert_close(torch.stack(got), expected[0, 1:])


def char_vocab() -> Vocab:
    return Vocab(["\n", " ", "a", "b", "c", "d", "e", "é", "—", "東", "京"], "char")


def test_same_seed_same_text_and_settings() -> None:
    model, vocab = lm("lstm", {}), char_vocab()
    a = generate(model, vocab, "ab", 50, seed=7)
    assert a == generate(model, vocab, "ab", 50, seed=7)
    assert a != generate(model, vocab, "ab", 50, seed=8)
    assert a[0].startswith("ab") and len(a[0]) == 52
    three = generate(model, vocab, "ab", 50, seed=7, num_samples=3)
    assert three[0] == a[0] and len(set(three)) == 3  # the first sample does not change
    assert a == generate(model, vocab, "ab", 50, seed=7, stepper=Stepper)  # the general path
    greedy = generate(model, vocab, "東", 30, Settings(argmax=True), seed=1)
    assert greedy == generate(model, vocab, "東", 30, Settings(argmax=True), seed=2)
    assert greedy == generate(model, vocab, "東", 30, Settings(top_k=1), seed=3)
    assert greedy == generate(model, vocab, "東", 30, Settings(top_p=1e-6), seed=4)
    assert generate(model, vocab, "", 5, seed=0)[0] != ""  # an empty prompt starts at a line


def test_the_gumbel_max_draw_follows_the_softmax() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    noise = gumbel_noise(torch.Generator().manual_seed(0), 40_000, 4)
    drawn = torch.tensor([choose(logits, Settings(), row, None) for row in noise])
    frequencies = torch.bincount(drawn, minlength=4) / len(drawn)
    torch.testing.assert_close(frequencies, torch.softmax(logits, 0), atol=0.01, rtol=0)
    drawn = torch.tensor([choose(logits, Settings(temperature=2.0), row, None) for row in noise])
    frequencies = torch.bincount(drawn, minlength=4) / len(drawn)
    torch.testing.assert_close(frequencies, torch.softmax(logits / 2, 0), atol=0.01, rtol=0)


def test_top_k_and_top_p_restrict_the_draw() -> None:
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    noise = gumbel_noise(torch.Generator().manual_seed(0), 300, 5)
    drawn = {choose(logits, Settings(top_k=2), row, None) for row in noise}
    assert drawn == {0, 1}
    probs = torch.softmax(logits, 0)  # 0.64, 0.24, 0.09, ...: top-p 0.8 keeps the first two
    assert probs[:1].sum() < 0.8 < probs[:2].sum()
    drawn = {choose(logits, Settings(top_p=0.8), row, None) for row in noise}
    assert drawn == {0, 1}
    drawn = {choose(logits, Settings(temperature=100.0), row, 0) for row in noise}
    assert drawn == {1, 2, 3, 4}  # banned never drawn, high temperature: all the others
    for bad, message in [(Settings(temperature=0), "temperature"), (Settings(top_k=0), "top-k"),
                         (Settings(top_p=1.5), "top-p")]:  # fmt: skip
        with pytest.raises(RnnexpError, match=message):
            bad.check()


def test_prime_characters_outside_the_vocabulary_are_named() -> None:
    model, vocab = lm("lstm", {}), char_vocab()
    with pytest.raises(RnnexpError, match=r"2 character\(s\) outside .*'§', 'ü'"):
        generate(model, vocab, "a§bü", 10)


def test_word_level_never_samples_unk() -> None:
    words = [UNK, "<eos>", "to", "be", "or", "not", "that", "is", "the", "question", "—"]
    vocab = Vocab(words, "word", unk=UNK)
    model = lm("gru", {}, encoder="embedding")
    with torch.no_grad():
        model.head.bias[vocab.unk_id] = 50.0  # the model wants <unk> above all
    for settings in (Settings(), Settings(argmax=True), Settings(top_k=2), Settings(top_p=0.5)):
        (text,) = generate(model, vocab, "to be", 200, settings, seed=0)
        assert UNK not in text and text.startswith("to be")
    assert generate(model, vocab, "to zebra", 3, seed=0)[0].startswith("to <unk>")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny charlm run on the multilingual test corpus (in-process: faster)."""
    run_dir = tmp_path_factory.mktemp("charlm")
    cfg = compose_config(*tiny("charlm"), "cell=lstm")
    assert train(cfg, run_dir, RunRecord(run_dir))["status"] == "completed"
    return run_dir


def test_cli_same_seed_prints_the_same_text(trained: Path) -> None:
    args = ["sample", str(trained), "--prime", "Café —", "--seed", "1", "--length", "80"]
    first, second = run_cli(*args, cwd=trained), run_cli(*args, cwd=trained)
    assert first.stdout == second.stdout and first.stdout.startswith("Café —")
    assert len(first.stdout) == len("Café —") + 80 + 1  # the text and a final newline


def test_cli_prime_outside_the_vocabulary_is_one_line(trained: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["rnnexp", "sample", str(trained), "--prime", "ROMEO§"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert "'§'" in captured.err and len(captured.err.strip().splitlines()) == 1


def test_sample_to_a_file_and_streaming(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples.txt"
    texts = sample_run(trained, prime="東京", length=30, seed=5, num_samples=2, output=out,
                       err=io.StringIO())  # fmt: skip
    assert out.read_text(encoding="utf-8") == "\n---------------\n".join(texts) + "\n"
    streamed = io.StringIO()
    sample_run(trained, "last", "東京", 30, seed=5, num_samples=2, stream=True, out=streamed)
    assert streamed.getvalue() == out.read_text(encoding="utf-8")


def test_gpu_trained_config_samples_on_the_cpu(trained: Path, tmp_path: Path) -> None:
    """A run trained with train.device=cuda: its config names CUDA, sampling uses the CPU
    (checkpoint.load maps every tensor to the CPU)."""
    payload = torch.load(trained / "checkpoints" / "best.pt", weights_only=True)
    payload["config"]["train"]["device"] = "cuda"
    torch.save(payload, tmp_path / "gpu.pt")
    texts = sample_run(tmp_path / "gpu.pt", prime="a", length=10, seed=0, out=io.StringIO())
    assert restore(tmp_path / "gpu.pt", overrides=["train.device=cpu"]).device.type == "cpu"
    assert len(texts[0]) == 11


def test_sampling_another_task_is_a_one_line_error(tmp_path: Path) -> None:
    cfg = compose_config(*TINY, "train.max_steps=2", "train.eval_every=2")
    train(cfg, tmp_path, RunRecord(tmp_path))
    with pytest.raises(RnnexpError, match="needs a language model"):
        sample_run(tmp_path, out=io.StringIO())
