"""Jaeger's timer (seed 002; Jaeger 2002, tutorial on training recurrent networks).

Two inputs per step: ``u1`` spikes to 1 at the step where the timer starts, ``u2`` is a
duration setting in [0.1, 1.0], drawn afresh at every step (or, with
``u2_changes=at_starts``, held from one start to the next); the value at the start step
counts. The target is 0.5 for ``round(max_duration * u2)`` steps beginning at the start
step and 0 elsewhere. Starts fall at random, separated by more than ``max_duration``
steps, so pulses never overlap. See ``tasks/timer/README.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp import plots
from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch, SyntheticTask, eval_mode

ON_VALUE = 0.5


class TimerTask(SyntheticTask):
    """Sequence-to-sequence regression: inputs ``(B, T, 2)``, targets ``(B, T, 1)``.

    Args:
        max_duration: longest pulse in steps (the seed uses 1000).
        seq_len: steps per sequence; ``None`` gives ``5 * max_duration``.
        max_gap: largest distance between two starts; ``None`` gives ``3 * max_duration``.
            The smallest is ``max_duration + 1``.
        seed, num_val, num_test, eval_batch_size: the fixed held-out sets.
        num_plot: test sequences drawn in the target-vs-prediction figure.
        u2_changes: ``every_step`` draws ``u2`` afresh at every step, so the net must latch
            the value at the start; ``at_starts`` holds it from one start to the next.
    """

    name = "timer"
    encoder = "linear"
    input_size = 2
    output_size = 1
    head = "every_step"
    metric = "nrmse"
    metric_mode = "min"

    def __init__(
        self,
        max_duration: int = 20,
        seq_len: int | None = None,
        max_gap: int | None = None,
        seed: int = 1234,
        num_val: int = 256,
        num_test: int = 1000,
        eval_batch_size: int = 256,
        num_plot: int = 3,
        u2_changes: str = "every_step",
        name: str = "timer",
    ) -> None:
        super().__init__(seed, num_val, num_test, eval_batch_size)
        if max_duration < 1:
            raise RnnexpError(f"task.max_duration must be >= 1, got {max_duration}")
        self.max_duration = max_duration
        self.seq_len = seq_len if seq_len is not None else 5 * max_duration
        self.min_gap = max_duration + 1
        self.max_gap = max_gap if max_gap is not None else 3 * max_duration
        if self.max_gap < self.min_gap:
            raise RnnexpError(
                f"task.max_gap={self.max_gap} must exceed task.max_duration={max_duration}"
            )
        if self.seq_len <= max_duration:
            raise RnnexpError(
                f"task.seq_len={self.seq_len} must exceed task.max_duration={max_duration} "
                "so that a whole pulse fits; raise task.seq_len or leave it null"
            )
        self.num_plot = num_plot
        if u2_changes not in ("every_step", "at_starts"):
            raise RnnexpError(
                f"task.u2_changes={u2_changes!r}; choose every_step (the value at the start "
                "must be latched) or at_starts (u2 holds its value from one start to the next)"
            )
        self.u2_changes = u2_changes

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        n, steps, longest = batch_size, self.seq_len, self.max_duration
        # Start times: a first start in [0, longest), then gaps in [min_gap, max_gap].
        most_starts = steps // self.min_gap + 1
        gaps = torch.randint(self.min_gap, self.max_gap + 1, (n, most_starts), generator=generator)
        first = torch.randint(0, longest, (n, 1), generator=generator)
        starts = first + gaps.cumsum(1) - gaps[:, :1]  # (n, most_starts), increasing
        valid = starts < steps
        starts = starts.clamp(max=steps - 1)  # invalid ones are masked below
        u1 = torch.zeros(n, steps).scatter_add_(1, starts, valid.float())  # adds 0 for invalid
        if self.u2_changes == "every_step":
            u2 = 0.1 + 0.9 * torch.rand(n, steps, generator=generator)
        else:  # "at_starts": one value from each start until the next
            values = 0.1 + 0.9 * torch.rand(n, most_starts + 1, generator=generator)
            u2 = values.gather(1, u1.cumsum(1).long())  # starts seen so far picks the value
        durations = (longest * u2.gather(1, starts)).round().long().clamp(min=1)
        # Pulses as +1 at the start and -1 at the end of an accumulator: (n, steps + 1).
        edges = torch.zeros(n, steps + 1)
        edges.scatter_add_(1, starts, valid.float())
        edges.scatter_add_(1, (starts + durations).clamp(max=steps), -valid.float())
        target = ON_VALUE * (edges.cumsum(1)[:, :steps] > 0.5).float()
        inputs = torch.stack([u1, u2], dim=-1)  # (n, steps, 2)
        return Batch(inputs=inputs, targets=target.unsqueeze(-1))

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.mse_loss(output, batch.targets)

    def score(self, outputs: list[Tensor], batches: list[Batch]) -> dict[str, float]:
        prediction = torch.cat(outputs)
        target = torch.cat([b.targets for b in batches])
        mse = F.mse_loss(prediction, target).item()
        return {
            "loss": mse,
            "mse": mse,
            "nrmse": mse**0.5 / target.std().item(),  # RMSE / std of the target
        }

    def figures(self, model: nn.Module, device: torch.device) -> dict:
        """The seed's picture: target (blue) and prediction (orange) on test sequences."""
        batch = self.held_out("test")[0]
        count = min(self.num_plot, batch.inputs.shape[0])
        shown = Batch(batch.inputs[:count], batch.targets[:count])
        with eval_mode(model), torch.no_grad():
            prediction, _ = model(shown.inputs.to(device))
        fig, axes = plots.new_figure(rows=count)
        steps = torch.arange(self.seq_len)
        for i, ax in enumerate(axes):
            starts = shown.inputs[i, :, 0].nonzero().flatten()
            ax.vlines(starts, -0.1, 0.0, color="gray", lw=1, label="start (u1)")
            ax.plot(steps, shown.inputs[i, :, 1], color="gray", lw=0.5, alpha=0.4, label="u2")
            ax.plot(steps, shown.targets[i, :, 0], color=plots.TARGET_COLOR, label="target")
            ax.plot(
                steps, prediction[i, :, 0].cpu(), color=plots.PREDICTION_COLOR, label="prediction"
            )
            ax.set_ylim(-0.15, 1.05)
            ax.set_ylabel(f"test seq {i}")
        axes[0].legend(loc="upper right", ncol=4, fontsize="small")
        axes[0].set_title(f"Jaeger timer, max_duration={self.max_duration}")
        axes[-1].set_xlabel("time step")
        return {"timer": fig}
