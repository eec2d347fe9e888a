"""Named-entity recognition, the many-to-many case that needs both directions.

Reads CoNLL files (``word ... tag`` a line, a blank line between sentences, ``-DOCSTART-``
skipped), with tags in IOB1, IOB2 or IOBES; they are converted to ``task.data.scheme``
(what the model learns). The tagger is a bidirectional net with a tag head at every step
(Huang et al. 2015; Lample et al. 2016): words (plus their characters with
``model.char_encoder=cnn|lstm``) -> BiLSTM -> per-tag scores, decoded tag by tag or, with
``model.crf=true``, as a whole sequence by Viterbi. Entity-level precision, recall and F1,
overall and per type, come from seqeval (the conlleval definition: an entity counts only
when its type and both ends are right). See ``tasks/ner/README.md``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.nn import functional as F

from rnnexp import plots
from rnnexp.data.text import (
    IGNORE,
    SCHEMES,
    check_tags,
    entities,
    read_conll,
    scheme_tags,
    to_scheme,
)
from rnnexp.data.vocab import Vocab
from rnnexp.errors import RnnexpError
from rnnexp.nn.crf import CRFScores
from rnnexp.tasks.base import Batch
from rnnexp.tasks.text_task import Evaluation, TextTask


def seqeval_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Entity-level ``precision``, ``recall``, ``f1`` (micro-averaged over entities, as
    conlleval) and the same per type (``f1_PER``, ...), by seqeval's default (conlleval)
    mode. Tags: IOB2 (any scheme seqeval reads)."""
    from seqeval.metrics import classification_report  # imports scikit-learn: slow, lazy

    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    overall = report["micro avg"]
    scores = {
        "precision": float(overall["precision"]),
        "recall": float(overall["recall"]),
        "f1": float(overall["f1-score"]),
    }
    for kind, row in report.items():
        if kind.endswith(" avg"):
            continue
        for key, name in (("precision", "precision"), ("recall", "recall"), ("f1-score", "f1")):
            scores[f"{name}_{kind}"] = float(row[key])
    return scores


