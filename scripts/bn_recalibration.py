"""Finished runs' figures with D's batch-norm statistics as trained and re-estimated (`--bn-recalibration`).

    python scripts/bn_recalibration.py RUN [RUN ...] [--images 20000] [--data-dir DIR] [--pilot]
        [--naming 10] [--out FILE.md]

A run trained with `--bn-recalibration N` re-estimates D's batch-norm statistics with its final
weights before its last checkpoint and its test figures (`catgan.evaluation.reestimate_batchnorm`).
The re-estimate depends only on those weights, the training images and the seed, so applying it
to a finished run trained without the switch gives, to float rounding, what the run would have
reported with it (tests/test_practices.py checks this). For each run this prints:

- the figure the run reports (test error %, or one-to-one clustering accuracy % and, for
  clustering runs, the error % with each cluster named by --naming labelled training images per
  class, the paper's protocol), with D's statistics as trained and re-estimated;
- read without any label: the smallest share of D's classes (clusters) among its predictions on
  up to `catgan.evaluation.PROBE_IMAGES` unlabelled training images, as trained and re-estimated.

With --pilot the runs are scripts/pilot_mnist.py's: trained on its 50,000-image part of the MNIST
training split, and their figure is the error on its 10,000 held-out training images (the test
split is not read). --out writes FILE.md and FILE.json. It chooses nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from catgan import load_dataset
from catgan.config import CatGANError
from catgan.data import labelled_indices
from catgan.evaluation import (PROBE_IMAGES, check_reestimable, class_shares_of_run, evaluate, predict_logits,
                               reestimate_batchnorm)
from catgan.metrics import cluster_names, named_cluster_error
from catgan.runs import SUMMARY, git_commit, load_run, read_labelled

REPO = Path(__file__).resolve().parent.parent
STATE = {"as_trained": "as trained", "re_estimated": "re-estimated"}  # a row's two readings of one run


def figures(model, discriminator, data, labelled: np.ndarray, naming: int, seed: int) -> dict:
    """What the run reports on its evaluation split, and the smallest share of D's classes on the
    unlabelled training probe (no label read)."""
    classifies = len(labelled) > 0
    reported = evaluate(model, data.x_test, data.y_test, classifies, discriminator)
    shares, _, _ = class_shares_of_run(discriminator, data.x_train, data.y_train, labelled, model.num_clusters)
    row = {"figure": reported["test_error"] if classifies else reported["clustering_accuracy"],
           "smallest_share": 100 * float(shares.min()), "smallest": int(shares.argmin())}
    if not classifies:
        chosen = labelled_indices(data.y_train, naming, seed)
        held = predict_logits(discriminator, data.x_train[chosen]).argmax(dim=1).numpy()
        names = cluster_names(held, data.y_train[chosen].numpy(), model.num_clusters)
        test = predict_logits(discriminator, data.x_test).argmax(dim=1).numpy()
        row["named_error"] = 100 * named_cluster_error(data.y_test.numpy(), test, names)
    return row


def pilot_data(mnist_dir: str):
    """scripts/pilot_mnist.py's data: 50,000 training images, 10,000 held out as its 'test' split."""
    sys.path.insert(0, str(REPO / "scripts"))
    from pilot_mnist import validation_split

    from catgan import TrainConfig

    mnist = load_dataset(TrainConfig(dataset="mnist", data_dir=mnist_dir))
    mnist.x_test = mnist.y_test = None
    return validation_split(mnist)


