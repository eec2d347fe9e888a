"""SGD with Nesterov's accelerated gradient and a momentum schedule (``optim=nesterov``).

Sutskever, Martens, Dahl & Hinton 2013 (SMDH13) train deep autoencoders and RNNs with
momentum whose coefficient ``μ`` follows a schedule. :class:`NesterovSGD` is torch's
:class:`torch.optim.SGD` (``nesterov=True``) whose ``momentum`` is set, before every update,
from :class:`MomentumSchedule` at ``t``, the number of updates made so far. ``t`` lives in
each parameter group (``"updates"``), so it is saved with the optimizer's state in the
checkpoint and ``train.resume`` continues the schedule exactly; the schedule itself is a pure
function of ``t`` and the config.

The update, torch's form of NAG (SMDH13's eqs. 3-4 rewritten at the look-ahead point
``θ + μ v``, as in Bengio, Boulanger-Lewandowski & Pascanu 2013):

.. math::
    b_t = μ_t b_{t-1} + g_t, \\qquad θ_t = θ_{t-1} - ε (g_t + μ_t b_t)

with ``b_0 = g_1`` (classical momentum, ``nesterov=False``: ``θ_t = θ_{t-1} - ε b_t``). For
constant ``μ`` and ``ε`` it is SMDH13's NAG step for step; while ``μ`` changes, the
look-ahead uses ``μ_t`` where the paper's uses ``μ_{t+1}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rnnexp.errors import RnnexpError

SCHEDULES = ("sutskever", "rnn", "constant")
RAMP = 250  # SMDH13 eq. 5: μ rises every 250 updates
Schedule = Literal["sutskever", "rnn", "constant"]


def sutskever_momentum(t: int, momentum_max: float) -> float:
    """SMDH13's eq. 5: ``μ_t = min(1 - 2^(-1 - log2(⌊t/250⌋ + 1)), μ_max)``.

    ``1 - 2^(-1 - log2 k) = 1 - 1/(2k)`` with ``k = ⌊t/250⌋ + 1``: 0.5 for ``t < 250``,
    0.75 up to 500, 0.833 up to 750, ..., 0.99 from ``t = 12250``, 0.995 from 24750,
    0.999 from 124750 (Nesterov 1983's ``1 - 3/(t + 5)``, stretched, up to a cap)."""
    k = t // RAMP + 1
    return min(1.0 - 2.0 ** (-1.0 - math.log2(k)), momentum_max)


@dataclass(frozen=True)
class MomentumSchedule:
    """``μ`` as a function of the number of updates made, ``t = 0, 1, ...``.

    Args:
        kind: ``sutskever``: SMDH13's eq. 5 up to ``momentum_max`` (their autoencoders,
            ``μ_max`` in {0.9, 0.99, 0.995, 0.999}); ``rnn``: ``warmup_momentum`` for the
            first ``warmup_steps`` updates, then ``momentum_max`` (their RNNs, §4.2: 0.9 for
            1000 updates, then ``μ_0`` in {0, 0.9, 0.98, 0.995}); ``constant``:
            ``momentum_max`` throughout.
        momentum_max: ``μ_max`` (``μ_0``), in ``[0, 1)``.
        warmup_steps, warmup_momentum: the ``rnn`` schedule's first phase.
        final_from: from this update on (``t >= final_from``) ``μ`` is at most
            ``final_momentum`` (SMDH13 §3: 0.9 for the last 1000 updates, without changing
            the learning rate; ``μ = 0`` stays 0); ``None``: no final phase.
        final_momentum: ``μ`` of the final phase.
    """

    kind: str = "sutskever"
    momentum_max: float = 0.99
    warmup_steps: int = 1000
    warmup_momentum: float = 0.9
    final_from: int | None = None
    final_momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise RnnexpError(
                f"optim.schedule={self.kind!r}; choose one of: {', '.join(SCHEDULES)}"
            )
        for key in ("momentum_max", "warmup_momentum", "final_momentum"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise RnnexpError(
                    f"optim.{key}={value} is a momentum coefficient; give one in [0, 1), "
                    "e.g. 0.9 or 0.99"
                )
        if self.warmup_steps < 0:
            raise RnnexpError(f"optim.warmup_steps={self.warmup_steps} must be >= 0")
        if self.final_from is not None and self.final_from < 0:
            raise RnnexpError(
                f"optim.final_from={self.final_from} must be >= 0 (the update from which "
                "μ = optim.final_momentum, e.g. train.max_steps - 1000), or null"
            )

    def __call__(self, t: int) -> float:
        """``μ`` for the update made after ``t`` earlier ones."""
        if self.kind == "sutskever":
            mu = sutskever_momentum(t, self.momentum_max)
        elif self.kind == "rnn" and t < self.warmup_steps:
            mu = self.warmup_momentum
        else:  # rnn after its warm-up, constant
            mu = self.momentum_max
        if self.final_from is not None and t >= self.final_from:
            mu = min(mu, self.final_momentum)
        return mu


class NesterovSGD(torch.optim.SGD):
    r"""SGD with Nesterov (or classical) momentum whose ``μ`` follows a
    :class:`MomentumSchedule`, set in every parameter group before each update; the
    group's ``"updates"`` counts the updates made (see the module docstring).

    Args:
        params: the parameters (or parameter groups) to optimize.
        lr: ``ε`` (SMDH13's RNNs: the best of {1e-3, 1e-4, 1e-5, 1e-6}; a ``sched``
            still scales it).
        schedule, momentum_max, warmup_steps, warmup_momentum, final_from,
            final_momentum: the :class:`MomentumSchedule`.
        nesterov: NAG (``True``) or classical momentum (``False``, SMDH13's "CM").
        weight_decay: L2 penalty added to the gradient (SMDH13: none).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        schedule: Schedule = "sutskever",
        momentum_max: float = 0.99,
        warmup_steps: int = 1000,
        warmup_momentum: float = 0.9,
        final_from: int | None = None,
        final_momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
    ) -> None:
        self.schedule = MomentumSchedule(
            schedule, momentum_max, warmup_steps, warmup_momentum, final_from, final_momentum
        )
        first = self.schedule(0)
        # torch refuses nesterov=True with μ = 0; μ_max = 0 is plain SGD either way
        super().__init__(params, lr=lr, momentum=first, nesterov=nesterov and first > 0,
                         weight_decay=weight_decay)  # fmt: skip
        for group in self.param_groups:
            group.setdefault("updates", 0)
            group["nesterov"] = bool(nesterov) and momentum_max > 0.0

    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Set each group's ``momentum`` to ``μ_t``, make one SGD update, count it."""
        for group in self.param_groups:
            group["momentum"] = self.schedule(group["updates"])
        loss = super().step(closure)
        for group in self.param_groups:
            group["updates"] += 1
        return loss
