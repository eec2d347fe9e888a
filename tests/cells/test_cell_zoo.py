"""The cell zoo: every hand-written cell against a plain step-by-step reference of its
equations (written here, independently of rnnexp), gradcheck in float64, the degenerate
cases that reduce one cell to another, the shared options (learn_h0, init) and the ESN
ridge readout."""

from __future__ import annotations

import functools

import pytest
import torch
from torch.func import functional_call

from rnnexp import cells
from rnnexp.cells.esn import ridge_readout
from rnnexp.cells.loop import LoopRNN
from rnnexp.errors import RnnexpError

torch.set_num_threads(1)

HAND_WRITTEN = [
    "irnn",
    "jordan",
    "clockwork",
    "esn",
    "gru_minimal",
    "lstm_peephole",
    "lstm_cifg",
    "lstm1997",
    "lstm_nig",
    "lstm_nfg",
    "lstm_nog",
    "lstm_niaf",
    "lstm_noaf",
    "lstm_fgr",
]
# (cell name, options) pairs compared with the reference; gru reset_after=False is hand-written
CASES = [(n, {}) for n in HAND_WRITTEN] + [
    ("gru", {"reset_after": False}),
    ("jordan", {"elman": True, "output_size": 2}),
    ("clockwork", {"periods": [1, 3], "modules": 2}),
    ("esn", {"leak_rate": 0.3, "bias_scaling": 0.5}),
    ("esn", {"topology": "delay_lines", "line_length": 2, "bias_scaling": 0.5}),
]
LSTM_SWITCHES = {
    "lstm_peephole": {},
    "lstm_cifg": {"cifg": True},
    "lstm1997": {"nfg": True, "peephole": False},
    "lstm_nig": {"nig": True},
    "lstm_nfg": {"nfg": True},
    "lstm_nog": {"nog": True},
    "lstm_niaf": {"niaf": True},
    "lstm_noaf": {"noaf": True},
    "lstm_fgr": {"fgr": True},
}


def _ids(case):
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items())


# ------------------------------------------------------------------ reference equations
def _lstm_ref_step(p, x, state, sw, hidden):
    """Greff et al. 2015 equations, one gate at a time."""
    peephole = sw.get("peephole", True)
    nig, nfg, nog = sw.get("nig"), sw.get("nfg") or sw.get("cifg"), sw.get("nog")
    present = [g for g, absent in (("i", nig), ("f", nfg), ("z", False), ("o", nog)) if not absent]
    h, c = state[0], state[1]
    rows = {g: slice(k * hidden, (k + 1) * hidden) for k, g in enumerate(present)}
    sig = [g for g in ("i", "f", "o") if g in rows]
    b = p["bias_ih"] + p["bias_hh"]

    def pre(g):
        w_in, w_rec = p["weight_ih"][rows[g]], p["weight_hh"][rows[g]]
        return x @ w_in.T + h @ w_rec.T + b[rows[g]]

    peep = dict(zip(sig, p["weight_peephole"], strict=True)) if peephole else {}
    rec = {}
    if sw.get("fgr"):
        prev = state[2] @ p["weight_gaterec"].T
        rec = {g: prev[:, k * hidden : (k + 1) * hidden] for k, g in enumerate(sig)}
    zero = torch.zeros_like(h)
    z = pre("z") if sw.get("niaf") else torch.tanh(pre("z"))
    i = (
        torch.ones_like(h)
        if nig
        else torch.sigmoid(pre("i") + peep.get("i", zero) * c + rec.get("i", zero))
    )
    if sw.get("cifg"):
        f = 1 - i
    elif nfg:
        f = torch.ones_like(h)
    else:
        f = torch.sigmoid(pre("f") + peep.get("f", zero) * c + rec.get("f", zero))
    c_new = f * c + i * z
    o = (
        torch.ones_like(h)
        if nog
        else torch.sigmoid(pre("o") + peep.get("o", zero) * c_new + rec.get("o", zero))
    )
    h_new = o * (c_new if sw.get("noaf") else torch.tanh(c_new))
    new = (h_new, c_new)
    if sw.get("fgr"):
        new += (torch.cat([{"i": i, "f": f, "o": o}[g] for g in sig], 1),)
    return h_new, new


