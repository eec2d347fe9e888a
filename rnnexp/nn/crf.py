"""Linear-chain conditional random field: the output layer of a tagger (``model.crf=true``).

A tagger with a CRF scores whole tag sequences instead of each tag on its own (Lafferty et
al. 2001; with a BiLSTM: Huang et al. 2015, Lample et al. 2016). For emissions
``e_t(k)`` (the recurrent net's score of tag ``k`` at step ``t``) and tags ``y``:

    s(y) = start[y_0] + sum_t e_t(y_t) + sum_{t>0} trans[y_{t-1}, y_t] + end[y_{T-1}]
    p(y | x) = exp s(y) / Z,  log Z = logsumexp over all K^T tag sequences of s(y)

Training minimizes ``log Z - s(gold)``; ``log Z`` comes from the forward algorithm in
``O(T K^2)``. Prediction is the highest-scoring sequence, found by Viterbi. The learned
transitions let the net avoid sequences such as ``O I-PER``.

Every method takes a ``mask`` ``(B, T)`` of valid steps (each sequence a prefix of at
least one step): padded steps leave the recursions unchanged, so padding never changes a
score or a path.

A model with a CRF outputs :class:`CRFScores`: the emissions with the CRF that reads them,
so that a task's loss and decoding need nothing but the model's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    """Transition scores ``trans[i, j]`` (tag ``i`` then ``j``), start and end scores.

    Args:
        num_tags: ``K``.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """``s(tags)`` ``(B,)`` for emissions ``(B, T, K)``, tags ``(B, T)``, mask ``(B, T)``.

        Tags at padded steps may hold anything (e.g. -100); they are not read.
        """
        tags = tags.masked_fill(~mask, 0)
        mask = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
        moves = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, T - 1)
        last = tags.gather(1, mask.sum(1).long().sub(1).unsqueeze(1)).squeeze(1)  # (B,)
        return (
            self.start[tags[:, 0]]
            + (emitted * mask).sum(1)
            + (moves * mask[:, 1:]).sum(1)
            + self.end[last]
        )

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """``log Z`` ``(B,)`` by the forward algorithm."""
        alpha = self.start + emissions[:, 0]  # (B, K): log-sum of paths ending in each tag
        for t in range(1, emissions.shape[1]):
            # (B, K, 1) + (K, K) + (B, 1, K) -> sum over the previous tag (dim 1)
            step = torch.logsumexp(
                alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1
            )
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood ``log Z - s(tags)`` of each sequence, ``(B,)``."""
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """The best tag sequence of each example (Viterbi), as many tags as its length."""
        best = self.start + emissions[:, 0]  # (B, K): best score of a path ending in each tag
        back = []  # back[t - 1][b, k]: the previous tag on the best path to tag k at step t
        for t in range(1, emissions.shape[1]):
            scores, previous = (best.unsqueeze(2) + self.transitions).max(dim=1)
            back.append(previous)
            best = torch.where(mask[:, t].unsqueeze(1), scores + emissions[:, t], best)
        best = best + self.end
        lengths = mask.sum(1).tolist()
        last = best.argmax(1).tolist()
        back_cpu = torch.stack(back, dim=1).cpu() if back else None  # (B, T - 1, K)
        paths = []
        for b, length in enumerate(lengths):
            path = [last[b]]
            for t in range(length - 1, 0, -1):
                path.append(int(back_cpu[b, t - 1, path[-1]]))
            paths.append(path[::-1])
        return paths


@dataclass(frozen=True, eq=False)
class CRFScores:
    """The output of a tagger with a CRF read-out (``model.crf=true``): the head's
    per-step tag scores ``emissions`` ``(B, T, K)`` and the model's :class:`CRF`, which
    scores and decodes whole tag sequences from them."""

    emissions: Tensor
    crf: CRF

    def nll(self, tags: Tensor, mask: Tensor) -> Tensor:
        """:meth:`CRF.nll` of ``tags`` ``(B, T)`` over the valid steps ``mask``: ``(B,)``."""
        return self.crf.nll(self.emissions, tags, mask)

    def decode(self, mask: Tensor) -> list[list[int]]:
        """:meth:`CRF.decode`: the best tag sequence of each example (Viterbi)."""
        return self.crf.decode(self.emissions, mask)
