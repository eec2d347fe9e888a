"""The small-net fast path (issue 23) against the general path, on every combination it
takes: cell x clip x regularizer x head x batch length, in float64 and float32."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import compose_config, tiny
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp import cells
from rnnexp.cells import fused
from rnnexp.cells.fused import Record, Workspace, elman_omega
from rnnexp.config import build
from rnnexp.nn.model import SequenceModel, build_model
from rnnexp.tasks.base import Batch
from rnnexp.train.clip import HiddenClip, NoClip, NormClip, ValueClip
from rnnexp.train.fast import FastPath, fast_path
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.regularizers import NoRegularizer, PascanuOmega
from rnnexp.train.updates import GradientUpdate, build_update

INPUTS, H, OUTPUTS, B = 3, 6, 2, 4
CELLS = {
    "elman": {},
    "elman_relu": {"nonlinearity": "relu"},
    "irnn": {},
    "jordan": {},
    "jordan_elman": {"elman": True},
}
CLIPS = {
    "none": NoClip,
    # thresholds small enough that every rule acts on these gradients
    "norm": lambda: NormClip(0.05),
    "value": lambda: ValueClip(0.01),
    "hidden": lambda: HiddenClip(0.02),
}
REGULARIZERS = {"none": NoRegularizer, "pascanu": lambda: PascanuOmega(alpha=2.0, decay=True)}
HEADS = ("last_step", "every_step")


def make_model(cell: str, head: str, dtype: torch.dtype, learn_h0: bool = False) -> SequenceModel:
    torch.manual_seed(0)
    name = cell.split("_")[0]
    rnn = cells.create(name, INPUTS, H, learn_h0=learn_h0, **CELLS[cell])
    with torch.no_grad():  # away from zero and from saturation: every path carries gradient
        for p in rnn.parameters():
            p.normal_(0.0, 0.35)
    model = SequenceModel(nn.Identity(), rnn, nn.Linear(H, OUTPUTS), head, False, 0.0)
    return model.to(dtype)


class Regression:
    """A stand-in task: MSE against a fixed target, on (B, O) or (B, T, O) outputs."""

    @staticmethod
    def loss(output: Tensor, batch: Batch) -> Tensor:
        target = batch.targets if output.dim() == 3 else batch.targets[:, -1]
        return F.mse_loss(output, target)


def batches(dtype: torch.dtype, lengths=(7, 8, 6)) -> list[Batch]:
    """Batches of different lengths, as the Pascanu tasks draw them from [T, 1.1 T)."""
    generator = torch.Generator().manual_seed(1)
    out = []
    for steps in lengths:
        x = torch.randn(B, steps, INPUTS, generator=generator, dtype=dtype)
        y = torch.randn(B, steps, OUTPUTS, generator=generator, dtype=dtype)
        out.append(Batch(inputs=x, targets=y))
    return out


def updates(model: nn.Module, clip: str, regularizer: str) -> tuple[GradientUpdate, ...]:
    """The same model twice: with the fast path, and on the general path."""
    made = []
    for fast in (True, False):
        copy_ = copy.deepcopy(model)
        optimizer = torch.optim.SGD(copy_.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
        clipper, penalty = CLIPS[clip](), REGULARIZERS[regularizer]()
        made.append(
            GradientUpdate(copy_, Regression(), optimizer, scheduler, clipper, penalty, fast=fast)
        )
    return tuple(made)


def close(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-6, "atol": 1e-9} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}


def assert_near(got: Tensor, want: Tensor, rtol: float, atol: float, msg: str = "") -> None:
    """``||got - want|| <= rtol ||want|| + atol``: relative to the tensor's size, not to
    each entry (an entry near zero carries float32 rounding of the others)."""
    error = (got - want).norm().item()
    bound = rtol * want.norm().item() + atol
    assert error <= bound, f"{msg}: ||difference|| {error:.3g} > {bound:.3g}"


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


COMBINATIONS = [
    (cell, clip, reg, head)
    for cell, clip, reg, head in itertools.product(CELLS, CLIPS, REGULARIZERS, HEADS)
    # jordan: Ω reads W_hh, not the recurrence U_y V (+ W_hh): the general path takes it
    if not (cell.startswith("jordan") and reg == "pascanu")
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize(("cell", "clip", "reg", "head"), COMBINATIONS)
def test_fast_path_equals_general_path(cell, clip, reg, head, dtype) -> None:
    fast, general = updates(make_model(cell, head, dtype), clip, reg)
    assert fast.fast is not None and fast.step_by_step == general.step_by_step
    assert general.fast is None
    tol = close(dtype)
    state_fast = state_general = None
    for step, batch in enumerate(batches(dtype), start=1):
        loss_f, norm_f, state_f = fast.forward_backward(batch, state_fast, step)
        loss_g, norm_g, state_g = general.forward_backward(batch, state_general, step)
        assert_near(loss_f, loss_g, **tol, msg="loss")
        assert norm_f == pytest.approx(norm_g, rel=tol["rtol"])
        got, want = grads(fast.model), grads(general.model)
        assert got.keys() == want.keys()
        for name in want:
            assert_near(got[name], want[name], **tol, msg=name)
        if reg == "pascanu":
            omega_f, omega_g = fast.regularizer.last_value, general.regularizer.last_value
            assert omega_g > 0 and omega_f == pytest.approx(omega_g, rel=tol["rtol"])
        assert_near(state_f, state_g, **tol, msg="state")
        fast.optimizer.step()
        general.optimizer.step()
        state_fast, state_general = state_f, state_g  # carried: h_0 from the last batch


@pytest.mark.parametrize("cell", ["elman", "irnn"])
def test_fast_path_with_learned_initial_state(cell: str) -> None:
    model = make_model(cell, "last_step", torch.float64, learn_h0=True)
    fast, general = updates(model, "hidden", "pascanu")
    batch = batches(torch.float64)[0]
    fast.forward_backward(batch, None, 1)
    general.forward_backward(batch, None, 1)
    got, want = grads(fast.model), grads(general.model)
    assert "rnn.h0" in want
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


def reference_elman(xw: Tensor, h0: Tensor, weight: Tensor, relu: bool) -> list[Tensor]:
    """The recurrence written plainly, each h_t a node whose .grad autograd fills in."""
    h, steps = h0, []
    for xw_t in xw.unbind(0):
        pre = xw_t + h @ weight.T
        h = torch.relu(pre) if relu else torch.tanh(pre)
        h.retain_grad()
        steps.append(h)
    return steps


@pytest.mark.parametrize("relu", [False, True])
def test_kernel_gradients_and_deltas(relu: bool) -> None:
    generator = torch.Generator().manual_seed(2)
    args = [torch.randn(*s, generator=generator, dtype=torch.float64) for s in
            [(5, 3, 4), (3, 4), (4, 4)]]  # fmt: skip
    xw, h0, weight = (a.requires_grad_() for a in args)
    target = torch.randn(5, 3, 4, generator=generator, dtype=torch.float64)
    record = Record()
    hs = elman_omega(xw, h0, weight, relu, None, None, record)
    (hs * target).sum().backward()
    got = [xw.grad.clone(), h0.grad.clone(), weight.grad.clone()]
    for a in (xw, h0, weight):
        a.grad = None
    steps = reference_elman(xw, h0, weight, relu)
    torch.testing.assert_close(hs, torch.stack(steps))
    (torch.stack(steps) * target).sum().backward()
    for g, a in zip(got, (xw, h0, weight), strict=True):
        torch.testing.assert_close(g, a.grad)
    torch.testing.assert_close(record.delta, torch.stack([h.grad for h in steps]))
    assert torch.autograd.gradcheck(
        lambda a, b, c: elman_omega(a, b, c, relu), (xw.detach().requires_grad_(),
                                                      h0.detach().requires_grad_(),
                                                      weight.detach().requires_grad_())
    )  # fmt: skip


def kernel_inputs(steps: int, seed: int, dtype=torch.float64) -> tuple[Tensor, ...]:
    """``xw (T, B, H)``, ``h0``, ``weight`` and a target for ``hs``, drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(steps, 3, 4), (3, 4), (4, 4), (steps, 3, 4)]
    return tuple(torch.randn(*s, generator=generator, dtype=dtype) for s in shapes)


