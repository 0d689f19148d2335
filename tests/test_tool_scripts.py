"""scripts/clustering_sweep.py, scripts/readme_main_job.py and scripts/equivalence.py: the parts
that decide what they report; and the README's figures, which come from the tables they write."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import clustering_sweep  # noqa: E402
import equivalence  # noqa: E402
import readme_main_job  # noqa: E402


def test_a_grid_is_every_combination_of_its_values():
    assert clustering_sweep.grid_points(["a=1,2", "b=x"]) == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]
    assert clustering_sweep.grid_points([]) == [{}]


def test_a_sweep_trains_each_point_and_seed_once_and_counts_dead_clusters(tmp_path):
    out, runs = tmp_path / "sweep", tmp_path / "runs"
    argv = [sys.executable, str(SCRIPTS / "clustering_sweep.py"), "--epochs", "1", "--seeds", "0", "1",
            "--grid", "marginal_weight=1,2", "--set", "d_width=8", "--set", "g_width=8", "--set", "clusters=12",
            "--set", "device=cpu", "--probe", "300", "--runs-dir", str(runs), "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert sorted(run["run"] for run in record["runs"]) == [
        "marginal_weight1-seed0", "marginal_weight1-seed1", "marginal_weight2-seed0", "marginal_weight2-seed1"]
    for run in record["runs"]:
        assert len(run["test_shares"]) == 12 and abs(sum(run["test_shares"]) - 1) < 1e-6
        assert run["dead_clusters"] == sum(share < 0.01 for share in run["test_shares"])
        assert 0 <= run["mutual_information"] <= run["log_k"] + 1e-6
    assert json.loads((runs / "marginal_weight2-seed1" / "config.json").read_text())["marginal_weight"] == 2.0
    table = out.with_suffix(".md").read_text()
    assert "| marginal_weight=1 | 12 | 2 |" in table and "| marginal_weight=2 | 12 | 2 |" in table
    again = subprocess.run([*argv, "--report-only"], capture_output=True, text=True)  # reads, trains nothing
    assert again.returncode == 0 and "$ catgan" not in again.stdout
    (runs / "marginal_weight1-seed1" / "summary.json").unlink()  # as if interrupted after its last checkpoint
    resumed = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    started = [line for line in resumed.stdout.splitlines() if line.startswith("$ ")]
    assert len(started) == 1 and started[0].startswith(f"$ catgan train --resume {runs / 'marginal_weight1-seed1'} ")
    assert (runs / "marginal_weight1-seed1" / "summary.json").is_file()
    (runs / "marginal_weight1-seed0" / "summary.json").unlink()  # a run of other settings is refused, not continued
    changed = [arg if arg != "d_width=8" else "d_width=16" for arg in argv]
    refused = subprocess.run(changed, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "d_width (saved 8, asked 16)" in refused.stdout
    assert not (runs / "marginal_weight1-seed0" / "summary.json").is_file()


def test_the_readme_block_shows_the_progress_bar_once_in_its_last_state():
    stderr = "train digits:   0%|  | 0/3\rtrain digits:  50%|x | 1/3\ntrain digits: 100%|xx| 3/3\nwarning: w\n"
    shown = readme_main_job.as_shown("digits: ...\nrun directory: r\ntest error: 1.00%\nwrote r\n", stderr)
    assert shown == ["digits: ...", "run directory: r", "train digits: 100%|xx| 3/3", "warning: w",
                     "test error: 1.00%", "wrote r"]


def test_every_measured_figure_in_the_readme_is_in_a_committed_results_table():
    """Figures of the form "1.52 ± 0.08" or "53.08%" in the README are copied from a table a script
    wrote under results/ (published anchors are listed there too); a figure found in none of them was
    typed by hand or left behind when its table was regenerated."""
    readme = (ROOT / "README.md").read_text()
    tables = "\n".join(path.read_text() for path in (ROOT / "results").rglob("*.md"))
    figures = set(re.findall(r"\d+\.\d+ ± \d+\.\d+", readme))
    figures |= {share[:-1] for share in re.findall(r"(?<![\d.])\d+\.\d+%", readme)}
    assert len(figures) > 20, "the README's results should hold its tables' figures"
    assert sorted(f for f in figures if not re.search(rf"(?<![\d.]){re.escape(f)}(?!\d)", tables)) == []


def test_equivalence_names_each_difference():
    before = {"weights": {"d.w": "aa"}, "records": [{"step": 20, "d": 1}], "summary": {"test_error": 2.0}}
    assert equivalence.differences(before, before) == []
    after = {"weights": {"d.w": "ab"}, "records": [{"step": 20, "d": 2}], "summary": {"test_error": 2.5}}
    found = equivalence.differences(before, after)
    assert any(line.startswith("weights d.w") for line in found)
    assert any(line.startswith("summary test_error") for line in found)
    assert "record 0 (step 20) differs" in found


def test_own_data_example_writes_digits_as_a_labelled_unlabelled_and_test_folder(tmp_path):
    script = Path(__file__).resolve().parent.parent / "scripts" / "own_data_example.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "example")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    images = tmp_path / "example" / "digits-png"
    assert len(list((images / "labelled").rglob("*.png"))) == 50
    assert sorted(p.name for p in (images / "labelled").iterdir()) == [str(k) for k in range(10)]
    assert len(list((images / "unlabelled").glob("*.png"))) == 1148
    assert len(list((images / "test").rglob("*.png"))) == 599
    again = subprocess.run([sys.executable, str(script), str(tmp_path / "example")], capture_output=True, text=True)
    assert again.returncode == 1 and "is not empty" in again.stderr


def test_class_shares_reads_each_run_as_its_end_of_run_check_did_and_refuses_clustering_runs(make_config, digits,
                                                                                             tmp_path):
    from catgan.training import train

    semi = train(make_config(epochs=1), data=digits, log=lambda m: None)
    clustering = train(make_config(epochs=1, labels_per_class=0), data=digits, log=lambda m: None)
    out = tmp_path / "shares"
    done = subprocess.run([sys.executable, str(SCRIPTS / "class_shares.py"), str(semi.run_dir), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    row = json.loads(out.with_suffix(".json").read_text())["runs"][0]
    assert row["shares"] == semi.summary["unlabelled_class_shares"]
    assert row["unlabelled_images"] == len(digits.x_train) - 50
    assert row["test_error"] == semi.summary["test_error"]
    assert (row["starved"] is None) == ("class_starved" not in [w["name"] for w in semi.summary["warnings"]])
    assert f"| {semi.run_dir} | {semi.summary['test_error']:.2f} |" in out.with_suffix(".md").read_text()
    refused = subprocess.run([sys.executable, str(SCRIPTS / "class_shares.py"), str(clustering.run_dir)],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "not a semi-supervised CatGAN run" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_bn_recalibration_gives_what_a_run_with_the_switch_reports_and_refuses_such_a_run(make_config, digits,
                                                                                          tmp_path):
    from catgan.training import train

    plain = train(make_config(epochs=1, seed=1), data=digits, log=lambda m: None)
    switched = train(make_config(epochs=1, seed=1, bn_recalibration=500), data=digits, log=lambda m: None)
    clustering = train(make_config(epochs=1, labels_per_class=0), data=digits, log=lambda m: None)
    out = tmp_path / "bn"
    done = subprocess.run([sys.executable, str(SCRIPTS / "bn_recalibration.py"), str(plain.run_dir),
                           str(clustering.run_dir), "--images", "500", "--naming", "5", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    semi, clusters = json.loads(out.with_suffix(".json").read_text())["rows"]
    # figures read in another process, and statistics equal to float rounding: a borderline image or
    # two may go the other way
    two_images = 2 * 100 / len(digits.y_test) + 1e-9
    assert abs(semi["as_trained"]["figure"] - plain.summary["test_error"]) <= two_images
    # the statistics re-estimated afterwards: the figure the run trained with the switch reported
    assert abs(semi["re_estimated"]["figure"] - switched.summary["test_error"]) <= two_images
    assert semi["batches"] == 10
    assert abs(clusters["as_trained"]["figure"] - clustering.summary["clustering_accuracy"]) <= two_images
    assert 0 <= clusters["re_estimated"]["named_error"] <= 100
    refused = subprocess.run([sys.executable, str(SCRIPTS / "bn_recalibration.py"), str(switched.run_dir)],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "already re-estimated" in refused.stderr and "Traceback" not in refused.stderr
