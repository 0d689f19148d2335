"""Measure the foundation's three quick figures, each a real `catgan train` command, timed whole.

1. the main job, `catgan train` with no arguments (digits, 5 labels per class);
2. the same discriminator trained by cross-entropy alone on the same 50 labels (`--method supervised`);
3. one epoch of MNIST with 10 labels per class, loaded through torchvision from a copy of the
   original MNIST files (torchvision checks their md5 and extracts them; no network is used).

Writes results/quick-check.json, results/quick-check.md, and the main job's terminal output and
samples as results/quick-check-main-job.txt and results/quick-check-samples.png. Usage:

    python scripts/quick_check.py [--mnist-dir ../shared/data/mnist] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def run(name: str, args: list[str], work_dir: Path) -> dict:
    """Run ``catgan ARGS`` in ``work_dir`` (runs land in work_dir/runs) and time the whole command."""
    command = [sys.executable, "-m", "catgan", *args]
    print(f"$ catgan {' '.join(args)}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=work_dir, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1]}")
    last = done.stdout.strip().splitlines()[-1]  # "wrote RUN_DIR: file, file, ..."
    run_dir = Path(last[len("wrote ") : last.rindex(": ")])
    summary = json.loads((work_dir / run_dir / "summary.json").read_text())
    print(done.stdout.strip().splitlines()[-2], f"(command: {seconds:.1f} s)", flush=True)
    final_bar = done.stderr.replace("\r", "\n").strip().splitlines()[-1]
    return {"name": name, "command": "catgan " + " ".join(args), "command_seconds": round(seconds, 1),
            "run_dir": str(run_dir), "output": done.stdout, "final_progress_bar": final_bar, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-dir", default=os.environ.get("CATGAN_MNIST_DIR", str(REPO.parent / "shared/data/mnist")))
    parser.add_argument("--work-dir", help="where runs are written (default: a temporary folder)")
    args = parser.parse_args()
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="catgan-quick-check-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    raw = work_dir / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        shutil.copy(Path(args.mnist_dir) / name, raw / name)

    rows = [
        run("main job (CatGAN)", ["train"], work_dir),
        run("cross-entropy only, same D and labels", ["train", "--method", "supervised"], work_dir),
        run("MNIST, 1 epoch, 10 labels per class", ["train", "--dataset", "mnist", "--labels-per-class", "10",
                                                    "--epochs", "1", "--data-dir", "mnist", "--download"], work_dir),
    ]
    git = lambda *words: subprocess.run(["git", *words], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    commit = git("rev-parse", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain", "--", "catgan") else "")
    meta = {
        "script": "python scripts/quick_check.py",
        "git_commit": commit,
        "torch_version": torch.__version__,
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
    }
    out = REPO / "results"
    out.mkdir(exist_ok=True)
    (out / "quick-check.json").write_text(json.dumps({**meta, "runs": rows}, indent=2) + "\n")
    lines = [
        "# Quick check of the foundation",
        "",
        f"Made by `{meta['script']}` at commit `{commit}`; torch {meta['torch_version']}; {meta['cpu']}.",
        "One seed (0) each: quick figures, not the protocol results (see PROTOCOLS.md for those).",
        "",
        "| run | command | test error % | training s | whole command s | device |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['name']} | `{row['command']}` | {row['test_error']:.2f} | {row['wall_seconds']:.0f} | "
                     f"{row['command_seconds']:.0f} | {row['device']} |")
    (out / "quick-check.md").write_text("\n".join(lines) + "\n")
    shutil.copy(Path(rows[0]["run_dir"]) / "samples.png", out / "quick-check-samples.png")
    main_job = rows[0]
    (out / "quick-check-main-job.txt").write_text(f"$ {main_job['command']}\n{main_job['final_progress_bar']}\n{main_job['output']}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
