"""The one fast path shared by all hand-written cells.

:class:`LoopRNN` owns what every hand-written cell has in common: torch-named parameters
per layer and direction, stacking, bidirectionality (the backward direction runs the same
code on the time-flipped sequence), dropout between layers, ``h_0`` (zeros or learned) and
the weight init. A cell only says how many gate blocks it has and how one step goes.

Speed (REFERENCE.md §4, measured on 2 CPU cores):

* the input projection ``W_ih x_t + b_ih + b_hh`` of all steps is one matmul before the
  time loop, done time-major so each step reads a contiguous ``(B, G)`` slice;
* the loop iterates ``for xw_t in xw.unbind(0)`` -- indexing ``xw[t]`` would make backward
  allocate a full-sequence zero tensor at every step;
* the two common recurrences have hand-written backward passes
  (:class:`ElmanFunction`, :class:`LstmFunction`, both ``torch.autograd.Function``) that
  run the loops without autograd bookkeeping and form the recurrent weight gradient as one
  ``(G, T*B) @ (T*B, H)`` matmul after the backward loop. Cells whose step does not fit
  them (GRU without reset-after, MGU: a gate multiplies ``h`` before the second matmul)
  use autograd on :meth:`LoopRNN.step`.

:meth:`LoopRNN.step` is each cell's per-step form (:mod:`rnnexp.cells.base`): the sampler
and :meth:`rnnexp.nn.model.SequenceModel.recur_steps` run it, and the tests check every fused
loop against :meth:`LoopRNN.run`, the plain loop over it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnexp.cells.base import Cell, LayerState, State
from rnnexp.cells.common import apply_init, check_init, init_scale_of, spectral_radius, uniform_


class LoopRNN(Cell, nn.Module):
    """Base class of the hand-written cells (see the module docstring).

    Subclasses set :attr:`gates` (row blocks of ``weight_ih``), :attr:`hh_gates` (row blocks
    of ``weight_hh``, default ``gates``), :attr:`n_states` (1: ``h``; 2: ``(h, c)``) and
    implement :meth:`step` (the per-step form, :class:`rnnexp.cells.base.Cell`); they may
    override :meth:`run` with a fused loop that gives the same result. Extra per-layer
    tensors are declared by :meth:`layer_parameters`.
    """

    gates: int = 1
    hh_gates: int | None = None
    n_states: int = 1
    fixed_buffers: bool = False  # True: weights are buffers (ESN), not parameters

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        learn_h0: bool = False,
        init: str = "default",
        init_scale: float | None = None,
        init_input_scale: float | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1 or hidden_size < 1:
            raise ValueError("num_layers and hidden_size must be positive")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout) if num_layers > 1 else 0.0
        self.init = check_init(init)
        self.init_scale = init_scale
        self.init_input_scale = init_input_scale
        directions = 2 if bidirectional else 1
        self._names: list[str] = []
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                tensors = self.layer_parameters(layer, direction, in_size)
                for base, tensor in tensors.items():
                    name = self._name(base, layer, direction)
                    if self.fixed_buffers:
                        self.register_buffer(name, tensor)
                    else:
                        self.register_parameter(name, nn.Parameter(tensor))
                    if layer == 0 and direction == 0:
                        self._names.append(base)
        self.reset_parameters()
        self._init_state(learn_h0, min(self.n_states, 2), (num_layers * directions, hidden_size))

    # ----------------------------------------------------------------- subclass hooks
    def layer_parameters(self, layer: int, direction: int, in_size: int) -> dict[str, Tensor]:
        """Uninitialised tensors of one layer and direction by base name; subclasses extend
        (``weight_peephole``) or replace this torch layout."""
        hidden = self.hidden_size
        hh_gates = self.gates if self.hh_gates is None else self.hh_gates
        return {
            "weight_ih": torch.empty(self.gates * hidden, in_size),
            "weight_hh": torch.empty(hh_gates * hidden, hidden),
            "bias_ih": torch.empty(self.gates * hidden),
            "bias_hh": torch.empty(self.gates * hidden),
        }

    def reset_parameters(self) -> None:
        """torch's uniform default, then ``init``; subclasses add their bias conventions."""
        uniform_(self, self.hidden_size)
        apply_init(self, self.init, self.init_scale, self.hidden_size,
                   input_scale=self.init_input_scale)  # fmt: skip

    def input_projection(self, x: Tensor, p: dict[str, Tensor]) -> Tensor:
        """``x`` ``(..., I)`` -> ``(..., G)``: the part of every step that does not recur."""
        return F.linear(x, p["weight_ih"], p["bias_ih"] + p["bias_hh"])

    def run(self, xw: Tensor, state: LayerState, p: dict[str, Tensor]) -> tuple[Tensor, LayerState]:
        """The time loop of one layer and direction: ``xw`` ``(T, B, G)`` -> ``(T, B, H)``.

        This plain loop over :meth:`step` runs under autograd; cells with a fused loop
        override it (and are tested against it)."""
        p = self.prepare(p)
        outputs = []
        for t, xw_t in enumerate(xw.unbind(0)):
            h, state = self.step(xw_t, state, p, t)
            outputs.append(h)
        return torch.stack(outputs), state

    # ----------------------------------------------------------------- machinery
    @staticmethod
    def _name(base: str, layer: int, direction: int) -> str:
        return f"{base}_l{layer}{'_reverse' if direction else ''}"

    def layer_tensors(self, layer: int, direction: int) -> dict[str, Tensor]:
        """The tensors of one layer and direction by base name (``weight_ih``, ...)."""
        # by attribute, not get_parameter: functional_call (weight_drop) swaps in tensors
        return {n: getattr(self, self._name(n, layer, direction)) for n in self._names}

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """``x`` ``(B, T, I)``, ``state`` ``(L*D, B, H)`` (or a tuple of those) ->
        ``(outputs (B, T, D*H), final state like state)``."""
        inputs = x.transpose(0, 1)  # time-major from here on
        initial = self.split_state(state, inputs.shape[1], inputs)
        directions = 2 if self.bidirectional else 1
        finals: list[tuple[Tensor, ...]] = []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                p = self.layer_tensors(layer, direction)
                xw = self.input_projection(inputs, p)
                if direction:
                    xw = xw.flip(0)
                h, final = self.run(xw, initial[layer * directions + direction], p)
                outputs.append(h.flip(0) if direction else h)
                finals.append(final)
            inputs = outputs[0] if directions == 1 else torch.cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                inputs = F.dropout(inputs, self.dropout, training=True)
        final_state = tuple(torch.stack(s) for s in zip(*finals, strict=True))
        out = inputs.transpose(0, 1).contiguous()
        return out, final_state[0] if len(final_state) == 1 else final_state

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.bidirectional:
            text += ", bidirectional=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        return text