def ref_step(name, options, cell, p, x, state, t):
    """One step of cell ``name`` straight from its equations; ``state`` is a tuple."""
    H = cell.hidden_size
    if name in LSTM_SWITCHES:
        return _lstm_ref_step(p, x, state, LSTM_SWITCHES[name], H)
    (h,) = state
    b = p["bias_ih"] + p["bias_hh"]
    if name == "irnn":
        h = torch.relu(x @ p["weight_ih"].T + h @ p["weight_hh"].T + b)
    elif name == "jordan":
        y = h @ p["weight_ho"].T + p["bias_ho"]
        a = x @ p["weight_ih"].T + y @ p["weight_yh"].T + b
        if options.get("elman"):
            a = a + h @ p["weight_hh"].T
        h = torch.tanh(a)
    elif name == "clockwork":
        periods = options.get("periods") or [2**i for i in range(options.get("modules", 4))]
        sizes = [len(c) for c in torch.arange(H).tensor_split(len(periods))]
        unit = torch.tensor([per for per, s in zip(periods, sizes, strict=True) for _ in range(s)])
        mask = (unit[None, :] >= unit[:, None]).to(h.dtype)  # slow feed fast
        new = torch.tanh(x @ p["weight_ih"].T + h @ (p["weight_hh"] * mask).T + b)
        h = torch.where(t % unit == 0, new, h)
    elif name == "esn":
        a = options.get("leak_rate", 1.0)
        h = (1 - a) * h + a * torch.tanh(x @ p["weight_ih"].T + h @ p["weight_hh"].T + b)
    elif name == "gru":  # Cho et al. 2014: reset before the matmul
        wi, wh = p["weight_ih"].chunk(3), p["weight_hh"].chunk(3)
        bi, bh = p["bias_ih"].chunk(3), p["bias_hh"].chunk(3)
        r = torch.sigmoid(x @ wi[0].T + bi[0] + h @ wh[0].T + bh[0])
        u = torch.sigmoid(x @ wi[1].T + bi[1] + h @ wh[1].T + bh[1])
        n = torch.tanh(x @ wi[2].T + bi[2] + (r * h) @ wh[2].T + bh[2])
        h = u * h + (1 - u) * n
    elif name == "gru_minimal":  # Zhou et al. 2016 MGU
        wi, wh = p["weight_ih"].chunk(2), p["weight_hh"].chunk(2)
        bi, bh = p["bias_ih"].chunk(2), p["bias_hh"].chunk(2)
        f = torch.sigmoid(x @ wi[0].T + bi[0] + h @ wh[0].T + bh[0])
        n = torch.tanh(x @ wi[1].T + bi[1] + (f * h) @ wh[1].T + bh[1])
        h = (1 - f) * h + f * n
    else:
        raise AssertionError(name)
    return h, (h,)


def reference(name, options, cell, x, state=None):
    """Stacked, optionally bidirectional reference: a plain loop over layers, directions
    and time (``x[:, t]`` indexing on purpose: this is not the fast path)."""
    B, T, _ = x.shape
    D = 2 if cell.bidirectional else 1
    n_states = len(cell.state_sizes())
    if state is None:
        state = tuple(x.new_zeros(cell.num_layers * D, B, w) for w in cell.state_sizes())
    elif isinstance(state, torch.Tensor):
        state = (state,)
    inp, finals = x, []
    for layer in range(cell.num_layers):
        outs = []
        for d in range(D):
            p = cell.layer_tensors(layer, d)
            st = tuple(s[layer * D + d] for s in state)
            hs = [None] * T
            order = range(T - 1, -1, -1) if d else range(T)
            for k, t in enumerate(order):
                h, st = ref_step(name, options, cell, p, inp[:, t], st, k)
                hs[t] = h
            outs.append(torch.stack(hs, 1))
            finals.append(st)
        inp = torch.cat(outs, -1)
    final = tuple(torch.stack([f[k] for f in finals]) for k in range(n_states))
    return inp, final[0] if n_states == 1 else final


def _as_tuple(state):
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


