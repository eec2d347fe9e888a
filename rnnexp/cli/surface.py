r"""``rnnexp surface``: the error surface of one recurrent unit, its cliff, and clipping.

Seed 002's experiment: a single unit with a bias and a self-connection, no input, run for
``T`` steps from a fixed start; the error is the squared distance of its last output from
a target (0.7 after 50 steps). Two setups:

``seed002`` (default) — a tanh unit whose activity is its output:

.. math::

    h_t = \tanh(w\,h_{t-1} + b), \quad h_0 = 0.5, \qquad E_T = (h_T - y^*)^2

``pascanu2013`` — Pascanu, Mikolov & Bengio 2013, Sec. 2.3, eq. (8) and Fig. 6:

.. math::

    x_t = w\,\sigma(x_{t-1}) + b, \quad x_0 = 0.5, \qquad E_T = (\sigma(x_T) - y^*)^2

with :math:`\sigma` the logistic sigmoid (the same as a sigmoid unit
:math:`s_t = \sigma(w s_{t-1} + b)` started from :math:`s_0 = \sigma(0.5)`, their footnote 1).

For :math:`w` large enough the unit has two stable fixed points; the line of
:math:`(w, b)` on which the start sits on the unstable fixed point between them is a
cliff: on one side :math:`h_T` ends near one attractor, on the other near the other, and
:math:`\partial E_T/\partial(w, b)` grows like :math:`\prod_t w\,\phi'(\cdot)` along it.

Gradient descent from one start, plain and with norm clipping (Pascanu Alg. 1):

.. math::

    g = \nabla_{(w,b)} E_T, \qquad
    g \leftarrow g \cdot \frac{\tau}{\lVert g \rVert} \ \text{if}\ \lVert g \rVert > \tau, \qquad
    (w, b) \leftarrow (w, b) - \eta\, g

The loss on the grid is computed for the whole grid at once (float64), the gradient by
autograd through the unrolled recurrence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnexp.errors import RnnexpError

KINDS = ("contour", "surface")


@dataclass(frozen=True)
class Setup:
    """One version of the experiment and the defaults that show its cliff."""

    name: str
    equation: str
    h0: float
    step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    output: Callable[[torch.Tensor], torch.Tensor]
    start: tuple[float, float]
    lr: float
    w_range: tuple[float, float]
    b_range: tuple[float, float]


SETUPS = {
    "seed002": Setup(
        name="seed002",
        equation="h_t = tanh(w h_{{t-1}} + b), h_0 = 0.5, E = (h_{T} - {target})^2",
        h0=0.5,
        step=lambda h, w, b: torch.tanh(w * h + b),
        output=lambda h: h,
        start=(1.625, -0.5),
        lr=0.05,
        w_range=(-0.5, 3.0),
        b_range=(-2.0, 2.0),
    ),
    "pascanu2013": Setup(
        name="pascanu2013",
        equation="x_t = w sigmoid(x_{{t-1}}) + b, x_0 = 0.5, E = (sigmoid(x_{T}) - {target})^2",
        h0=0.5,
        step=lambda x, w, b: w * torch.sigmoid(x) + b,
        output=torch.sigmoid,
        start=(5.0, -3.5),
        lr=1.0,
        w_range=(2.0, 10.0),
        b_range=(-6.0, 4.0),
    ),
}


def final_output(
    w: torch.Tensor, b: torch.Tensor, steps: int, setup: Setup = SETUPS["seed002"]
) -> torch.Tensor:
    """The unit's output after ``steps`` steps, elementwise over broadcast ``w`` and ``b``."""
    w, b = torch.broadcast_tensors(w, b)
    h = torch.full_like(w, setup.h0)
    for _ in range(steps):
        h = setup.step(h, w, b)
    return setup.output(h)


def loss(
    w: torch.Tensor, b: torch.Tensor, target: float, steps: int, setup: Setup = SETUPS["seed002"]
) -> torch.Tensor:
    """:math:`E_T = (y_T - y^*)^2`, elementwise."""
    return (final_output(w, b, steps, setup) - target) ** 2


def loss_grid(
    w_values: torch.Tensor,
    b_values: torch.Tensor,
    target: float = 0.7,
    steps: int = 50,
    setup: Setup = SETUPS["seed002"],
) -> torch.Tensor:
    """The loss at every grid point, shape ``(len(b_values), len(w_values))`` (rows: b),
    the whole grid at once in float64."""
    w = torch.as_tensor(w_values, dtype=torch.float64)
    b = torch.as_tensor(b_values, dtype=torch.float64)
    return loss(w[None, :], b[:, None], target, steps, setup)


