"""Measure the package's shape: lines per module, the longest function and class, and how many
Python frames a training step passes through from `catgan train` to the loss functions.

    python scripts/code_shape.py [--package DIR]   # DIR: a checkout's catgan/ (default: this one's)

The frames are counted in a fresh process that imports the package from DIR's parent, runs
``catgan.cli.main(["train", "--epochs", "1", ...])`` on digits and records the stack the first
time `catgan.losses.discriminator_terms` is called (from ``main`` down to that function, both counted).
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import sys, tempfile, traceback
import catgan.losses as losses
import catgan.cli as cli
seen = []
real = losses.discriminator_terms
def probe(*args, **kwargs):
    if not seen:
        stack = traceback.extract_stack()[:-1]
        start = max(i for i, frame in enumerate(stack) if frame.name == "main" and frame.filename.endswith("cli.py"))
        seen.append([(frame.filename.rsplit("/", 2)[-1], frame.name) for frame in stack[start:]])
    return real(*args, **kwargs)
losses.discriminator_terms = probe
for name in ("steps", "training"):  # where earlier versions look the function up
    try:
        module = __import__("catgan." + name, fromlist=["x"])
        if hasattr(module, "discriminator_terms"):
            module.discriminator_terms = probe
    except ImportError:
        pass
with tempfile.TemporaryDirectory() as out:
    cli.main(["train", "--epochs", "1", "--no-progress", "--device", "cpu", "--out-dir", out])
print("FRAMES", repr(seen[0] + [("losses.py", "discriminator_terms")]))
"""


def longest(tree: ast.Module, kind: type) -> tuple[str, int]:
    """The longest definition of ``kind`` (a function, at any depth, or a class) and its lines."""
    best = ("-", 0)
    for node in ast.walk(tree):
        if isinstance(node, kind):
            size = node.end_lineno - node.lineno + 1
            best = max(best, (node.name, size), key=lambda pair: pair[1])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=REPO / "catgan")
    args = parser.parse_args()
    modules = []
    for path in sorted(args.package.glob("*.py")):
        tree = ast.parse(path.read_text())
        function = longest(tree, (ast.FunctionDef, ast.AsyncFunctionDef))
        klass = longest(tree, ast.ClassDef)
        modules.append((path.name, len(path.read_text().splitlines()), function, klass))
    print("| module | lines | longest function | longest class |")
    print("|---|---|---|---|")
    for name, lines, (fname, flines), (cname, clines) in sorted(modules, key=lambda m: -m[1]):
        print(f"| {name} | {lines} | {fname} ({flines}) | {cname} ({clines}) |")
    with tempfile.TemporaryDirectory() as work:
        done = subprocess.run([sys.executable, "-c", PROBE], cwd=work, capture_output=True, text=True,
                              env={"PYTHONPATH": str(args.package.resolve().parent), "PATH": "/usr/bin:/bin"})
    frames = next((line for line in done.stdout.splitlines() if line.startswith("FRAMES ")), None)
    if frames is None:
        sys.exit(f"code_shape.py: the probe failed: {done.stderr.strip()[-800:]}")
    stack = ast.literal_eval(frames[len("FRAMES "):])
    print(f"\nframes from cli.main to losses.discriminator_terms: {len(stack)}")
    print(" -> ".join(f"{file}:{name}" for file, name in stack))
    print(json.dumps({"modules": modules, "frames": stack}))


if __name__ == "__main__":
    main()
