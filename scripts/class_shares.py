"""Which semi-supervised runs filed part of a class under others: D's class shares on unlabelled images.

    python scripts/class_shares.py RUN [RUN ...] [--data-dir DIR] [--out FILE]

For each finished semi-supervised CatGAN run, D (as the run reports it) classifies up to 10,000 of
the training images it was not given labels for; the table lists the smallest and largest share a
class gets, the entropy of the shares, and the class that `catgan.diagnostics.starved_class` flags
(a share under half that class's share of the labelled images), beside the run's test error from
its summary. The figures read no label of an unlabelled image: they are what the `class_starved`
warning reads at the end of every semi-supervised run (runs made before the warning existed do not
have it in their summaries). Prints markdown; --out writes FILE.md and FILE.json.
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
from catgan.diagnostics import starved_class
from catgan.evaluation import PROBE_IMAGES, class_shares_of_run
from catgan.runs import SUMMARY, git_commit, load_run, read_labelled


def shares_of(run: str, data_dir: str | None, cache: dict) -> dict:
    """One run's row: its class shares on unlabelled training images and its test error."""
    config, model, _ = load_run(run)
    if config.method != "catgan" or not config.uses_labels:
        raise CatGANError(f"{run} is not a semi-supervised CatGAN run (method {config.method}, "
                          f"labels per class {config.labels_per_class})")
    if not (Path(run) / SUMMARY).is_file():
        raise CatGANError(f"{run} has not finished (no {SUMMARY})")
    if data_dir is not None:
        config = dataclasses.replace(config, data_dir=data_dir, download=False)
    key = (config.dataset, config.data_dir, config.image_size)
    data = cache[key] if key in cache else cache.setdefault(key, load_dataset(config))
    labelled = np.array(read_labelled(run), dtype=np.int64)
    # load_run's D is the one the run reports (its weight average when it kept one)
    shares, labelled_shares, read = class_shares_of_run(model.discriminator, data.x_train, data.y_train, labelled,
                                                        model.num_clusters)
    starved = starved_class(shares, labelled_shares)
    positive = shares[shares > 0]
    return {"run": run, "test_error": json.loads((Path(run) / SUMMARY).read_text()).get("test_error"),
            "unlabelled_images": read, "shares": [round(float(s), 4) for s in shares],
            "smallest": int(shares.argmin()), "largest": int(shares.argmax()),
            "entropy": float(-(positive * np.log(positive)).sum()),
            "starved": None if starved is None else int(starved), "classes": list(data.classes)}


def markdown(rows: list[dict], command: str) -> str:
    lines = ["# Class shares of semi-supervised runs on their unlabelled training images", "",
             f"Made by `{command}` at commit {git_commit()}, on the CPU, torch {torch.__version__}. "
             f"Shares: of D's predictions on up to {PROBE_IMAGES:,} training images without labels "
             "(no label of theirs read); "
             "entropy in nats (log 10 = 2.303); flagged: a class under half its share of the labelled images "
             "(the `class_starved` warning). Test error: from the run's summary.", "",
             "| run | test error % | smallest share % (class) | largest share % (class) | entropy | flagged |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        name = row["classes"]
        small, large = row["smallest"], row["largest"]
        error = "-" if row["test_error"] is None else f"{row['test_error']:.2f}"
        flagged = "-" if row["starved"] is None else f"class {name[row['starved']]}"
        lines.append(f"| {row['run']} | {error} | {100 * row['shares'][small]:.1f} ({name[small]}) | "
                     f"{100 * row['shares'][large]:.1f} ({name[large]}) | {row['entropy']:.3f} | {flagged} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--data-dir", help="where the data is now (default: as when trained)")
    parser.add_argument("--out", help="write OUT.md and OUT.json")
    args = parser.parse_args()
    cache: dict = {}
    try:
        rows = [shares_of(run, args.data_dir, cache) for run in args.runs]
    except CatGANError as err:
        sys.exit(f"class_shares.py: {err}")
    command = "python scripts/class_shares.py " + shlex.join(sys.argv[1:])
    text = markdown(rows, command)
    print(text, end="")
    if args.out:
        Path(args.out).with_suffix(".md").write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps({"command": command, "commit": git_commit(),
                                                                   "runs": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
