"""scripts/benchmark.py: the fast path and the reference loop measured side by side, tables written."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"


def test_benchmark_measures_both_loops_and_writes_its_tables(tmp_path):
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--architectures", "28x28", "--batch-sizes", "10",
               "--precisions", "fp32", "--warmup", "5", "--steps", "5", "--repeats", "2", "--out-dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "benchmark-cpu.json").read_text())
    loops = [(r["loop"], r["precision"]) for r in saved["results"]]
    assert loops == [("reference", "fp32"), ("fast", "fp32")]
    for result in saved["results"]:
        assert result["iterations"] == 5 and len(result["rounds_iterations_per_second"]) == 2
        assert result["iterations_per_second"] == pytest.approx(statistics.median(result["rounds_iterations_per_second"]))
        assert result["images_per_second"] == result["iterations_per_second"] * 10
        assert result["peak_memory_mb"] > 0
    table = (tmp_path / "benchmark-cpu.md").read_text()
    assert "| 28x28 | 10 | reference (DataLoader, .item() per step) |" in table and "| 1.00 |" in table
    assert saved["results"][0]["x_reference"] == 1.0 and saved["repeats"] == 2
    assert "random pixels" in table


def test_benchmark_refuses_bad_options(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--steps", "7", "--warmup", "5", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "--steps a multiple of --warmup" in done.stderr
    assert not list(tmp_path.iterdir())
