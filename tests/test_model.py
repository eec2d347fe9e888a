"""The model: encoders, heads, variable lengths, bidirectional read-out."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn

from rnnexp.model import OneHot, SequenceModel, build_model
from rnnexp.tasks.timer import TimerTask


def test_every_step_head_on_the_timer() -> None:
    cfg = OmegaConf.create(
        {
            "cell": {"_target_": "rnnexp.cells.create", "name": "lstm"},
            "model": {"hidden_size": 6, "num_layers": 2, "dropout": 0.1, "bidirectional": True,
                      "embedding_size": 4},
        }
    )  # fmt: skip
    model = build_model(cfg, TimerTask())
    output, (h, c) = model(torch.randn(3, 11, 2))
    assert output.shape == (3, 11, 1) and h.shape == (4, 3, 6)
    assert model.rnn.weight_ih_l1.shape == (24, 12)  # layer 2 reads both directions


def test_last_step_head_reads_each_sequence_at_its_length() -> None:
    torch.manual_seed(0)
    rnn = nn.GRU(3, 4, batch_first=True, bidirectional=True)
    model = SequenceModel(nn.Identity(), rnn, nn.Linear(8, 2), "last_step", True, 0.0)
    x = torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 4])
    out, _ = model(x, lengths=lengths)
    seq_out, _ = rnn(x[1:, :4])  # the second sequence alone, without its padding
    expected_forward = seq_out[0, 3, :4]
    features = model.head.weight
    assert out.shape == (2, 2)
    # Forward half at step lengths-1 of the padded run equals the unpadded run.
    padded_out, _ = rnn(x)
    torch.testing.assert_close(padded_out[1, 3, :4], expected_forward)
    assert features.shape == (2, 8)


def test_onehot_encoder() -> None:
    encoded = OneHot(5)(torch.tensor([[0, 4]]))
    assert encoded.shape == (1, 2, 5) and encoded.sum() == 2
