"""scripts/ablation.py on a shortened digits-quick: one row per variant, warnings and records."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ablation.py"


def test_ablation_writes_a_row_per_variant_and_resumes(tmp_path):
    args = [sys.executable, str(SCRIPT), "--seeds", "1", "--epochs", "1", "--device", "cpu", "--jobs", "2",
            "--variant", "defaults", "label smoothing 0.1", "D:G 1:2",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 runs, 0 already finished" in done.stdout
    table = (tmp_path / "results" / "ablation-digits-quick.md").read_text()
    assert "| defaults | - | 1 |" in table and "+0.00 | - |" in table  # one seed: no verdict
    assert "| label smoothing 0.1 | `--label-smoothing 0.1` | 1 |" in table and "| D:G 1:2 | `--g-steps 2` | 1 |" in table
    assert "--epochs overrides the protocol's schedule" in table
    records = json.loads((tmp_path / "results" / "ablation-digits-quick.json").read_text())["runs"]
    assert len(records) == 3 and all("--epochs 1" in r["command"] and "warnings" in r for r in records)
    smoothing = next(r for r in records if r["method"] == "label smoothing 0.1")
    assert "--label-smoothing 0.1" in smoothing["command"]
    again = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0 and "3 runs, 3 already finished" in again.stdout


def test_verdict_needs_a_gap_larger_than_both_standard_deviations():
    sys.path.insert(0, str(SCRIPT.parent))
    from ablation import verdict

    base = [2.0, 3.0, 4.0]  # mean 3, std 1
    assert verdict([0.4, 0.5, 0.6], base) == "better"  # gap -2.5 > 1 + 0.1
    assert verdict([1.0, 2.0, 3.0], base) == "within noise"  # gap -1 < 2
    assert verdict([6.0, 6.5, 7.0], base) == "worse"
    assert verdict([0.5], base) == "-"
