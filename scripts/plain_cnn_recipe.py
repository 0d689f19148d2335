"""Choose the plain CNN's augmentation on held-out MNIST training images, never the test split.

For each seed, mnist-100's labelled images (10 per class, the seed's draw) train the plain CNN
(`catgan.plain_cnn`) once per augmentation variant, with weight decay 0.1 and dropout 0.25, each fit
stopped by its loss on 1,000 other training images (100 per class). Those held-out images carry
labels: far more than a user of the baseline has, so they choose the recipe once, for every run;
inside each run, cross-validation over the labelled images alone still chooses the weight decay,
the dropout and the length. The test split is not loaded. Prints the table and writes
results/plain-cnn-recipe.md and .json.

    python scripts/plain_cnn_recipe.py [--seeds 3] [--mnist-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from catgan import TrainConfig, load_dataset
from catgan.data import labelled_indices
from catgan.plain_cnn import Recipe, fit
from catgan.runs import git_commit

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {
    "whole-pixel translations of up to 2 px": Recipe(rotation=0, scale=0, input_noise=0),
    "affine: rotation up to 15 degrees, size 90-110%, translation up to 2 px": Recipe(input_noise=0),
    "the affine moves and Gaussian input noise of std 0.3": Recipe(),  # the default recipe
}
SETTINGS = {"weight_decay": 0.1, "dropout": 0.25}
HELD_OUT = 100  # per class


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--mnist-dir", default=os.environ.get("CATGAN_MNIST_DIR", str(REPO.parent / "shared/data/mnist")))
    parser.add_argument("--results-dir", default=str(REPO / "results"))
    args = parser.parse_args()
    mnist = load_dataset(TrainConfig(dataset="mnist", data_dir=args.mnist_dir))
    mnist.x_test = mnist.y_test = None  # the official test split is not used here
    rows = []
    for seed in range(args.seeds):
        labelled = labelled_indices(mnist.y_train, 10, seed)
        pool = np.setdiff1d(np.arange(len(mnist.y_train)), labelled)
        held_out = pool[labelled_indices(mnist.y_train[pool], HELD_OUT, seed + 1000)]
        x, y = mnist.x_train[labelled], mnist.y_train[labelled]
        x_val, y_val = mnist.x_train[held_out], mnist.y_train[held_out]
        for name, recipe in VARIANTS.items():
            started = time.perf_counter()
            _, record = fit(x, y, 10, SETTINGS, recipe, seed, x_val=x_val, y_val=y_val)
            rows.append({"variant": name, "seed": seed, **record, "seconds": round(time.perf_counter() - started, 1),
                         "recipe": dataclasses.asdict(recipe)})
            print(f"seed {seed}, {name}: held-out error {record['validation_error']:.2f}% "
                  f"(loss {record['best_validation_loss']:.3f}) after {record['best_step']} updates", flush=True)
    lines = ["# The plain CNN's augmentation, chosen on held-out training images", "",
             f"`python scripts/plain_cnn_recipe.py --seeds {args.seeds}`. Per seed: mnist-100's 100 labelled images "
             f"train the plain CNN (weight decay {SETTINGS['weight_decay']}, dropout {SETTINGS['dropout']}), stopped "
             f"at its lowest loss on {10 * HELD_OUT:,} other training images ({HELD_OUT} per class), whose error "
             "there is reported. The test split is not read. Mean ± sample std over seeds; "
             f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}, commit {git_commit()}.", "",
             "| augmentation | held-out error % | held-out loss | updates to the lowest loss | seconds per fit |",
             "|---|---|---|---|---|"]
    for name in VARIANTS:
        mine = [r for r in rows if r["variant"] == name]

        def cell(key: str, digits: int) -> str:
            values = [r[key] for r in mine]
            spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
            return f"{statistics.fmean(values):.{digits}f}{spread}"

        lines.append(f"| {name} | {cell('validation_error', 2)} | {cell('best_validation_loss', 3)} | "
                     f"{cell('best_step', 0)} | {cell('seconds', 0)} |")
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / "plain-cnn-recipe.md").write_text("\n".join(lines) + "\n")
    (results / "plain-cnn-recipe.json").write_text(json.dumps({"fits": rows}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
