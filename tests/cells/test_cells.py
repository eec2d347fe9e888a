"""elman, lstm and gru are torch's modules: same outputs, states and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnexp import cells
from rnnexp.errors import RnnexpError

TORCH_MODULES = {"elman": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@pytest.mark.parametrize("name", sorted(TORCH_MODULES))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_equals_torch_module_with_copied_weights(name: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    reference = TORCH_MODULES[name](3, 5, num_layers=2, bidirectional=bidirectional)
    cell = cells.create(name, 3, 5, num_layers=2, bidirectional=bidirectional)
    cell.load_state_dict(reference.state_dict())  # torch's parameter names load unchanged

    x = torch.randn(4, 7, 3)  # (B, T, I)
    x_ref = x.clone().requires_grad_()
    x_cell = x.clone().requires_grad_()
    out_ref, state_ref = reference(x_ref.transpose(0, 1))  # torch's default is (T, B, I)
    out_cell, state_cell = cell(x_cell)

    directions = 2 if bidirectional else 1
    assert out_cell.shape == (4, 7, 5 * directions)
    torch.testing.assert_close(out_cell, out_ref.transpose(0, 1), atol=1e-5, rtol=0)
    for a, b in zip(
        state_cell if isinstance(state_cell, tuple) else (state_cell,),
        state_ref if isinstance(state_ref, tuple) else (state_ref,),
        strict=True,
    ):
        assert a.shape == (2 * directions, 4, 5)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    (out_ref.pow(2).sum() + sum(s.sum() for s in _tuple(state_ref))).backward()
    (out_cell.pow(2).sum() + sum(s.sum() for s in _tuple(state_cell))).backward()
    torch.testing.assert_close(x_cell.grad, x_ref.grad, atol=1e-5, rtol=0)
    for (n_ref, p_ref), (n_cell, p_cell) in zip(
        reference.named_parameters(), cell.named_parameters(), strict=True
    ):
        assert n_ref == n_cell
        torch.testing.assert_close(p_cell.grad, p_ref.grad, atol=1e-5, rtol=0)


def _tuple(state):
    return state if isinstance(state, tuple) else (state,)


def test_state_is_carried() -> None:
    cell = cells.create("lstm", 2, 4)
    x = torch.randn(3, 10, 2)
    whole, _ = cell(x)
    first, state = cell(x[:, :6])
    second, _ = cell(x[:, 6:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)


def test_lstm_forget_bias() -> None:
    cell = cells.create("lstm", 2, 4, forget_bias=1.0)
    assert torch.all(cell.bias_ih_l0[4:8] == 1.0) and torch.all(cell.bias_hh_l0[4:8] == 0.0)


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_update_bias(reset_after: bool) -> None:
    cell = cells.create("gru", 2, 4, num_layers=2, reset_after=reset_after, update_bias=3.0)
    for layer in (0, 1):  # gate order r, z, n: rows 4:8 are the update gate
        assert torch.all(getattr(cell, f"bias_ih_l{layer}")[4:8] == 3.0)
        assert torch.all(getattr(cell, f"bias_hh_l{layer}")[4:8] == 0.0)
    untouched = cells.create("gru", 2, 4, reset_after=reset_after)
    assert not torch.all(untouched.bias_ih_l0[4:8] == 3.0)


def test_elman_relu() -> None:
    cell = cells.create("elman", 2, 4, nonlinearity="relu")
    out, _ = cell(torch.randn(1, 5, 2))
    assert (out >= 0).all()


def test_unknown_cell_and_option_are_one_line_errors() -> None:
    with pytest.raises(RnnexpError, match="unknown cell 'nope'; choose one of: .*gru"):
        cells.create("nope", 2, 4)
    with pytest.raises(RnnexpError, match="has no option colour"):
        cells.create("gru", 2, 4, colour="red")
    assert {"elman", "lstm", "gru"} <= set(cells.available())
