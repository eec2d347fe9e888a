"""Pascanu's Ω, hidden-state gradient clipping and the gradient-flow diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config, tiny
from hydra.utils import instantiate
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from rnnexp import cells
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel, build_model
from rnnexp.train.clip import HiddenClip
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.regularizers import PascanuOmega


def elman_model(nonlinearity: str = "tanh", layers: int = 1) -> SequenceModel:
    torch.manual_seed(0)
    rnn = cells.create("elman", 2, 5, num_layers=layers, nonlinearity=nonlinearity)
    return SequenceModel(nn.Identity(), rnn, nn.Linear(5, 1), "last_step", False, 0.0)


def reference_run(model: SequenceModel, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """A plain step-by-step Elman loop whose h_t are leaves of their own: the reference."""
    rnn = model.rnn
    h, steps = torch.zeros(x.shape[0], 5), []
    for x_t in x.unbind(1):
        h = torch.tanh(x_t @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T
                       + rnn.bias_hh_l0)  # fmt: skip
        h.retain_grad()
        steps.append(h)
    loss = model.head(steps[-1]).pow(2).mean()
    return loss, steps


def test_recur_steps_gives_total_derivatives_through_time() -> None:
    model = elman_model()
    x = torch.randn(3, 7, 2)
    fused, _ = model.recur(x)
    hidden, _, steps = model.recur_steps(x)
    torch.testing.assert_close(hidden, fused)
    loss = model.readout(hidden).pow(2).mean()
    grads = torch.autograd.grad(loss, steps)
    ref_loss, ref_steps = reference_run(model, x)
    ref_loss.backward()
    for g, h in zip(grads, ref_steps, strict=True):
        torch.testing.assert_close(g, h.grad)
    assert grads[0].abs().sum() > 0  # not just the direct path to the head


def flat(state) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else list(state)


@pytest.mark.parametrize("learn_h0", [False, True])
@pytest.mark.parametrize("name", cells.available())
def test_recur_steps_equals_recur_for_every_cell(name: str, learn_h0: bool) -> None:
    """The per-step path (rnnexp.cells.Cell.unroll) gives the fused path's outputs, final state
    and parameter gradients, 2 stacked layers, from the initial state and from a given one."""
    torch.manual_seed(0)
    rnn = cells.create(name, 3, 4, num_layers=2, learn_h0=learn_h0)
    with torch.no_grad():  # a learned h0 starts at 0: move it so that it matters
        for pname, param in rnn.named_parameters():
            if pname in ("h0", "c0"):
                param.normal_()
    model = SequenceModel(nn.Identity(), rnn, nn.Linear(4, 1), "every_step", False, 0.0)
    x = torch.randn(2, 5, 3, requires_grad=True)  # esn has no trained parameters: check dL/dx
    with torch.no_grad():
        _, carried = model.recur(torch.randn(2, 3, 3))
    for state in (None, carried):
        fused, fused_state = model.recur(x, state)
        params = [x, *rnn.parameters()]  # h0 is unused from a given state: no gradient
        fused_grads = torch.autograd.grad(fused.pow(2).sum(), params, allow_unused=True)
        stepped, stepped_state, steps = model.recur_steps(x, state)
        step_grads = torch.autograd.grad(stepped.pow(2).sum(), params, allow_unused=True)
        assert len(steps) == 5
        torch.testing.assert_close(stepped, fused)
        for a, b in zip(flat(stepped_state), flat(fused_state), strict=True):
            torch.testing.assert_close(a, b)
        for a, b in zip(step_grads, fused_grads, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b)


def total_derivatives(loss: torch.Tensor, steps: list[torch.Tensor]) -> torch.Tensor:
    """δ_t = ∂L/∂h_t through time, (B, T, H)."""
    return torch.stack(torch.autograd.grad(loss, steps, retain_graph=True), 1)


def test_omega_matches_explicit_jacobians() -> None:
    model = elman_model()
    x = torch.randn(4, 6, 2)
    hidden, _, steps = model.recur_steps(x)
    loss = model.readout(hidden).pow(2).mean()
    omega = PascanuOmega().omega(total_derivatives(loss, steps), hidden, model.rnn)

    ref_loss, ref_steps = reference_run(model, x)
    ref_loss.backward()
    w = model.rnn.weight_hh_l0.detach()
    terms = []  # one per sequence and step, as in the paper's code
    for k in range(len(ref_steps)):
        delta, h_k = ref_steps[k].grad, ref_steps[k].detach()  # (B, H)
        for b in range(len(delta)):
            # δ_k ∂h_k/∂h_{k-1} for sequence b: δ_k diag(1 - h_k²) W_hh
            carried = delta[b] @ (torch.diag(1 - h_k[b] ** 2) @ w)
            terms.append((carried.pow(2).sum() / delta[b].pow(2).sum() - 1) ** 2)
    assert len(terms) == 4 * 6
    torch.testing.assert_close(omega, torch.stack(terms).mean())


def test_omega_gradient_reaches_only_w_hh() -> None:
    model = elman_model()
    hidden, _, steps = model.recur_steps(torch.randn(4, 6, 2))
    loss = model.readout(hidden).pow(2).mean()
    omega = PascanuOmega().omega(total_derivatives(loss, steps), hidden, model.rnn)
    w_hh, w_ih = model.rnn.weight_hh_l0, model.rnn.weight_ih_l0
    g_hh, g_ih = torch.autograd.grad(omega, [w_hh, w_ih], allow_unused=True)
    assert g_hh.abs().sum() > 0 and (g_ih is None or g_ih.abs().sum() == 0)


@pytest.mark.parametrize("decay", [False, True])
def test_omega_backward_equals_autograd_on_loss_plus_alpha_omega(decay: bool) -> None:
    """The one-pass backward (δ from hooks) leaves the gradient of loss + αΩ, with δ from
    autograd.grad: the straightforward two-pass form."""
    model = elman_model()
    x = torch.randn(4, 6, 2)
    regularizer = PascanuOmega(alpha=3.0, decay=decay)
    hidden, _, steps = model.recur_steps(x)
    loss = model.readout(hidden).pow(2).mean()
    omega = regularizer.omega(total_derivatives(loss, steps), hidden, model.rnn)
    alpha = 3.0 / 5 if decay else 3.0
    expected = torch.autograd.grad(loss + alpha * omega, list(model.parameters()))

    hidden, _, steps = model.recur_steps(x)
    model.zero_grad()
    regularizer.backward(model.readout(hidden).pow(2).mean(), steps, model, step=5)
    for param, grad in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(param.grad, grad)
    assert regularizer.last_value == pytest.approx(omega.item())


def test_omega_refuses_gated_cells() -> None:
    torch.manual_seed(0)
    model = SequenceModel(nn.Identity(), cells.create("lstm", 2, 5), nn.Linear(5, 1),
                          "last_step", False, 0.0)  # fmt: skip
    hidden, _, steps = model.recur_steps(torch.randn(2, 4, 2))
    with pytest.raises(RnnexpError, match="Elman-type"):
        PascanuOmega().backward(model.readout(hidden).sum(), steps, model, step=1)


def test_hidden_clip_clamps_every_backpropagated_hidden_gradient() -> None:
    model = elman_model()
    x = 3 * torch.randn(4, 8, 2)
    clamp = HiddenClip(1e-3)
    hidden, _, steps = model.recur_steps(x, grad_hook=clamp.grad_hook)
    seen = []
    for h in steps:  # runs after the clamp hook: records what flows on
        h.register_hook(lambda g: seen.append(g.abs().max().item()))
    (100 * model.readout(hidden)).sum().backward()
    assert len(seen) == 8 and max(seen) <= 1e-3 * (1 + 1e-6)  # float32
    clipped = model.rnn.weight_hh_l0.grad.clone()
    model.zero_grad()
    hidden, _, _ = model.recur_steps(x)
    (100 * model.readout(hidden)).sum().backward()
    assert not torch.allclose(model.rnn.weight_hh_l0.grad, clipped)


def test_remedies_and_diagnostics_in_a_run(tmp_path: Path) -> None:
    cfg = compose_config(*tiny("latch"), "cell=elman", "regularizer=pascanu", "clip=hidden")
    metrics = train(cfg, tmp_path, RunRecord(tmp_path))
    assert metrics["status"] == "completed"
    assert (tmp_path / "plots" / "gradient_flow.png").stat().st_size > 0
    tags = EventAccumulator(str(tmp_path)).Reload().Tags()
    assert {
        "train/omega",
        "diagnostics/spectral_radius",
        "diagnostics/error_first_over_last",
    } <= set(tags["scalars"])
    assert "gradient_flow" in tags["images"]


@pytest.mark.parametrize(("init", "std"), [("tanh_smart", 0.01), ("tanh_basic", 0.1)])
def test_pascanu_inits_set_the_output_layer_as_his_code(init: str, std: float) -> None:
    cfg = compose_config("task=temporal_order", "cell=elman", f"cell.init={init}",
                         "model.hidden_size=100", "task.bits=3")  # fmt: skip
    head = build_model(cfg, instantiate(cfg.task).setup()).head  # W_hy (8, 100)
    assert head.weight.std().item() == pytest.approx(std, rel=0.2)
    assert not head.bias.any()
    default = build_model(compose_config("task=temporal_order", "cell=elman"),
                          instantiate(cfg.task).setup()).head  # fmt: skip
    assert default.bias.any()  # other inits: torch's nn.Linear default


def test_gradient_flow_of_a_net_with_fixed_weights(tmp_path: Path) -> None:
    """An echo-state net (its reservoir fixed, its readout fitted by ridge) on a long-lag
    task draws its gradient flow too: the error reaches each h_t through the inputs'
    graph, where no weight is trained by gradient."""
    cfg = compose_config(*tiny("adding"), "cell=esn", "optim=ridge", "train.diagnostics=true")
    metrics = train(cfg, tmp_path, RunRecord(tmp_path, task="adding", cell="esn"))
    assert metrics["status"] == "completed"
    assert (tmp_path / "plots" / "gradient_flow.png").is_file()
