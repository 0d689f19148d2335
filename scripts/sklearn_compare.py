"""CatGANClassifier beside scikit-learn's semi-supervised estimators, on digits with few labels.

    python scripts/sklearn_compare.py [--labels 5 10] [--seeds 5] [--jobs 2] [--method NAME ...]

The data are digits-quick's (scikit-learn's digits, the stratified 1/3 test hold-out of
`catgan.load_dataset`). For seed s and k labels per class, the labelled training images are the
ones ``catgan train --seed s --labels-per-class k`` draws; every other training image gets y = -1.
Each method is fitted on the training split and scored on the test split, nothing tuned on it:

- CatGANClassifier on 8x8 images (``image_shape=(8, 8)``: the convolutional networks) and on flat
  rows (the fully connected, permutation-invariant ones), with digits-quick's schedule (300 epochs);
- the small CNN: ``CatGANClassifier(method="supervised")``, the same convolutional discriminator
  trained by cross-entropy on the labelled images alone, for as many updates (it is given the
  same y, -1 included, and never reads the unlabelled rows: ``catgan train --method supervised``);
- ``SelfTrainingClassifier(SVC(probability=True))`` and ``LabelSpreading(kernel="knn")``, which see
  the unlabelled images too, with scikit-learn's default settings otherwise (the RBF kernel's
  default width does not suit these 64-dimensional rows, so LabelSpreading uses nearest neighbours);
- ``LogisticRegression`` on the labelled images alone.

Every finished fit is appended to runs/sklearn-compare/records.jsonl and skipped by a rerun with
the same settings. Writes results/sklearn-digits.md, .json and .png (mean ± sample std of the
test error over seeds).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 300  # digits-quick's schedule (scripts/compare.py)


def make_estimator(method: str, seed: int, epochs: int = EPOCHS):
    """A fresh, unfitted estimator for ``method``; its repr is recorded with each result."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
    from sklearn.svm import SVC

    from catgan import CatGANClassifier

    catgan = dict(device="cpu", random_state=seed, epochs=epochs)
    return {
        "CatGANClassifier, convolutional": lambda: CatGANClassifier(image_shape=(8, 8), **catgan),
        "CatGANClassifier, fully connected": lambda: CatGANClassifier(**catgan),
        "small CNN (labelled only)": lambda: CatGANClassifier(method="supervised", image_shape=(8, 8), **catgan),
        "SelfTrainingClassifier(SVC)": lambda: SelfTrainingClassifier(SVC(probability=True, random_state=seed)),
        "LabelSpreading (knn)": lambda: LabelSpreading(kernel="knn"),
        "LogisticRegression (labelled only)": lambda: LogisticRegression(max_iter=1000),
    }[method]()


METHODS = [
    "CatGANClassifier, convolutional",
    "CatGANClassifier, fully connected",
    "small CNN (labelled only)",
    "SelfTrainingClassifier(SVC)",
    "LabelSpreading (knn)",
    "LogisticRegression (labelled only)",
]
LABELLED_ONLY = {"LogisticRegression (labelled only)"}  # fitted on the labelled rows alone


def digits_split():
    """digits-quick's split as flat rows in [-1, 1]: X_train, y_train, X_test, y_test."""
    from catgan import TrainConfig, load_dataset

    data = load_dataset(TrainConfig(dataset="digits"))
    flat = lambda x: x.reshape(len(x), -1).numpy().astype("float64")  # noqa: E731
    return flat(data.x_train), data.y_train.numpy(), flat(data.x_test), data.y_test.numpy()


def settings(estimator) -> str:
    """Every parameter of ``estimator`` (nested ones too), defaults included: what a record was made with."""
    return json.dumps(estimator.get_params(deep=True), default=repr, sort_keys=True)


