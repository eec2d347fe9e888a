"""The Python API: ``rnnexp.load_run``, ``rnnexp.cells``, and the README's examples of them."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, run_dirs, tiny

import rnnexp
from rnnexp.api import Run
from rnnexp.cli.main import main
from rnnexp.errors import RnnexpError

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def cwd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one tiny charlm/lstm run, trained by ``rnnexp train ... debug=tiny``
    (in-process) as a user would: ``outputs/charlm/lstm/<time>/``."""
    folder = tmp_path_factory.mktemp("api")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr(sys, "argv", ["rnnexp", "train", *tiny("charlm"), "cell=lstm"])
        with pytest.raises(SystemExit) as exited:
            main()
        assert not exited.value.code
    return folder


@pytest.fixture(scope="module")
def run_dir(cwd: Path) -> Path:
    (folder,) = run_dirs(cwd / "outputs" / "charlm" / "lstm")
    return folder


def test_import_rnnexp_is_light_and_names_the_api() -> None:
    code = "import sys, rnnexp; print('torch' in sys.modules, callable(rnnexp.load_run))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["False", "True"], proc.stderr
    assert rnnexp.cells.create("gru", 2, 3) is not None and "lstm" in rnnexp.cells.available()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rnnexp.nope  # noqa: B018


def test_load_run_gives_model_task_config_and_metrics(run_dir: Path) -> None:
    metrics = read_metrics(run_dir)
    run = rnnexp.load_run(run_dir)
    assert isinstance(run, Run) and isinstance(run.model, torch.nn.Module)
    assert not run.model.training and run.device == torch.device("cpu")
    assert run.config.task.name == "charlm" and run.config.cell.name == "lstm"
    assert run.metrics == metrics and run.metrics["status"] == "completed"
    assert run.checkpoint == run_dir / "checkpoints" / "best.pt"
    assert run.step == metrics["best"]["step"]
    assert repr(run).startswith("Run(task='charlm', cell='lstm', step=")
    # the last checkpoint is the final model: it scores what metrics.json says
    last = rnnexp.load_run(run_dir, which="last")
    assert last.step == metrics["steps"] == 20
    assert last.evaluate("test") == pytest.approx(metrics["final"])
    with pytest.raises(RnnexpError, match="unknown split"):
        last.evaluate("dev")
    text = run.sample("RO", length=20, seed=3)
    assert text.startswith("RO") and len(text) == 22 and text == run.sample("RO", 20, seed=3)


def test_load_run_of_a_bare_checkpoint_and_its_errors(run_dir: Path, tmp_path: Path) -> None:
    loose = shutil.copy(run_dir / "checkpoints" / "last.pt", tmp_path / "model.pt")
    run = rnnexp.load_run(loose)
    assert run.metrics is None and run.step == 20
    with pytest.raises(RnnexpError, match="checkpoint not found"):
        rnnexp.load_run(tmp_path / "missing.pt")
    with pytest.raises(RnnexpError, match="no checkpoint at"):
        rnnexp.load_run(tmp_path)
    # a crafted config is refused before anything is built from it (checkpoint.restore)
    sentinel = tmp_path / "built"
    payload = torch.load(loose, weights_only=True)
    payload["config"]["task"] = {"_target_": "pathlib.Path.touch", "_args_": [str(sentinel)]}
    torch.save(payload, tmp_path / "crafted.pt")
    with pytest.raises(RnnexpError, match="refusing to load"):
        rnnexp.load_run(tmp_path / "crafted.pt")
    assert not sentinel.exists()


def readme_python_api_blocks() -> list[str]:
    """The python code blocks of the README's "Python API" section, between its markers."""
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- python-api:")
    end = text.index("<!-- /python-api -->", start)
    return re.findall(r"^```python\n(.*?)^```$", text[start:end], re.DOTALL | re.MULTILINE)


def test_readme_python_api_examples_run(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = readme_python_api_blocks()
    assert len(blocks) == 2, "the README's Python API section lost an example"
    monkeypatch.chdir(cwd)  # where the run of `cwd` lies: outputs/charlm/lstm/<time>/
    out = io.StringIO()
    for number, block in enumerate(blocks):
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md python-api block {number}", "exec"), {})
    printed = out.getvalue()
    assert "Run(task='charlm', cell='lstm'" in printed and "ROMEO:" in printed
    final_loss = float(re.search(r"step 199: loss (\S+)", printed).group(1))
    assert final_loss < 0.05  # the cell learned the echo (about 1 at the start)
