"""``cell.init=esn`` (Sutskever et al. 2013, §4.1 and Table 4) on the Elman-type cells: the
recurrent matrix's spectral radius, 15 incoming connections a unit, the input and output
weights' scale, one-line errors, and the fast path, which takes these cells unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli, tiny

from rnnexp import cells
from rnnexp.cells.common import spectral_radius
from rnnexp.config import build
from rnnexp.errors import RnnexpError
from rnnexp.nn.model import build_model
from rnnexp.train.loop import train
from rnnexp.train.record import RunRecord
from rnnexp.train.updates import build_update

H = 40
CELLS = {
    "elman": {},
    "irnn": {},
    "jordan": {},
    "jordan_elman": {"elman": True},
    "jordan_narrow": {"output_size": 20},
}


def make(cell: str, **options) -> cells.Cell:
    return cells.create(cell.split("_")[0], 5, H, **{**CELLS[cell], **options})


def recurrences(cell: cells.Cell) -> list[torch.Tensor]:
    """The recurrent matrix ``W_eff`` of every layer and direction."""
    return [block for layer in range(cell.num_layers)
            for block in cell.recurrent_blocks(layer).values()]  # fmt: skip


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("radius", [None, 0.8, 1.1, 1.5])
def test_spectral_radius_is_the_requested_one(cell: str, radius: float | None) -> None:
    torch.manual_seed(3)
    made = make(cell, init="esn", init_scale=radius)
    (weight,) = recurrences(made)
    assert spectral_radius(weight) == pytest.approx(1.1 if radius is None else radius, abs=1e-5)


def test_every_layer_and_direction_of_a_stacked_elman() -> None:
    torch.manual_seed(4)
    made = cells.create("elman", 5, H, num_layers=2, bidirectional=True, init="esn")
    weights = [getattr(made, f"weight_hh_l{k}{s}") for k in (0, 1) for s in ("", "_reverse")]
    for weight in weights:
        assert spectral_radius(weight) == pytest.approx(1.1, abs=1e-5)
        assert ((weight != 0).sum(dim=1) == 15).all()


@pytest.mark.parametrize("cell", CELLS)
def test_fifteen_incoming_connections_per_unit(cell: str) -> None:
    """Row ``i`` of ``W_hh`` (jordan: of ``U_y``) holds unit ``i``'s incoming weights."""
    torch.manual_seed(5)
    made = make(cell, init="esn")
    names = {"jordan": ["weight_yh_l0"], "jordan_elman": ["weight_yh_l0", "weight_hh_l0"],
             "jordan_narrow": ["weight_yh_l0"]}.get(cell, ["weight_hh_l0"])  # fmt: skip
    for name in names:
        weight = getattr(made, name)
        assert ((weight != 0).sum(dim=1) == 15).all(), name
    small = cells.create("elman", 5, 10, init="esn")  # fewer than 15 units: dense
    assert (small.weight_hh_l0 != 0).all()


@pytest.mark.parametrize("cell", CELLS)
def test_input_weights_biases_and_their_scale(cell: str) -> None:
    torch.manual_seed(6)
    made = cells.create(cell.split("_")[0], 50, 100, init="esn", **CELLS[cell])
    assert made.weight_ih_l0.std().item() == pytest.approx(0.001, rel=0.05)  # 5000 draws
    assert made.weight_ih_l0.mean().abs().item() < 1e-4
    assert not made.bias_ih_l0.any() and not made.bias_hh_l0.any()
    wide = cells.create(cell.split("_")[0], 50, 100, init="esn", init_input_scale=0.1,
                        **CELLS[cell])  # fmt: skip
    assert wide.weight_ih_l0.std().item() == pytest.approx(0.1, rel=0.05)


def test_the_model_head_and_the_config_keys() -> None:
    """Table 4's hidden-to-output weights ``0.1 N(0, 1)`` (the output bias: 0, see the
    README), and the keys of conf/cell/*.yaml, whose defaults keep the cells as they were."""
    torch.manual_seed(7)
    cfg = compose_config(*tiny("adding"), "cell=elman", "cell.init=esn", "model.hidden_size=400")
    task = build(cfg.task, "task")
    model = build_model(cfg, task.setup())
    # 400 draws: within 20% is 5.7 standard errors; torch's default would give 0.029
    assert model.head.weight.std().item() == pytest.approx(0.1, rel=0.2)
    assert not model.head.bias.any()
    assert spectral_radius(model.rnn.weight_hh_l0) == pytest.approx(1.1, abs=1e-5)
    for name in ("elman", "irnn", "jordan"):
        assert cells.spec(name).options["init_input_scale"] is None