def gradient(
    point: tuple[float, float], target: float, steps: int, setup: Setup = SETUPS["seed002"]
) -> tuple[float, torch.Tensor]:
    """``(E_T, ∇E_T)`` at ``point = (w, b)``, by autograd through the unrolled recurrence."""
    p = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    value = loss(p[0], p[1], target, steps, setup)
    (grad,) = torch.autograd.grad(value, p)
    return value.item(), grad


@dataclass
class DescentPath:
    """A descent path: ``points`` (iters + 1, 2), the loss at each point, the gradient
    norm met at each step (before clipping) and whether that step was clipped."""

    points: torch.Tensor
    losses: list[float]
    grad_norms: list[float]
    clipped: list[bool]

    @property
    def max_grad_norm(self) -> float:
        return max(self.grad_norms, default=0.0)

    @property
    def num_clipped(self) -> int:
        return sum(self.clipped)

    @property
    def largest_step(self) -> float:
        steps = (self.points[1:] - self.points[:-1]).norm(dim=1)
        return steps.max().item() if len(steps) else 0.0


def descend(
    start: tuple[float, float],
    lr: float,
    iters: int,
    clip: float | None = None,
    target: float = 0.7,
    steps: int = 50,
    setup: Setup = SETUPS["seed002"],
) -> DescentPath:
    """Gradient descent on :math:`E_T` from ``start``; with ``clip`` the gradient's norm
    is rescaled to ``clip`` whenever it exceeds it. Stops early at a non-finite gradient."""
    point = torch.tensor(start, dtype=torch.float64)
    points, losses, norms, clipped = [point], [], [], []
    for _ in range(iters):
        value, grad = gradient((point[0].item(), point[1].item()), target, steps, setup)
        norm = grad.norm().item()
        losses.append(value)
        if not torch.isfinite(grad).all():
            break
        norms.append(norm)
        clipped.append(clip is not None and norm > clip)
        if clipped[-1]:
            grad = grad * (clip / norm)
        point = point - lr * grad
        points.append(point)
    else:
        losses.append(loss(point[0], point[1], target, steps, setup).item())
    return DescentPath(torch.stack(points), losses, norms, clipped)


