"""``rnnexp predict``: apply a trained text model to sentences, as a user would.

The model comes back through :func:`rnnexp.train.checkpoint.restore` (the checkpoint's own config
and vocabularies, no data files). Sentences come from the command line or from stdin, one
per line; each is tokenized as the task's ``task.tokenizer`` says. The answer is the
label with its probabilities (``sentiment``) or the tagged entities (``ner``), as a rich
table or, with ``--json``, one JSON object per sentence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import LabelsSentences
from rnnexp.train.checkpoint import Restored, restore

CHUNK = 256  # sentences per forward pass
TYPE_STYLES = ("bold magenta", "bold cyan", "bold green", "bold yellow", "bold blue", "bold red")


def read_sentences(arguments: list[str], stdin: TextIO) -> list[str]:
    """The sentences given as arguments, else the non-blank lines of ``stdin``."""
    if arguments:
        sentences = [s.strip() for s in arguments if s.strip()]
    elif stdin.isatty():
        raise RnnexpError(
            "no sentences: give them as arguments (rnnexp predict RUN 'a sentence') "
            "or pipe them in, one per line"
        )
    else:
        sentences = [line.strip() for line in stdin if line.strip()]
    if not sentences:
        raise RnnexpError("no sentences to label: every one given was blank")
    return sentences


def predict(
    run: str | Path, sentences: list[str], which: str = "best", device: str = "cpu"
) -> tuple[Restored, list[dict]]:
    """The restored model and one answer (plain data) per sentence."""
    restored = restore(run, which, [f"train.device={device}"])
    if not isinstance(restored.task, LabelsSentences):
        raise RnnexpError(
            f"{restored.path} is a {restored.cfg.task.name!r} model; rnnexp predict labels "
            "sentences with the text tasks (sentiment, ner)"
        )
    answers: list[dict] = []
    for start in range(0, len(sentences), CHUNK):
        chunk = sentences[start : start + CHUNK]
        answers += restored.task.predict_texts(restored.model, chunk, restored.device)
    return restored, answers


def sentiment_table(answers: list[dict], title: str) -> Table:
    """Sentence, predicted label and each class's probability (the top 3 of many)."""
    classes = list(answers[0]["probabilities"])
    table = Table(title=title, title_justify="left")
    table.add_column("sentence", overflow="fold")
    table.add_column("label", style="bold")
    few = len(classes) <= 5
    for name in classes if few else ["top 3"]:
        table.add_column(f"p({name})" if few else name, justify="right")
    unknown = any(a["unknown_words"] for a in answers)
    if unknown:
        table.add_column("unknown words", style="dim", overflow="fold")
    for a in answers:
        probs = a["probabilities"]
        if few:
            cells = [f"{probs[c]:.3f}" for c in classes]
        else:
            top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
            cells = [", ".join(f"{escape(c)} {p:.3f}" for c, p in top)]
        extra = [escape(" ".join(a["unknown_words"]))] if unknown else []
        table.add_row(escape(a["text"]), escape(a["label"]), *cells, *extra)
    return table


def tagged_line(answer: dict, styles: dict[str, str]) -> str:
    """The sentence's tokens as rich markup, each entity coloured and labelled."""
    tokens = [escape(t) for t in answer["tokens"]]
    for entity in reversed(answer["entities"]):  # right to left keeps the indices valid
        start, end, kind = entity["start"], entity["end"], entity["type"]
        style = styles.setdefault(kind, TYPE_STYLES[len(styles) % len(TYPE_STYLES)])
        span = " ".join(tokens[start:end])
        tokens[start:end] = [f"[{style}]{span}[/] [dim]{escape(kind)}[/]"]
    return " ".join(tokens)


def render(restored: Restored, answers: list[dict], console: Console) -> None:
    """Print the answers for a person."""
    cfg = restored.cfg
    title = f"{cfg.task.name} / {cfg.cell.name} (step {restored.checkpoint.step})"
    if "probabilities" in answers[0]:
        console.print(sentiment_table(answers, title))
        return
    console.print(f"[bold]{escape(title)}[/]")
    styles: dict[str, str] = {}
    for a in answers:
        console.print(tagged_line(a, styles), soft_wrap=True)
        if not a["entities"]:
            console.print("  [dim](no entities)[/]")
        if a["unknown_words"]:
            console.print(f"  [dim]unknown words: {escape(' '.join(a['unknown_words']))}[/]")


def dump_json(answers: list[dict]) -> str:
    """One JSON object per sentence, in a list."""
    return json.dumps(answers, ensure_ascii=False, indent=2)
