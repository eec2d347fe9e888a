"""Sentiment analysis, the many-to-one case: one label for a whole sentence.

Reads a table with a header (TSV or CSV): a text column and a label column, GLUE SST-2's
``sentence``/``label`` by default; any number of classes, named by the labels of the
training file. The net reads the sentence (bidirectional by default) and a linear head
reads its last state, or the mean or max over its steps (``model.pooling``). Metrics:
accuracy, macro-F1 and per-class F1; the confusion matrix is drawn at each evaluation.
See ``tasks/sentiment/README.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp import plots
from rnnexp.data.text import read_table, tokenize
from rnnexp.data.vocab import Vocab
from rnnexp.errors import RnnexpError
from rnnexp.tasks.base import Batch
from rnnexp.tasks.text_task import Evaluation, TextTask

GLUE_SST2 = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
INTEGER = re.compile(r"[+-]?\d+")


def label_order(labels: set[str]) -> list[str]:
    """Labels sorted as numbers when they all are (``"2"`` before ``"10"``), else as text."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def confusion(predicted: Tensor, target: Tensor, classes: int) -> Tensor:
    """``matrix[true, predicted]`` counts, ``(C, C)``."""
    return torch.bincount(target * classes + predicted, minlength=classes * classes).view(
        classes, classes
    )


def f1_per_class(matrix: Tensor) -> Tensor:
    """F1 of each class from a confusion matrix; 0 for a class never true nor predicted."""
    matrix = matrix.double()
    hits = matrix.diag()
    precision = hits / matrix.sum(0).clamp(min=1)
    recall = hits / matrix.sum(1).clamp(min=1)
    return torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall), torch.zeros(1)
    )