def fit_one(method: str, labels: int, seed: int, epochs: int, threads: int) -> dict:
    """Fit ``method`` with ``labels`` per class (seed ``seed``) and score it on the test split."""
    import numpy as np
    import sklearn
    import torch

    from catgan import labelled_indices
    from catgan.runs import git_commit

    torch.set_num_threads(threads)
    x_train, y_train, x_test, y_test = digits_split()
    chosen = labelled_indices(y_train, labels, seed)
    y = np.full(len(y_train), -1)
    y[chosen] = y_train[chosen]
    estimator = make_estimator(method, seed, epochs)
    x_fit, y_fit = (x_train[chosen], y[chosen]) if method in LABELLED_ONLY else (x_train, y)
    start = time.perf_counter()
    estimator.fit(x_fit, y_fit)
    seconds = time.perf_counter() - start
    error = 100.0 * (1.0 - estimator.score(x_test, y_test))
    return {"method": method, "labels_per_class": labels, "seed": seed, "test_error": error,
            "fit_seconds": round(seconds, 2), "estimator": repr(estimator), "settings": settings(estimator),
            "threads": threads, "commit": git_commit(),
            "torch": torch.__version__, "sklearn": sklearn.__version__}


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[5, 10], help="labels per class")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--method", nargs="+", choices=METHODS, metavar="NAME", help="only these methods (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="fits side by side")
    parser.add_argument("--threads", type=int, help="CPU threads per fit (default: the CPU's cores / --jobs)")
    parser.add_argument("--records", default=str(REPO / "runs" / "sklearn-compare" / "records.jsonl"))
    parser.add_argument("--results-dir", default=str(REPO / "results"))
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="CatGAN's and the small CNN's epochs (smoke tests "
                        "only; the table says when it is not digits-quick's 300)")
    args = parser.parse_args()
    if args.jobs < 1 or (args.threads is not None and args.threads < 1) or args.seeds < 1 or min(args.labels) < 1 \
            or args.epochs < 1:
        sys.exit("sklearn_compare.py: --jobs, --threads, --seeds, --labels and --epochs must be at least 1")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    records_path = Path(args.records)
    records_path.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if records_path.is_file():
        for line in records_path.read_text().splitlines():
            record = json.loads(line)
            done[(record["method"], record["labels_per_class"], record["seed"])] = record
    todo = []
    for method in args.method or METHODS:
        for labels in args.labels:
            for seed in range(args.seeds):
                record = done.get((method, labels, seed))
                if record is None or record.get("settings") != settings(make_estimator(method, seed, args.epochs)):
                    todo.append((method, labels, seed))
    print(f"sklearn_compare: {len(todo)} fits to run, {threads} threads each, {args.jobs} at a time")
    from tqdm import tqdm

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context, initializer=_worker_init,
                                                initargs=(threads,)) as pool:
        futures = {pool.submit(fit_one, *task, args.epochs, threads): task for task in todo}
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="fits"):
            record = future.result()
            done[(record["method"], record["labels_per_class"], record["seed"])] = record
            with records_path.open("a") as out:
                out.write(json.dumps(record) + "\n")
            tqdm.write(f"{record['method']}, {record['labels_per_class']} labels, seed {record['seed']}: "
                       f"{record['test_error']:.2f}% test error ({record['fit_seconds']:.0f} s)")
    wanted = [done[(m, k, s)] for m in args.method or METHODS for k in args.labels for s in range(args.seeds)]
    write_results(wanted, args)
    return 0


def write_results(records: list[dict], args) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    import compare  # scripts/compare.py: the table's number format

    from catgan.runs import git_commit

    methods = list(dict.fromkeys(r["method"] for r in records))
    labels = sorted({r["labels_per_class"] for r in records})
    errors = {(m, k): [r["test_error"] for r in records if r["method"] == m and r["labels_per_class"] == k]
              for m in methods for k in labels}
    seconds = {m: statistics.fmean(r["fit_seconds"] for r in records if r["method"] == m) for m in methods}
    command = " ".join(["python scripts/sklearn_compare.py",
                        *([f"--labels {' '.join(map(str, args.labels))}"] if args.labels != [5, 10] else []),
                        *([f"--seeds {args.seeds}"] if args.seeds != 5 else []),
                        *([f"--epochs {args.epochs}"] if args.epochs != EPOCHS else [])])
    lines = ["# CatGANClassifier beside scikit-learn's semi-supervised estimators (digits)", "",
             f"Made by `{command}`; table written at commit {git_commit()}, fits made at "
             f"{', '.join(sorted({r.get('commit') or 'an unrecorded commit' for r in records}))}; every fit's "
             "estimator, time and commit are in `sklearn-digits.json`.",
             "Digits-quick's split (1,198 training and 599 test images); k labels per class from the training",
             "split, every other training image given y = -1. Test error %, mean ± sample std over "
             f"{args.seeds} seeds (seed s draws the labelled subset and seeds the estimator).", "",
             "| method | " + " | ".join(f"{k} labels per class" for k in labels) + " | fit time (s) |",
             "|---|" + "---|" * len(labels) + "---|"]
    for method in methods:
        cells = [compare.fmt(errors[method, k]) for k in labels]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {seconds[method]:.1f} |")
    threads = sorted({r["threads"] for r in records})
    lines += ["", f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores, "
              f"{', '.join(map(str, threads))} thread(s) per fit; torch {records[0]['torch']}, "
              f"scikit-learn {records[0]['sklearn']}. CatGAN and the small CNN train for {args.epochs} epochs "
              f"({'digits-quick' if args.epochs == EPOCHS else 'NOT digits-quick'}'s schedule); the scikit-learn estimators use their default settings except "
              "where named."]
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "sklearn-digits.md").write_text("\n".join(lines) + "\n")
    (results / "sklearn-digits.json").write_text(json.dumps({"records": records}, indent=2) + "\n")
    plot(methods, labels, errors, results / "sklearn-digits.png")
    print("\n".join(lines))


def plot(methods: list[str], labels: list[int], errors: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.55 * len(methods) * len(labels) + 1.2))
    height = 0.8 / len(labels)
    for j, k in enumerate(labels):
        means = [statistics.fmean(errors[m, k]) for m in methods]
        stds = [statistics.stdev(errors[m, k]) if len(errors[m, k]) > 1 else 0.0 for m in methods]
        ax.barh([i + j * height for i in range(len(methods))], means, height, xerr=stds, capsize=3,
                label=f"{k} labels per class")
    ax.set_yticks([i + height * (len(labels) - 1) / 2 for i in range(len(methods))], methods)
    ax.invert_yaxis()
    ax.set_xlabel("test error % (mean ± std over seeds)")
    ax.legend()
    ax.set_title("digits: CatGANClassifier beside scikit-learn")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
