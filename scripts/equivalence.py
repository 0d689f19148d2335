"""Check that a change of code shape changed no behaviour: the same runs, bit for bit, before and after.

Runs each case below with the code of an earlier commit (checked out into a temporary git
worktree) and with this checkout's code, one process at a time on the CPU with the same thread
count, and compares:
- the weights: SHA-256 of every tensor of G, D and D's weight average in checkpoint.pt;
- metrics.jsonl: every record, less its wall-clock seconds;
- summary.json: every figure, less wall time, commit and command.
It also resumes, with this checkout's code, a run that the earlier code started and a SIGTERM
stopped, and checks that it ends as the earlier code's uninterrupted run; and it evaluates the
earlier code's finished default run with this checkout's ``catgan evaluate``.

    python scripts/equivalence.py --before bf18898 --out results/redesign-equivalence.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "default": [],
    "clustering": ["--labels-per-class", "0"],
    "practices": ["--ema-decay", "0.999", "--feature-matching", "1", "--instance-noise", "0.2", "--d-steps", "2",
                  "--eval-every", "50"],
    "supervised": ["--method", "supervised"],
    "bf16": ["--precision", "bf16"],
}
RESUME_CASE = ["--epochs", "40", "--checkpoint-steps", "25", "--log-every", "1"]
VOLATILE = {"wall_seconds", "git_commit", "command", "resumed_at_steps", "resumed_with_commits", "catgan_version"}


def catgan(code: Path, *argv: str, check: bool = True, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run ``python -m catgan ARGV`` with the package of ``code`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    command = [sys.executable, "-m", "catgan", *argv]
    if popen:
        return subprocess.Popen(command, env=env, **popen)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


def figures(run: Path) -> dict:
    """What must not change: weight hashes, metric records less seconds, summary less volatile fields."""
    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    weights = {}
    for network in ("generator", "discriminator", "discriminator_average"):
        for name, tensor in checkpoint.get(network, {}).items():
            weights[f"{network}.{name}"] = hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]
    records = [{k: v for k, v in json.loads(line).items() if k != "seconds"}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    return {"weights": weights, "records": records,
            "summary": {k: v for k, v in summary.items() if k not in VOLATILE}}


def differences(before: dict, after: dict) -> list[str]:
    """Where two `figures` differ, one line each (empty: identical)."""
    found = []
    for part in ("weights", "summary"):
        for key in sorted(set(before[part]) | set(after[part])):
            if before[part].get(key) != after[part].get(key):
                found.append(f"{part} {key}: {before[part].get(key)!r} -> {after[part].get(key)!r}")
    if len(before["records"]) != len(after["records"]):
        found.append(f"records: {len(before['records'])} -> {len(after['records'])}")
    for i, (a, b) in enumerate(zip(before["records"], after["records"])):
        if a != b:
            found.append(f"record {i} (step {a.get('step')}) differs")
            break
    return found


def train(code: Path, out: Path, name: str, extra: list[str]) -> Path:
    catgan(code, "train", "--device", "cpu", "--no-progress", "--out-dir", str(out), "--name", name, *extra)
    return out / name


def interrupted(code: Path, out: Path, name: str) -> Path:
    """Start the resume case with ``code`` and stop it by SIGTERM once its first checkpoint after
    step 0 is written; the run directory then holds a checkpoint and no summary."""
    run = out / name
    process = catgan(code, "train", "--device", "cpu", "--no-progress", "--out-dir", str(out), "--name", name,
                     *RESUME_CASE, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while process.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and metrics.read_text().count("\n") >= 60:
            process.terminate()
            break
        time.sleep(0.01)
    process.wait()
    if (run / "summary.json").exists() or process.returncode != 143:
        raise SystemExit(f"the interrupted run was not stopped by SIGTERM (status {process.returncode})")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the commit whose behaviour must be kept")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "redesign-equivalence.md")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    after_commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                  text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "catgan"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="catgan-equivalence-") as tmp:
        tmp = Path(tmp)
        before_code = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before_code), args.before], cwd=REPO, check=True,
                       capture_output=True)
        try:
            for case in args.cases:
                started = time.perf_counter()
                old = figures(train(before_code, tmp / "before-runs", case, CASES[case]))
                new = figures(train(REPO, tmp / "after-runs", case, CASES[case]))
                found = differences(old, new)
                failed |= bool(found)
                rows.append((f"`catgan train {' '.join(CASES[case])}`".replace(" `", "`"), len(old["weights"]),
                             len(old["records"]), old["summary"].get("test_error"), found,
                             time.perf_counter() - started))
                print(f"{case}: {'identical' if not found else 'DIFFERENT: ' + '; '.join(found[:5])}", flush=True)
            # a run the earlier code stopped, resumed by this code, against the earlier code's whole run
            whole = figures(train(before_code, tmp / "before-runs", "whole", RESUME_CASE))
            stopped = interrupted(before_code, tmp / "before-runs", "stopped")
            catgan(REPO, "train", "--resume", str(stopped), "--no-progress")
            found = differences(whole, figures(stopped))
            failed |= bool(found)
            rows.append((f"earlier code stopped by SIGTERM, resumed by this code (`{' '.join(RESUME_CASE)}`)",
                         len(whole["weights"]), len(whole["records"]), whole["summary"].get("test_error"), found, 0))
            print(f"resume: {'identical' if not found else 'DIFFERENT: ' + '; '.join(found[:5])}", flush=True)
            if "default" in args.cases:
                shown = catgan(REPO, "evaluate", str(tmp / "before-runs" / "default"), "--device", "cpu").stdout
                expected = json.loads((tmp / "before-runs" / "default" / "summary.json").read_text())["test_error"]
                same = f"test error: {expected:.2f}%" in shown
                failed |= not same
                rows.append(("`catgan evaluate` of the earlier code's default run", 0, 0, expected,
                             [] if same else [f"printed {shown.strip()!r}"], 0))
                print(f"evaluate: {'same' if same else 'DIFFERENT: ' + shown.strip()}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_code)], cwd=REPO, capture_output=True)
    lines = [
        "# Behaviour kept across the redesign",
        "",
        f"`python scripts/equivalence.py --before {args.before}` at {after_commit}"
        f"{' (with uncommitted changes to catgan/)' if dirty else ''}; CPU, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}. Each case ran with the code of {args.before} and with this code; weights are "
        "compared by SHA-256 of each tensor, metrics.jsonl record by record (less wall-clock seconds), summary.json "
        "figure by figure (less wall time, commit and command).",
        "",
        "| case | tensors | records | test error % (clustering: 100 - accuracy) | result |",
        "|---|---|---|---|---|",
    ]
    for name, tensors, records, figure, found, _ in rows:
        verdict = "identical" if not found else "**differs**: " + "; ".join(found[:3])
        shown = f"{figure:.2f}" if isinstance(figure, float) else "-"
        lines.append(f"| {name} | {tensors or '-'} | {records or '-'} | {shown} | {verdict} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
