"""Long-lag information latching (Bengio, Simard & Frasconi 1994; Hochreiter &
Schmidhuber 1997, experiment 3a, the "2-sequence problem").

A sequence belongs to one of two classes, ``c`` in {0, 1} with probability 1/2 each. With
``N = info_steps``, ``l = N + lag`` steps and noise ``n_t ~ N(0, noise_variance)``::

    x_t = 2c - 1          for t < N   (+ n_t with info_noise=true)
    x_t = n_t             for N <= t < l
    y   = c               read at the last step, t = l - 1

HS97 exp. 3a draws the noise with variance 0.2 (std 0.447), the default here. With
``variable_length=true`` the total length ``l`` is drawn per batch from the integers in
``[T, T + T/10]``, ``T = N + lag`` (HS97's "random length between T and T + T/10").
A sequence counts as correct when ``|y_hat - y| < tolerance`` at the last step (HS97:
0.2). See ``tasks/latch/README.md``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch, SyntheticTask
from rnnexp.tasks.pascanu import draw_hs97_length

HS97_NOISE_VARIANCE = 0.2  # HS97 exp. 3a: "Gaussian with mean zero and variance 0.2"


class LatchTask(SyntheticTask):
    """Many-to-one regression: inputs ``(B, l, 1)``, targets ``(B, 1)``; ``l = info_steps +
    lag``, or drawn from ``[T, T + T/10]`` with ``variable_length``.

    Args:
        lag: noise steps after the information (HS97's ``T`` is the total length,
            ``info_steps + lag``).
        info_steps: steps that carry the class (``N`` in HS97, ``L`` in Bengio 1994).
        noise_variance: variance of the Gaussian noise (HS97 exp. 3a: 0.2; the noise's
            standard deviation is its square root).
        variable_length: draw each batch's total length uniformly from the integers in
            ``[T, T + T/10]``, ``T = info_steps + lag`` (HS97); ``False``: exactly ``T``.
        info_noise: whether the noise is also added to the information steps (Bengio's
            form adds it everywhere, as does HS97 3b; HS97 3a keeps the first steps clean).
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
        noise_variance: float = HS97_NOISE_VARIANCE,
        variable_length: bool = False,
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
        if noise_variance < 0:
            raise RnnexpError(f"task.noise_variance={noise_variance} must be >= 0")
        self.lag, self.info_steps = lag, info_steps
        self.noise_variance = noise_variance
        self.noise_std = math.sqrt(noise_variance)
        self.variable_length, self.info_noise = variable_length, info_noise
        self.tolerance, self.solved_error_rate = tolerance, solved_error_rate

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        steps = self.info_steps + self.lag
        if self.variable_length:
            steps = draw_hs97_length(steps, generator)
        label = torch.randint(0, 2, (batch_size, 1), generator=generator).float()  # (B, 1)
        inputs = self.noise_std * torch.randn(batch_size, steps, generator=generator)
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