def run_kernel(inputs: tuple[Tensor, ...], relu: bool, hook, alpha, workspace) -> list:
    """hs, the three gradients, δ and Ω of one forward and backward pass, copied out."""
    xw, h0, weight = (t.detach().clone().requires_grad_() for t in inputs[:3])
    record = Record()
    hs = elman_omega(xw, h0, weight, relu, hook, alpha, record, workspace)
    (hs * inputs[3]).sum().backward()
    omega = None if record.omega is None else record.omega.clone()
    return [hs.detach().clone(), xw.grad, h0.grad, weight.grad, record.delta.clone(), omega]


KERNEL_CASES = [
    (False, None, None),
    (False, "hidden", 2.0),
    (True, None, 2.0),
    (True, "hidden", None),
]


@pytest.mark.parametrize(("relu", "clip", "alpha"), KERNEL_CASES)
def test_workspace_gives_what_new_buffers_give(relu: bool, clip, alpha) -> None:
    """One workspace across calls that grow, shrink and grow its buffers (as batches of
    lengths in [T, 1.1 T) do): bit for bit what new buffers give."""
    hook = HiddenClip(0.3).grad_hook if clip else None
    workspace = Workspace()
    for seed, steps in enumerate((5, 3, 7, 6, 7)):
        inputs = kernel_inputs(steps, seed)
        want = run_kernel(inputs, relu, hook, alpha, None)
        got = run_kernel(inputs, relu, hook, alpha, workspace)
        for g, w in zip(got, want, strict=True):
            assert (g is None and w is None) or torch.equal(g, w)
    assert workspace.buffers["hs"][0].shape[0] == 8  # the longest: T + 1 rows


