"""The model: encoders, heads, variable lengths, bidirectional read-out."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rnnexp.cells import create
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import OneHot, SequenceModel, build_model
from rnnexp.tasks.timer import TimerTask


def test_every_step_head_on_the_timer() -> None:
    cfg = OmegaConf.create(
        {
            "cell": {"_target_": "rnnexp.cells.create", "name": "lstm"},
            "model": {"hidden_size": 6, "num_layers": 2, "dropout": 0.1, "bidirectional": True,
                      "embedding_size": 4},
        }
    )  # fmt: skip
    model = build_model(cfg, TimerTask().setup())
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


def weight_dropped_model(cell: str, weight_drop: float, **options) -> SequenceModel:
    torch.manual_seed(0)
    rnn = create(cell, 3, 20, **options)
    directions = 2 if options.get("bidirectional") else 1
    head = nn.Linear(20 * directions, 1)
    return SequenceModel(nn.Identity(), rnn, head, "every_step", directions == 2, 0.0,
                         weight_drop=weight_drop)  # fmt: skip


def test_weight_drop_masks_each_recurrent_weight_once_per_batch() -> None:
    model = weight_dropped_model("lstm", 0.5, num_layers=2)
    x = torch.randn(4, 12, 3)
    plain, _ = model.rnn(x)
    model.eval()
    torch.testing.assert_close(model.recur(x)[0], plain)  # no mask outside training
    model.train()
    hidden, _ = model.recur(x)
    assert not torch.allclose(hidden, plain)
    hidden.sum().backward()
    for layer in (0, 1):
        # One mask for all 12 steps: a dropped entry of W_hh gets no gradient at all,
        # whereas a fresh mask per step would leave almost none exactly zero.
        dropped = (getattr(model.rnn, f"weight_hh_l{layer}").grad == 0).float().mean().item()
        assert 0.4 < dropped < 0.6
        assert (getattr(model.rnn, f"weight_ih_l{layer}").grad != 0).all()
    # The parameters keep torch's names: checkpoints and samplers are unchanged.
    expected = {f"rnn.{name}" for name in model.rnn.state_dict()} | {"head.weight", "head.bias"}
    expected |= {"temperature"}  # the read-out's buffer (1 unless calibrated)
    assert set(model.state_dict()) == expected


def test_weight_drop_on_padded_sequences_and_hand_written_cells() -> None:
    for cell, options in [("gru", {"bidirectional": True}), ("gru_minimal", {})]:
        model = weight_dropped_model(cell, 0.5, **options)
        lengths = torch.tensor([12, 7, 3])
        hidden, _ = model.recur(torch.randn(3, 12, 3), lengths=lengths)
        hidden.sum().backward()
        dropped = (model.rnn.weight_hh_l0.grad == 0).float().mean().item()
        assert 0.4 < dropped < 0.6, cell


def test_weight_drop_errors() -> None:
    with pytest.raises(RnnexpError, match=r"model.weight_drop=1.0; use a fraction"):
        weight_dropped_model("lstm", 1.0)
    model = weight_dropped_model("elman", 0.3)
    with pytest.raises(RnnexpError, match="not with regularizer=pascanu or clip=hidden"):
        model.recur_steps(torch.randn(2, 5, 3))
    model.eval()  # diagnostics run the steps in eval mode: no mask, no error
    assert model.recur_steps(torch.randn(2, 5, 3))[0].shape == (2, 5, 20)
