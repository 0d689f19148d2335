"""Choose MNIST's network widths and schedule without touching the test split.

The MNIST training split is cut into 50,000 images to train on (100 of them labelled, 10 per
class, drawn from the seed) and 10,000 held out for validation; the official test split is not
loaded. Each width variant trains with its validation error logged after every epoch, so one run
gives the error against the schedule. Writes results/pilot-mnist.md and .json.

    python scripts/pilot_mnist.py [--epochs 6] [--mnist-dir ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from catgan import ImageData, TrainConfig, load_dataset, train

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"D 16, G 16": dict(d_width=16, g_width=16), "D 32, G 16": dict(d_width=32, g_width=16),
            "D 32, G 32": dict(d_width=32, g_width=32)}


def validation_split(data: ImageData, held_out: int = 10_000, seed: int = 0) -> ImageData:
    """The training split cut in two, stratified: training images, and held-out ones as 'test'."""
    from sklearn.model_selection import train_test_split

    keep, hold = train_test_split(
        np.arange(len(data.y_train)), test_size=held_out, stratify=data.y_train.numpy(), random_state=seed
    )
    keep, hold = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(hold))
    return ImageData(
        name="mnist-validation", x_train=data.x_train[keep], y_train=data.y_train[keep],
        x_test=data.x_train[hold], y_test=data.y_train[hold], classes=data.classes,
        source=f"{data.source}: 50,000 training / 10,000 held-out training images",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--mnist-dir", default=os.environ.get("CATGAN_MNIST_DIR", str(REPO.parent / "shared/data/mnist")))
    parser.add_argument("--out-dir", default=None, help="where runs go (default: a temporary folder)")
    args = parser.parse_args()
    mnist = load_dataset(TrainConfig(dataset="mnist", data_dir=args.mnist_dir))
    mnist.x_test = mnist.y_test = None  # the official test split is not used here
    data = validation_split(mnist)
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="catgan-pilot-")
    rows = []
    for label, widths in VARIANTS.items():
        config = TrainConfig(dataset="mnist", labels_per_class=10, epochs=args.epochs, eval_every=1,
                             out_dir=out_dir, progress=True, **widths)
        result = train(config, data=data)
        records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
        curve = [round(r["test_error"], 2) for r in records if r.get("split") == "test"]
        rows.append({"variant": label, **widths, "validation_error_per_epoch": curve,
                     "seconds_per_epoch": round(result.summary["wall_seconds"] / args.epochs, 1)})
        print(label, curve, flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    meta = {"script": "python scripts/pilot_mnist.py --epochs " + str(args.epochs), "git_commit": commit,
            "torch_version": torch.__version__, "device": result.summary["device"], "seed": 0}
    (REPO / "results").mkdir(exist_ok=True)
    (REPO / "results" / "pilot-mnist.json").write_text(json.dumps({**meta, "variants": rows}, indent=2) + "\n")
    header = " | ".join(f"epoch {e}" for e in range(1, args.epochs + 1))
    lines = [
        "# MNIST pilot: validation error (%) by width and epoch",
        "",
        f"`{meta['script']}` at commit `{commit[:10]}`, torch {meta['torch_version']}, {meta['device']}, seed 0.",
        "Trained on 50,000 MNIST training images (100 labelled), validated on the other 10,000 training",
        "images; the test split is not read.",
        "",
        f"| variant | {header} | s / epoch |",
        "|---|" + "---|" * (args.epochs + 1),
    ]
    for row in rows:
        lines.append(f"| {row['variant']} | " + " | ".join(f"{e:.2f}" for e in row["validation_error_per_epoch"])
                     + f" | {row['seconds_per_epoch']:.0f} |")
    (REPO / "results" / "pilot-mnist.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
