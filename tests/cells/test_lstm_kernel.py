"""LstmFunction, the fused LSTM-type loop, against the equations written here with autograd
(float64): outputs and every gradient for each Greff layout, with and without peepholes
and gate recurrence; its inputs and saved tensors stay untouched (a second backward through
the same graph, as Hessian-free's repeated pull-backs do, gives the same gradients); only
the gradients asked for are formed. The float64 gradcheck is in test_cell_zoo.py."""

from __future__ import annotations

import pytest
import torch

from rnnexp.cells.loop import LstmFunction

torch.set_num_threads(1)

# (has_i, has_f, has_o, cifg, act_z, act_h)
LAYOUTS = {
    "full": (True, True, True, False, True, True),
    "cifg": (True, False, True, True, True, True),
    "nig": (False, True, True, False, True, True),
    "nfg": (True, False, True, False, True, True),
    "nog": (True, True, False, False, True, True),
    "niaf": (True, True, True, False, False, True),
    "noaf": (True, True, True, False, True, False),
    "nog_noaf": (True, True, False, False, True, False),
}


def reference(xw, h0, c0, w, peep, q, g0, layout):
    """The recurrence gate by gate, ``torch.tanh`` and ``torch.sigmoid`` under autograd."""
    has_i, has_f, has_o, cifg, act_z, act_h = layout
    hidden = h0.shape[-1]
    names = [n for n, on in (("i", has_i), ("f", has_f), ("z", True), ("o", has_o)) if on]
    sig = [n for n in names if n != "z"]
    peeps = dict(zip(sig, peep, strict=True)) if peep is not None else {}
    h, c, g = h0, c0, g0
    outs = []
    for xw_t in xw.unbind(0):
        a = xw_t + h @ w.T
        pre = {n: a[:, k * hidden : (k + 1) * hidden] for k, n in enumerate(names)}
        if q is not None:
            rec = g @ q.T
            for k, n in enumerate(sig):
                pre[n] = pre[n] + rec[:, k * hidden : (k + 1) * hidden]
        gate = {}
        for n in ("i", "f"):
            if n in pre:
                gate[n] = torch.sigmoid(pre[n] + peeps[n] * c if n in peeps else pre[n])
        i = gate.get("i", 1.0)
        f = 1 - gate["i"] if cifg else gate.get("f", 1.0)
        z = torch.tanh(pre["z"]) if act_z else pre["z"]
        c = f * c + i * z
        if has_o:
            gate["o"] = torch.sigmoid(pre["o"] + peeps["o"] * c if "o" in peeps else pre["o"])
        h = gate.get("o", 1.0) * (torch.tanh(c) if act_h else c)
        if q is not None:
            g = torch.cat([gate[n] for n in sig], 1)
        outs.append(h)
    return (torch.stack(outs), c) + ((g,) if q is not None else ())


def _inputs(layout, peephole, gaterec, steps=30, batch=3, hidden=4, seed=0):
    """float64 leaves: ``(xw, h0, c0, w, peep, q, g0)`` (``None`` where absent)."""
    gen = torch.Generator().manual_seed(seed)
    n = sum(layout[:3])

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_()

    return (
        rand(steps, batch, (n + 1) * hidden),
        rand(batch, hidden, scale=0.5),
        rand(batch, hidden),
        rand((n + 1) * hidden, hidden, scale=0.5),
        rand(n, hidden) if peephole else None,
        rand(n * hidden, n * hidden, scale=0.3) if gaterec else None,
        torch.rand(batch, n * hidden, generator=gen, dtype=torch.float64).requires_grad_()
        if gaterec
        else None,
    )


def _grads(outputs, leaves, seed=1):
    """Gradients of a random weighting of every output (the states too)."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=gen, dtype=torch.float64) for o in outputs]
    loss = sum((o * w.to(o.dtype)).sum() for o, w in zip(outputs, weights, strict=True))
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    return torch.autograd.grad(loss, wanted)


@pytest.mark.parametrize("gaterec", [False, True], ids=["", "fgr"])
@pytest.mark.parametrize("peephole", [False, True], ids=["", "peep"])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_kernel_equals_reference(name, peephole, gaterec):
    """float32 kernel vs float64 equations over 30 steps: ``tanh`` as ``2 σ(2x) - 1`` and
    the reordered backward stay within float32 rounding."""
    layout = LAYOUTS[name]
    leaves = _inputs(layout, peephole, gaterec)
    ref = reference(*leaves, layout)
    single = [None if t is None else t.detach().float().requires_grad_() for t in leaves]
    out = LstmFunction.apply(*single, layout)
    for a, b in zip(out, ref, strict=True):
        torch.testing.assert_close(a.double(), b, atol=2e-6, rtol=1e-5)
    for a, b in zip(_grads(out, single), _grads(ref, leaves), strict=True):
        torch.testing.assert_close(a.double(), b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["full", "cifg", "noaf"])
def test_inputs_untouched_and_backward_twice(name):
    """The forward reads ``xw`` and ``weight`` without writing them (z's rows are doubled on
    a copy), and the backward leaves the saved tensors alone: a second backward through the
    same graph gives the same gradients."""
    layout = LAYOUTS[name]
    leaves = _inputs(layout, True, True)
    before = [t.detach().clone() for t in leaves if t is not None]
    out = LstmFunction.apply(*leaves, layout)
    for a, b in zip([t for t in leaves if t is not None], before, strict=True):
        assert torch.equal(a, b)
    loss = sum(o.sum() for o in out)
    wanted = [t for t in leaves if t is not None]
    first = torch.autograd.grad(loss, wanted, retain_graph=True)
    second = torch.autograd.grad(loss, wanted)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_only_wanted_gradients():
    """With the weight, state and gate recurrence frozen, the gradients of ``xw`` and the
    peepholes still equal the reference's."""
    layout = LAYOUTS["full"]
    leaves = _inputs(layout, True, True)
    for t in (leaves[1], leaves[2], leaves[3], leaves[5], leaves[6]):
        t.requires_grad_(False)
    out = LstmFunction.apply(*leaves, layout)
    for a, b in zip(_grads(out, leaves), _grads(reference(*leaves, layout), leaves), strict=True):
        torch.testing.assert_close(a, b)
