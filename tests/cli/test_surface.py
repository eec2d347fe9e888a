"""``rnnexp surface``: the one-unit error surface, its gradient, the cliff and the CLI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from rnnexp.cli.main import main
from rnnexp.cli.surface import SETUPS, descend, gradient, loss_grid


def unrolled(w: float, b: float, setup: str, steps: int = 50, target: float = 0.7) -> float:
    """The loss by a plain Python loop over floats, written from the equations."""
    if setup == "seed002":  # h_t = tanh(w h_{t-1} + b), h_0 = 0.5
        h = 0.5
        for _ in range(steps):
            h = math.tanh(w * h + b)
        return (h - target) ** 2
    x = 0.5  # Pascanu eq. (8): x_t = w sigmoid(x_{t-1}) + b, x_0 = 0.5
    for _ in range(steps):
        x = w / (1 + math.exp(-x)) + b
    return (1 / (1 + math.exp(-x)) - target) ** 2


@pytest.mark.parametrize("setup", list(SETUPS))
def test_grid_equals_the_unrolled_loop(setup: str) -> None:
    w = torch.linspace(-1.0, 6.0, 8, dtype=torch.float64)
    b = torch.linspace(-4.0, 2.0, 7, dtype=torch.float64)
    grid = loss_grid(w, b, setup=SETUPS[setup])
    assert grid.shape == (7, 8) and grid.dtype == torch.float64
    for i, bi in enumerate(b.tolist()):
        for j, wj in enumerate(w.tolist()):
            assert grid[i, j].item() == pytest.approx(unrolled(wj, bi, setup), abs=1e-12)


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("point", [(0.8, 0.3), (1.5, -0.2), (4.5, -2.0)])
def test_gradient_matches_finite_differences(setup: str, point: tuple[float, float]) -> None:
    value, grad = gradient(point, 0.7, 50, SETUPS[setup])
    assert value == pytest.approx(unrolled(*point, setup), abs=1e-12)
    eps = 1e-6
    w, b = point
    fd = [
        (unrolled(w + eps, b, setup) - unrolled(w - eps, b, setup)) / (2 * eps),
        (unrolled(w, b + eps, setup) - unrolled(w, b - eps, setup)) / (2 * eps),
    ]
    assert grad.tolist() == pytest.approx(fd, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_the_cliff_throws_plain_descent_away_and_clipping_keeps_it(setup: str) -> None:
    s = SETUPS[setup]
    plain = descend(s.start, s.lr, 100, None, setup=s)
    clipped = descend(s.start, s.lr, 100, 1.0, setup=s)
    assert plain.largest_step > 1.0  # the bounce off the cliff
    assert clipped.largest_step <= s.lr * 1.0 + 1e-12
    assert clipped.num_clipped >= 1 and plain.num_clipped == 0
    assert plain.losses[-1] > 0.05  # stranded on a flat plateau
    assert clipped.losses[-1] < 1e-6  # reached the valley
    if setup == "seed002":
        assert plain.max_grad_norm > 5 * clipped.max_grad_norm


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple:
    monkeypatch.setattr(sys, "argv", ["rnnexp", "surface", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out, captured.err


def test_cli_writes_png_and_svg(monkeypatch, capsys, tmp_path: Path) -> None:
    png, svg = tmp_path / "s.png", tmp_path / "sub" / "s.svg"
    code, out, _ = cli(monkeypatch, capsys, "-o", str(png), "--resolution", "41")
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "clipped at 1" in out and "written to" in out
    args = ("-o", str(svg), "--resolution", "21", "--iters", "5", "--kind", "surface")
    code, _, _ = cli(monkeypatch, capsys, *args, "--setup", "pascanu2013")
    assert code == 0 and b"<svg" in svg.read_bytes()[:400]


@pytest.mark.parametrize(
    "args, words",
    [
        (("--w-range", "2", "1"), "--w-range"),
        (("--b-range", "0", "0"), "--b-range"),
        (("--resolution", "1"), "--resolution"),
        (("--lr", "0"), "--lr"),
        (("--clip", "-1"), "--clip"),
        (("--kind", "pie"), "--kind"),
        (("--setup", "nope"), "--setup"),
        (("-o", "x.jpg"), ".png, .svg or .pdf"),
    ],
)
def test_bad_options_are_one_line(monkeypatch, capsys, tmp_path, args, words) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(monkeypatch, capsys, "--resolution", "11", "--iters", "2", *args)
    assert code != 0 and words in err and len(err.strip().splitlines()) == 1


def test_unwritable_output_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = ("-o", str(blocker / "s.png"), "--resolution", "11", "--iters", "2")
    code, _, err = cli(monkeypatch, capsys, *args)
    assert code != 0 and "cannot write" in err and len(err.strip().splitlines()) == 1