# ============================================================================ Elman family
class ElmanType(LoopRNN):
    r"""Base of the Elman-type cells (irnn, jordan, clockwork, esn):

    .. math::
        h_t = m_t \odot \big((1 - a) h_{t-1} + a\,\phi(xw_t + W_{eff} h_{t-1})\big)
              + (1 - m_t) \odot h_{t-1}

    with the cell's effective recurrent matrix ``W_eff`` (:meth:`recurrent_weight`), update
    mask ``m_t`` (:meth:`update_mask`, clockwork) and leak rate ``a`` (:attr:`leak_rate`,
    ESN). :meth:`run` is the fused :class:`ElmanFunction`; :meth:`step` does the same
    arithmetic for one step.
    """

    leak_rate: float = 1.0

    def reset_parameters(self) -> None:
        """As :class:`LoopRNN`; with ``init="esn"`` every layer's ``W_eff`` is then brought
        to the spectral radius ``init_scale`` [1.1]: the init set each recurrent tensor
        (``W_hh``, jordan's ``U_y``) sparse, and scaling them all by ``c`` scales ``W_eff``
        (``W_hh``, ``U_y V (+ W_hh)``, clockwork's masked ``W_hh``) by ``c``."""
        super().reset_parameters()
        if self.init == "esn":
            self._scale_recurrence(init_scale_of("esn", self.init_scale))

    def _scale_recurrence(self, radius: float) -> None:
        """Scale each layer's and direction's recurrent tensors so that ``W_eff`` has
        spectral radius ``radius``."""
        with torch.no_grad():
            for layer in range(self.num_layers):
                for direction in range(2 if self.bidirectional else 1):
                    tensors = self.layer_tensors(layer, direction)
                    rho = spectral_radius(self.recurrent_weight(tensors))
                    if rho > 0:
                        for base in ("weight_hh", "weight_yh"):
                            if base in tensors:
                                tensors[base].mul_(radius / rho)

    def recurrent_weight(self, p: dict[str, Tensor]) -> Tensor:
        """``W_eff`` ``(H, H)`` from one layer's tensors."""
        return p["weight_hh"]

    def update_mask(self, steps: int, device: torch.device) -> Tensor | None:
        """``(T, H)`` bool: which units update at steps ``0..T-1``; ``None``: all, always."""
        return None

    def update_mask_at(self, t: int, device: torch.device) -> Tensor | None:
        """Row ``t`` of :meth:`update_mask`, ``(H,)``, without forming the rows before it."""
        return None

    def prepare(self, p: dict[str, Tensor]) -> dict[str, Tensor]:
        return {**p, "weight_eff_t": self.recurrent_weight(p).t()}

    def recurrent_blocks(self, layer: int = 0) -> dict[str, Tensor]:
        """The effective recurrent matrix ``W_eff`` (Jordan's ``U_y V``, clockwork's masked
        ``W_hh``) as the one block."""
        return {"W_eff": self.recurrent_weight(self.layer_tensors(layer, 0)).detach()}

    def run(self, xw, state, p):
        weight = self.recurrent_weight(p)
        mask = self.update_mask(xw.shape[0], xw.device)
        relu = self.nonlinearity == "relu"
        hs, h_n = elman_loop(xw, state[0], weight, mask, self.leak_rate, relu)
        return hs, (h_n,)

    def step(self, xw_t, state, p, t):
        (h,) = state
        a = torch.addmm(xw_t, h, p["weight_eff_t"])  # as ElmanFunction.forward, op for op
        a = torch.relu(a) if self.nonlinearity == "relu" else torch.tanh(a)
        leak = self.leak_rate
        h_new = a if leak == 1.0 else torch.add(h * (1.0 - leak), a, alpha=leak)
        mask = self.update_mask_at(t, xw_t.device)
        if mask is not None:
            h_new = torch.where(mask, h_new, h)
        return h_new, (h_new,)


