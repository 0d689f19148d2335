"""The pictures the README shows: samples along training, samples by class, training curves.

    python scripts/readme_pictures.py [--out-dir runs/readme-pictures]

Trains the main job (digits, 5 labels per class) and the same schedule without labels (K = 10
clusters), each with a fixed-noise grid every 100 epochs and the test split evaluated every 25
epochs for the curves (the log only; nothing is chosen on it), draws their curves with
`catgan plot`, and copies the pictures into results/pictures/, with pictures.json beside them:
each run's command, commit, device, torch version and wall time, and which pictures came from it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from catgan import TrainConfig, train
from catgan.plots import class_grid, plot_run
from catgan.runs import load_run

REPO = Path(__file__).resolve().parent.parent
RUNS = {
    "semi-supervised": dict(labels_per_class=5),
    "clustering": dict(labels_per_class=0, clusters=10),
}
COPIED = ["samples/epoch-0100.png", "samples/epoch-0300.png", "samples_by_class.png", "plots/entropies.png",
          "plots/d_scores.png", "plots/gradients.png", "plots/fake_classes.png", "plots/test.png"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(REPO / "runs" / "readme-pictures"))
    args = parser.parse_args()
    pictures = REPO / "results" / "pictures"
    pictures.mkdir(parents=True, exist_ok=True)
    provenance = {}
    for name, options in RUNS.items():
        run_dir = Path(args.out_dir) / name
        if not (run_dir / "summary.json").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished earlier attempt
            config = TrainConfig(sample_every=100, eval_every=25, out_dir=args.out_dir, name=name, **options)
            train(config, command=f"python scripts/readme_pictures.py  # {name}")
        _, model, classes = load_run(run_dir)  # the class grid again, as the current code draws it
        class_grid(model, run_dir / "samples_by_class.png", class_names=classes if options["labels_per_class"] else None)
        plot_run(run_dir)
        copied = []
        for relative in COPIED:
            target = pictures / f"{name}-{relative.replace('/', '-')}"
            shutil.copyfile(run_dir / relative, target)
            copied.append(target.name)
            print(f"wrote {target.relative_to(REPO)}")
        summary = json.loads((run_dir / "summary.json").read_text())
        provenance[name] = {key: summary.get(key) for key in ("command", "git_commit", "device", "cpu_threads",
                                                              "torch_version", "wall_seconds")}
        provenance[name]["pictures"] = copied
    (pictures / "pictures.json").write_text(json.dumps(provenance, indent=2) + "\n")


if __name__ == "__main__":
    main()
