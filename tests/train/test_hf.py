"""Hessian-free (``optim=hf``, :mod:`rnnexp.train.hf`): the curvature products against the
explicit matrices of tiny nets, CG, the damping's direction, training and an exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config, read_metrics, tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.autograd.functional import hessian, jacobian

from rnnexp.config import build
from rnnexp.nn.model import build_model
from rnnexp.tasks.base import Batch
from rnnexp.train.checkpoint import Checkpoint
from rnnexp.train.hf import (
    Curvature,
    HessianFreeUpdate,
    Network,
    adjust_damping,
    conjugate_gradient,
    keep_at,
    native_kernels,
    reduction_ratio,
)
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import build_update

# (task, cell): MSE at every step through torch's whole-sequence GRU; softmax cross-entropy
# at the last step through the fused LSTM (oneDNN off); MSE through a hand-written cell's
# per-step form; cross-entropy at every step
NETS = [("timer", "gru"), ("temporal_order", "lstm"), ("timer", "irnn"), ("memorization", "elman")]


def tiny_net(task_name: str, cell: str) -> tuple[Network, object, Batch, torch.Tensor]:
    """A float64 net of 3 units, a batch of 2 short sequences and the net's θ."""
    cfg = compose_config(*tiny(task_name), f"cell={cell}", "model.hidden_size=3")
    torch.manual_seed(0)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup()).double().eval()
    batch = next(task.train_stream(2, seed=0))
    inputs = batch.inputs.double() if batch.inputs.is_floating_point() else batch.inputs
    targets = batch.targets.double() if batch.targets.is_floating_point() else batch.targets
    batch = Batch(inputs[:, :12], targets[:, :12] if targets.ndim > 1 else targets)
    net = Network(model, per_step=not isinstance(model.rnn, torch.nn.RNNBase))
    return net, task, batch, net.vector()


def explicit(net: Network, task, batch: Batch, theta: torch.Tensor) -> tuple:
    """The Gauss-Newton matrix ``J_zᵀ H_L J_z`` and ``J_hᵀ J_h / N_h`` from full Jacobians."""
    z, h, _ = net.run(theta, batch, None)

    def outputs(t: torch.Tensor) -> torch.Tensor:
        return net.run(t, batch, None)[0].reshape(-1)

    def hidden(t: torch.Tensor) -> torch.Tensor:
        return net.run(t, batch, None)[1].reshape(-1)

    def loss(flat_z: torch.Tensor) -> torch.Tensor:
        return task.loss(flat_z.view(z.shape), batch)

    jz, jh = jacobian(outputs, theta), jacobian(hidden, theta)  # (outputs, P), (N_h H, P)
    h_loss = hessian(loss, z.detach().reshape(-1))
    return jz.T @ h_loss @ jz, jh.T @ jh / h.shape[:-1].numel()


@pytest.mark.parametrize(("task_name", "cell"), NETS)
def test_curvature_products_equal_the_explicit_matrices(task_name: str, cell: str) -> None:
    net, task, batch, theta = tiny_net(task_name, cell)
    with native_kernels():
        gauss_newton, structural = explicit(net, task, batch, theta)
        curvature = Curvature(net, theta, batch, None, lambda z: task.loss(z, batch))
        torch.manual_seed(1)
        v = torch.randn_like(theta)
        gv, sv = curvature.gauss_newton(v), curvature.structural(v)
        damped, plain = curvature.damped(v, 0.7, 0.3), curvature.damped(v, 0.7, 0.0)
    assert gauss_newton.abs().max() > 1e-3 and structural.abs().max() > 1e-3  # not trivial
    assert torch.allclose(gv, gauss_newton @ v, rtol=0, atol=1e-6)
    assert torch.allclose(sv, structural @ v, rtol=0, atol=1e-6)
    expected = gauss_newton @ v + 0.7 * v + 0.7 * 0.3 * (structural @ v)
    assert torch.allclose(damped, expected, rtol=0, atol=1e-6)
    # μ = 0: plain Tikhonov-damped HF
    assert torch.allclose(plain, gauss_newton @ v + 0.7 * v, rtol=0, atol=1e-6)
    assert torch.linalg.eigvalsh(gauss_newton).min() > -1e-9  # positive semi-definite