class ElmanFunction(torch.autograd.Function):
    r"""Fused Elman-type loop with a hand-written backward.

    .. math::
        h_t = m_t \odot \big((1 - a) h_{t-1} + a\,\phi(xw_t + W h_{t-1})\big)
              + (1 - m_t) \odot h_{t-1}

    ``xw`` ``(T, B, H)`` is the precomputed input projection, ``h0`` ``(B, H)``, ``weight``
    ``(H, H)``, ``mask`` ``(T, H)`` or ``None`` (clockwork: which units update at step t),
    ``leak`` the leak rate ``a`` (1: plain Elman), ``relu`` picks ``φ`` (else tanh).
    Returns all ``h_t`` ``(T, B, H)``.
    """

    @staticmethod
    def forward(ctx, xw, h0, weight, mask, leak: float, relu: bool):
        acts = torch.empty_like(xw)
        hs = xw.new_empty(xw.shape[0] + 1, *h0.shape)
        hs[0] = h0
        h = hs[0]
        wt = weight.t()
        for t, (xw_t, a_t) in enumerate(zip(xw.unbind(0), acts.unbind(0), strict=True)):
            torch.addmm(xw_t, h, wt, out=a_t)
            torch.relu_(a_t) if relu else torch.tanh_(a_t)
            h_new = hs[t + 1]
            if leak != 1.0:
                torch.add(h * (1.0 - leak), a_t, alpha=leak, out=h_new)
            else:
                h_new.copy_(a_t)
            if mask is not None:
                torch.where(mask[t], h_new, h, out=h_new)
            h = h_new
        ctx.save_for_backward(acts, hs, weight, mask)
        ctx.leak, ctx.relu = leak, relu
        return hs[1:]

    @staticmethod
    def backward(ctx, grad_out):
        acts, hs, weight, mask = ctx.saved_tensors
        leak, relu = ctx.leak, ctx.relu
        steps = acts.shape[0]
        das = torch.empty_like(acts)
        dh = torch.zeros_like(hs[0])
        maskf = None if mask is None else mask.to(acts.dtype)
        for t in range(steps - 1, -1, -1):
            dh = dh + grad_out[t]
            act = acts[t]
            deriv = (act > 0).to(act.dtype) if relu else 1.0 - act * act
            da = das[t]
            g = dh if maskf is None else dh * maskf[t]
            torch.mul(g, deriv, out=da)
            if leak != 1.0:
                da.mul_(leak)
            carry = None
            if leak != 1.0:
                carry = g * (1.0 - leak)
            if maskf is not None:
                keep = dh * (1.0 - maskf[t])
                carry = keep if carry is None else carry + keep
            dh = torch.mm(da, weight) if carry is None else torch.addmm(carry, da, weight)
        width = acts.shape[-1]
        dw = das.reshape(-1, width).t().mm(hs[:-1].reshape(-1, hs.shape[-1]))
        return das, dh, dw, None, None, None


