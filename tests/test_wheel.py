"""An installed wheel, run outside the checkout, finds its configs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_runs_train_cfg_job_from_another_directory(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (wheel,) = dist.glob("rnnexp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "rnnexp/py.typed" in names  # PEP 561: type checkers read the annotations
    assert {"rnnexp/conf/debug/tiny.yaml", "rnnexp/conf/debug_task/tiny_timer.yaml"} <= names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [
        line.split(":", 1)[1].strip()
        for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    seqeval = [r for r in requires if r.startswith("seqeval")]
    assert seqeval and all('extra == "ner"' in r for r in seqeval)  # not in a base install
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # reuse this environment's torch & co. (its site-packages as plain paths, after the new
    # venv's own, so rnnexp comes from the wheel) instead of downloading them; works from
    # .venv (make test-full) and from a system or --system-site-packages Python alike
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    ours = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    (Path(purelib) / "rnnexp_test_parent.pth").write_text("\n".join(ours) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--force-reinstall", str(wheel)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [str(venv / "bin" / "rnnexp"), "train", "cell=lstm", "--cfg", "job"],
        cwd=elsewhere, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "name: lstm" in proc.stdout and "_target_: rnnexp.tasks.timer.TimerTask" in proc.stdout
    where = subprocess.run(
        [str(python), "-c", "import rnnexp.conf, rnnexp; print(rnnexp.conf.__file__)"],
        cwd=elsewhere, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert str(venv) in where  # the configs came from the wheel, not from the checkout
