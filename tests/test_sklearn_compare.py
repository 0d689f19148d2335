"""scripts/sklearn_compare.py on a shortened schedule: its table, its records and its rerun."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "sklearn_compare.py"


def test_sklearn_compare_writes_the_table_and_skips_finished_fits_on_a_rerun(tmp_path):
    args = [sys.executable, str(SCRIPT), "--labels", "2", "--seeds", "2", "--epochs", "1", "--jobs", "1",
            "--threads", "1", "--method", "small CNN (labelled only)", "LogisticRegression (labelled only)",
            "--records", str(tmp_path / "records.jsonl"), "--results-dir", str(tmp_path / "results")]
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4 fits to run" in done.stdout
    table = (tmp_path / "results" / "sklearn-digits.md").read_text()
    assert "--labels 2 --seeds 2 --epochs 1" in table and "NOT digits-quick's schedule" in table
    assert "| small CNN (labelled only) |" in table and "| LogisticRegression (labelled only) |" in table
    records = json.loads((tmp_path / "results" / "sklearn-digits.json").read_text())["records"]
    assert len(records) == 4 and {r["seed"] for r in records} == {0, 1}
    cnn = [r for r in records if r["method"].startswith("small CNN")]
    assert all("method='supervised'" in r["estimator"] and 0 <= r["test_error"] <= 100 for r in cnn)
    assert (tmp_path / "results" / "sklearn-digits.png").is_file()
    again = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0 and "0 fits to run" in again.stdout
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 4
