"""scripts/compare.py on a shortened digits-quick: tables, records, plot, resuming and refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare.py"


def _compare(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd)


def test_compare_runs_resumes_and_refuses_other_settings(tmp_path):
    common = ["digits-quick", "--seeds", "2", "--epochs", "1", "--device", "cpu", "--jobs", "2",
              "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    first = _compare(*common, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "6 runs, 0 already finished" in first.stdout
    records = json.loads((tmp_path / "results" / "digits-quick.json").read_text())["runs"]
    assert len(records) == 6
    assert {r["slug"] for r in records} == {"catgan", "supervised", "all-labels"}
    for record in records:
        assert {"test_error", "wall_seconds", "device", "torch_version", "git_commit", "command", "seed"} <= set(record)
        assert record["cpu_threads"] == max(1, (os.cpu_count() or 1) // 2)
        assert record["command"].startswith("catgan train ") and " --epochs 1 " in record["command"]
    table = (tmp_path / "results" / "digits-quick.md").read_text()
    assert "| CatGAN | 2 |" in table and "not the protocol's schedule" in table
    assert (tmp_path / "results" / "digits-quick.png").stat().st_size > 1000

    saved = tmp_path / "runs" / "digits-quick" / "catgan-seed0" / "config.json"
    older = json.loads(saved.read_text())
    del older["label_smoothing"]  # as saved before the field existed: it counts as its default
    saved.write_text(json.dumps(older))
    again = _compare(*common, cwd=tmp_path)
    assert again.returncode == 0 and "6 runs, 6 already finished" in again.stdout
    assert json.loads((tmp_path / "results" / "digits-quick.json").read_text())["runs"] == records

    other = _compare(*[a if a != "1" else "2" for a in common], cwd=tmp_path)
    assert other.returncode != 0 and "was run with other settings (epochs)" in other.stderr


def test_a_killed_run_is_kept_aside_and_run_again(tmp_path):
    half_done = tmp_path / "runs" / "digits-quick" / "catgan-seed0"
    half_done.mkdir(parents=True)
    (half_done / "config.json").write_text("{}")  # no summary.json: the run did not finish
    args = ["digits-quick", "--seeds", "1", "--epochs", "1", "--device", "cpu",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    done = _compare(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (half_done / "summary.json").is_file()
    assert (half_done.parent / "catgan-seed0.incomplete" / "config.json").read_text() == "{}"


def test_failed_runs_are_reported_and_fail_the_script(tmp_path):
    done = _compare("mnist-100", "--seeds", "1", "--epochs", "1", "--data-dir", str(tmp_path / "nowhere"),
                    "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()[-3:]
    assert all("failed (2): catgan train: error: mnist not found" in line for line in errors), done.stderr
    assert not (tmp_path / "results").exists()


def test_only_runs_the_named_methods_and_refuses_unknown_ones(tmp_path):
    common = ["digits-quick", "--seeds", "1", "--epochs", "1", "--device", "cpu",
              "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    first = _compare(*common, "--only", "supervised", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 runs, 0 already finished, 1 of the others to run now (--only)" in first.stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "digits-quick").iterdir() if p.is_dir()) == ["supervised-seed0"]
    unknown = _compare(*common, "--only", "ladder", cwd=tmp_path)
    assert unknown.returncode != 0 and "digits-quick has the methods all-labels, catgan, supervised" in unknown.stderr


def test_only_seeds_plans_just_those_seeds(tmp_path):
    done = _compare("digits-quick", "--seeds", "3", "--only-seeds", "2", "--dry-run", "--threads", "1",
                    "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert sorted(Path(p).name for p in listed) == ["all-labels-seed2", "catgan-seed2", "supervised-seed2"]
    assert "9 runs, 0 already finished, 3 of the others to run now (--only)" in done.stdout
    zero = _compare("digits-quick", "--threads", "0", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert zero.returncode != 0 and "--jobs and --threads must be at least 1" in zero.stderr


def test_the_plain_cnn_runs_without_the_protocol_schedule(tmp_path):
    done = _compare("mnist-100", "--only", "cnn", "--dry-run", "--data-dir", "mnist", "--runs-dir",
                    str(tmp_path / "runs"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    commands = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if "cnn-seed" in line]
    assert len(commands) == 5  # the 100-label protocol's seeds
    assert all("--method cnn" in c and "--labels-per-class 10" in c for c in commands)
    assert not any("--epochs" in c or "--d-width" in c for c in commands)


def test_a_table_keeps_the_recorded_runs_whose_directories_are_gone(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    earlier = {"method": "CatGAN", "slug": "catgan", "seed": 0, "labels_per_class": 5, "test_error": 3.0,
               "wall_seconds": 60.0, "device": "cuda (elsewhere)", "torch_version": "2",
               "command": "catgan train --epochs 1 --device cuda --out-dir elsewhere --name catgan-seed0"}
    other = {**earlier, "seed": 1, "test_error": 9.0, "command": "catgan train --epochs 2 --seed 1"}  # not the plan
    (results / "digits-quick.json").write_text(json.dumps({"protocol": "digits-quick", "runs": [earlier, other]}))
    done = _compare("digits-quick", "--seeds", "2", "--only-seeds", "0", "--epochs", "1", "--device", "cpu", "--only", "supervised",
                    "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(results), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = json.loads((results / "digits-quick.json").read_text())["runs"]
    assert sorted(r["slug"] for r in records) == ["catgan", "supervised"]
    assert [r["from"] for r in records if r["slug"] == "catgan"] == ["results/digits-quick.json"]
    table = (results / "digits-quick.md").read_text()
    assert "| CatGAN | 1 | 3.00 |" in table and "read from the records" in table
    # a record whose run directory is here is not read from the file
    (results / "digits-quick.json").write_text(json.dumps({"protocol": "digits-quick", "runs": [
        {**earlier, "slug": "supervised", "method": "supervised baseline", "command": earlier["command"].replace(
            "catgan train", "catgan train --method supervised").replace("catgan-seed0", "supervised-seed0")}]}))
    again = _compare("digits-quick", "--seeds", "2", "--only-seeds", "0", "--epochs", "1", "--device", "cpu",
                     "--report-only", "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(results), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [r.get("from") for r in json.loads((results / "digits-quick.json").read_text())["runs"]] == [None]


def test_a_stopped_run_is_resumed_from_its_checkpoint(tmp_path):
    args = ["digits-quick", "--seeds", "1", "--epochs", "2", "--device", "cpu", "--only", "catgan",
            "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    assert _compare(*args, cwd=tmp_path).returncode == 0
    run = tmp_path / "runs" / "digits-quick" / "catgan-seed0"
    whole = json.loads((run / "summary.json").read_text())
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    again = _compare(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["test_error"] == whole["test_error"] and resumed["resumed_at_steps"] == [whole["steps"]]
    assert "resuming" in (run.parent / "catgan-seed0.log").read_text()
    assert not list(run.parent.glob("*.incomplete*"))


def test_clustering_protocols_report_dead_clusters_the_label_free_rule_and_named_clusters(tmp_path):
    common = ["digits-cluster", "--seeds", "1", "--epochs", "1", "--device", "cpu", "--only", "catgan-k10", "kmeans-k10",
              "--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results")]
    done = _compare(*common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = {r["slug"]: r for r in json.loads((tmp_path / "results" / "digits-cluster.json").read_text())["runs"]}
    catgan, kmeans = records["catgan-k10"], records["kmeans-k10"]
    assert len(catgan["test_shares"]) == 10 and abs(sum(catgan["test_shares"]) - 1) < 1e-6
    assert catgan["dead_clusters"] == sum(share < 0.01 for share in catgan["test_shares"])
    assert 0 <= catgan["mutual_information"] <= 2.31  # at most log 10
    assert 0 <= catgan["named_error"] <= 100 and 0 < catgan["kmeans_features_accuracy"] <= 100
    assert 0 <= kmeans["named_error"] <= 100 and "mutual_information" not in kmeans
    assert (tmp_path / "runs" / "digits-cluster" / "catgan-k10-seed0" / "cluster_figures.json").is_file()
    table = (tmp_path / "results" / "digits-cluster.md").read_text()
    assert "| CatGAN, K = 10 (the paper's objective) | " in table and "clusters named by labelled images" in table

    (tmp_path / "results" / "digits-cluster.md").unlink()
    reported = _compare(*common[:5], "--device", "cpu", "--report-only", "--runs-dir", str(tmp_path / "runs"), "--results-dir",
                        str(tmp_path / "results"), cwd=tmp_path)
    assert reported.returncode == 0, reported.stderr
    assert (tmp_path / "results" / "digits-cluster.md").read_text() == table
    assert not (tmp_path / "runs" / "digits-cluster" / "catgan-k10-w2-seed0").exists()  # nothing else trained