class SentimentTask(TextTask):
    """Sentence classification from a table: inputs word ids ``(B, T)`` with lengths,
    targets class ids ``(B,)``.

    Args:
        data: ``train_path``, ``dev_path`` (the ``val`` split), ``test_path`` (optional;
            without it ``split=test`` scores the dev file), ``text_column``,
            ``label_column``, ``delimiter`` (auto | tab | comma), ``quoting`` (minimal |
            none), ``label_names`` (optional ``{label: name}`` for display).
        max_length: keep only the first N tokens of a text (``None``: all).
        Other args: see :class:`rnnexp.data.text.TextTask`.
    """

    head = "last_step"
    metric = "accuracy"
    metric_mode = "max"
    source_hint = (
        f"; SST-2 is in GLUE ({GLUE_SST2}): unzip it and set RNNEXP_DATA to the folder "
        "that holds sst2/ (or task.data.dir, or each task.data.*_path); see "
        "tasks/sentiment/README.md"
    )

    def __init__(
        self,
        data: Mapping[str, Any],
        max_length: int | None = None,
        name: str = "sentiment",
        **text,
    ) -> None:
        super().__init__(data, name, **text)
        self.max_length = max_length
        self.label_names = {str(k): str(v) for k, v in (self.data.get("label_names") or {}).items()}

    # ------------------------------------------------------------------ data
    def read_split(self, path: Path, key: str) -> list[tuple[list[str], Any, int, str]]:
        text_column = self.data.get("text_column", "sentence")
        label_column = self.data.get("label_column", "label")
        rows = read_table(
            path,
            (text_column, label_column),
            key,
            self.data.get("delimiter", "auto"),
            self.data.get("quoting", "minimal"),
        )
        examples = []
        for row in rows:
            text = row.fields[text_column].strip()
            tokens = self.split_text(text)
            if not tokens:
                raise RnnexpError(
                    f"{path}:{row.line}: empty text in column {text_column!r}; remove the row"
                )
            examples.append((tokens, row.fields[label_column].strip(), row.line, text))
        self.check_labels(examples, path, label_column)
        return examples

    def check_labels(
        self, examples: list[tuple[list[str], Any, int, str]], path: Path, column: str
    ) -> None:
        """One-line errors, with the file and line, for a label that is empty, that is not
        an integer in a file whose labels mostly are (or the other way round), or that is
        not a key of ``task.data.label_names`` when that is set (it then declares the label
        set). Such a label in the training file would silently become a class of its own."""
        for _, label, line, _ in examples:
            if not label:
                raise RnnexpError(f"{path}:{line}: no label in column {column!r}; fix that line")
        numeric = [bool(INTEGER.fullmatch(label)) for _, label, _, _ in examples]
        if any(numeric) and not all(numeric):
            majority = 2 * sum(numeric) >= len(numeric)
            _, label, line, _ = next(
                e for e, n in zip(examples, numeric, strict=True) if n != majority
            )
            others = label_order(
                {e[1] for e, n in zip(examples, numeric, strict=True) if n == majority}
            )
            kind = "is not an integer" if majority else "is an integer"
            shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
            raise RnnexpError(
                f"{path}:{line}: label {label!r} {kind}, unlike the file's other labels "
                f"({shown}); fix that line"
            )
        if self.label_names:
            for _, label, line, _ in examples:
                if label not in self.label_names:
                    raise RnnexpError(
                        f"{path}:{line}: label {label!r} is not in task.data.label_names "
                        f"({', '.join(self.label_names)}); fix that line, or add the label "
                        "to task.data.label_names"
                    )

    def split_text(self, text: str) -> list[str]:
        return tokenize(text, self.tokenizer)[: self.max_length]

    def fit_labels(self, targets: list[Any]) -> Vocab:
        return Vocab.labels(label_order(set(targets)))

    def encode_target(self, target: Any, where: str) -> Tensor:
        if target not in self.labels:
            raise RnnexpError(
                f"{where}: label {target!r} is not among the training labels "
                f"({', '.join(self.labels.tokens)}); a model cannot predict a class it never "
                "saw: fix that line, or train on a file that has the class"
            )
        return torch.tensor(self.labels[target])

    def name_of(self, label_id: int) -> str:
        label = self.labels.tokens[label_id]
        return self.label_names.get(label, label)

    # ------------------------------------------------------------------ training
    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output, batch.targets)

    def decode(self, output: Tensor, batch: Batch) -> list[Any]:
        return list(output.float().cpu())  # logits (C,) per example

    def score(
        self, evaluation: Evaluation, losses: list[float], sizes: list[int]
    ) -> dict[str, float]:
        logits = torch.stack(evaluation.outputs)
        target = torch.stack([e.target for e in evaluation.examples])
        matrix = confusion(logits.argmax(1), target, len(self.labels))
        f1 = f1_per_class(matrix)
        metrics = {
            "loss": sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / sum(sizes),
            "accuracy": matrix.diag().sum().item() / matrix.sum().item(),
            "macro_f1": f1.mean().item(),
        }
        for i, value in enumerate(f1.tolist()):
            metrics[f"f1_{self.name_of(i)}"] = value
        return metrics

    # ------------------------------------------------------------------ output
    def figures(self, model: nn.Module, device: torch.device) -> dict[str, Figure]:
        """The confusion matrix of the split scored last (counts, shaded by row share)."""
        if self.last is None:
            self.evaluate(model, "val", device)
        last = self.last
        logits = torch.stack(last.outputs)
        target = torch.stack([e.target for e in last.examples])
        classes = len(self.labels)
        matrix = confusion(logits.argmax(1), target, classes)
        share = matrix.double() / matrix.sum(1, keepdim=True).clamp(min=1)
        size = 2.0 + 0.6 * classes
        fig, (ax,) = plots.new_figure(rows=1, width=size + 1.0, row_height=size)
        ax.imshow(share.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
        names = [self.name_of(i) for i in range(classes)]
        ax.set_xticks(range(classes), names, rotation=45, ha="right")
        ax.set_yticks(range(classes), names)
        for t in range(classes):
            for p in range(classes):
                color = "white" if share[t, p] > 0.5 else "black"
                ax.text(p, t, str(int(matrix[t, p])), ha="center", va="center", color=color)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        accuracy = matrix.diag().sum().item() / max(matrix.sum().item(), 1)
        split = "dev" if last.split == "val" else last.split
        ax.set_title(f"{self.name}: confusion on {split} (accuracy {accuracy:.3f})")
        return {"confusion": fig}

    def write_predictions(
        self, model: nn.Module, split: str, device: torch.device, path: Path
    ) -> Path:
        """``text``, ``label``, ``predicted`` and one probability per class, as TSV."""
        if self.last is None or self.last.split != split:
            self.evaluate(model, split, device)
        path = path.with_name(f"{path.name}.tsv")
        names = [self.name_of(i) for i in range(len(self.labels))]
        lines = ["\t".join(["text", "label", "predicted", *(f"p_{n}" for n in names)])]
        for example, logits in zip(self.last.examples, self.last.outputs, strict=True):
            probs = logits.softmax(0).tolist()
            cells = [example.text, self.name_of(int(example.target)), names[int(logits.argmax())]]
            lines.append("\t".join([*cells, *(f"{p:.4f}" for p in probs)]))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @torch.no_grad()
    def predict_texts(self, model: nn.Module, texts: list[str], device: torch.device) -> list[dict]:
        examples, logits, _ = self.forward_texts(model, texts, device)
        answers = []
        for example, probs in zip(examples, logits.float().softmax(1).cpu(), strict=True):
            answers.append(
                {
                    "text": example.text,
                    "label": self.name_of(int(probs.argmax())),
                    "probabilities": {self.name_of(i): p for i, p in enumerate(probs.tolist())},
                    "unknown_words": self.unknown(example.tokens),
                }
            )
        return answers
