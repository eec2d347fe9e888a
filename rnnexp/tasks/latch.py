"""Long-lag information latching (Bengio, Simard & Frasconi 1994; Hochreiter &
Schmidhuber 1997, experiment 3a, the "2-sequence problem").

A sequence belongs to one of two classes. Its first ``info_steps`` inputs carry the class
(+1 for class 1, -1 for class 0); then ``lag`` steps of Gaussian noise follow. At the
last step the net must output the class: target 1 or 0. A sequence counts as correct when
the absolute error at the last step is below ``tolerance`` (HS97: 0.2). See
``tasks/latch/README.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch, SyntheticTask


class LatchTask(SyntheticTask):
    """Many-to-one regression: inputs ``(B, info_steps + lag, 1)``, targets ``(B, 1)``.

    Args:
        lag: noise steps after the information (``T``).
        info_steps: steps that carry the class (``N`` in HS97, ``L`` in Bengio 1994).
        noise: standard deviation of the noise (HS97: 0.2).
        info_noise: whether the noise is also added to the information steps (Bengio's
            form adds it everywhere; HS97 3a keeps the first steps clean).
        tolerance: largest absolute error at the last step that counts as correct.
        solved_error_rate: the run counts as solved when the test error rate is below it.
        seed, num_val, num_test, eval_batch_size: the fixed held-out sets.
    """

    name = "latch"
    encoder = "linear"
    input_size = 1
    output_size = 1
    head = "last_step"
    metric = "error_rate"
    metric_mode = "min"
    diagnostics = True

    def __init__(
        self,
        lag: int = 100,
        info_steps: int = 3,
        noise: float = 0.2,
        info_noise: bool = False,
        tolerance: float = 0.2,
        solved_error_rate: float = 0.01,
        seed: int = 1234,
        num_val: int = 512,
        num_test: int = 2000,
        eval_batch_size: int = 500,
        name: str = "latch",
    ) -> None:
        super().__init__(seed, num_val, num_test, eval_batch_size)
        if lag < 0 or info_steps < 1:
            raise RnnexpError(f"task.lag={lag} must be >= 0 and task.info_steps={info_steps} >= 1")
        self.lag, self.info_steps, self.noise = lag, info_steps, noise
        self.info_noise = info_noise
        self.tolerance, self.solved_error_rate = tolerance, solved_error_rate

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        steps = self.info_steps + self.lag
        label = torch.randint(0, 2, (batch_size, 1), generator=generator).float()  # (B, 1)
        inputs = self.noise * torch.randn(batch_size, steps, generator=generator)
        if not self.info_noise:
            inputs[:, : self.info_steps] = 0.0
        inputs[:, : self.info_steps] += 2 * label - 1  # +1 for class 1, -1 for class 0
        return Batch(inputs=inputs.unsqueeze(-1), targets=label)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.mse_loss(output, batch.targets)

    def score(self, outputs: list[Tensor], batches: list[Batch]) -> dict[str, float]:
        prediction = torch.cat(outputs)
        target = torch.cat([b.targets for b in batches])
        wrong = ((prediction - target).abs() >= self.tolerance).float().mean().item()
        return {
            "loss": F.mse_loss(prediction, target).item(),
            "error_rate": wrong,
            "accuracy": 1.0 - wrong,
            "solved": float(wrong < self.solved_error_rate),
        }