@pytest.mark.parametrize(("relu", "clip", "alpha"), KERNEL_CASES)
def test_kernel_without_numpy_views(monkeypatch, relu: bool, clip, alpha) -> None:
    """The torch-op loops (a GPU, or a dtype NumPy lacks) give what the NumPy ones give."""
    hook = HiddenClip(0.3).grad_hook if clip else None
    inputs = kernel_inputs(6, 0)
    want = run_kernel(inputs, relu, hook, alpha, None)

    def torch_views(workspace, name, steps, like, hidden):
        base = like.new_empty(steps, like.shape[-2], hidden)
        return base, base.unbind(0), None  # no NumPy views

    monkeypatch.setattr(fused, "buffer", torch_views)
    got = run_kernel(inputs, relu, hook, alpha, None)
    for g, w in zip(got, want, strict=True):
        assert (g is None and w is None) or torch.testing.assert_close(g, w) is None


def test_workspace_refuses_a_stale_backward_pass() -> None:
    """A second forward pass overwrites the first's states: autograd refuses to use them."""
    xw, h0, weight, _ = (t.requires_grad_() for t in kernel_inputs(4, 0))
    workspace = Workspace()
    first = elman_omega(xw, h0, weight, workspace=workspace)
    elman_omega(xw * 2, h0, weight, workspace=workspace)
    with pytest.raises(RuntimeError, match="modified inplace|modified by an inplace"):
        first.sum().backward()


def test_fast_path_state_outlives_the_next_step() -> None:
    """The carried state is not a view of the workspace that the next step overwrites."""
    fast, _ = updates(make_model("elman", "every_step", torch.float64), "norm", "pascanu")
    batch = batches(torch.float64)[0]
    _, _, state = fast.forward_backward(batch, None, 1)
    kept = state.clone()
    _, _, after = fast.forward_backward(batch, state, 2)  # the same length: the same rows
    assert torch.equal(state, kept) and not torch.equal(after, kept)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("scale", [1e-3, 1e2])  # under and over the threshold
def test_norm_clip_is_torchs_bit_for_bit(dtype: torch.dtype, scale: float) -> None:
    """clip=norm, which the fast path's step runs after the kernel, skips torch's
    regrouping of the gradients but gives clip_grad_norm_'s norm and gradients exactly."""
    model = make_model("elman", "last_step", dtype)
    generator = torch.Generator().manual_seed(3)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=generator, dtype=dtype) * scale
    twin = copy.deepcopy(model)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        q.grad = p.grad.clone()
    norm = NormClip(1.0)(model.parameters())
    want = torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0)
    assert torch.equal(norm, want)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    assert (want > 1.0) == (scale > 1.0)


