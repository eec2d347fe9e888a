"""The CRF layer against brute force: every tag sequence of a tiny example enumerated."""

from __future__ import annotations

import itertools

import torch

from rnnexp.nn.crf import CRF


def path_score(crf: CRF, emissions: torch.Tensor, path: list[int]) -> torch.Tensor:
    """s(y) of one tag sequence, straight from the definition."""
    s = crf.start[path[0]] + crf.end[path[-1]]
    s = s + sum(emissions[t, k] for t, k in enumerate(path))
    return s + sum(crf.transitions[a, b] for a, b in itertools.pairwise(path))


def brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> tuple[torch.Tensor, list[int]]:
    """log Z and the best path of one sequence ``(T, K)``, over all K^length tag sequences."""
    paths = [list(p) for p in itertools.product(range(crf.num_tags), repeat=length)]
    scores = torch.stack([path_score(crf, emissions, p) for p in paths])
    return torch.logsumexp(scores, 0), paths[int(scores.argmax())]


def tiny_example() -> tuple[CRF, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    crf = CRF(num_tags=3)
    with torch.no_grad():  # away from the init, so that start/end/transitions all matter
        crf.transitions.normal_()
        crf.start.normal_()
        crf.end.normal_()
    emissions = torch.randn(3, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    return crf, emissions, mask


def test_log_partition_and_viterbi_equal_brute_force() -> None:
    crf, emissions, mask = tiny_example()
    log_z = crf.log_partition(emissions, mask)
    paths = crf.decode(emissions, mask)
    for b, length in enumerate(mask.sum(1).tolist()):
        expected_z, expected_path = brute_force(crf, emissions[b], length)
        torch.testing.assert_close(log_z[b], expected_z)
        assert paths[b] == expected_path


def test_score_of_a_path_and_nll_is_a_negative_log_probability() -> None:
    crf, emissions, mask = tiny_example()
    tags = torch.tensor([[0, 2, 1, 1], [2, 2, -100, -100], [1, -100, -100, -100]])
    nll = crf.nll(emissions, tags, mask)
    for b, length in enumerate(mask.sum(1).tolist()):
        path = tags[b, :length].tolist()
        s = path_score(crf, emissions[b], path)
        torch.testing.assert_close(crf.score(emissions, tags, mask)[b], s)
        log_z, _ = brute_force(crf, emissions[b], length)
        torch.testing.assert_close(nll[b], log_z - s)
    assert (nll > 0).all()  # -log p(y) of a proper distribution
    nll.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in crf.parameters())


def test_padding_changes_nothing() -> None:
    crf, emissions, mask = tiny_example()
    padded = torch.cat([emissions, torch.randn(3, 2, 3) * 100], dim=1)  # junk at the end
    padded_mask = torch.cat([mask, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(
        crf.log_partition(padded, padded_mask), crf.log_partition(emissions, mask)
    )
    assert crf.decode(padded, padded_mask) == crf.decode(emissions, mask)
