"""How a clustering run's clusters divide the classes: counts per cluster and class on training images.

    python scripts/cluster_contingency.py RUN [RUN ...] [--data-dir DIR] [--images 10000] [--out FILE.md]

For each finished clustering run (trained without labels), D assigns the first --images training
images to clusters; the table counts them per cluster (rows) and true class (columns). The
training labels were hidden from the run, and the test split is not read, so this describes a
run without touching the data its figures are reported on. Prints markdown, and writes it to
--out when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from catgan import load_dataset
from catgan.config import CatGANError
from catgan.runs import git_commit, load_run
from catgan.training import predict_logits


def contingency(run: str, data_dir: str | None, images: int) -> tuple[np.ndarray, list[str]]:
    """Counts (clusters, classes) of the first ``images`` training images, and the class names."""
    config, model, classes = load_run(run)
    if config.uses_labels:
        raise CatGANError(f"{run} was trained with labels; its outputs are classes, not clusters")
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir, download=False)
    data = load_dataset(config)
    x, y = data.x_train[:images], data.y_train[:images].numpy()
    model.eval()
    with torch.no_grad():
        assigned = predict_logits(model.discriminator, x).argmax(dim=1).numpy()
    counts = np.zeros((model.num_clusters, data.num_classes), dtype=int)
    np.add.at(counts, (assigned, y), 1)
    return counts, list(data.classes)


def markdown(run: str, counts: np.ndarray, classes: list[str]) -> str:
    total = counts.sum()
    lines = [f"## {run}", "", f"{total} training images; rows: D's clusters, columns: the hidden classes.", "",
             "| cluster | " + " | ".join(map(str, classes)) + " | images | share % |",
             "|---" * (len(classes) + 3) + "|"]
    for k, row in enumerate(counts):
        lines.append(f"| {k} | " + " | ".join(map(str, row)) + f" | {row.sum()} | {100 * row.sum() / total:.1f} |")
    used = int((counts.sum(axis=1) >= 0.01 * total).sum())
    lines += ["", f"Clusters holding at least 1% of the images: {used} of {len(counts)}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--data-dir", help="where the data is now (default: as when trained)")
    parser.add_argument("--images", type=int, default=10000, help="training images to assign (default: 10000)")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    args = parser.parse_args()
    try:
        parts = [markdown(run, *contingency(run, args.data_dir, args.images)) for run in args.runs]
    except CatGANError as err:
        sys.exit(f"cluster_contingency.py: {err}")
    command = "python scripts/cluster_contingency.py " + shlex.join(sys.argv[1:])
    made = f"Made by `{command}` at commit {git_commit()}, on the CPU, torch {torch.__version__}."
    text = "\n".join(["# Clusters against the hidden classes", "", made, "", *parts])
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