def test_padded_batches_take_the_general_path() -> None:
    fast, general = updates(make_model("elman", "last_step", torch.float64), "norm", "pascanu")
    batch = batches(torch.float64)[0]
    padded = Batch(batch.inputs, batch.targets, lengths=torch.tensor([7, 5, 7, 6]))
    assert not FastPath.applies(padded) and FastPath.applies(batch)
    loss_f, *_ = fast.forward_backward(padded, None, 1)
    loss_g, *_ = general.forward_backward(padded, None, 1)
    assert loss_f.item() == loss_g.item()  # the very same ops


def test_where_the_fast_path_applies() -> None:
    clip, none = NormClip(1.0), NoRegularizer()

    def model(name: str, layers: int = 1, both: bool = False, **options) -> SequenceModel:
        rnn = cells.create(name, INPUTS, H, num_layers=layers, bidirectional=both, **options)
        head = nn.Linear(H * (2 if both else 1), OUTPUTS)
        return SequenceModel(nn.Identity(), rnn, head, "last_step", both, 0.0)

    for name in ("elman", "irnn", "jordan"):
        assert isinstance(fast_path(model(name), clip, none), FastPath)
        assert isinstance(fast_path(model(name), HiddenClip(1.0), none), FastPath)
    for name in ("elman", "irnn"):
        assert isinstance(fast_path(model(name), HiddenClip(1.0), PascanuOmega()), FastPath)
    for name in ("lstm", "gru", "clockwork", "esn", "lstm_peephole"):
        assert fast_path(model(name), clip, none) is None
    assert fast_path(model("elman", layers=2), clip, none) is None
    assert fast_path(model("elman", both=True), clip, none) is None
    dropped = model("elman")
    dropped.weight_drop = 0.5
    assert fast_path(dropped, clip, none) is None
    assert fast_path(model("jordan"), clip, PascanuOmega()) is None  # no W_hh: general error
    assert fast_path(model("jordan", elman=True), clip, PascanuOmega()) is None
    assert fast_path(model("elman"), clip, SimpleNamespace(needs_steps=False)) is None


@pytest.mark.parametrize("fast", ["null", "true", "false"])
def test_train_fast_key_chooses_the_path(fast: str) -> None:
    cfg = compose_config(*tiny("temporal_order"), "cell=elman", "regularizer=pascanu",
                         f"train.fast={fast}")  # fmt: skip
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    update = build_update(cfg, model, task, None, torch.device("cpu"))
    assert (update.fast is None) == (fast == "false")


def test_omega_with_no_error_to_carry() -> None:
    """δ = 0 everywhere (a zero head): no pair is kept, Ω = 0 on both paths."""
    model = make_model("elman", "every_step", torch.float64)
    with torch.no_grad():
        model.head.weight.zero_()
    fast, general = updates(model, "norm", "pascanu")
    batch = batches(torch.float64)[0]
    fast.forward_backward(batch, None, 1)
    general.forward_backward(batch, None, 1)
    assert fast.regularizer.last_value == general.regularizer.last_value == 0.0
    got, want = grads(fast.model), grads(general.model)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


@pytest.mark.parametrize(
    ("task", "overrides"),
    [
        ("memorization", ("cell=irnn", "regularizer=pascanu", "clip=hidden")),  # every step
        ("adding", ("cell=jordan", "cell.elman=true", "clip=value")),  # last step
    ],
)
def test_training_runs_agree(tmp_path: Path, task: str, overrides: tuple[str, ...]) -> None:
    """Whole tiny runs through ``train()``: the same metrics with and without the fast
    path (batch lengths drawn from [T, 1.1 T), as the Pascanu tasks do)."""
    finals = []
    for fast in ("null", "false"):
        run_dir = tmp_path / fast
        cfg = compose_config(*tiny(task), "train.max_steps=12", *overrides, f"train.fast={fast}")
        metrics = train(cfg, run_dir, RunRecord(run_dir, task=task, cell=cfg.cell.name))
        finals.append(metrics["final"])
    assert finals[0].keys() == finals[1].keys()
    for key, value in finals[1].items():
        assert finals[0][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