def elman_loop(xw, h0, weight, mask=None, leak=1.0, relu=False):
    """Run :class:`ElmanFunction`; returns ``(hs (T, B, H), h_T)``."""
    hs = ElmanFunction.apply(xw, h0, weight, mask, float(leak), bool(relu))
    return hs, hs[-1]


# ============================================================================ LSTM family
class LstmFunction(torch.autograd.Function):
    r"""Fused LSTM loop (all Greff et al. 2015 variants) with a hand-written backward.

    Pre-activations ``A_t = xw_t + R h_{t-1}`` hold the present gate blocks in torch's order
    ``(i, f, z, o)``; ``layout`` is ``(has_i, has_f, has_o, cifg, act_z, act_h)``.

    .. math::
        \begin{aligned}
        i_t &= \sigma(A^i_t + p_i \odot c_{t-1} + Q_i a_{t-1}) \text{ (or 1)} \\
        f_t &= \sigma(A^f_t + p_f \odot c_{t-1} + Q_f a_{t-1})
               \text{ (or 1, or } 1 - i_t) \\
        z_t &= g(A^z_t), \qquad c_t = f_t \odot c_{t-1} + i_t \odot z_t \\
        o_t &= \sigma(A^o_t + p_o \odot c_t + Q_o a_{t-1}) \text{ (or 1)}, \qquad
        h_t = o_t \odot h(c_t)
        \end{aligned}

    ``peep`` ``(n, H)``: the peephole rows of the present gates among ``(i, f, o)``, or
    ``None``. ``gaterec`` ``Q`` ``(nH, nH)`` and ``g0`` ``(B, nH)``: FGR's recurrence on the
    previous gate activations ``a_{t-1} = [i, f, o]_{t-1}`` (present gates), or ``None``.
    Returns ``(hs (T, B, H), c_T)``, plus ``a_T`` with ``gaterec``.
    """

    @staticmethod
    def forward(ctx, xw, h0, c0, weight, peep, gaterec, g0, layout):
        has_i, has_f, has_o, cifg, act_z, act_h = layout
        hidden = h0.shape[-1]
        sl = _gate_slices(layout, hidden)
        sig_sl = [sl[n] for n in ("i", "f", "o") if n in sl]
        pi, pf, po = _peep_rows(peep, layout)
        acts = xw.clone()
        steps = xw.shape[0]
        hs = xw.new_empty(steps + 1, *h0.shape)
        cs = xw.new_empty(steps + 1, *c0.shape)
        hs[0], cs[0] = h0, c0
        h, c = hs[0], cs[0]
        wt = weight.t()
        g = g0
        qt = None if gaterec is None else gaterec.t()
        for t, a in enumerate(acts.unbind(0)):
            a.addmm_(h, wt)
            if qt is not None:
                rec = torch.mm(g, qt)
                for k, s in enumerate(sig_sl):
                    a[:, s].add_(rec[:, k * hidden : (k + 1) * hidden])
            i = f = None
            if has_i:
                i = a[:, sl["i"]]
                if pi is not None:
                    i.addcmul_(pi, c)
                i.sigmoid_()
            if has_f:
                f = a[:, sl["f"]]
                if pf is not None:
                    f.addcmul_(pf, c)
                f.sigmoid_()
            elif cifg:
                f = 1.0 - i
            z = a[:, sl["z"]]
            if act_z:
                z.tanh_()
            c_new = cs[t + 1]
            if i is None:
                torch.add(c, z, out=c_new) if f is None else torch.addcmul(z, f, c, out=c_new)
            elif f is None:
                torch.addcmul(c, i, z, out=c_new)
            else:
                torch.addcmul(i * z, f, c, out=c_new)
            tc = torch.tanh(c_new) if act_h else c_new
            if has_o:
                ao = a[:, sl["o"]]
                if po is not None:
                    ao.addcmul_(po, c_new)
                ao.sigmoid_()
                torch.mul(ao, tc, out=hs[t + 1])
            else:
                hs[t + 1].copy_(tc)
            h, c = hs[t + 1], c_new
            if qt is not None:
                g = torch.cat([a[:, s] for s in sig_sl], 1)
        ctx.save_for_backward(acts, hs, cs, weight, peep, gaterec, g0)
        ctx.layout = layout
        if gaterec is None:
            return hs[1:], cs[-1]
        return hs[1:], cs[-1], g

    @staticmethod
    def backward(ctx, grad_hs, grad_c, grad_g=None):
        acts, hs, cs, weight, peep, gaterec, g0 = ctx.saved_tensors
        layout = ctx.layout
        has_i, has_f, has_o, cifg, act_z, act_h = layout
        hidden = hs.shape[-1]
        sl = _gate_slices(layout, hidden)
        sig_names = [n for n in ("i", "f", "o") if n in sl]
        pi, pf, po = _peep_rows(peep, layout)
        steps = acts.shape[0]
        das = torch.empty_like(acts)
        dh = torch.zeros_like(hs[0])
        dc = torch.zeros_like(cs[0]) if grad_c is None else grad_c.clone()
        dg = {}  # gradient reaching each gate activation through the gate recurrence
        if gaterec is not None and grad_g is not None:
            dg = dict(zip(sig_names, grad_g.split(hidden, 1), strict=True))
        for t in range(steps - 1, -1, -1):
            if grad_hs is not None:
                dh = dh + grad_hs[t]
            a, da = acts[t], das[t]
            c_prev, c = cs[t], cs[t + 1]
            tc = torch.tanh(c) if act_h else c
            if has_o:
                o = a[:, sl["o"]]
                dao = da[:, sl["o"]]
                do = dh * tc
                if "o" in dg:
                    do = do + dg["o"]
                torch.mul(do, o * (1.0 - o), out=dao)
                dtc = dh * o
            else:
                dtc = dh
            dc = dc + (dtc * (1.0 - tc * tc) if act_h else dtc)
            if has_o and po is not None:
                dc = dc.addcmul_(dao, po)
            z = a[:, sl["z"]]
            i = a[:, sl["i"]] if has_i else None
            f = a[:, sl["f"]] if has_f else (1.0 - i if cifg else None)
            daz = da[:, sl["z"]]
            dz = dc if i is None else dc * i
            torch.mul(dz, 1.0 - z * z, out=daz) if act_z else daz.copy_(dz)
            if has_i:
                di = dc * z
                if cifg:
                    di = di - dc * c_prev
                if "i" in dg:
                    di = di + dg["i"]
                dai = da[:, sl["i"]]
                torch.mul(di, i * (1.0 - i), out=dai)
            if has_f:
                df = dc * c_prev
                if "f" in dg:
                    df = df + dg["f"]
                daf = da[:, sl["f"]]
                torch.mul(df, f * (1.0 - f), out=daf)
            dc_prev = dc if f is None else dc * f
            if pi is not None:
                dc_prev = dc_prev.addcmul_(dai, pi)
            if pf is not None:
                dc_prev = dc_prev.addcmul_(daf, pf)
            dc = dc_prev
            dh = torch.mm(da, weight)
            if gaterec is not None:
                dsig = torch.cat([da[:, sl[n]] for n in sig_names], 1)
                dg = dict(zip(sig_names, torch.mm(dsig, gaterec).split(hidden, 1), strict=True))
        width = acts.shape[-1]
        dw = das.reshape(-1, width).t().mm(hs[:-1].reshape(-1, hidden))
        dpeep = None
        if peep is not None:
            rows = []
            if pi is not None:
                rows.append((das[..., sl["i"]] * cs[:-1]).sum((0, 1)))
            if pf is not None:
                rows.append((das[..., sl["f"]] * cs[:-1]).sum((0, 1)))
            if po is not None:
                rows.append((das[..., sl["o"]] * cs[1:]).sum((0, 1)))
            dpeep = torch.stack(rows)
        dq = dg0 = None
        if gaterec is not None:
            n = len(sig_names) * hidden
            dsig = torch.cat([das[..., sl[k]] for k in sig_names], -1).reshape(-1, n)
            g_prev = torch.cat([g0[None], torch.cat([acts[:-1, :, sl[k]] for k in sig_names], -1)])
            dq = dsig.t().mm(g_prev.reshape(-1, n))
            dg0 = torch.cat([dg[k] for k in sig_names], 1)
        return das, dh, dc, dw, dpeep, dq, dg0, None


