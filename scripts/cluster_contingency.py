"""How a clustering run's clusters divide the classes: counts per cluster and class on training images.

    python scripts/cluster_contingency.py RUN [RUN ...] [--data-dir DIR] [--images 10000] [--out FILE.md]
        [--plot FILE.png] [--by-cluster FILE.png] [--classes | --naming N] [--generated N]

For each finished clustering run (trained without labels), D assigns the first --images training
images to clusters; the table counts them per cluster (rows) and true class (columns). The
training labels were hidden from the run, and the test split is not read, so this describes a
run without touching the data its figures are reported on. Prints markdown, and writes it to
--out when given. --plot draws each run's table as a picture (clusters against classes, each class's
images as shares over the clusters); --by-cluster shows, for each run, a row per cluster of the
training images D is most confident belong to it (an empty row: a cluster that holds none).

With --classes it reads semi-supervised runs instead: D's classes against the true ones on the
run's unlabelled training images (its labelled ones are left out), to see which classes it confuses.

With --generated N it adds, per run, how sure D is in each of its classes or clusters: its share and
mean entropy on the training images, the same on N images of G, and (with --classes) its mean
entropy on each hidden class's images. A class that G makes well and D cannot tell from the real
one shows up as a class D is unsure of on both.

With --naming N it also takes apart a clustering run's error under the paper's protocol (compare.py's
`mnist-cluster-paper`): each cluster is named by the majority class of N labelled training images per
class (drawn with the run's seed, as the protocol draws them), and every test image counts as wrong
unless its cluster's name is its class. The table lists, per cluster, its test images, their majority
class, the labelled images it holds, its name and its errors; the error is split into what named
clusters lose to images outside their majority class (any naming loses those), what clusters that
hold no labelled image lose, and what clusters named other than their majority lose. N should be
the protocol's (compare.py's NAMING_LABELS: 5 on digits, 10 on MNIST and Fashion-MNIST) to give its
figure.
It reads the test split's labels to describe a finished run's reported figure; it chooses nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from catgan import load_dataset
from catgan.config import CatGANError
from catgan.data import labelled_indices
from catgan.metrics import cluster_names, many_to_one_accuracy
from catgan.models import evaluation_mode
from catgan.runs import git_commit, load_run, read_labelled
from catgan.training import predict_logits


class Assigned(NamedTuple):
    counts: np.ndarray  # (clusters, classes)
    classes: list[str]
    x: torch.Tensor  # the images assigned
    y: np.ndarray  # their hidden classes
    probabilities: torch.Tensor  # D's (N, K) for them


def contingency(run: str, data_dir: str | None, images: int, classes: bool = False) -> Assigned:
    """The first ``images`` training images assigned to clusters, counted per cluster and class;
    with ``classes``, a run trained with labels: its unlabelled images among them, by D's class."""
    _, model, data = load(run, data_dir, classes)
    keep = np.arange(min(images, len(data.y_train)))
    if classes:  # the labelled images are not what D had to work out
        labelled = read_labelled(run)
        keep = np.setdiff1d(keep, labelled)
    x, y = data.x_train[keep], data.y_train[keep].numpy()
    probabilities = predict_logits(model.discriminator, x).softmax(dim=1)
    counts = np.zeros((model.num_clusters, data.num_classes), dtype=int)
    np.add.at(counts, (probabilities.argmax(dim=1).numpy(), y), 1)
    return Assigned(counts, list(data.classes), x, y, probabilities)


def certainty(run: str, table: Assigned, generated: int, of_classes: bool = False) -> str:
    """How sure D is, column by column of its classes or clusters, as markdown: its share and mean
    entropy on the training images ``table`` assigned, and the same on ``generated`` images of G
    (drawn with seed 0, both networks in evaluation mode); with ``of_classes``, also its mean entropy
    on each hidden class's images, where a class D cannot place shows whatever D calls it."""
    _, model, _ = load_run(run)
    draw = torch.Generator().manual_seed(0)
    with evaluation_mode(model.generator), torch.no_grad():
        x_fake = torch.cat([model.generator(model.sample_latent(min(1000, generated - i), draw))
                            for i in range(0, generated, 1000)])
    k = model.num_clusters

    def by_column(probabilities: torch.Tensor, column: np.ndarray) -> tuple[list[str], list[str]]:
        entropy = (-(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)).numpy()
        shares = np.bincount(column, minlength=k) / len(column)
        means = [f"{entropy[column == c].mean():.2f}" if (column == c).any() else "" for c in range(k)]
        return [f"{100 * share:.1f}" for share in shares], means

    fake = predict_logits(model.discriminator, x_fake).softmax(dim=1)
    real_shares, real_entropy = by_column(table.probabilities, table.probabilities.argmax(dim=1).numpy())
    fake_shares, fake_entropy = by_column(fake, fake.argmax(dim=1).numpy())
    name = "D's class" if of_classes else "cluster"
    lines = [f"D's certainty, by {name} (entropy in nats; log {k} = {np.log(k):.2f}: wholly unsure); G's "
             f"images: {generated:,} drawn with seed 0.", "",
             "| | " + " | ".join(map(str, range(k))) + " |", "|---" * (k + 1) + "|",
             "| training images: share % | " + " | ".join(real_shares) + " |",
             "| training images: D's entropy | " + " | ".join(real_entropy) + " |",
             "| G's images: share % | " + " | ".join(fake_shares) + " |",
             "| G's images: D's entropy | " + " | ".join(fake_entropy) + " |"]
    if of_classes:
        _, by_class = by_column(table.probabilities, table.y)
        lines.append("| training images of the hidden class: D's entropy | " + " | ".join(by_class) + " |")
    return "\n".join([*lines, ""])


