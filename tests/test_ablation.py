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
    assert "| defaults | - | 1 |" in table and "+0.00" in table
    assert "| label smoothing 0.1 | `--label-smoothing 0.1` | 1 |" in table and "| D:G 1:2 | `--g-steps 2` | 1 |" in table
    assert "--epochs overrides the protocol's schedule" in table
    records = json.loads((tmp_path / "results" / "ablation-digits-quick.json").read_text())["runs"]
    assert len(records) == 3 and all("--epochs 1" in r["command"] and "warnings" in r for r in records)
    smoothing = next(r for r in records if r["method"] == "label smoothing 0.1")
    assert "--label-smoothing 0.1" in smoothing["command"]
    again = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0 and "3 runs, 3 already finished" in again.stdout
