"""Clipping rules (rnnexp.train.clip): norm rescaling and the fallback of Pascanu 2013's
code (``clip=norm clip.fallback=0.02``) on crafted gradients."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import compose_config, tiny
from torch import nn

from rnnexp import cells
from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import SequenceModel
from rnnexp.train.clip import HiddenClip, NoClip, NormClip, ValueClip


def model(cell: str = "elman") -> SequenceModel:
    torch.manual_seed(0)
    rnn = cells.create(cell, 3, 5)
    return SequenceModel(nn.Identity(), rnn, nn.Linear(5, 2), "last_step", False, 0.0)


def fill_grads(net: nn.Module, value: float) -> dict[str, torch.Tensor]:
    """Set every gradient to ``value`` (one NaN entry when ``value`` is NaN); returns the
    weights before any step."""
    for p in net.parameters():
        p.grad = torch.full_like(p, 0.5)
    if math.isnan(value):
        net.rnn.weight_ih_l0.grad[0, 0] = math.nan  # one bad entry poisons the norm
    else:
        for p in net.parameters():
            p.grad.fill_(value)
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def test_norm_clip_rescales_above_the_threshold_and_reports_the_norm_before() -> None:
    net = model()
    fill_grads(net, 1.0)
    count = sum(p.numel() for p in net.parameters())
    norm = NormClip(1.0)(net.parameters())
    assert norm.item() == pytest.approx(math.sqrt(count))
    after = torch.cat([p.grad.flatten() for p in net.parameters()])
    assert after.norm().item() == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2e10])
def test_fallback_replaces_an_untrusted_gradient_by_a_shrink_of_w_hh(bad: float) -> None:
    """The code's rule: NaN/inf norm, or above 1e10, gives g_W_hh = 0.02 W_hh, else 0."""
    net = model()
    weights = fill_grads(net, 0.0)  # the grads are set below, by hand
    net.rnn.weight_hh_l0.grad.fill_(bad)
    clip = NormClip(1.0, fallback=0.02)
    norm = clip(net.parameters()).item()
    assert not math.isfinite(norm) or norm > 1e10
    assert clip.fallback_step(net, norm) is True
    for name, p in net.named_parameters():
        want = 0.02 * weights[name] if name == "rnn.weight_hh_l0" else torch.zeros_like(p)
        torch.testing.assert_close(p.grad, want, rtol=0, atol=0, msg=name)


def test_fallback_on_a_crafted_nan_gradient_and_a_nan_loss() -> None:
    net = model()
    weights = fill_grads(net, math.nan)
    clip = NormClip(1.0, fallback=0.02)
    norm = clip(net.parameters()).item()
    assert math.isnan(norm) and clip.fallback_step(net, norm)
    torch.testing.assert_close(net.rnn.weight_hh_l0.grad, 0.02 * weights["rnn.weight_hh_l0"])
    assert all(torch.all(p.grad == 0) for n, p in net.named_parameters() if "weight_hh" not in n)
    # a NaN loss: no backward pass ran (.grad missing or stale); the update passes norm NaN
    for p in net.parameters():
        p.grad = None
    assert clip.fallback_step(net, math.nan)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_no_fallback_for_a_trusted_norm_or_without_the_option() -> None:
    net = model()
    fill_grads(net, 1e4)
    clip = NormClip(1.0, fallback=0.02)
    norm = clip(net.parameters()).item()  # about 1e4 * sqrt(#params): far below 1e10
    before = [p.grad.clone() for p in net.parameters()]
    assert clip.fallback_step(net, norm) is False
    for p, g in zip(net.parameters(), before, strict=True):
        assert torch.equal(p.grad, g)  # the clipped gradient stays
    # a lower bound makes the same norm untrusted
    assert NormClip(1.0, fallback=0.02, fallback_above=norm / 2).fallback_step(net, norm)
    # off by default, and on the other rules: a NaN step is left to train.on_nan
    for other in (NormClip(1.0), NoClip(), ValueClip(1.0), HiddenClip(1.0)):
        fill_grads(net, math.nan)
        assert other.fallback_step(net, math.nan) is False
        assert torch.isnan(net.rnn.weight_ih_l0.grad).any()


def test_fallback_without_a_recurrent_matrix_is_a_zero_step() -> None:
    """jordan has no weight_hh: every gradient becomes 0."""
    net = model("jordan")
    assert not any("weight_hh" in n for n, _ in net.named_parameters())
    fill_grads(net, math.nan)
    assert NormClip(1.0, fallback=0.02).fallback_step(net, math.nan)
    assert all(torch.all(p.grad == 0) for p in net.parameters())


def test_fallback_keys_in_the_config() -> None:
    cfg = compose_config(*tiny("temporal_order"), "clip=norm")
    clip = build(cfg.clip, "clip")
    assert (clip.max_norm, clip.fallback, clip.fallback_above) == (1.0, None, 1e10)
    cfg = compose_config(*tiny("temporal_order"), "clip=norm", "clip.fallback=0.02")
    assert build(cfg.clip, "clip").fallback == 0.02
    for key, value in (("fallback", -1), ("fallback_above", 0), ("max_norm", 0)):
        cfg = compose_config(*tiny("temporal_order"), "clip=norm", f"clip.{key}={value}")
        with pytest.raises(RnnexpError, match=f"clip.{key}={value}"):
            build(cfg.clip, "clip")
