"""``clip=norm clip.fallback=0.02`` through the update, on the fast path and the general
path (``train.fast``): Pascanu 2013's code replaces a step whose gradient norm is NaN,
inf or above 1e10 by ``W_hh <- W_hh - lr 0.02 W_hh`` and leaves the other weights."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config, tiny

from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import build_model
from rnnexp.train.updates import GradientUpdate, build_update

LR = 0.5  # large, so that the shrink is far above rounding


def update_for(fast: bool, *overrides: str) -> tuple[GradientUpdate, object]:
    cfg = compose_config(
        *tiny("temporal_order"), "cell=elman", "regularizer=pascanu", "clip=norm",
        "optim=sgd", f"optim.lr={LR}", f"train.fast={str(fast).lower()}", *overrides,
    )  # fmt: skip
    task = build(cfg.task, "task")
    torch.manual_seed(0)  # the same init for every call
    model = build_model(cfg, task.setup())
    update = build_update(cfg, model, task, None, torch.device("cpu"))
    assert (update.fast is not None) == fast  # both paths are exercised
    return update, task.sample(4, torch.Generator().manual_seed(0))


def weights(update: GradientUpdate) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in update.model.named_parameters()}


def assert_shrunk(update: GradientUpdate, before: dict[str, torch.Tensor]) -> None:
    for name, p in update.model.named_parameters():
        want = before[name] * (1 - LR * 0.02) if name == "rnn.weight_hh_l0" else before[name]
        torch.testing.assert_close(p.detach(), want, msg=name)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "general"])
def test_a_crafted_nan_gradient_shrinks_w_hh(fast: bool) -> None:
    update, batch = update_for(fast, "clip.fallback=0.02")
    update.model.head.weight.register_hook(lambda g: g * math.nan)  # finite loss, NaN grad
    before = weights(update)
    result = update.step(batch, None, 1)
    assert math.isfinite(result.loss) and math.isnan(result.grad_norm)
    assert not result.skipped and update.skipped == 0
    assert_shrunk(update, before)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "general"])
def test_a_nan_loss_and_a_norm_above_the_bound_fall_back_too(fast: bool) -> None:
    update, batch = update_for(fast, "clip.fallback=0.02")
    batch.inputs[0, 0, 0] = math.nan  # NaN loss: no backward pass at all
    before = weights(update)
    result = update.step(batch, None, 1)
    assert math.isnan(result.loss) and not result.skipped and result.state is None
    assert_shrunk(update, before)
    # a finite norm above clip.fallback_above (here any norm of this batch)
    update, batch = update_for(fast, "clip.fallback=0.02", "clip.fallback_above=1e-12")
    before = weights(update)
    result = update.step(batch, None, 1)
    assert 0 < result.grad_norm < math.inf and not result.skipped
    assert_shrunk(update, before)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "general"])
def test_without_the_fallback_train_on_nan_decides(fast: bool) -> None:
    update, batch = update_for(fast)
    update.model.head.weight.register_hook(lambda g: g * math.nan)
    with pytest.raises(RnnexpError, match="gradient norm is nan"):
        update.step(batch, None, 1)
    # a trusted norm: the fallback leaves the clipped step alone (both settings agree)
    plain, batch = update_for(fast)
    with_fallback, _ = update_for(fast, "clip.fallback=0.02")
    plain.step(batch, None, 1)
    with_fallback.step(batch, None, 1)
    for (name, p), q in zip(
        plain.model.named_parameters(), with_fallback.model.parameters(), strict=True
    ):
        assert torch.equal(p, q), name