@pytest.mark.parametrize("cell", ["lstm", "irnn"])
def test_padded_batches_match_the_packed_net(cell: str) -> None:
    """torch.func cannot run packed sequences: a padded batch's products run the per-step
    form, whose outputs at the real steps are the packed net's, and the structural term
    leaves out the padding's hidden states."""
    net, task, batch, theta = tiny_net("timer", cell)
    lengths = torch.tensor([12, 7])
    batch = Batch(batch.inputs, batch.targets, lengths)
    real = (torch.arange(12) < lengths.unsqueeze(1)).unsqueeze(2).double()

    def loss(z: torch.Tensor) -> torch.Tensor:  # a loss of the real steps only, as ner's
        return ((z - batch.targets).square() * real).sum() / real.sum()

    def hidden(t: torch.Tensor) -> torch.Tensor:
        return (net.run(t, batch, None)[1] * real).reshape(-1)

    with native_kernels():
        z = net.run(theta, batch, None)[0]  # packed for torch's cells
        jz = jacobian(lambda t: net.run(t, batch, None)[0].reshape(-1), theta)
        jh = jacobian(hidden, theta)
        gauss_newton = jz.T @ hessian(lambda f: loss(f.view(z.shape)), z.reshape(-1)) @ jz
        curvature = Curvature(net, theta, batch, None, loss)
        v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=theta.dtype)
        gv, sv = curvature.gauss_newton(v), curvature.structural(v)
    assert curvature.count == 19
    assert torch.allclose(gv, gauss_newton @ v, rtol=0, atol=1e-6)
    assert torch.allclose(sv, jh.T @ (jh @ v) / 19, rtol=0, atol=1e-6)


def spd(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(-2, 1, n, dtype=torch.float64)
    return q @ torch.diag(eigenvalues) @ q.T


@pytest.mark.parametrize("preconditioned", [False, True])
def test_cg_solves_a_small_spd_system(preconditioned: bool) -> None:
    a = spd(20, 0)
    b = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    precondition = a.diagonal() if preconditioned else None
    result = conjugate_gradient(lambda v: a @ v, b, torch.zeros(20, dtype=torch.float64),
                                precondition, max_iterations=200, tolerance=1e-14)  # fmt: skip
    assert torch.allclose(result.x, torch.linalg.solve(a, b), rtol=0, atol=1e-6)
    assert result.iterations <= 60
    # the backtracking iterates: at ⌈1.3^j⌉, then the last; φ(x_i) = ½xᵀAx - bᵀx, decreasing
    kept = [i for i, _, _ in result.kept]
    assert kept[:-1] == sorted(keep_at(1.3, 200) & set(range(1, result.iterations)))
    assert kept[-1] == result.iterations
    for _, x, phi in result.kept:
        assert phi == pytest.approx((0.5 * x @ a @ x - b @ x).item(), abs=1e-9)
    phis = [phi for _, _, phi in result.kept]
    assert phis == sorted(phis, reverse=True)


def test_martens_rule_stops_cg_once_progress_is_small() -> None:
    a = spd(400, 2)
    b = torch.ones(400, dtype=torch.float64)
    x0 = torch.zeros(400, dtype=torch.float64)
    loose = conjugate_gradient(lambda v: a @ v, b, x0, max_iterations=400, tolerance=5e-2)
    tight = conjugate_gradient(lambda v: a @ v, b, x0, max_iterations=400, tolerance=1e-12)
    assert 10 < loose.iterations < tight.iterations


def test_damping_adapts_in_the_right_direction_on_a_crafted_quadratic() -> None:
    """f(x) = ½xᵀAx + gᵀx. A model that sees the true curvature predicts the reduction
    exactly (ρ = 1: λ falls); one that sees a tenth of it overshoots (ρ < 0: λ rises)."""
    a = spd(10, 3)
    g = torch.ones(10, dtype=torch.float64)

    def f(x: torch.Tensor) -> float:
        return (0.5 * x @ a @ x + g @ x).item()

    zero = torch.zeros(10, dtype=torch.float64)
    for scale, direction in ((1.0, "down"), (0.1, "up")):
        damping = 1e-3
        model = scale * a + damping * torch.eye(10, dtype=torch.float64)
        result = conjugate_gradient(lambda v, m=model: m @ v, -g, zero, tolerance=1e-12)
        _, x, predicted = result.kept[-1]
        rho = reduction_ratio(f(x) - f(zero), predicted)
        new = adjust_damping(damping, rho)
        assert (new < damping) if direction == "down" else (new > damping), (scale, rho)
    assert adjust_damping(1.0, 0.1) == 1.5 and adjust_damping(1.0, 0.9) == pytest.approx(2 / 3)
    assert adjust_damping(1.0, 0.5) == 1.0 and adjust_damping(1.0, math.nan) == 1.5
    assert reduction_ratio(-1.0, 0.0) == -math.inf  # the model predicted no decrease


def run(run_dir: Path, *overrides: str) -> dict:
    cfg = compose_config(*tiny("timer"), "optim=hf", *overrides)
    return train(cfg, run_dir, RunRecord(run_dir, task="timer", cell=cfg.cell.name))


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)}