def _gate_slices(layout, hidden: int) -> dict[str, slice]:
    has_i, has_f, has_o = layout[0], layout[1], layout[2]
    names = [n for n, present in (("i", has_i), ("f", has_f), ("z", True), ("o", has_o)) if present]
    return {n: slice(k * hidden, (k + 1) * hidden) for k, n in enumerate(names)}


def _peep_rows(peep, layout):
    """Peephole vectors ``(p_i, p_f, p_o)`` (``None`` where the gate or peepholes are absent)."""
    if peep is None:
        return None, None, None
    rows = iter(peep.unbind(0))
    has_i, has_f, has_o = layout[0], layout[1], layout[2]
    return (
        next(rows) if has_i else None,
        next(rows) if has_f else None,
        next(rows) if has_o else None,
    )


def lstm_loop(xw, h0, c0, weight, peep, layout, gaterec=None, g0=None):
    """Run :class:`LstmFunction`; returns ``(hs (T, B, H), (h_T, c_T[, a_T]))``."""
    if gaterec is None:
        hs, c_n = LstmFunction.apply(xw, h0, c0, weight, peep, None, None, tuple(layout))
        return hs, (hs[-1], c_n)
    hs, c_n, g_n = LstmFunction.apply(xw, h0, c0, weight, peep, gaterec, g0, tuple(layout))
    return hs, (hs[-1], c_n, g_n)