def load(run: str, data_dir: str | None, classes: bool = False):
    """A finished run's configuration, networks and data (read from ``data_dir`` when given); refuses a
    run trained with labels (without them, with ``classes``) and data whose training images lack labels."""
    config, model, _ = load_run(run)
    if config.uses_labels != classes:
        raise CatGANError(f"{run} was trained with labels; its outputs are classes, not clusters (--classes "
                          "counts them)" if config.uses_labels else f"{run} was trained without labels: drop --classes")
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir, download=False)
    data = load_dataset(config)
    if data.labelled is not None:
        raise CatGANError(f"{run} was trained on images without labels; this table needs every training image labelled")
    return config, model, data


def naming(run: str, data_dir: str | None, per_class: int) -> str:
    """The paper's protocol on one clustering run, taken apart cluster by cluster (see the module's
    docstring), as markdown."""
    config, model, data = load(run, data_dir)
    k, discriminator = model.num_clusters, model.discriminator
    if len(data.y_test) == 0:
        raise CatGANError(f"{run}'s data has no test images to name clusters on")
    fewest = int(np.bincount(data.y_train.numpy()).min())
    if per_class > fewest:
        raise CatGANError(f"--naming {per_class}: a class has only {fewest} training images")
    chosen = labelled_indices(data.y_train, per_class, config.seed)
    held = predict_logits(discriminator, data.x_train[chosen]).argmax(dim=1).numpy()
    known = data.y_train[chosen].numpy()
    names = cluster_names(held, known, k)
    test = predict_logits(discriminator, data.x_test).argmax(dim=1).numpy()
    counts = np.zeros((k, data.num_classes), dtype=int)  # every cluster, empty ones too
    np.add.at(counts, (test, data.y_test.numpy()), 1)
    total, label = counts.sum(), data.classes
    lines = [f"## {run}: clusters named by {per_class} labelled training images per class", "",
             "| cluster | test images | majority class (share %) | labelled images it holds | name | test errors |",
             "|---|---|---|---|---|---|"]
    lost = dict(minority=0, unnamed=0, misnamed=0)
    for c in range(k):
        size, majority = counts[c].sum(), counts[c].argmax()
        holds = ", ".join(f"{label[y]}: {n}" for y, n in enumerate(np.bincount(known[held == c], minlength=len(label)))
                          if n) or "none"
        right = counts[c, names[c]] if names[c] >= 0 else 0
        lost["minority"] += size - counts[c, majority] if names[c] >= 0 else 0
        lost["unnamed"] += size if names[c] < 0 else 0
        lost["misnamed"] += counts[c, majority] - right if names[c] >= 0 else 0
        share = f"{100 * counts[c, majority] / size:.1f}" if size else "-"
        lines.append(f"| {c} | {size} | {label[majority] if size else '-'} ({share}) | {holds} | "
                     f"{label[names[c]] if names[c] >= 0 else 'none'} | {size - right} |")
    points = {part: 100 * n / total for part, n in lost.items()}
    many_to_one = 100 * (1 - many_to_one_accuracy(data.y_test.numpy(), test))
    lines += ["", f"Test error with the clusters so named: **{sum(points.values()):.2f}%** of {total} test images: "
              f"{points['minority']:.2f} points from images outside their named cluster's majority class, "
              f"{points['unnamed']:.2f} from clusters that hold no labelled image, {points['misnamed']:.2f} from "
              f"clusters named other than their majority class. Naming each cluster by its test majority instead "
              f"(many-to-one, which reads the test labels) gives {many_to_one:.2f}% (majority-vote purity "
              f"{100 - many_to_one:.2f}%).", ""]
    return "\n".join(lines)


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
    held = "Classes" if of_classes else "Clusters"
    lines += ["", f"{held} holding at least 1% of the images: {used} of {len(counts)}.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--data-dir", help="where the data is now (default: as when trained)")
    parser.add_argument("--images", type=int, default=10000, help="training images to assign (default: 10000)")
    parser.add_argument("--out", help="also write the tables to this markdown file")
    parser.add_argument("--plot", help="draw the tables as pictures into this PNG file")
    parser.add_argument("--by-cluster", help="the most confident images of each cluster into this PNG file")
    parser.add_argument("--naming", type=int, metavar="N", help="also the paper's protocol on the test split: "
                        "clusters named by N labelled training images per class, taken apart cluster by cluster "
                        "(the protocol's N: 5 on digits, 10 on MNIST and Fashion-MNIST)")
    parser.add_argument("--generated", type=int, metavar="N", help="also D's certainty by class or cluster, on the "
                        "training images and on N images of G")
    parser.add_argument("--classes", action="store_true", help="runs trained with labels: D's classes against the "
                        "true ones on the unlabelled training images")
    args = parser.parse_args()
    if args.naming is not None and args.classes:
        sys.exit("cluster_contingency.py: --naming is for clustering runs (trained without labels): drop --classes")
    if args.generated is not None and args.generated < 1:
        sys.exit(f"cluster_contingency.py: --generated {args.generated}: draw at least 1 image of G")
    if args.naming is not None and args.naming < 1:
        sys.exit(f"cluster_contingency.py: --naming {args.naming}: name the clusters by at least 1 image per class")
    try:
        tables = [contingency(run, args.data_dir, args.images, args.classes) for run in args.runs]
        named = [naming(run, args.data_dir, args.naming) for run in args.runs] if args.naming else []
    except CatGANError as err:
        sys.exit(f"cluster_contingency.py: {err}")
    parts = [markdown(run, table.counts, table.classes, args.classes) for run, table in zip(args.runs, tables)]
    if args.generated:
        parts = [part + "\n" + certainty(run, table, args.generated, args.classes)
                 for part, run, table in zip(parts, args.runs, tables)]
    parts += named
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
