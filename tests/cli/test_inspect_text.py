"""``rnnexp inspect RUN --text``: the text features, the correlation finder, the gate
saturation, the HTML page (escaped, one span a character, the text round-trips) and the
PNGs, from a tiny char LM; one-line errors for a non-text run and bad options."""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CORPUS_LINES, train_tiny

from rnnexp.cli.inspect_text import (
    LEVELS,
    FeatureUnits,
    Section,
    Unit,
    after_newline,
    bracket_depth,
    display_rows,
    encode_text,
    find_units,
    gate_saturation,
    inside_quotes,
    inside_word,
    inspect_text,
    pearson,
    pick_unit,
    position_in_line,
    render_html,
    text_argument,
    top_units,
)
from rnnexp.cli.main import main
from rnnexp.data.vocab import UNK_CHAR, Vocab
from rnnexp.errors import RnnexpError

PNG = b"\x89PNG\r\n\x1a\n"
TEXT = "\n".join(TINY_CORPUS_LINES[:2] + TINY_CORPUS_LINES[3:]) + "\n"  # the corpus's own chars


@pytest.fixture(scope="module")
def charlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM char LM on the test corpus (20 steps, 8 units)."""
    return train_tiny(tmp_path_factory.mktemp("charlm"), "charlm", "lstm")


# ------------------------------------------------------------------ features
def test_inside_quotes_toggles_at_each_double_quote() -> None:
    assert inside_quotes('a"bc"d') == [0, 1, 1, 1, 0, 0]
    assert inside_quotes('""x"') == [1, 0, 0, 1]  # an empty pair, then an open quote
    assert inside_quotes("it's") == [0, 0, 0, 0]  # an apostrophe is no quote


def test_position_in_line_counts_from_each_newline() -> None:
    assert position_in_line("ab\ncde\n\nf") == [1, 2, 0, 1, 2, 3, 0, 0, 1]


def test_bracket_depth_follows_nesting_and_never_goes_negative() -> None:
    assert bracket_depth("a(b[c]{d})e") == [0, 1, 1, 2, 2, 1, 2, 2, 1, 0, 0]
    assert bracket_depth("))(x") == [0, 0, 1, 1]


def test_word_and_newline_features() -> None:
    assert inside_word("Ab1 é,\n") == [1, 1, 1, 0, 1, 0, 0]
    assert after_newline("a\n\nb") == [0, 1, 1, 0]


# ------------------------------------------------------------------ the finder
def test_pearson_equals_numpy() -> None:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(50, 4, generator=generator)
    feature = torch.randn(50, generator=generator)
    expected = [np.corrcoef(values[:, k].numpy(), feature.numpy())[0, 1] for k in range(4)]
    torch.testing.assert_close(pearson(values, feature), torch.tensor(expected).double())
    values[:, 2] = 3.0  # a constant unit: r = 0, not NaN
    assert pearson(values, feature)[2] == 0


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_a_unit_equal_to_a_feature_is_found(sign: float) -> None:
    """Noise everywhere but one unit that is (a scaled, shifted copy of) the feature: it
    comes first for that feature with |r| = 1, and no noise unit reaches the threshold."""
    text = 'say "hi" (to\nthem) and "go"\nnow\n' * 4
    generator = torch.Generator().manual_seed(1)
    noise = {(0, "c"): torch.randn(len(text), 6, generator=generator),
             (1, "h"): torch.randn(len(text), 6, generator=generator)}  # fmt: skip
    noise[(1, "h")][:, 4] = 1 + 0.1 * sign * torch.tensor(position_in_line(text))
    found = {f.feature: f for f in find_units(noise, text)}
    line = found["position in line"]
    assert line.found and line.top[0].unit == Unit(1, "h", 4)
    assert line.top[0].r == pytest.approx(sign, abs=1e-9) and len(line.top) == 3
    for f in found.values():  # the noise units reach no threshold: found is the planted one
        assert not f.constant and all(abs(c.r) < 0.3 for c in f.top if c.unit != line.top[0].unit)
    assert pick_unit(noise, text, None, None, None, 2) == Unit(1, "h", 4)  # the default
    in_layer_0 = pick_unit(noise, text, None, None, 0, 2)  # --layer 0: the best one there
    assert in_layer_0.layer == 0 and in_layer_0.state == "c"
    assert pick_unit(noise, text, 5, None, 0, 2) == Unit(0, "c", 5)  # --unit: c by default
    noise[(0, "c")][:, 0] = torch.tensor(inside_quotes(text))
    quotes = top_units(noise, inside_quotes(text), count=1)
    assert quotes[0].unit == Unit(0, "c", 0) and quotes[0].r == pytest.approx(1)


def test_a_constant_feature_has_no_units() -> None:
    states = {(0, "h"): torch.randn(5, 3)}
    assert top_units(states, bracket_depth("abcde")) == []
    assert FeatureUnits("bracket depth", []).constant and not FeatureUnits("x", []).found


def test_gate_saturation_counts_steps_beyond_the_thresholds() -> None:
    gate = torch.tensor([[[0.05, 0.5], [0.95, 0.5], [0.02, 0.99], [0.5, 0.5]]])  # (1, 4, 2)
    (s,) = gate_saturation([{"forget": gate, "candidate": gate, "h": gate}])
    assert (s.layer, s.gate) == (0, "forget")  # tanh candidates and states are no gates
    torch.testing.assert_close(s.left, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(s.right, torch.tensor([0.25, 0.25]))


# ------------------------------------------------------------------ the page
def pre_blocks(page: str) -> list[str]:
    return re.findall(r'<pre class="text">(.*?)</pre>', page, flags=re.S)


def untagged(block: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", block))


def test_the_page_escapes_every_character_and_round_trips() -> None:
    text = "if (a < b && c > \"d\") {\n  x = '<';\n}\n"
    values = torch.linspace(-2, 1, len(text))
    section = Section('layer 0 c[1] <"x">', Unit(0, "c", 1), values, -2.0, 1.0)
    found = [FeatureUnits("<quotes>", [])]
    page = render_html(text, [section, section], found, "head & <title>", "about <this>")
    blocks = pre_blocks(page)
    assert len(blocks) == 2 and all(untagged(block) == text for block in blocks)
    assert blocks[0].count("<span") == len(text)
    classes = [int(k) for k in re.findall(r'class="v(\d+)"', blocks[0])]
    assert classes[0] == 0 and classes[-1] == LEVELS - 1 and classes == sorted(classes)
    assert 'title="c=-2.000"' in blocks[0] and 'title="c=1.000"' in blocks[0]
    assert "<title>head &amp; &lt;title&gt;</title>" in page and "&lt;quotes&gt;" in page
    assert "<this>" not in page and '<"x">' not in page


def test_each_side_of_zero_reaches_its_own_extreme() -> None:
    """A counter that stays negative still shows its slope: -10 is full red, -5 half."""
    states = {(0, "c"): torch.tensor([[-10.0, -4.0], [-5.0, 2.0], [-10.0, 0.0], [-5.0, 1.0]])}
    counter = Section.of("t", states, Unit(0, "c", 0))
    assert (counter.low, counter.high) == (-10.0, 0.0)
    torch.testing.assert_close(counter.scaled(), torch.tensor([-1.0, -0.5, -1.0, -0.5]))
    both = Section.of("t", states, Unit(0, "c", 1))
    torch.testing.assert_close(both.scaled(), torch.tensor([-1.0, 1.0, 0.0, 0.5]))


def test_display_rows_wrap_long_lines_and_end_at_newlines() -> None:
    rows = display_rows("abcdefg\nhi\n\nj", columns=3, rows=10)
    assert rows == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9, 10], [11], [12]]
    assert display_rows("abcdefg\nhi", columns=3, rows=2) == [[0, 1, 2], [3, 4, 5]]


def test_text_argument_reads_a_file_or_takes_the_string(tmp_path: Path) -> None:
    file = tmp_path / "t.txt"
    file.write_text("ROMEO: hi\n", encoding="utf-8")
    assert text_argument(str(file)) == ("ROMEO: hi\n", str(file))
    assert text_argument("some words") == ("some words", "the given string")
    assert text_argument("a" * 300)[0] == "a" * 300  # too long a name for a file: text
    with pytest.raises(RnnexpError, match="no such file"):
        text_argument(str(tmp_path / "missing.txt"))


# ------------------------------------------------------------------ on a tiny char LM
def test_inspect_a_string(charlm: Path, tmp_path: Path) -> None:
    result = inspect_text(charlm, TEXT, tmp_path / "page.html")
    page = result.html.read_text(encoding="utf-8")
    blocks = pre_blocks(page)
    assert len(blocks) == len(result.sections) >= 1 and result.sections[0] == result.unit
    for block in blocks:  # one span a character, and the text comes back whole
        assert block.count("<span") == len(TEXT) and untagged(block) == TEXT
    assert result.characters == result.total == len(TEXT) and result.step == 20
    assert result.png == tmp_path / "page.png" and result.png.read_bytes()[:8] == PNG
    saturation = tmp_path / "page_gate_saturation.png"
    assert result.saturation_png == saturation and saturation.read_bytes()[:8] == PNG
    assert {(s.layer, s.gate) for s in result.saturation} == {
        (0, "input"), (0, "forget"), (0, "output")}  # fmt: skip
    features = {f.feature: f for f in result.features}
    assert features["inside quotes"].constant and features["bracket depth"].constant  # none
    line = features["position in line"]
    assert len(line.top) == 3 and all(-1 <= c.r <= 1 for c in line.top)
    best = max((c for f in result.features for c in f.top), key=lambda c: abs(c.r))
    assert result.unit == best.unit  # no --unit: the most correlated unit is coloured
    assert str(result.unit) in page and "position in line" in page


def test_inspect_a_file_with_a_chosen_unit(charlm: Path, tmp_path: Path) -> None:
    file = tmp_path / "romeo.txt"
    file.write_text(TEXT * 3, encoding="utf-8")
    result = inspect_text(charlm, str(file), unit=2, state="h", max_chars=100)
    assert result.unit == Unit(0, "h", 2) and result.sections[0] == Unit(0, "h", 2)
    assert result.html == charlm / "plots" / "text.html" and result.source == str(file)
    assert (result.characters, result.total) == (100, 3 * len(TEXT))
    (block, *_) = pre_blocks(result.html.read_text(encoding="utf-8"))
    assert untagged(block) == (TEXT * 3)[:100]
    assert (charlm / "plots" / "text.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize("cell, gates", [("gru", ["reset", "update"]), ("elman", [])])
def test_cells_without_a_cell_state(tmp_path: Path, cell: str, gates: list[str]) -> None:
    """A GRU has only h and its reset and update gates; an Elman net has no gates, so no
    saturation plot, and --state c is an error that names what it has."""
    run_dir = train_tiny(tmp_path / cell, "charlm", cell)
    result = inspect_text(run_dir, TEXT, unit=1)
    assert result.unit == Unit(0, "h", 1)
    assert [s.gate for s in result.saturation] == gates
    assert (result.saturation_png is not None) == bool(gates)
    assert len(list((run_dir / "plots").glob("text*.png"))) == 1 + bool(gates)
    with pytest.raises(RnnexpError, match="--state c: this cell has h; choose one"):
        inspect_text(run_dir, TEXT, unit=1, state="c")


@pytest.mark.parametrize("options, message", [
    ({"unit": 8}, r"--unit 8: the layer has 8 units \(0 to 7\)"),
    ({"layer": 1}, "--layer 1: the net has 1 layer"),
    ({"state": "x"}, "--state x: choose c"),
    ({"output": Path("page.png")}, "end it in .html"),
    ({"max_chars": 1}, "--max-chars must be at least 2"),
])  # fmt: skip
def test_bad_options_are_one_line_errors(charlm: Path, options: dict, message: str) -> None:
    with pytest.raises(RnnexpError, match=message):
        inspect_text(charlm, TEXT, **options)


def test_characters_outside_the_vocabulary_are_named(charlm: Path) -> None:
    match = r"3 character\(s\) outside the model's vocabulary: '\"', '\{', '\}'"
    with pytest.raises(RnnexpError, match=match):
        inspect_text(charlm, 'she "{hi}"')


def test_a_vocabulary_with_unk_reads_any_character() -> None:
    """A corpus whose val/test held characters outside the training text has U+FFFD:
    unknown characters of --text become it, as in the evaluation pass."""
    vocab = Vocab.of_characters("abc")
    with pytest.raises(RnnexpError, match="1 character"):
        encode_text(vocab, "abz")
    with_unk = vocab.extended([UNK_CHAR], unk=UNK_CHAR)
    assert encode_text(with_unk, "abz") == [0, 1, with_unk.unk_id]


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["rnnexp", "inspect", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code or 0


def test_cli(monkeypatch: pytest.MonkeyPatch, capsys, charlm: Path, tmp_path: Path) -> None:
    page = tmp_path / "k.html"
    assert run_main(monkeypatch, str(charlm), "--text", TEXT, "-o", str(page)) == 0
    out = capsys.readouterr().out
    assert "position in line" in out and "gate saturation" in out and "written to" in out
    assert ("found:" in out) != ("found no unit" in out) and page.is_file()
    assert run_main(monkeypatch, str(charlm), "--unit", "3") == 2
    err = capsys.readouterr().err
    assert "add --text" in err and len(err.strip().splitlines()) == 1


def test_a_run_that_is_no_char_lm_is_one_line(monkeypatch, capsys, tmp_path: Path) -> None:
    timer = train_tiny(tmp_path / "timer", "timer", "gru")
    assert run_main(monkeypatch, str(timer), "--text", "some text") == 2
    err = capsys.readouterr().err
    assert "--text needs a character-level language model" in err and "timer" in err
    assert len(err.strip().splitlines()) == 1
    assert not (timer / "plots" / "text.html").exists()