def plot(
    w_values: torch.Tensor,
    b_values: torch.Tensor,
    grid: torch.Tensor,
    paths: dict[str, DescentPath],
    kind: str = "contour",
    title: str = "",
):
    """The loss over (w, b) with the descent paths: the start as a red star, plain
    descent as a solid line, clipped descent dotted (seed 002's picture). Returns the
    matplotlib figure."""
    from rnnexp import plots

    plt = plots.plt
    w, b = w_values.numpy(), b_values.numpy()
    z = grid.numpy()
    styles = {"plain": ("white", "-", "o"), "clipped": ("tab:red", ":", "s")}
    if kind == "surface":
        fig = plt.figure(figsize=(9, 7))
        ax = fig.add_subplot(projection="3d")
        ww, bb = torch.meshgrid(w_values, b_values, indexing="xy")
        ax.plot_surface(ww.numpy(), bb.numpy(), z, cmap="viridis", linewidth=0, alpha=0.85)
        for name, path in paths.items():
            color, line, _ = styles[name]
            inside = _inside(path.points, w, b)
            pts = path.points[inside]
            zs = torch.tensor(path.losses[: len(path.points)])[inside]
            ax.plot(pts[:, 0], pts[:, 1], zs + 0.01, color=color if name != "plain" else "k",
                    linestyle=line, linewidth=2, label=_label(name, path))  # fmt: skip
        start = paths[next(iter(paths))].points[0]
        ax.scatter([start[0]], [start[1]], [paths[next(iter(paths))].losses[0]], c="red",
                   marker="*", s=250, label="start")  # fmt: skip
        ax.set_zlabel("E (squared error at the last step)")
        ax.view_init(elev=40, azim=30)  # the wall in front, both plateaus visible
    else:
        fig, ax = plt.subplots(figsize=(9, 7))
        levels = torch.linspace(0, float(z.max()) ** 0.5, 40) ** 2
        filled = ax.contourf(w, b, z, levels=levels.numpy(), cmap="viridis")
        fig.colorbar(filled, ax=ax, label="E (squared error at the last step)")
        for name, path in paths.items():
            color, line, marker = styles[name]
            pts = path.points.numpy()
            ax.plot(pts[:, 0], pts[:, 1], color=color, linestyle=line, linewidth=1.6,
                    marker=marker, markersize=2.5, label=_label(name, path))  # fmt: skip
        start = paths[next(iter(paths))].points[0]
        ax.plot([start[0]], [start[1]], "r*", markersize=18, label="start", zorder=5)
        ax.set_xlim(w[0], w[-1])
        ax.set_ylim(b[0], b[-1])
    ax.set_xlabel("w (recurrent weight)")
    ax.set_ylabel("b (bias)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    return fig


def _inside(points: torch.Tensor, w, b) -> torch.Tensor:
    return (
        (points[:, 0] >= w[0]) & (points[:, 0] <= w[-1])
        & (points[:, 1] >= b[0]) & (points[:, 1] <= b[-1])
    )  # fmt: skip


def _label(name: str, path: DescentPath) -> str:
    end = path.points[-1]
    what = "plain gradient descent" if name == "plain" else "with norm clipping"
    return f"{what} (end w={end[0]:.3g}, b={end[1]:.3g}, E={path.losses[-1]:.2g})"


def check_options(
    steps: int,
    w_range: tuple[float, float],
    b_range: tuple[float, float],
    resolution: int,
    lr: float,
    clip: float,
    iters: int,
    kind: str,
) -> None:
    """One-line errors for options that cannot work."""
    for name, (low, high) in (("--w-range", w_range), ("--b-range", b_range)):
        if not (low < high) or not all(map(_finite, (low, high))):
            raise RnnexpError(f"{name} {low:g} {high:g}: give LOW HIGH with LOW < HIGH")
    checks = {
        "--steps": (steps >= 1, "at least 1"),
        "--resolution": (resolution >= 2, "at least 2"),
        "--lr": (lr > 0 and _finite(lr), "a positive number"),
        "--clip": (clip > 0 and _finite(clip), "a positive threshold"),
        "--iters": (iters >= 0, "0 or more"),
    }
    for name, (ok, need) in checks.items():
        if not ok:
            raise RnnexpError(f"{name} must be {need}")
    if kind not in KINDS:
        raise RnnexpError(f"--kind {kind}: choose contour or surface")


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


@dataclass
class Result:
    setup: Setup
    heading: str  # the setup's name and equation with T and the target filled in
    paths: dict[str, DescentPath]
    output: Path


def run(
    output: Path,
    setup_name: str = "seed002",
    target: float = 0.7,
    steps: int = 50,
    start: tuple[float, float] | None = None,
    lr: float | None = None,
    clip: float = 1.0,
    iters: int = 100,
    w_range: tuple[float, float] | None = None,
    b_range: tuple[float, float] | None = None,
    resolution: int = 301,
    kind: str = "contour",
) -> Result:
    """Compute the grid and both paths, draw them and write the figure (atomically)."""
    from rnnexp import plots

    if setup_name not in SETUPS:
        raise RnnexpError(f"--setup {setup_name}: choose one of {', '.join(SETUPS)}")
    setup = SETUPS[setup_name]
    start = setup.start if start is None else start
    lr = setup.lr if lr is None else lr
    w_range = setup.w_range if w_range is None else w_range
    b_range = setup.b_range if b_range is None else b_range
    check_options(steps, w_range, b_range, resolution, lr, clip, iters, kind)
    plots.figure_format(output)  # a bad suffix fails before any work
    w = torch.linspace(*w_range, resolution, dtype=torch.float64)
    b = torch.linspace(*b_range, resolution, dtype=torch.float64)
    grid = loss_grid(w, b, target, steps, setup)
    paths = {
        "plain": descend(start, lr, iters, None, target, steps, setup),
        "clipped": descend(start, lr, iters, clip, target, steps, setup),
    }
    heading = f"{setup.name}: {setup.equation.format(T=steps, target=f'{target:g}')}"
    title = f"{heading}\nlr {lr:g}, {iters} iterations, clip threshold {clip:g}"
    fig = plot(w, b, grid, paths, kind, title)
    plots.save_figure(fig, output)
    return Result(setup, heading, paths, output)