@pytest.mark.parametrize(
    ("init", "scale", "std"),
    [("tanh_smart", 0.01, 0.01), ("identity", 0.001, 0.001), ("normal", None, 0.1)],
)
def test_init_input_scale_replaces_only_the_input_std(
    init: str, scale: float | None, std: float
) -> None:
    """``init_input_scale`` equal to an init's own std draws the very same weights (the
    same draws in the same order), and another value changes only ``W_ih``."""
    made = []
    for given in (None, std, 0.05):
        torch.manual_seed(8)
        made.append(cells.create("elman", 5, H, init=init, init_input_scale=given))
    default, same, other = made
    for name, weight in default.named_parameters():
        assert torch.equal(weight, getattr(same, name)), name
        assert torch.equal(weight, getattr(other, name)) == (name != "weight_ih_l0"), name


@pytest.mark.parametrize(
    ("cell", "options", "named"),
    [
        ("elman", {"init_scale": -1.1}, r"cell\.init_scale=-1\.1 is the spectral radius"),
        ("irnn", {"init_scale": 0.0}, r"cell\.init_scale=0\.0 is the spectral radius"),
        ("lstm", {}, r"init=esn is for cells with one recurrent matrix .* 4 gate blocks"),
        ("gru", {}, r"3 gate blocks; use init=tanh_smart"),
        ("clockwork", {}, r"cell=clockwork's recurrent matrix is masked"),
        ("elman", {"init_input_scale": -0.5}, r"cell\.init_input_scale=-0\.5 is a standard"),
    ],
)
def test_bad_values_are_one_line(cell: str, options: dict, named: str) -> None:
    with pytest.raises(RnnexpError, match=named) as err:
        cells.create(cell, 5, H, init="esn", **options)
    assert "\n" not in str(err.value)


def test_an_input_scale_the_init_does_not_use_is_one_line() -> None:
    with pytest.raises(RnnexpError, match=r"not under init=xavier; drop cell\.init_input_scale"):
        cells.create("elman", 5, H, init="xavier", init_input_scale=0.1)


def test_bad_init_on_the_command_line_exits_with_one_line(tmp_path: Path) -> None:
    proc = run_cli("train", *tiny("adding"), "cell=lstm", "cell.init=esn", cwd=tmp_path,
                   check=False)  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: init=esn is for cells with one recurrent matrix")


@pytest.mark.parametrize("cell", ["elman", "irnn", "jordan"])
def test_the_fast_path_takes_the_esn_init(cell: str) -> None:
    cfg = compose_config(*tiny("adding"), f"cell={cell}", "cell.init=esn", "optim=nesterov")
    task = build(cfg.task, "task")
    update = build_update(cfg, build_model(cfg, task.setup()), task, None, torch.device("cpu"))
    assert update.fast is not None


@pytest.mark.parametrize(("cell", "extra"), [("elman", ()), ("jordan", ("cell.elman=true",))])
def test_fast_and_general_paths_agree_with_the_esn_init(
    tmp_path: Path, cell: str, extra: tuple[str, ...]
) -> None:
    """Whole tiny runs with NAG through ``train()``: the same test metrics either way."""
    finals = []
    for fast in ("null", "false"):
        run_dir = tmp_path / fast
        cfg = compose_config(*tiny("adding"), f"cell={cell}", "cell.init=esn", *extra,
                             "optim=nesterov", "optim.lr=0.01", "sched=constant",
                             "train.max_steps=12", f"train.fast={fast}")  # fmt: skip
        metrics = train(cfg, run_dir, RunRecord(run_dir, task="adding", cell=cell))
        finals.append(metrics["final"])
    assert finals[0].keys() == finals[1].keys()
    for key, value in finals[1].items():
        assert finals[0][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