class NerTask(TextTask):
    """Sequence tagging: inputs ``(B, T, 1 + C)`` (word id, then its character ids),
    targets tag ids ``(B, T)`` (``-100`` at padded steps), lengths ``(B,)``.

    Args:
        data: ``train_path``, ``dev_path`` (the ``val`` split), ``test_path``,
            ``tag_column`` (index of the tag among the columns, ``-1``: the last) and
            ``scheme``, the tags the model learns: ``iob2`` or ``iobes``.
        Other args: see :class:`rnnexp.data.text.TextTask`.
    """

    head = "every_step"
    metric = "f1"
    metric_mode = "max"
    tagging = True
    chars = True
    source_hint = (
        "; CoNLL-2003 is not freely redistributable: see tasks/ner/README.md for where "
        "to get it, then set RNNEXP_DATA to the folder that holds conll2003/ (or "
        "task.data.dir, or each task.data.*_path)"
    )

    def __init__(self, data: Mapping[str, Any], name: str = "ner", **text: Any) -> None:
        super().__init__(data, name, **text)
        self.scheme = self.data.get("scheme", "iob2")
        if self.scheme not in SCHEMES:
            raise RnnexpError(
                f"task.data.scheme={self.scheme!r}; choose one of: {', '.join(SCHEMES)}"
            )
        if importlib.util.find_spec("seqeval") is None:  # the `ner` extra (scikit-learn)
            raise RnnexpError(
                "task=ner scores entities with seqeval, which is not installed; "
                "pip install 'rnnexp[ner]' (or pip install seqeval)"
            )

    # ------------------------------------------------------------------ data
    def read_split(self, path: Path, key: str) -> list[tuple[list[str], Any, int, str]]:
        sentences = read_conll(path, key, int(self.data.get("tag_column", -1)))
        for s in sentences:
            check_tags(s.tags, str(path), s.line)
        return [(s.words, s.tags, s.line, " ".join(s.words)) for s in sentences]

    def fit_labels(self, targets: list[Any]) -> Vocab:
        types = {kind for tags in targets for kind, _, _ in entities(tags)}
        return Vocab.labels(scheme_tags(types, self.scheme))

    @property
    def types(self) -> list[str]:
        """The entity types, from the tag set."""
        return sorted({tag[2:] for tag in self.labels.tokens if tag != "O"})

    def encode_target(self, target: Any, where: str) -> Tensor:
        tags = to_scheme(target, self.scheme)
        for i, tag in enumerate(tags):
            if tag not in self.labels:
                raise RnnexpError(
                    f"{where}: entity type {tag[2:]!r} is not among the training types "
                    f"({', '.join(self.types)}); a model cannot predict a type it never saw: "
                    f"fix the tag of word {i + 1} of the sentence that starts there, or train "
                    "on a file that has the type"
                )
        return torch.tensor(self.labels.encode(tags), dtype=torch.long)

    def tags_of(self, ids: list[int] | Tensor) -> list[str]:
        """Tag ids as IOB2 tags (what seqeval, conlleval and the CoNLL-2003 files use)."""
        return to_scheme([self.labels.tokens[int(i)] for i in ids], "iob2")

    # ------------------------------------------------------------------ training
    def loss(self, output: Tensor | CRFScores, batch: Batch) -> Tensor:
        """Mean negative log-likelihood per sentence with a CRF (``model.crf=true``: the
        model's output carries it); else the cross-entropy of every real tag."""
        if isinstance(output, CRFScores):
            return output.nll(batch.targets, batch.targets != IGNORE).mean()
        return F.cross_entropy(output.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)

    def decode(self, output: Tensor | CRFScores, batch: Batch) -> list[Any]:
        lengths = batch.lengths.tolist()
        if isinstance(output, CRFScores):  # the best whole sequence (Viterbi)
            steps = torch.arange(output.emissions.shape[1], device=output.emissions.device)
            return output.decode(steps < batch.lengths.unsqueeze(1))
        best = output.argmax(-1).cpu()
        return [best[i, :n].tolist() for i, n in enumerate(lengths)]

    def score(
        self, evaluation: Evaluation, losses: list[float], sizes: list[int]
    ) -> dict[str, float]:
        gold = [self.tags_of(e.target) for e in evaluation.examples]
        predicted = [self.tags_of(p) for p in evaluation.outputs]
        tokens = sum(len(g) for g in gold)
        right = sum(
            g == p
            for gs, ps in zip(gold, predicted, strict=True)
            for g, p in zip(gs, ps, strict=True)
        )
        metrics = {
            "loss": sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / sum(sizes)
        }
        metrics |= seqeval_scores(gold, predicted)
        metrics["accuracy"] = right / max(tokens, 1)  # per token, O included
        return metrics

    # ------------------------------------------------------------------ output
    def figures(self, model: nn.Module, device: torch.device) -> dict[str, Figure]:
        """Precision, recall and F1 per entity type on the split scored last."""
        if self.last is None:
            self.evaluate(model, "val", device)
        metrics, kinds = self.last.metrics, [*self.types, "all"]
        fig, (ax,) = plots.new_figure(rows=1, width=2.0 + 1.2 * len(kinds), row_height=3.2)
        width = 0.27
        for k, (name, color) in enumerate(
            (("precision", "tab:blue"), ("recall", "tab:orange"), ("f1", "tab:green"))
        ):
            values = [
                metrics.get(f"{name}_{kind}" if kind != "all" else name, 0.0) for kind in kinds
            ]
            ax.bar(
                [i + (k - 1) * width for i in range(len(kinds))],
                values,
                width,
                label=name,
                color=color,
            )
        ax.set_xticks(range(len(kinds)), kinds)
        ax.set_ylim(0.0, 1.0)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
        split = "dev" if self.last.split == "val" else self.last.split
        ax.set_title(f"{self.name}: entity scores on {split} (F1 {metrics['f1']:.3f})")
        return {"entities": fig}

    def write_predictions(
        self, model: nn.Module, split: str, device: torch.device, path: Path
    ) -> Path:
        """CoNLL columns ``word gold predicted`` (IOB2), a blank line after each sentence:
        the input of conlleval (``perl conlleval < file``)."""
        if self.last is None or self.last.split != split:
            self.evaluate(model, split, device)
        path = path.with_name(f"{path.name}.conll")
        lines = []
        for example, predicted in zip(self.last.examples, self.last.outputs, strict=True):
            gold = self.tags_of(example.target)
            for word, g, p in zip(example.tokens, gold, self.tags_of(predicted), strict=True):
                lines.append(f"{word} {g} {p}")
            lines.append("")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    @torch.no_grad()
    def predict_texts(self, model: nn.Module, texts: list[str], device: torch.device) -> list[dict]:
        examples, output, batch = self.forward_texts(model, texts, device)
        answers = []
        for example, ids in zip(examples, self.decode(output, batch), strict=True):
            tags = self.tags_of(ids)
            found = [
                {
                    "text": " ".join(example.tokens[a : b + 1]),
                    "type": kind,
                    "start": a,
                    "end": b + 1,
                }
                for kind, a, b in entities(tags)
            ]
            answers.append(
                {
                    "text": example.text,
                    "tokens": example.tokens,
                    "tags": tags,
                    "entities": found,
                    "unknown_words": self.unknown(example.tokens),
                }
            )
        return answers