def test_hf_trains_the_timer_and_logs_its_damping(tmp_path: Path) -> None:
    cfg = compose_config(*tiny("timer"), "optim=hf")
    torch.manual_seed(cfg.train.seed)
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    before = task.evaluate(model, "test", torch.device("cpu"))["nrmse"]
    update = build_update(cfg, model, task, task.train_stream(4, 0), torch.device("cpu"))
    assert isinstance(update, HessianFreeUpdate) and update.settings.mu == 0.3
    metrics = run(tmp_path)
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    assert metrics["final"]["nrmse"] < 0.8 * before  # about 0.52 from 0.98
    losses = scalars(tmp_path, "train/loss")
    assert sum(list(losses.values())[-5:]) < 0.6 * sum(list(losses.values())[:5])
    for tag in ("hf_damping", "hf_rho", "hf_cg_iterations", "hf_model_reduction"):
        assert len(scalars(tmp_path, f"train/{tag}")) == 20, tag
    assert all(value < 0 for value in scalars(tmp_path, "train/hf_model_reduction").values())
    saved = Checkpoint.load(tmp_path / "checkpoints" / "last.pt")
    assert saved.update["hf"]["updates"] == 20 and saved.update["hf"]["previous"] is not None


def test_hf_resumes_exactly(tmp_path: Path) -> None:
    common = ["train.max_steps=10", "optim.mu=0.5", "train.eval_every=5", "sched=constant"]
    run(tmp_path / "whole", *common)
    run(tmp_path / "first", *common, "train.max_steps=5")
    rest = run(tmp_path / "rest", *common, f"train.resume={tmp_path / 'first'}")
    whole, first = (
        scalars(tmp_path / "whole", "train/loss"),
        scalars(tmp_path / "first", "train/loss"),
    )
    assert sorted(scalars(tmp_path / "rest", "train/loss")) == list(range(6, 11))
    assert {**first, **scalars(tmp_path / "rest", "train/loss")} == whole  # bit for bit
    damping = scalars(tmp_path / "whole", "train/hf_damping")
    assert {**scalars(tmp_path / "first", "train/hf_damping"),
            **scalars(tmp_path / "rest", "train/hf_damping")} == damping  # fmt: skip
    assert rest["final"] == read_metrics(tmp_path / "whole")["final"]
