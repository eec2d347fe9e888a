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

    Few ops a step, in place into buffers made before the loop, with per-step views made
    once. ``i, f`` are one ``(B, k, H)`` block: one peephole ``addcmul`` for both. ``tanh``
    is ``2 σ(2x) - 1`` (:func:`_two_s_minus_one`; torch's float ``tanh`` is not vectorized
    on CPU and costs five ``sigmoid``\ s, and the results agree to float32 rounding):
    ``z``'s rows of ``xw`` and ``R`` are doubled before the loop, so that one ``sigmoid``
    covers ``i, f, z``. The backward pass forms the factors that depend only on the forward
    values (``σ' = σ(1 - σ)``) in bulk, for chunks of :data:`FACTOR_CHUNK` elements per
    gate (8 steps at B=32, H=256) just before the loop reaches them:

    .. math::
        \begin{aligned}
        K^o &= h(c_t)\, o_t', &
        K^c &= o_t\, h'(c_t) + K^o p_o, &
        K^p &= f_t + K^i p_i + K^f p_f, \\
        K^i &= z_t\, i_t' \;(\text{CIFG: } (z_t - c_{t-1}) i_t'), &
        K^f &= c_{t-1} f_t', &
        K^z &= i_t\, g'(A^z_t)
        \end{aligned}

    so that a step is ``δh_t = ∂L/∂h_t + δA_{t+1} R`` (one ``addmm``),
    ``δA^o_t = δh_t K^o_t``, ``δc_t \mathrel{+}= δh_t K^c_t``,
    ``δA^{i,f,z}_t = δc_t K^{i,f,z}_t`` (one broadcast ``mul``) and
    ``δc_{t-1} = δc_t K^p_t``: five ops. FGR adds ``δa_{t-1} = δA^{i,f,o}_t Q`` (two
    matmuls) and its terms. The weight gradients are one matmul each after the loop.
    """

    @staticmethod
    def forward(ctx, xw, h0, c0, weight, peep, gaterec, g0, layout):
        has_i, has_f, has_o, cifg, act_z, act_h = layout
        steps, batch, hidden = xw.shape[0], h0.shape[0], h0.shape[1]
        k = has_i + has_f  # blocks: 0 .. k-1 the gates i, f; k: z; k + 1: o
        acts = xw.clone(memory_format=torch.contiguous_format)  # A_t, then the activations
        blocks = acts.view(steps, batch, -1, hidden)
        if act_z:  # 2 A^z, so that the gates' sigmoid gives σ(2 A^z)
            blocks[:, :, k].mul_(2.0)
            weight2 = weight.clone()
            weight2[k * hidden : (k + 1) * hidden].mul_(2.0)
        wt = (weight2 if act_z else weight).t()
        hs = xw.new_empty(steps + 1, batch, hidden)
        cs = xw.new_empty(steps + 1, batch, hidden)
        hs[0].copy_(h0)
        cs[0].copy_(c0)
        tcs = xw.new_empty(steps, batch, hidden) if act_h else None  # h(c_t), kept for backward
        minus_one = torch.full((), -1.0, dtype=xw.dtype, device=xw.device)
        p_if, p_o = _peep_split(peep, layout)
        # per-step views, made once: slicing inside the loop costs a dispatch per slice
        rows, hts, cts = acts.unbind(0), hs.unbind(0), cs.unbind(0)
        cts_b = cs.unsqueeze(2).unbind(0)  # (B, 1, H): c_t against the (B, k, H) gate block
        gif = blocks[:, :, :k].unbind(0)
        sig = blocks[:, :, : k + act_z].unbind(0)  # the block under one sigmoid
        zs = blocks[:, :, k].unbind(0)
        os_ = blocks[:, :, k + 1].unbind(0) if has_o else None
        ins = blocks[:, :, 0].unbind(0) if has_i else None
        fs = blocks[:, :, int(has_i)].unbind(0) if has_f else None
        tcts = tcs.unbind(0) if act_h else None
        gs = None
        if gaterec is not None:
            gs = xw.new_empty(steps + 1, batch, gaterec.shape[0])  # a_{-1} .. a_{T-1}
            gs[0].copy_(g0)
            gts = gs.unbind(0)
            qt = gaterec.t()
            q_if, q_o = qt[:, : k * hidden], qt[:, k * hidden :]
            aif = acts[:, :, : k * hidden].unbind(0)
        for t in range(steps):
            a, h, c, c_new = rows[t], hts[t], cts[t], cts[t + 1]
            a.addmm_(h, wt)
            if gs is not None:
                if k:
                    aif[t].addmm_(gts[t], q_if)
                if has_o:
                    os_[t].addmm_(gts[t], q_o)
            if p_if is not None:
                gif[t].addcmul_(p_if, cts_b[t])
            if k + act_z:
                sig[t].sigmoid_()
            z = zs[t]
            if act_z:
                _two_s_minus_one(z, minus_one)
            if has_i and has_f:
                torch.mul(ins[t], z, out=c_new)
                c_new.addcmul_(fs[t], c)
            elif cifg:
                torch.lerp(c, z, ins[t], out=c_new)  # (1 - i) c + i z
            elif has_i:
                torch.addcmul(c, ins[t], z, out=c_new)
            elif has_f:
                torch.addcmul(z, fs[t], c, out=c_new)
            else:
                torch.add(c, z, out=c_new)
            if act_h:
                tc = torch.add(c_new, c_new, out=tcts[t]).sigmoid_()
                _two_s_minus_one(tc, minus_one)
            else:
                tc = c_new
            if has_o:
                o = os_[t]
                if p_o is not None:
                    o.addcmul_(p_o, c_new)
                o.sigmoid_()
                torch.mul(o, tc, out=hts[t + 1])
            else:
                hts[t + 1].copy_(tc)
            if gs is not None:
                torch.cat(([aif[t]] if k else []) + ([os_[t]] if has_o else []), 1, out=gts[t + 1])
        ctx.save_for_backward(acts, hs, cs, tcs, weight, peep, gaterec, gs)
        ctx.layout = layout
        if gaterec is None:
            return hs[1:], cs[-1]
        return hs[1:], cs[-1], gs[-1]

    @staticmethod
    def backward(ctx, grad_hs, grad_c, grad_g=None):
        acts, hs, cs, tcs, weight, peep, gaterec, gs = ctx.saved_tensors
        has_i, has_f, has_o, cifg, act_z, act_h = ctx.layout
        steps, batch, hidden = acts.shape[0], hs.shape[1], hs.shape[2]
        k = has_i + has_f
        blocks = acts.view(steps, batch, -1, hidden)
        p_if, p_o = _peep_split(peep, ctx.layout)
        # the factors K (docstring) in one buffer; the views that need no arithmetic alias
        # the activations, None means 1
        kbuf = acts.new_empty(steps, batch, k + 4, hidden)
        k_blk = kbuf[:, :, : k + 1]  # K^i, K^f, K^z
        k_o = kbuf[:, :, k + 1] if has_o else None
        k_c = kbuf[:, :, k + 2] if act_h or (has_o and p_o is not None) else None
        if k_c is None and has_o:
            k_c = blocks[:, :, k + 1]  # o_t
        k_prev = kbuf[:, :, k + 3] if p_if is not None or cifg else None
        if k_prev is None and has_f:
            k_prev = blocks[:, :, int(has_i)]  # f_t
        # the backward loop
        das = torch.empty_like(acts)
        dblocks = das.view(steps, batch, -1, hidden)
        da_rows = das.unbind(0)
        da_blk = dblocks[:, :, : k + 1].unbind(0)
        da_o = dblocks[:, :, k + 1].unbind(0) if has_o else None
        k_blks = k_blk.unbind(0)
        if grad_c is None:
            dc = torch.zeros_like(cs[0])
        else:
            dc = grad_c.clone(memory_format=torch.contiguous_format)  # δc, in place
        dc_b = dc.unsqueeze(1)  # (B, 1, H), against the (B, k + 1, H) block i, f, z
        dh_buf = torch.empty_like(cs[0])
        if grad_hs is None:
            grad_hs = torch.zeros_like(hs[1:])
        dg = None
        if gaterec is not None:
            n = gaterec.shape[0]
            dg = torch.zeros_like(gs[0]) if grad_g is None else grad_g.contiguous()
            g_d = torch.addcmul(gs[1:], gs[1:], gs[1:], value=-1.0)  # σ' of the a_t
            dgs = torch.empty_like(gs[0])  # δa_t σ'
            dgs_if = dgs[:, : k * hidden].view(batch, k, hidden)
            dgs_o = dgs[:, k * hidden :]
            q_if, q_o = gaterec[: k * hidden], gaterec[k * hidden :]
            da_if = das[:, :, : k * hidden].unbind(0)
            # δa_t σ' p of i, f: what the gate recurrence adds to δc_{t-1} through p_i, p_f
            peep_pieces = [] if p_if is None else list(zip(dgs_if.unbind(1), p_if, strict=True))
        # chunks of steps, last first: a chunk's factors are formed just before the loop
        # reaches it, while its activations are in cache
        chunk = max(1, FACTOR_CHUNK // (batch * hidden))
        tc_all = tcs if act_h else cs[1:]
        for lo in range((steps - 1) // chunk * chunk, -1, -chunk):
            hi = min(lo + chunk, steps)
            _lstm_factors(ctx.layout, kbuf[lo:hi], blocks[lo:hi], cs[lo:hi], tc_all[lo:hi],
                          p_if, p_o)  # fmt: skip
            for t in range(hi - 1, lo - 1, -1):
                if t == steps - 1:
                    dh = grad_hs[t]
                else:
                    dh = torch.addmm(grad_hs[t], da_rows[t + 1], weight, out=dh_buf)
                if dg is not None:
                    torch.mul(dg, g_d[t], out=dgs)
                if has_o:
                    if dg is None:
                        torch.mul(dh, k_o[t], out=da_o[t])
                    else:
                        torch.addcmul(dgs_o, dh, k_o[t], out=da_o[t])
                        if p_o is not None:
                            dc.addcmul_(dgs_o, p_o)
                if k_c is None:
                    dc.add_(dh)
                else:
                    dc.addcmul_(dh, k_c[t])
                torch.mul(dc_b, k_blks[t], out=da_blk[t])
                if dg is not None and k:
                    da_blk[t][:, :k].add_(dgs_if)
                if k_prev is not None:
                    dc.mul_(k_prev[t])
                if dg is not None:
                    for piece, row in peep_pieces:
                        dc.addcmul_(piece, row)
                    dg = torch.mm(da_if[t], q_if) if k else torch.zeros_like(dg)
                    if has_o:
                        dg.addmm_(da_o[t], q_o)
        dh0 = torch.mm(da_rows[0], weight)
        width = acts.shape[-1]
        flat = das.view(-1, width)
        dw = dpeep = dq = None
        if ctx.needs_input_grad[3]:
            dw = flat.t().mm(hs[:-1].reshape(-1, hidden))
        if peep is not None and ctx.needs_input_grad[4]:  # Σ δA c, the products into kbuf
            rows = []
            if p_if is not None:
                prod = torch.mul(dblocks[:, :, :k], cs[:-1].unsqueeze(2), out=kbuf[:, :, :k])
                rows.append(prod.sum((0, 1)))
            if p_o is not None:
                prod = torch.mul(dblocks[:, :, k + 1], cs[1:], out=kbuf[:, :, k + 1])
                rows.append(prod.sum((0, 1))[None])
            dpeep = torch.cat(rows)
        if gaterec is not None and ctx.needs_input_grad[5]:
            g_prev = gs[:-1].reshape(-1, n)
            parts = ([flat[:, : k * hidden]] if k else []) + (
                [flat[:, (k + 1) * hidden :]] if has_o else []
            )
            dq = torch.cat([part.t().mm(g_prev) for part in parts])
        return das, dh0, dc, dw, dpeep, dq, dg, None


FACTOR_CHUNK = 65536  # elements per gate block in one chunk of LstmFunction's factors


def _lstm_factors(layout, kbuf, blocks, c_prev, tc, p_if, p_o) -> None:
    """:class:`LstmFunction`'s backward factors ``K`` of a run of steps into ``kbuf``
    ``(n, B, k + 4, H)``: ``K^i, K^f, K^z, K^o, K^c, K^p`` (those that need arithmetic),
    from the activations ``blocks`` ``(n, B, G, H)``, ``c_{t-1}`` and ``h(c_t)``."""
    has_i, has_f, has_o, cifg, act_z, act_h = layout
    k = has_i + has_f
    z = blocks[:, :, k]
    one = torch.ones((), dtype=kbuf.dtype, device=kbuf.device)
    if k:
        s = blocks[:, :, :k]
        torch.addcmul(s, s, s, value=-1.0, out=kbuf[:, :, :k])  # σ'
        if has_i:
            kbuf[:, :, 0].mul_(z - c_prev if cifg else z)
        if has_f:
            kbuf[:, :, int(has_i)].mul_(c_prev)
    k_z = kbuf[:, :, k]
    if act_z:
        torch.addcmul(one, z, z, value=-1.0, out=k_z)
        if has_i:
            k_z.mul_(blocks[:, :, 0])
    elif has_i:
        k_z.copy_(blocks[:, :, 0])
    else:
        k_z.fill_(1.0)
    k_o, k_c = kbuf[:, :, k + 1], kbuf[:, :, k + 2]
    if has_o:
        o = blocks[:, :, k + 1]
        torch.addcmul(o, o, o, value=-1.0, out=k_o).mul_(tc)
        if act_h:
            torch.addcmul(one, tc, tc, value=-1.0, out=k_c).mul_(o)
        elif p_o is not None:
            k_c.copy_(o)
        if p_o is not None:
            k_c.addcmul_(k_o, p_o)
    elif act_h:
        torch.addcmul(one, tc, tc, value=-1.0, out=k_c)
    k_prev = kbuf[:, :, k + 3]
    if cifg:
        torch.sub(one, blocks[:, :, 0], out=k_prev)  # f = 1 - i
    if p_if is not None:
        forget = k_prev if cifg else (blocks[:, :, int(has_i)] if has_f else one)
        torch.addcmul(forget, kbuf[:, :, 0], p_if[0], out=k_prev)
        if k == 2:
            k_prev.addcmul_(kbuf[:, :, 1], p_if[1])


def _two_s_minus_one(s: Tensor, minus_one: Tensor) -> Tensor:
    """``s <- 2 s - 1`` in place (``tanh(x) = 2 σ(2x) - 1`` from ``s = σ(2x)``); ``minus_one``
    is a 0-dim tensor: a Python scalar operand would cost a dtype conversion per call."""
    return torch.add(minus_one, s, alpha=2.0, out=s)


def _gate_slices(layout, hidden: int) -> dict[str, slice]:
    has_i, has_f, has_o = layout[0], layout[1], layout[2]
    names = [n for n, present in (("i", has_i), ("f", has_f), ("z", True), ("o", has_o)) if present]
    return {n: slice(k * hidden, (k + 1) * hidden) for k, n in enumerate(names)}


def _peep_split(peep, layout):
    """Peephole rows as ``(p_if (k, H), p_o (H,))``: those of the gates before ``z``
    (``i``, ``f``, the present ones) and the output gate's (``None`` where absent)."""
    if peep is None:
        return None, None
    k = layout[0] + layout[1]
    return (peep[:k] if k else None), (peep[k] if layout[2] else None)


def lstm_loop(xw, h0, c0, weight, peep, layout, gaterec=None, g0=None):
    """Run :class:`LstmFunction`; returns ``(hs (T, B, H), (h_T, c_T[, a_T]))``."""
    if gaterec is None:
        hs, c_n = LstmFunction.apply(xw, h0, c0, weight, peep, None, None, tuple(layout))
        return hs, (hs[-1], c_n)
    hs, c_n, g_n = LstmFunction.apply(xw, h0, c0, weight, peep, gaterec, g0, tuple(layout))
    return hs, (hs[-1], c_n, g_n)
