"""The README's "Your own data" example, made and measured: scikit-learn's digits as PNG files in a
labelled/ unlabelled/ test/ folder, trained on, predicted and exported with the catgan command.

    python scripts/own_data_example.py DIR                  # write the folder DIR/digits-png only
    python scripts/own_data_example.py DIR --run [--out results/own-data-example.md]

The folder DIR/digits-png: digits-quick's split (the main job's), 5 labelled training images per class in
labelled/<class>/ (digits-quick's labelled subset, seed 0), the other 1,148 training images in
unlabelled/, and the 599 test images in test/<class>/, as 8x8 greyscale PNG files. With --run it
then runs, with its runs in DIR/runs: `catgan train --dataset folder` (300 epochs, as the main job), `catgan
evaluate`, `catgan predict` on the test folder, and `catgan export`; checks that predict's class
for every test image is the one evaluate's discriminator gives it, and writes the commands and
what they measured (test error, agreement, seconds per 1,000 images predicted) to --out.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from catgan import TrainConfig, load_dataset
from catgan.data import labelled_indices
from catgan.runs import git_commit


def write_folder(root: Path) -> dict:
    from PIL import Image

    data = load_dataset(TrainConfig())
    labelled = set(labelled_indices(data.y_train, 5, seed=0).tolist())

    def save(x, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((x[0].numpy() + 1) * 127.5).round().astype(np.uint8), "L").save(folder / name)

    for i, (x, y) in enumerate(zip(data.x_train, data.y_train.tolist())):
        save(x, root / "labelled" / str(y) if i in labelled else root / "unlabelled", f"train-{i:04d}.png")
    for i, (x, y) in enumerate(zip(data.x_test, data.y_test.tolist())):
        save(x, root / "test" / str(y), f"test-{i:04d}.png")
    return {"labelled": len(labelled), "unlabelled": len(data.x_train) - len(labelled), "test": len(data.x_test)}


def catgan(*args: str) -> tuple[str, float]:
    """Run ``catgan ARGS``; its standard output and wall seconds (exits on failure)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "catgan", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"own_data_example.py: catgan {shlex.join(args)} failed: {done.stderr.strip()}")
    return done.stdout, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--run", action="store_true", help="also train, evaluate, predict and export")
    parser.add_argument("--out", type=Path, help="with --run: write the measured figures to this markdown file")
    args = parser.parse_args()
    if args.dir.exists() and any(args.dir.iterdir()):
        sys.exit(f"own_data_example.py: {args.dir} is not empty")
    images = args.dir / "digits-png"
    counts = write_folder(images)
    print(f"wrote {images}: {counts['labelled']} labelled, {counts['unlabelled']} unlabelled, "
          f"{counts['test']} test images")
    if not args.run:
        return 0
    run, data = args.dir / "runs" / "own", str(images)
    commands = [["train", "--dataset", "folder", "--data-dir", data, "--image-size", "8", "--epochs", "300",
                 "--out-dir", str(args.dir / "runs"), "--name", "own", "--no-progress"],
                ["evaluate", str(run), "--device", "cpu"],
                ["predict", str(run), str(images / "test"), "--out", str(args.dir / "predictions.csv"),
                 "--device", "cpu", "--no-progress"],
                ["export", str(run), "--out", str(args.dir / "model.pt2")]]
    outputs = [catgan(*command) for command in commands]
    import torch

    from catgan.evaluation import predict_logits
    from catgan.runs import load_run

    config, model, classes = load_run(run)
    evaluated = predict_logits(model.discriminator, load_dataset(config).x_test).argmax(dim=1).tolist()
    predicted = [row["prediction"] for row in csv.DictReader(open(args.dir / "predictions.csv"))]
    agree = sum(classes[k] == p for k, p in zip(evaluated, predicted))
    test_error = next(line for line in outputs[1][0].splitlines() if line.startswith("test error"))
    per_thousand = float(outputs[2][0].split("(")[1].split(" s per")[0])
    lines = ["# Your own data: digits as PNG files", "",
             f"Made by `python scripts/own_data_example.py DIR --run` at commit {git_commit()}, on the CPU "
             f"({torch.get_num_threads()} threads), torch {torch.__version__}.", "",
             f"Folder: {counts['labelled']} labelled (5 per class), {counts['unlabelled']} unlabelled, "
             f"{counts['test']} test images, 8x8 greyscale PNG.", "", "```"]
    for command, (stdout, seconds) in zip(commands, outputs):
        lines += [f"$ catgan {shlex.join(command)}   # {seconds:.1f} s", *stdout.strip().splitlines()]
    lines += ["```", "", f"- `catgan evaluate`: {test_error}",
              f"- `catgan predict` on the test folder agrees with the evaluated discriminator on {agree} of "
              f"{len(predicted)} images",
              f"- `catgan predict`: {per_thousand:.2f} s per 1,000 images (reading the PNG files included)", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if agree == len(predicted) == len(evaluated) else 1


if __name__ == "__main__":
    sys.exit(main())
