"""Train a grid of clustering runs (no labels) and measure how many of D's clusters stay alive.

    python scripts/clustering_sweep.py --dataset mnist --data-dir DIR --epochs 10 \\
        --grid marginal_weight=1,2 --grid clusters=10,20 --seeds 0 1 2 --parallel 4 --out results/NAME

Each grid point and seed is one `catgan train --labels-per-class 0` run (its other flags from
--set and the grid), several at a time (--parallel, each with an equal share of the CPU threads,
or --threads each).
For each finished run it records:
- the test figures of its summary (one-to-one accuracy, NMI, ARI; many-to-one for K > classes);
- the share of the test images in each cluster, and how many clusters hold under 1% of them;
- two figures read without any label: D's estimate of the mutual information between an image and
  its cluster, H[p_bar] - E H[p(y|x)], on the first --probe training images (the CatGAN
  objective's real-data part; the rule that may choose among settings), and the entropy of the
  classes D gives generated images at the end of training (does G cover every cluster?);
- D's marginal entropy on real batches over training (first, middle and last logged values).
Writes OUT.json (every run) and OUT.md (mean ± sample std over seeds per grid point). Finished
runs under --runs-dir are read, not trained again (--report-only trains nothing); interrupted ones
resume from their checkpoints, given the sweep's flags, so that a run started with other settings
is refused rather than continued. A run's name holds its grid point and seed, not the --set flags:
give a sweep with other --set flags its own --runs-dir.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def grid_points(grid: list[str]) -> list[dict[str, str]]:
    """``["a=1,2", "b=x"]`` -> ``[{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]``."""
    axes = []
    for item in grid:
        name, _, values = item.partition("=")
        if not values:
            sys.exit(f"clustering_sweep.py: --grid {item!r} is not NAME=V1,V2,...")
        axes.append([(name, value) for value in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)] if axes else [{}]


def run_name(point: dict[str, str], seed: int) -> str:
    return "-".join([*(f"{k}{v}" for k, v in point.items()), f"seed{seed}"]) or f"seed{seed}"


def command(args, point: dict[str, str], seed: int, resume: Path | None = None) -> list[str]:
    """The `catgan train` command of one run; with ``resume``, the command that continues it there."""
    where = ["--resume", str(resume)] if resume else ["--out-dir", str(args.runs_dir), "--name", run_name(point, seed)]
    flags = [*where, "--dataset", args.dataset, "--labels-per-class", "0", "--epochs", str(args.epochs),
             "--seed", str(seed), "--no-progress"]
    if args.data_dir:
        flags += ["--data-dir", args.data_dir]
    for name, value in [*(item.partition("=")[::2] for item in args.set), *point.items()]:
        flags += [f"--{name.replace('_', '-')}", value]
    return ["catgan", "train", *flags]


def next_command(args, point: dict[str, str], seed: int) -> list[str] | None:
    """What trains the run of ``point`` and ``seed``: nothing when it finished, ``catgan train
    --resume`` when it was interrupted (a run writes its first checkpoint before its first step)."""
    run = args.runs_dir / run_name(point, seed)
    if (run / "summary.json").is_file():
        return None
    if (run / "checkpoint.pt").is_file():
        return command(args, point, seed, resume=run)
    if run.exists():  # killed before its first checkpoint: nothing to keep
        from catgan.runs import set_aside

        set_aside(run)
    return command(args, point, seed)


def measure(run: Path, probe: int) -> dict:
    """The figures of one finished run (see the module docstring)."""
    from catgan import load_dataset
    from catgan.evaluation import predict_logits
    from catgan.losses import conditional_entropy, marginal_entropy
    from catgan.runs import load_run

    summary = json.loads((run / "summary.json").read_text())
    config, model, _ = load_run(run)
    data = load_dataset(config)
    k = model.num_clusters
    test = predict_logits(model.discriminator, data.x_test).argmax(dim=1)
    shares = (torch.bincount(test, minlength=k).float() / len(test)).tolist()
    logits = predict_logits(model.discriminator, data.x_train[:probe])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "d" in r]
    marginal = [r["d"]["marginal_entropy_real"] for r in logged]
    histogram = np.asarray(logged[-1].get("fake_class_histogram", [1.0 / k] * k))
    fake_entropy = float(-(histogram[histogram > 0] * np.log(histogram[histogram > 0])).sum())
    return {
        "run": run.name, "clusters": k, "seconds": summary["wall_seconds"], "device": summary["device"],
        "cpu_threads": summary["cpu_threads"], "git_commit": summary["git_commit"],
        **{name: summary[name] for name in ("clustering_accuracy", "nmi", "ari", "many_to_one_accuracy")
           if name in summary},
        "test_shares": shares, "dead_clusters": sum(share < 0.01 for share in shares),
        "mutual_information": float(marginal_entropy(logits) - conditional_entropy(logits)),
        "fake_class_entropy": fake_entropy, "log_k": math.log(k),
        "marginal_entropy_real": [marginal[0], marginal[len(marginal) // 2], marginal[-1]],
        # with eval_every: the test accuracy along training, for the log (never used to choose)
        "accuracy_by_epoch": [[r["epoch"], r["clustering_accuracy"]] for r in records if r.get("split") == "test"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=V", help="a flag for every run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: the cores shared by --parallel)")
    parser.add_argument("--probe", type=int, default=5000, help="training images for the label-free figures")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/clustering-sweep"))
    parser.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.md are written")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report the finished runs")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // args.parallel)
    planned = [(point, seed) for point in grid_points(args.grid) for seed in args.seeds]
    pending, running, failed = ([] if args.report_only else list(planned)), [], []
    started = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    while pending or running:
        while pending and len(running) < args.parallel:
            argv = next_command(args, *pending.pop(0))
            if argv is None:
                continue
            print("$", " ".join(argv), flush=True)
            running.append((argv, subprocess.Popen([sys.executable, "-m", "catgan", *argv[1:]], env=env,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        time.sleep(1)
        for item in list(running):
            argv, process = item
            if process.poll() is not None:
                running.remove(item)
                if process.returncode != 0:
                    failed.append(f"{' '.join(argv)}: {process.stderr.read().strip()[-300:]}")
    rows = []
    for point, seed in planned:
        run = args.runs_dir / run_name(point, seed)
        if (run / "summary.json").is_file():
            rows.append({"point": point, "seed": seed, "command": " ".join(command(args, point, seed)),
                         **measure(run, args.probe)})
    write(args, rows, failed, time.perf_counter() - started)
    if failed:
        sys.exit(f"clustering_sweep.py: {len(failed)} run(s) failed (listed above and in {args.out.with_suffix('.md')})")


def write(args, rows: list[dict], failed: list[str], seconds: float) -> None:
    def mean_std(values: list[float], digits: int = 2) -> str:
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    args.out.parent.mkdir(parents=True, exist_ok=True)
    from catgan.runs import git_commit

    commit = git_commit(REPO) or "not a git checkout"  # marked when catgan/ differs from it
    record = {"command": " ".join(["python", "scripts/clustering_sweep.py", *sys.argv[1:]]), "git_commit": commit,
              "torch_version": torch.__version__, "seconds": seconds, "runs": rows, "failed": failed}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Clustering sweep: {args.dataset}, {args.epochs} epochs, no labels", "",
             f"`{record['command']}` at {commit}; device: {rows[0]['device'] if rows else '-'}; "
             f"{rows[0]['cpu_threads'] if rows else '-'} CPU threads per run; torch {torch.__version__}.", "",
             "Mean ± sample std over seeds. Dead: clusters holding under 1% of the test images. MI: D's "
             "H[p_bar] - E H[p(y|x)] on training images (nats; read without labels; log K at most). G covers: "
             "entropy of the classes D gives generated images, as a share of log K. H[p_bar] real: D's marginal "
             "entropy on real batches, at the end of training.", "",
             "| setting | K | seeds | accuracy % | NMI | ARI | many-to-one % | dead | MI | G covers | H[p_bar] real | "
             "min/run |", "|---" * 12 + "|"]
    for point in grid_points(args.grid):
        group = [r for r in rows if r["point"] == point]
        if not group:
            continue
        m2o = [r["many_to_one_accuracy"] for r in group if "many_to_one_accuracy" in r]
        lines.append(
            f"| {' '.join(f'{k}={v}' for k, v in point.items()) or 'defaults'} | {group[0]['clusters']} | "
            f"{len(group)} | {mean_std([r['clustering_accuracy'] for r in group])} | "
            f"{mean_std([r['nmi'] for r in group], 3)} | {mean_std([r['ari'] for r in group], 3)} | "
            f"{mean_std(m2o) if m2o else '-'} | {mean_std([r['dead_clusters'] for r in group], 1)} | "
            f"{mean_std([r['mutual_information'] for r in group])} | "
            f"{mean_std([r['fake_class_entropy'] / r['log_k'] for r in group])} | "
            f"{mean_std([r['marginal_entropy_real'][-1] for r in group])} | "
            f"{statistics.mean(r['seconds'] for r in group) / 60:.1f} |")
    if failed:
        lines += ["", "Failed runs:", *(f"- {line}" for line in failed)]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