def measure(run: str, images: int, data_dir: str | None, pilot: bool, naming: int, cache: dict) -> dict:
    config, model, _ = load_run(run)
    if not (Path(run) / SUMMARY).is_file():
        raise CatGANError(f"{run} has not finished (no {SUMMARY})")
    check_reestimable(run, config, images)
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir, download=False)
    key = ("pilot", config.data_dir) if pilot else (config.dataset, config.data_dir, config.image_size)
    if key not in cache:
        cache[key] = pilot_data(config.data_dir) if pilot else load_dataset(config)
    data = cache[key]
    labelled = np.array(read_labelled(run), dtype=np.int64) if config.uses_labels else np.zeros(0, dtype=np.int64)
    discriminator = model.discriminator  # load_run's D is the one the run reports
    before = figures(model, discriminator, data, labelled, naming, config.seed)
    batches = reestimate_batchnorm(discriminator, data.x_train, config.method == "catgan",
                                   labelled if config.uses_labels else None, images, config.batch_size, config.seed)
    after = figures(model, discriminator, data, labelled, naming, config.seed)
    return {"run": run, "reports": "test error %" if config.uses_labels else "clustering accuracy %",
            "split": "held-out training images" if pilot else "test", "batches": batches,
            "as_trained": before, "re_estimated": after}


def markdown(rows: list[dict], command: str, images: int, naming: int) -> str:
    lines = ["# D's batch-norm statistics as trained and re-estimated", "",
             f"Made by `{command}` at commit {git_commit()}, on the CPU, torch {torch.__version__}.", "",
             f"Re-estimated: reset, then averaged over {images:,} training images with D's final weights, in its "
             "training batches (unlabelled images, then labelled ones), D's noise off "
             "(`--bn-recalibration`). Figure: test error % for runs trained with labels, one-to-one clustering "
             "accuracy % for runs without (on held-out training images for the pilot's runs). Smallest share: "
             f"of D's classes among its predictions on up to {PROBE_IMAGES:,} unlabelled training images, no "
             f"label read. Named error: each cluster named by {naming} labelled training images per class "
             "(the paper's protocol).", "",
             "| run | figure | as trained | re-estimated | smallest share % (class), as trained | re-estimated "
             "| named error %, as trained | re-estimated |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        a, b = row["as_trained"], row["re_estimated"]
        named = [f"{r['named_error']:.2f}" if "named_error" in r else "" for r in (a, b)]
        lines.append(f"| {row['run']} | {row['reports']} ({row['split']}) | {a['figure']:.2f} | {b['figure']:.2f} | "
                     f"{a['smallest_share']:.1f} ({a['smallest']}) | {b['smallest_share']:.1f} ({b['smallest']}) | "
                     f"{named[0]} | {named[1]} |")
    if len(rows) > 1 and len({row["reports"] for row in rows}) == 1:
        lines += ["", f"Over the {len(rows)} runs (mean ± sample std): "
                  + "; ".join(f"{STATE[key]} {spread([row[key]['figure'] for row in rows])}" for key in STATE)
                  + ("" if "named_error" not in rows[0]["as_trained"] else "; named error "
                     + ", ".join(f"{STATE[key]} {spread([row[key]['named_error'] for row in rows])}"
                                 for key in STATE))
                  + "."]
    return "\n".join(lines) + "\n"


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--images", type=int, default=20_000, help="training images to re-estimate over "
                        "(default: 20000)")
    parser.add_argument("--data-dir", help="where the data is now (default: as when trained)")
    parser.add_argument("--pilot", action="store_true", help="the runs are scripts/pilot_mnist.py's")
    parser.add_argument("--naming", type=int, default=10, help="labelled training images per class that name a "
                        "clustering run's clusters (default: 10, MNIST's protocol; digits': 5)")
    parser.add_argument("--out", help="also write FILE.md and FILE.json")
    args = parser.parse_args()
    if args.images < 1 or args.naming < 1:
        sys.exit("bn_recalibration.py: --images and --naming must be at least 1")
    torch.set_num_threads(1)
    cache: dict = {}
    try:
        rows = [measure(run, args.images, args.data_dir, args.pilot, args.naming, cache) for run in args.runs]
    except CatGANError as err:
        sys.exit(f"bn_recalibration.py: {err}")
    command = "python scripts/bn_recalibration.py " + shlex.join(sys.argv[1:])
    text = markdown(rows, command, args.images, args.naming)
    print(text)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"command": command, "commit": git_commit(), "rows": rows},
                                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
