"""How a clustering run's clusters divide the classes: counts per cluster and class on training images.

    python scripts/cluster_contingency.py RUN [RUN ...] [--data-dir DIR] [--images 10000] [--out FILE.md]
        [--plot FILE.png] [--by-cluster FILE.png] [--classes]

For each finished clustering run (trained without labels), D assigns the first --images training
images to clusters; the table counts them per cluster (rows) and true class (columns). The
training labels were hidden from the run, and the test split is not read, so this describes a
run without touching the data its figures are reported on. Prints markdown, and writes it to
--out when given. --plot draws each run's table as a picture (clusters against classes, each class's
images as shares over the clusters); --by-cluster shows, for each run, a row per cluster of the
training images D is most confident belong to it (an empty row: a cluster that holds none).

With --classes it reads semi-supervised runs instead: D's classes against the true ones on the
run's unlabelled training images (its labelled ones are left out), to see which classes it confuses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from catgan import load_dataset
from catgan.config import CatGANError
from catgan.runs import LABELLED, git_commit, load_run
from catgan.training import predict_logits


class Assigned(NamedTuple):
    counts: np.ndarray  # (clusters, classes)
    classes: list[str]
    x: torch.Tensor  # the images assigned
    probabilities: torch.Tensor  # D's (N, K) for them


def contingency(run: str, data_dir: str | None, images: int, classes: bool = False) -> Assigned:
    """The first ``images`` training images assigned to clusters, counted per cluster and class;
    with ``classes``, a run trained with labels: its unlabelled images among them, by D's class."""
    config, model, _ = load_run(run)
    if config.uses_labels != classes:
        raise CatGANError(f"{run} was trained with labels; its outputs are classes, not clusters (--classes "
                          "counts them)" if config.uses_labels else f"{run} was trained without labels: drop --classes")
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir, download=False)
    data = load_dataset(config)
    if data.labelled is not None:
        raise CatGANError(f"{run} was trained on images without labels; this table needs every training image labelled")
    keep = np.arange(min(images, len(data.y_train)))
    if classes:  # the labelled images are not what D had to work out
        labelled = json.loads((Path(run) / LABELLED).read_text())["indices"]
        keep = np.setdiff1d(keep, labelled)
    x, y = data.x_train[keep], data.y_train[keep].numpy()
    probabilities = predict_logits(model.discriminator, x).softmax(dim=1)
    counts = np.zeros((model.num_clusters, data.num_classes), dtype=int)
    np.add.at(counts, (probabilities.argmax(dim=1).numpy(), y), 1)
    return Assigned(counts, list(data.classes), x, probabilities)


def cluster_order(counts: np.ndarray) -> np.ndarray:
    """Clusters sorted by their majority class, then by size (largest first)."""
    return np.array(sorted(range(len(counts)), key=lambda k: (counts[k].argmax(), -counts[k].sum())))


def plot_tables(runs: list[str], tables: list[Assigned], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.6), squeeze=False)
    for ax, run, table in zip(axes[0], runs, tables):
        counts = table.counts[cluster_order(table.counts)]
        shares = counts / np.maximum(counts.sum(axis=0, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(table.classes)), table.classes, fontsize=7)
        ax.set_yticks(range(len(counts)), [str(n) for n in counts.sum(axis=1)], fontsize=6)
        ax.set_xlabel("hidden class")
        ax.set_ylabel("cluster (its size)")
        ax.set_title(Path(run).name, fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="share of the class's images")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_by_cluster(tables: list[Assigned], path: str, per_cluster: int = 10) -> None:
    from catgan.clusters import contact_sheet
    from catgan.runs import save_image_grid

    sheets = [contact_sheet(table.x, table.probabilities, per_cluster, order=cluster_order(table.counts))
              for table in tables]
    save_image_grid(torch.cat(sheets), Path(path), nrow=per_cluster)


def markdown(run: str, counts: np.ndarray, classes: list[str], of_classes: bool = False) -> str:
    """One run's table; ``of_classes``: its rows are a semi-supervised D's classes, not clusters."""
    total = counts.sum()
    rows = "D's classes (the labelled training images left out)" if of_classes else "D's clusters"
    row_name = "D's class" if of_classes else "cluster"
    lines = [f"## {run}", "", f"{total} training images; rows: {rows}, columns: the hidden classes.", "",
             f"| {row_name} | " + " | ".join(map(str, classes)) + " | images | share % |",
             "|---" * (len(classes) + 3) + "|"]
    for k, row in enumerate(counts):
        lines.append(f"| {k} | " + " | ".join(map(str, row)) + f" | {row.sum()} | {100 * row.sum() / total:.1f} |")
    used = int((counts.sum(axis=1) >= 0.01 * total).sum())
    lines += ["", f"{'Classes' if of_classes else 'Clusters'} holding at least 1% of the images: {used} of {len(counts)}.",
              ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--data-dir", help="where the data is now (default: as when trained)")
    parser.add_argument("--images", type=int, default=10000, help="training images to assign (default: 10000)")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--plot", help="draw the tables as pictures into this PNG file")
    parser.add_argument("--by-cluster", help="the most confident images of each cluster into this PNG file")
    parser.add_argument("--classes", action="store_true", help="runs trained with labels: D's classes against the "
                        "true ones on the unlabelled training images")
    args = parser.parse_args()
    try:
        tables = [contingency(run, args.data_dir, args.images, args.classes) for run in args.runs]
    except CatGANError as err:
        sys.exit(f"cluster_contingency.py: {err}")
    parts = [markdown(run, table.counts, table.classes, args.classes) for run, table in zip(args.runs, tables)]
    if args.plot:
        plot_tables(args.runs, tables, args.plot)
    if args.by_cluster:
        plot_by_cluster(tables, args.by_cluster)
    command = "python scripts/cluster_contingency.py " + shlex.join(sys.argv[1:])
    made = f"Made by `{command}` at commit {git_commit()}, on the CPU, torch {torch.__version__}."
    title = "D's classes against the true ones" if args.classes else "Clusters against the hidden classes"
    text = "\n".join([f"# {title}", "", made, "", *parts])
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
