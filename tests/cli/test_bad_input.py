"""Bad input gets one line: the catalogue of issue 17 through the real CLI, and the schema.

The CLI runs in this process (``rnnexp.cli.main.main`` with ``sys.argv`` set), as a user would
run it but without a subprocess per case; ``tests/test_cli.py`` covers the subprocesses.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Literal

import pytest
from conftest import TINY, TINY_TASK, TINY_TRAIN, compose_config, run_cli, run_dirs
from omegaconf import OmegaConf

from rnnexp.cli.main import main
from rnnexp.config import apply_overrides, build, check_arguments, choices
from rnnexp.errors import RnnexpError
from rnnexp.nn import encoders, model
from rnnexp.schema import ModelConfig, TrainConfig, check_config, check_value


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple:
    """``rnnexp ARGS`` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["rnnexp", *args])
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    code = exited.value.code
    return 0 if code is None else code, captured.out, captured.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny timer run and a tiny charlm run, trained through the CLI in this process."""
    cwd = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setattr(sys, "argv", sys.argv)  # `rnnexp train` sets it
        for args in (TINY, ["task=charlm", *TINY_TASK["charlm"], *TINY_TRAIN]):
            tiny = [*args, "train.max_steps=4", "train.eval_every=4", "train.histograms=false"]
            patch.setattr(sys, "argv", ["rnnexp", "train", *tiny])
            with pytest.raises(SystemExit) as exited:
                main()
            assert not exited.value.code
    (charlm,) = run_dirs(cwd / "outputs" / "charlm")
    (timer,) = run_dirs(cwd / "outputs" / "timer")
    (cwd / "a_file").write_text("not a folder\n")
    return {"timer": timer, "charlm": charlm, "cwd": cwd, "file": cwd / "a_file"}


# (id, command with {timer} {charlm} {file} filled in, text the message must hold)
TRAIN = ["train", *TINY, "train.max_steps=2"]
CATALOGUE = [
    ("max_steps=abc", [*TRAIN, "train.max_steps=abc"], "train.max_steps=abc is not an integer"),
    ("seed=abc", [*TRAIN, "train.seed=abc"], "train.seed=abc"),
    ("batch_size=abc", [*TRAIN, "train.batch_size=abc"], "train.batch_size=abc"),
    ("eval_every=0", [*TRAIN, "train.eval_every=0"], "train.eval_every=0"),
    ("log_every=0", [*TRAIN, "train.log_every=0"], "train.log_every=0"),
    ("num_threads=-2", [*TRAIN, "train.num_threads=-2"], "train.num_threads=-2"),
    ("max_steps=0", [*TRAIN, "train.max_steps=0"], "train.max_steps=0"),
    ("max_steps=-5", [*TRAIN, "train.max_steps=-5"], "train.max_steps=-5"),
    ("typo +max_step", [*TRAIN, "+train.max_step=5"], "did you mean train.max_steps?"),
    (
        "typo +trian",
        [*TRAIN, "+trian.max_steps=5"],
        "trian is not a config key; did you mean train?",
    ),
    ("batch_size=0", [*TRAIN, "train.batch_size=0"], "train.batch_size=0"),
    ("on_nan", [*TRAIN, "train.on_nan=maybe"], "train.on_nan=maybe"),
    ("device", [*TRAIN, "train.device=gpu"], "train.device=gpu"),
    ("dropout=1", [*TRAIN, "model.dropout=1.0"], "model.dropout=1.0"),
    ("hidden_size=0", [*TRAIN, "model.hidden_size=0"], "model.hidden_size=0"),
    ("num_layers=0", [*TRAIN, "model.num_layers=0"], "model.num_layers=0"),
    ("pooling", [*TRAIN, "model.pooling=sum"], "model.pooling=sum"),
    ("task.seq_len=abc", [*TRAIN, "task.seq_len=abc"], "task.seq_len=abc"),
    ("clip.max_norm=abc", [*TRAIN, "clip.max_norm=abc"], "clip.max_norm=abc"),
    ("run.dir is a file", [*TRAIN, "hydra.run.dir={file}"], "hydra.run.dir="),
    ("run.dir under a file", [*TRAIN, "hydra.run.dir={file}/run"], "hydra.run.dir="),
    ("sweep.dir under a file", ["train", "-m", *TINY, "hydra.sweep.dir={file}/s"], "sweep.dir="),
    ("full disk", [*TRAIN], "No space left on device"),
    ("evaluate num_test=abc", ["evaluate", "{timer}", "task.num_test=abc"], "task.num_test=abc"),
    ("evaluate max_steps=0", ["evaluate", "{timer}", "train.max_steps=0"], "train.max_steps=0"),
    ("evaluate typo", ["evaluate", "{timer}", "+model.hiden_size=3"], "model.hidden_size?"),
    ("evaluate read-only", ["evaluate", "{timer}"], "best.test.json"),
    ("sample -o unwritable", ["sample", "{charlm}", "-n", "5", "-o", "{file}/out.txt"], "out.txt"),
]


@pytest.mark.parametrize(
    ("args", "named"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE]
)
def test_bad_input_is_one_line(
    args: list[str],
    named: str,
    runs: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.chdir(runs["cwd"])
    case = request.node.callspec.id
    if case == "full disk":  # the run folder's disk is full when the run starts

        def full(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("rnnexp.schema.tempfile.TemporaryFile", full)
    if case == "evaluate read-only":  # chmod does not stop root: refuse the rename instead
        if os.geteuid() == 0:

            def refuse(*args: object, **kwargs: object) -> None:
                raise PermissionError(errno.EACCES, "Permission denied")

            monkeypatch.setattr("rnnexp.atomic.os.replace", refuse)
        else:
            folder = runs["timer"] / "checkpoints"
            folder.chmod(0o555)
            request.addfinalizer(lambda: folder.chmod(0o755))
    filled = [a.format(**{k: str(v) for k, v in runs.items()}) for a in args]
    code, out, err = cli(monkeypatch, capsys, *filled)
    assert code != 0, out + err
    assert "Traceback" not in out + err, out + err
    assert len(err.strip().splitlines()) <= 3, err
    assert named in err and "error:" in err, err
    if case == "evaluate read-only":  # the scores are printed all the same
        assert "nrmse" in out and "written to" not in out


def test_one_line_from_a_subprocess(runs: dict[str, Path]) -> None:
    """The same through ``python -m rnnexp`` in a fresh process (Hydra's own error path)."""
    proc = run_cli(
        "train", *TINY, f"hydra.run.dir={runs['file']}/run", cwd=runs["cwd"], check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: hydra.run.dir={runs['file']}/run cannot be created ({runs['file']}: a file, "
        "not a folder); give a writable folder, e.g. hydra.run.dir=/tmp/rnnexp-runs"
    ]


def test_the_tiny_runs_pass(runs: dict[str, Path]) -> None:
    """The good path the catalogue departs from: both runs finished."""
    assert (runs["timer"] / "checkpoints" / "best.pt").is_file()
    assert (runs["charlm"] / "checkpoints" / "best.pt").is_file()


# ------------------------------------------------------------------------------ schema
def test_schema_and_config_yaml_have_the_same_keys() -> None:
    cfg = compose_config()
    assert set(cfg.train) == {f for f in TrainConfig.__dataclass_fields__}
    assert set(cfg.model) == {f for f in ModelConfig.__dataclass_fields__}
    check_config(cfg)


def test_schema_choices_match_the_code() -> None:
    from typing import get_args, get_type_hints

    hints = get_type_hints(ModelConfig)
    assert get_args(hints["pooling"]) == model.POOLINGS
    assert get_args(hints["char_encoder"]) == encoders.CHAR_ENCODERS


@pytest.mark.parametrize("experiment", sorted(choices("experiment")))
def test_every_experiment_passes_the_schema(experiment: str) -> None:
    check_config(compose_config(f"experiment={experiment}"))


@pytest.mark.parametrize(
    ("value", "annotation", "ok"),
    [
        (3, int, True),
        (True, int, False),  # a boolean is not an integer
        ("3", int, False),  # nor is a string, even one that reads as one
        (3, float, True),  # an integer is a number
        (None, float | None, True),
        ("x", float | None, False),
        ("skip", Literal["stop", "skip"], True),
        ("halt", Literal["stop", "skip"], False),
        ("anything", dict, True),  # kinds the check does not know are left alone
    ],
)
def test_check_value(value: object, annotation: object, ok: bool) -> None:
    if ok:
        check_value("train.x", value, annotation)
    else:
        with pytest.raises(RnnexpError, match=r"^train\.x="):
            check_value("train.x", value, annotation)


def test_ranges_and_typos_name_the_key_and_the_fix() -> None:
    cases = {
        "train.max_steps=0": "train.max_steps=0 is not allowed; give a whole number >= 1",
        "train.ema_decay=1.5": "train.ema_decay=1.5 is not allowed; give null or a number in",
        "model.weight_drop=-0.1": "model.weight_drop=-0.1 is not allowed; give a fraction",
        "+model.hiden_size=3": "model.hiden_size is not a key of model; did you mean model.hidden",
        "+train.colour=red": "train.colour is not a key of train; remove it",
        "train.progress=yes": "train.progress=yes is not true or false",
    }
    for override, message in cases.items():
        with pytest.raises(RnnexpError, match=message.replace("(", r"\(").replace("+", r"\+")):
            check_config(compose_config(*TINY, override))


def test_constructor_arguments_are_type_checked() -> None:
    # NerTask passes **text on to TextTask: its annotations count too
    cfg = compose_config("task=ner", "task.num_test=abc")
    with pytest.raises(RnnexpError, match="task.num_test=abc is not an integer or null"):
        check_arguments(cfg.task, "task")
    cfg = compose_config(*TINY, "regularizer=pascanu", "regularizer.decay=maybe")
    with pytest.raises(RnnexpError, match="regularizer.decay=maybe is not true or false"):
        build(cfg.regularizer, "regularizer")
    build(compose_config(*TINY, "task.seq_len=40").task, "task")  # good values still build


def test_evaluate_overrides_are_checked() -> None:
    cfg = OmegaConf.create(OmegaConf.to_container(compose_config(*TINY), resolve=True))
    with pytest.raises(RnnexpError, match="train.max_steps=abc is not an integer"):
        apply_overrides(cfg, ["train.max_steps=abc"])
    with pytest.raises(RnnexpError, match="did you mean model.hidden_size"):
        apply_overrides(cfg, ["+model.hiden_size=3"])
    assert apply_overrides(cfg, ["train.device=cpu"]).train.device == "cpu"
