"""Run the main job, `catgan train` with no arguments, and put what it prints into the README.

The block between the README's ``<!-- main-job:begin -->`` and ``<!-- main-job:end -->`` lines is
replaced by the command and its output as a terminal shows it (the progress bar in its final
state), so the README cannot go stale. The run lands in a temporary folder; its directory is
shown relative to where the command ran. Usage:

    python scripts/readme_main_job.py [--readme README.md]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- main-job:begin -->", "<!-- main-job:end -->"
BAR = re.compile(r"^[^:]+:\s+\d+%\|")  # a progress bar's line: "train digits:  42%|..."


def as_shown(stdout: str, stderr: str) -> list[str]:
    """The lines a terminal would show: of the progress bar's refreshes (each rewriting the line) the
    last, and stderr's lines (the bar) before the stdout lines printed after training."""
    shown = []
    for line in (part.rstrip() for part in re.split(r"[\r\n]", stderr)):
        if not line:
            continue
        if shown and BAR.match(line) and BAR.match(shown[-1]):
            shown[-1] = line  # the same bar, refreshed
        else:
            shown.append(line)
    out = stdout.splitlines()
    trained = next((i for i, line in enumerate(out) if line.startswith(("test error", "clustering accuracy"))),
                   len(out))
    return [*out[:trained], *shown, *out[trained:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args()
    text = args.readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"readme_main_job.py: {args.readme} lacks the {BEGIN} and {END} lines")
    with tempfile.TemporaryDirectory(prefix="catgan-main-job-") as work:
        done = subprocess.run([sys.executable, "-m", "catgan", "train"], cwd=work, capture_output=True, text=True,
                              env={"COLUMNS": "120", **os.environ})
    if done.returncode != 0:
        sys.exit(f"readme_main_job.py: catgan train failed with {done.returncode}: {done.stderr.strip()[-500:]}")
    lines = ["$ catgan train", *as_shown(done.stdout, done.stderr)]
    block = "\n".join([BEGIN, "```text", *lines, "```", END])
    print("\n".join(lines))
    before, rest = text.split(BEGIN, 1)
    args.readme.write_text(before + block + rest.split(END, 1)[1])
    print(f"wrote {args.readme}")


if __name__ == "__main__":
    main()