def _perturb(cell, scale=0.5):
    """Random weights everywhere (zero-initialised or identity tensors hide bugs)."""
    with torch.no_grad():
        for t in list(cell.parameters()) + [
            b for n, b in cell.named_buffers() if "weight" in n or "bias" in n
        ]:
            if t.is_floating_point():
                t.uniform_(-scale, scale)


# ------------------------------------------------------------------ equations
@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_cell_equals_reference(case, layers, bidirectional):
    name, options = case
    torch.manual_seed(0)
    cell = cells.create(
        name, 3, 4, num_layers=layers, bidirectional=bidirectional, dropout=0.0, **options
    )
    _perturb(cell)
    x = torch.randn(2, 6, 3)
    out, state = cell(x)
    ref_out, ref_state = reference(name, options, cell, x)
    assert out.shape == (2, 6, 4 * (2 if bidirectional else 1))
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    for a, b in zip(_as_tuple(state), _as_tuple(ref_state), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # a given initial state is used, and gradients match the reference's
    init = tuple(torch.randn_like(s) for s in _as_tuple(state))
    init = init[0] if len(init) == 1 else init
    params = [p for p in cell.parameters()]
    out, state = cell(x, init)
    ref_out, ref_state = reference(name, options, cell, x, init)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    if params:
        weights = torch.randn_like(out)
        g = torch.autograd.grad((out * weights).sum() + _as_tuple(state)[-1].sum(), params)
        g_ref = torch.autograd.grad(
            (ref_out * weights).sum() + _as_tuple(ref_state)[-1].sum(), params
        )
        for a, b in zip(g, g_ref, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_gradcheck(case):
    """float64 gradcheck of the whole cell (hand-written backward included), 2 layers,
    bidirectional, w.r.t. the input, the initial state and every trainable tensor."""
    name, options = case
    torch.manual_seed(1)
    cell = cells.create(
        name, 2, 4, num_layers=2, bidirectional=True, dropout=0.0, **options
    ).double()
    _perturb(cell)
    names = [n for n, _ in cell.named_parameters()]
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)

    def fn(x, h0, *params):
        state = h0 if len(cell.state_sizes()) == 1 else (h0, h0 * 0.5)
        out, final = functional_call(cell, dict(zip(names, params, strict=True)), (x, state))
        return out, *_as_tuple(final)

    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    assert torch.autograd.gradcheck(fn, (x, h0, *params), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize(
    "name",
    [
        "irnn",
        "jordan",
        "clockwork",
        "esn",
        "lstm_peephole",
        "lstm_cifg",
        "lstm1997",
        "lstm_nig",
        "lstm_nog",
        "lstm_niaf",
        "lstm_noaf",
        "lstm_nfg",
        "lstm_fgr",
    ],
)
def test_fused_equals_autograd_step(name, monkeypatch):
    """The hand-written loops (ElmanFunction, LstmFunction) equal the plain loop over the
    cell's per-step form (LoopRNN.run over LoopRNN.step, under autograd)."""
    torch.manual_seed(2)
    cell = cells.create(name, 3, 5, num_layers=2, bidirectional=True, dropout=0.0)
    _perturb(cell)
    x = torch.randn(3, 7, 3, requires_grad=True)
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(cell, "run", functools.partial(LoopRNN.run, cell))
        out, state = cell(x)
        loss = (out * torch.linspace(-1, 1, out.shape[-1])).sum() + sum(
            s.sum() for s in _as_tuple(state)
        )
        grads = torch.autograd.grad(loss, [x, *cell.parameters()])
        results.append((out, *_as_tuple(state), *grads))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ degenerate cases
def _copy_shared(src, dst):
    dst_params = dict(dst.named_parameters())
    with torch.no_grad():
        for n, p in src.named_parameters():
            dst_params[n].copy_(p)


def test_peephole_with_zero_peepholes_is_lstm():
    torch.manual_seed(3)
    lstm = cells.create("lstm", 3, 4, num_layers=2, bidirectional=True, dropout=0.0)
    peep = cells.create("lstm_peephole", 3, 4, num_layers=2, bidirectional=True, dropout=0.0)
    _copy_shared(lstm, peep)
    with torch.no_grad():
        for n, p in peep.named_parameters():
            if "peephole" in n:
                p.zero_()
    x = torch.randn(2, 5, 3)
    (o1, (h1, c1)), (o2, (h2, c2)) = lstm(x), peep(x)
    for a, b in ((o1, o2), (h1, h2), (c1, c2)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fgr_with_zero_gate_recurrence_is_peephole():
    torch.manual_seed(4)
    peep = cells.create("lstm_peephole", 3, 4, num_layers=2, dropout=0.0)
    fgr = cells.create("lstm_fgr", 3, 4, num_layers=2, dropout=0.0)
    _copy_shared(peep, fgr)
    with torch.no_grad():
        for n, p in fgr.named_parameters():
            if "gaterec" in n:
                p.zero_()
    x = torch.randn(2, 5, 3)
    (o1, s1), (o2, s2) = peep(x), fgr(x)
    torch.testing.assert_close(o1, o2, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(s1[1], s2[1], atol=1e-6, rtol=1e-6)
    assert s2[2].shape == (2, 2, 12)  # FGR carries its gate activations
    # a 2-tuple state is accepted (previous gate activations start at zero)
    fgr(x, (s2[0], s2[1]))


def test_clockwork_with_period_one_is_elman():
    torch.manual_seed(5)
    elman = cells.create("elman", 3, 6, num_layers=2, bidirectional=True, dropout=0.0)
    cw = cells.create(
        "clockwork", 3, 6, num_layers=2, bidirectional=True, dropout=0.0, periods=[1, 1, 1]
    )
    _copy_shared(elman, cw)
    x = torch.randn(2, 7, 3)
    (o1, h1), (o2, h2) = elman(x), cw(x)
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h1, h2, atol=1e-5, rtol=1e-5)


def test_clockwork_slow_modules_hold_and_feed_fast_ones():
    cw = cells.create("clockwork", 2, 4, periods=[1, 2], dropout=0.0)
    mask = cw.recurrent_mask
    assert mask[:2, 2:].all() and not mask[2:, :2].any()  # slow (period 2) feeds fast (period 1)
    out, _ = cw(torch.randn(1, 5, 2))
    torch.testing.assert_close(out[0, 1, 2:], out[0, 0, 2:])  # t = 1: slow module copies
    torch.testing.assert_close(out[0, 3, 2:], out[0, 2, 2:])
    assert not torch.allclose(out[0, 2, 2:], out[0, 1, 2:])


def test_gru_reset_after_default_is_torch_gru():
    assert isinstance(cells.create("gru", 3, 4, dropout=0.0), torch.nn.GRU)
    torch.manual_seed(6)
    fused = cells.create("gru", 3, 4, num_layers=2, dropout=0.0)
    before = cells.create("gru", 3, 4, num_layers=2, dropout=0.0, reset_after=False)
    assert set(dict(fused.named_parameters())) == set(dict(before.named_parameters()))
    before.load_state_dict(fused.state_dict())  # same parameters, different equations
    x = torch.randn(2, 5, 3)
    assert not torch.allclose(fused(x)[0], before(x)[0])


# ------------------------------------------------------------------ ESN
def test_esn_reservoir_is_fixed_and_scaled():
    torch.manual_seed(7)
    esn = cells.create("esn", 3, 50, dropout=0.0, spectral_radius=0.8, connectivity=0.2)
    assert cells.count_parameters(esn) == 0
    assert "weight_hh_l0" in esn.state_dict()
    w = esn.weight_hh_l0
    rho = torch.linalg.eigvals(w.double()).abs().max().item()
    assert abs(rho - 0.8) < 1e-4
    assert 0.1 < (w != 0).float().mean().item() < 0.3
    assert cells.count_parameters(cells.create("esn", 3, 8, dropout=0.0, learn_h0=True)) == 8


def test_esn_delay_lines_hold_each_steps_input_features_down_the_line():
    """topology=delay_lines: only line heads read the input; unit k of a line is
    tanh(r * unit k-1 one step earlier), so tanh(w_j u_{t-k} + b_j) travels k steps."""
    torch.manual_seed(9)
    n, lines, r = 3, 2, 0.9
    esn = cells.create(
        "esn", 2, n * lines, dropout=0.0, topology="delay_lines", line_length=n,
        line_weight=r, input_scaling=2.0, bias_scaling=0.5,
    )  # fmt: skip
    heads = torch.tensor([True, False, False, True, False, False])
    assert (esn.weight_ih_l0[~heads] == 0).all() and (esn.bias_ih_l0[~heads] == 0).all()
    assert (esn.weight_ih_l0[heads] != 0).all()
    expected_w = torch.zeros(6, 6)
    expected_w[1, 0] = expected_w[2, 1] = expected_w[4, 3] = expected_w[5, 4] = r
    assert torch.equal(esn.weight_hh_l0, expected_w)
    u = torch.randn(4, 7, 2)
    with torch.no_grad():
        states, _ = esn(u)
    head_values = torch.tanh(u @ esn.weight_ih_l0[heads].T + esn.bias_ih_l0[heads])  # (B, T, 2)
    for j in range(lines):
        x = head_values[:, :, j]
        for k in range(n):
            torch.testing.assert_close(states[:, :, j * n + k], x)
            x = torch.tanh(r * torch.cat([torch.zeros(4, 1), x[:, :-1]], 1))  # one step later
    # lines of 4 in 6 units: a line of 4, then one of 2
    esn = cells.create("esn", 2, 6, topology="delay_lines", line_length=4)
    assert esn.weight_hh_l0.nonzero().tolist() == [[1, 0], [2, 1], [3, 2], [5, 4]]
    with pytest.raises(RnnexpError, match="cell.line_length=0 must be >= 1"):
        cells.create("esn", 2, 6, topology="delay_lines", line_length=0)
    with pytest.raises(RnnexpError, match="cell.topology='ring'"):
        cells.create("esn", 2, 6, topology="ring")


def test_ridge_readout_equals_lstsq():
    torch.manual_seed(8)
    esn = cells.create("esn", 2, 20, dropout=0.0, leak_rate=0.5)
    with torch.no_grad():
        states, _ = esn(torch.randn(4, 50, 2))
    x = states.reshape(-1, 20).double()
    y = torch.randn(x.shape[0], 3, dtype=torch.float64)
    w, b = ridge_readout(x, y, ridge=0.0)
    sol = torch.linalg.lstsq(torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1), y).solution
    torch.testing.assert_close(w, sol[:-1].T, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b, sol[-1], atol=1e-6, rtol=1e-6)
    # with λ > 0: least squares on the system augmented by sqrt(λ) I rows
    lam = 0.7
    xa = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    aug = torch.cat([xa, lam**0.5 * torch.eye(21, dtype=x.dtype)])
    ya = torch.cat([y, torch.zeros(21, 3, dtype=y.dtype)])
    sol = torch.linalg.lstsq(aug, ya).solution
    w, b = ridge_readout(x, y, ridge=lam)
    torch.testing.assert_close(w, sol[:-1].T, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b, sol[-1], atol=1e-6, rtol=1e-6)
    w32, b32 = ridge_readout(x.float(), y.float(), 1e-3)
    assert w32.dtype == torch.float32 and w32.shape == (3, 20) and b32.shape == (3,)


# ------------------------------------------------------------------ shared options
ALL = sorted(set(cells.available()))


@pytest.mark.parametrize("name", ALL)
def test_learn_h0(name):
    cell = cells.create(name, 3, 4, num_layers=2, bidirectional=True, dropout=0.0, learn_h0=True)
    assert cell.h0.shape == (4, 1, 4) and cell.h0.requires_grad
    with torch.no_grad():
        cell.h0.normal_()
    x = torch.randn(2, 3, 3)
    out, state = cell(x)
    zero_state = tuple(torch.zeros_like(s) for s in _as_tuple(state))
    out_zero, _ = cell(x, zero_state[0] if len(zero_state) == 1 else zero_state)
    assert not torch.allclose(out, out_zero)  # the learned state is used
    out.sum().backward()
    assert cell.h0.grad is not None and cell.h0.grad.abs().sum() > 0
    if isinstance(state, tuple):
        assert cell.c0.shape == (4, 1, 4)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "init",
    ["orthogonal", "identity", "xavier", "normal", "sigmoid_small", "tanh_basic", "tanh_smart"],
)
def test_init_options_run(name, init):
    cell = cells.create(name, 3, 16, dropout=0.0, init=init)
    out, _ = cell(torch.randn(2, 3, 3))
    assert out.shape == (2, 3, 16) and torch.isfinite(out).all()


def _blocks(w, hidden=16):
    return w.split(hidden, 0)


@pytest.mark.parametrize(
    "name", ["elman", "lstm", "gru", "lstm_peephole", "gru_minimal", "clockwork"]
)
def test_identity_and_orthogonal_inits(name):
    cell = cells.create(name, 3, 16, dropout=0.0, init="identity", init_scale=0.5)
    for block in _blocks(cell.weight_hh_l0.detach()):
        torch.testing.assert_close(block, 0.5 * torch.eye(16))
    cell = cells.create(name, 3, 16, dropout=0.0, init="orthogonal")
    for block in _blocks(cell.weight_hh_l0.detach()):
        torch.testing.assert_close(block @ block.T, torch.eye(16), atol=1e-5, rtol=0)


def test_irnn_default_is_identity_with_zero_bias():
    cell = cells.create("irnn", 3, 8, dropout=0.0)
    torch.testing.assert_close(cell.weight_hh_l0.detach(), torch.eye(8))
    assert not cell.bias_ih_l0.any() and not cell.bias_hh_l0.any()
    assert cell.weight_ih_l0.abs().max() < 0.01


def test_pascanu_inits():
    torch.manual_seed(9)
    cell = cells.create("elman", 10, 100, dropout=0.0, init="tanh_smart")
    w = cell.weight_hh_l0.detach()
    assert ((w != 0).sum(1) == 15).all()
    assert abs(torch.linalg.eigvals(w.double()).abs().max().item() - 0.95) < 1e-4
    assert cell.weight_ih_l0.std().item() == pytest.approx(0.01, rel=0.2)
    cell = cells.create("elman", 10, 100, dropout=0.0, init="sigmoid_small")
    assert cell.weight_hh_l0.std().item() == pytest.approx(0.01, rel=0.1)
    cell = cells.create("elman", 10, 100, dropout=0.0, init="tanh_basic")
    assert cell.weight_hh_l0.std().item() == pytest.approx(0.1, rel=0.1)
    assert not cell.bias_hh_l0.any()


def test_default_torch_cells_are_torch_modules():
    """With default options elman/lstm/gru are torch's fused modules with torch's init."""
    for name, cls in (("elman", torch.nn.RNN), ("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        torch.manual_seed(10)
        cell = cells.create(name, 3, 4, dropout=0.0)
        torch.manual_seed(10)
        ref = cls(3, 4, batch_first=True)
        assert type(cell).forward is not None and isinstance(cell, cls)
        assert not hasattr(cell, "h0")
        for (n, p), (n2, p2) in zip(cell.named_parameters(), ref.named_parameters(), strict=True):
            assert n == n2
            if name != "lstm":  # lstm sets its forget bias to 1
                torch.testing.assert_close(p, p2)


def test_unknown_init_is_a_one_line_error():
    with pytest.raises(RnnexpError, match="unknown init"):
        cells.create("irnn", 3, 4, dropout=0.0, init="nope")


def test_registry_entries_and_configs():
    from pathlib import Path

    import yaml

    conf = Path(__file__).resolve().parents[2] / "conf" / "cell"
    assert cells.available() == sorted(p.stem for p in conf.glob("*.yaml"))  # the registry
    for name in cells.available():
        spec = cells.spec(name)
        assert spec.summary and spec.source and spec.target.startswith("rnnexp.cells.")
        path = conf / f"{name}.yaml"
        text = path.read_text()
        assert text.startswith("# ")
        data = yaml.safe_load(text)
        assert data["_target_"] == "rnnexp.cells.create" and data["name"] == name
        options = {k: v for k, v in data.items() if k not in ("_target_", "name")}
        assert spec.options == options
        cell = cells.create(name, 3, 8, dropout=0.0, **options)  # every key is accepted
        assert isinstance(cell, cells.Cell)  # what the model, sampler and diagnostics use
        assert cell(torch.randn(1, 2, 3))[0].shape == (1, 2, 8)
    with pytest.raises(RnnexpError, match="unknown cell 'nope'; choose one of: clockwork"):
        cells.spec("nope")


# ------------------------------------------------------------------ hand-written backward
def test_elman_function_full_gradcheck():
    from rnnexp.cells.loop import ElmanFunction

    torch.manual_seed(11)
    T, B, H = 4, 2, 3
    xw = torch.randn(T, B, H, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(H, H, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(T, H) < 0.6
    for m, leak, relu in (
        (None, 1.0, False),
        (mask, 1.0, False),
        (None, 0.3, False),
        (mask, 0.5, True),
    ):
        assert torch.autograd.gradcheck(
            lambda a, b, c, m=m, leak=leak, relu=relu: ElmanFunction.apply(a, b, c, m, leak, relu),
            (xw, h0, w),
        )


@pytest.mark.parametrize(
    "layout",
    [
        (True, True, True, False, True, True),  # full LSTM
        (True, False, True, True, True, True),  # CIFG
        (False, True, True, False, True, True),  # NIG
        (True, False, True, False, True, True),  # NFG / 1997
        (True, True, False, False, True, True),  # NOG
        (True, True, True, False, False, False),  # NIAF + NOAF
    ],
)
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("gaterec", [False, True])
def test_lstm_function_full_gradcheck(layout, peephole, gaterec):
    from rnnexp.cells.loop import LstmFunction

    torch.manual_seed(12)
    T, B, H = 3, 2, 2
    gates = 1 + sum(layout[:3])
    xw = torch.randn(T, B, gates * H, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(B, H, dtype=torch.float64, requires_grad=True) for _ in range(2))
    w = torch.randn(gates * H, H, dtype=torch.float64, requires_grad=True)
    inputs = [xw, h0, c0, w]
    n = sum(layout[:3])
    peep = torch.randn(n, H, dtype=torch.float64, requires_grad=True) if peephole else None
    q = torch.randn(n * H, n * H, dtype=torch.float64, requires_grad=True) if gaterec else None
    g0 = torch.rand(B, n * H, dtype=torch.float64, requires_grad=True) if gaterec else None
    inputs += [t for t in (peep, q, g0) if t is not None]

    def fn(xw, h0, c0, w, *extra):
        extra = iter(extra)
        p, qq, gg = (next(extra) if t is not None else None for t in (peep, q, g0))
        return LstmFunction.apply(xw, h0, c0, w, p, qq, gg, layout)

    assert torch.autograd.gradcheck(fn, tuple(inputs))


@pytest.mark.parametrize("name", ["lstm_peephole", "gru_minimal", "irnn"])
def test_dropout_between_layers_only(name):
    torch.manual_seed(13)
    x = torch.randn(2, 5, 3)
    one = cells.create(name, 3, 4, num_layers=1, dropout=0.5)
    torch.testing.assert_close(
        one.train()(x)[0], one.eval()(x)[0]
    )  # no dropout after the last layer
    two = cells.create(name, 3, 4, num_layers=2, dropout=0.5)
    assert not torch.allclose(two.train()(x)[0], two.eval()(x)[0])
    torch.testing.assert_close(two.eval()(x)[0], two.eval()(x)[0])


def test_a_cell_config_saved_before_the_registry_change_builds_the_same_cell():
    """A checkpoint's cell node (``_target_: rnnexp.cells.create`` and the options its yaml
    had then) passes the load check and builds the cell ``create`` builds today."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rnnexp.cells.lstm_variants import LstmCifg
    from rnnexp.config import check_saved_config

    saved = {
        "_target_": "rnnexp.cells.create", "name": "lstm_cifg", "peephole": True,
        "input_bias": None, "learn_h0": False, "init": "default", "init_scale": None,
    }  # fmt: skip
    check_saved_config({"cell": saved}, "old.pt")
    torch.manual_seed(0)
    built = instantiate(OmegaConf.create(saved), input_size=3, hidden_size=4, num_layers=2,
                        bidirectional=False, dropout=0.0, _convert_="all")  # fmt: skip
    torch.manual_seed(0)
    fresh = cells.create("lstm_cifg", 3, 4, num_layers=2)
    assert type(built) is LstmCifg and built.layout == fresh.layout
    for (n, p), (n2, p2) in zip(built.named_parameters(), fresh.named_parameters(), strict=True):
        assert n == n2
        torch.testing.assert_close(p, p2)
