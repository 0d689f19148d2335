"""The catgan command: help, a smoke run of each subcommand, and one-line errors for bad input."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from catgan.cli import main
from catgan.config import CatGANError

TINY = ["--epochs", "1", "--batch-size", "50", "--latent-dim", "8", "--d-width", "8", "--g-width", "8",
        "--feature-dim", "16", "--device", "cpu", "--no-progress"]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run on digits, made through the CLI."""
    out_dir = tmp_path_factory.mktemp("runs")
    assert main(["train", *TINY, "--out-dir", str(out_dir), "--name", "earlier"]) == 0
    return out_dir / "earlier"


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["evaluate", "--help"], ["sample", "--help"]])
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: catgan" in capsys.readouterr().out


def test_train_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--data-dir", "--download", "--labels-per-class", "--clusters", "--lam", "--epochs",
                 "--batch-size", "--lr", "--seed", "--device", "--out-dir", "--method"):
        assert flag in text


def test_train_prints_the_test_error_and_writes_the_run(finished_run, capsys):
    summary = json.loads((finished_run / "summary.json").read_text())
    assert (finished_run / "samples.png").is_file()
    assert main(["evaluate", str(finished_run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"test error: {summary['test_error']:.2f}%" in out  # the checkpoint reproduces the summary


def test_evaluate_can_re_estimate_ds_batchnorm_statistics_without_touching_the_run(finished_run, tmp_path, capsys):
    before = _snapshot(finished_run)
    assert main(["evaluate", str(finished_run), "--device", "cpu", "--bn-recalibration", "500"]) == 0
    out = capsys.readouterr().out
    assert "re-estimated over 10 batches" in out and "test error: " in out
    assert _snapshot(finished_run) == before
    # what a run trained with the switch reports, from the same weights (the same seed and schedule)
    assert main(["train", *TINY, "--bn-recalibration", "500", "--out-dir", str(tmp_path), "--name", "bn"]) == 0
    switched = json.loads((tmp_path / "bn" / "summary.json").read_text())
    shown = float(re.search(r"test error: ([\d.]+)%", out).group(1))
    assert abs(shown - switched["test_error"]) <= 2 * 100 / 599 + 0.01  # statistics equal to float rounding
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "bn"), "--device", "cpu", "--bn-recalibration", "500"]) == 2
    assert "already re-estimated" in capsys.readouterr().err


def test_train_with_the_fully_connected_networks(tmp_path, capsys):
    args = ["train", *TINY, "--architecture", "mlp", "--mlp-width", "32", "--out-dir", str(tmp_path), "--name", "pi"]
    assert main(args) == 0
    config = json.loads((tmp_path / "pi" / "config.json").read_text())
    assert config["architecture"] == "mlp" and config["mlp_width"] == 32
    assert "test error" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "pi"), "--device", "cpu"]) == 0


def test_sample_writes_a_png(finished_run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(finished_run), "--num", "16", "--out", str(out), "--device", "cpu"]) == 0
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (4 * 34 + 2, 4 * 34 + 2)  # 4 x 4 tiles of 8x8 enlarged to 32, 2 px padding
    assert "wrote 16 samples" in capsys.readouterr().out


def test_clustering_from_the_cli(tmp_path, capsys):
    argv = ["train", *TINY, "--labels-per-class", "0", "--clusters", "20", "--out-dir", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "clustering accuracy (one-to-one)" in out and "many-to-one accuracy" in out


def _idx_gz(path: Path, array, magic_type: int = 0x08, cut: int = 0) -> None:
    """Write ``array`` as a gzip-compressed IDX file; ``cut`` bytes off the end make it truncated."""
    import gzip

    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = gzip.compress(header + array.astype("uint8").tobytes())
    path.write_bytes(data[: len(data) - cut])


def _mnist_folders(tmp_path: Path) -> dict[str, Path]:
    """Small MNIST-like folders, each broken in one way."""
    import numpy as np

    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    arrays = (np.zeros((20, 28, 28)), np.arange(20) % 10, np.zeros((10, 28, 28)), np.arange(10))
    folders = {}
    for case in ("truncated", "magic", "counts"):
        folder = folders[case] = tmp_path / f"mnist-{case}"
        folder.mkdir()
        for name, array in zip(names, arrays):
            _idx_gz(folder / name, array[:7] if case == "counts" and name.startswith("t10k-labels") else array,
                    magic_type=0x0B if case == "magic" and name.startswith("train-labels") else 0x08,
                    cut=12 if case == "truncated" and name.startswith("train-images") else 0)
    return folders


def _bad_inputs(tmp_path: Path, finished_run: Path) -> list[tuple[list[str], str]]:
    from PIL import Image

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = ["--out-dir", str(tmp_path / "runs")]
    mnist = _mnist_folders(tmp_path)
    (tmp_path / "one-class" / "cats").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8), i).save(tmp_path / "one-class" / "cats" / f"{i}.png")
    (tmp_path / "no-images" / "cats").mkdir(parents=True)
    cases = [
        (["train", "--dataset", "mnist", "--data-dir", str(mnist["truncated"]), *out], "train-images-idx3-ubyte.gz"),
        (["train", "--dataset", "mnist", "--data-dir", str(mnist["magic"]), *out], "bad magic number"),
        (["train", "--dataset", "mnist", "--data-dir", str(mnist["counts"]), *out], "10 test images but 7 test labels"),
        (["train", "--dataset", "folder", "--data-dir", str(tmp_path / "one-class"), *out], "only one class"),
        (["train", "--dataset", "folder", "--data-dir", str(tmp_path / "no-images"), *out], "no images"),
        (["train", "--on-nan", "ignore", *out], "invalid choice: 'ignore'"),
        (["train", "--max-restarts", "-1", *out], "max_restarts must be an integer >= 0"),
        (["train", "--restart-lr-factor", "0", *out], "restart_lr_factor must be in (0, 1]"),
        (["train", "--checkpoint-minutes", "-5", *out], "checkpoint_minutes must be a number >= 0"),
        (["train", "--resume", str(empty)], "not a catgan run directory"),
        (["train", "--resume", str(finished_run)], "has finished"),
        (["train", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["train", "--dataset", "mnist", "--data-dir", str(empty), *out], "mnist not found"),
        (["train", "--dataset", "fashion-mnist", "--data-dir", str(empty), *out], "fashion-mnist not found"),
        (["train", "--dataset", "folder", *out], "needs --data-dir"),
        (["train", "--dataset", "arrays", "--data-dir", str(tmp_path / "absent.npz"), *out], "no such file"),
        (["train", "--dataset", "folder", "--data-dir", str(tmp_path / "absent"), *out], "no such folder"),
        (["train", "--dataset", "cifar10", "--data-dir", str(empty), *out], "could not find cifar10"),
        (["train", "--labels-per-class", "1000", *out], "more than the training split holds"),
        (["train", "--labels-per-class", "-1", *out], "labels_per_class must be an integer >= 0 or 'all'"),
        (["train", "--labels-per-class", "many", *out], "expected an integer or 'all', got 'many'"),
        (["train", "--lam", "-0.5", *out], "lam must be a number >= 0"),
        (["train", "--lam", "nan", *out], "lam must be a number >= 0"),
        (["train", "--lam", "abc"], "invalid float value: 'abc'"),
        (["train", "--clusters", "1", "--labels-per-class", "0", *out], "clusters (K) must be an integer >= 2"),
        (["train", "--clusters", "5", *out], "clusters must equal the number of classes"),
        (["train", "--out-dir", str(a_file / "runs")], "not writable"),
        (["train", "--out-dir", str(finished_run.parent), "--name", finished_run.name], "already exists"),
        (["train", "--epochs", "0", *out], "epochs must be a positive integer"),
        (["train", "--batch-size", "5000", *out], "exceeds the 1198 training images"),
        (["train", "--lr", "0", *out], "lr must be a number > 0"),
        (["train", "--device", "tpu", *out], "device must be auto, cpu, cuda"),
        (["train", "--method", "supervised", "--labels-per-class", "0", *out], "needs labels"),
        (["train", "--name", "a/b", *out], "plain folder name"),
        (["evaluate", str(tmp_path / "nowhere")], "no such run directory"),
        (["evaluate", str(empty)], "not a catgan run directory"),
        (["sample", str(tmp_path / "nowhere")], "no such run directory"),
        (["sample", str(finished_run), "--num", "0"], "--num must be at least 1"),
        (["sample", str(finished_run), "--out", str(a_file / "x.png"), "--device", "cpu"], "cannot write"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--device", "cuda:x", *out], "device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
        (["evaluate", str(finished_run), "--device", "tpu"], "device must be auto, cpu, cuda or cuda:N"),
        (["train", "--batch-size", "1", *out], "batch_size must be an integer >= 2"),
        (["train", "--seed", str(2**64), *out], "seed must be an integer in [0, 2**63)"),
        (["sample", str(finished_run), "--seed", "-3"], "seed must be an integer in [0, 2**63)"),
        (["sample", str(finished_run), "--out", str(finished_run / "samples.png")], "one of the run's own files"),
    ]
    if not torch.cuda.is_available():
        cases.append((["train", "--device", "cuda", *out], "CUDA is not available"))
    return cases


def test_bad_input_gives_one_line_and_status_2_and_keeps_earlier_runs(tmp_path, finished_run, capsys):
    before = _snapshot(finished_run)
    for argv, message in _bad_inputs(tmp_path, finished_run):
        if argv[0] == "train":  # tiny settings first (the case's own flags win), so a miss fails fast
            argv = ["train", *TINY, *argv[1:]]
        try:
            status = main(argv)
        except SystemExit as exit_info:  # argparse errors
            status = exit_info.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert status == 2, (argv, err)
        assert len(lines) == 1, (argv, err)
        assert message in lines[0], (argv, lines[0])
        assert "Traceback" not in err
    assert _snapshot(finished_run) == before
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-made run


@pytest.mark.parametrize("entry_point", ["module", "console script"])
def test_entry_points_in_a_fresh_process(entry_point, tmp_path):
    if entry_point == "module":
        command = [sys.executable, "-m", "catgan"]
    else:
        script = Path(sys.executable).parent / "catgan"
        if not script.is_file():
            pytest.skip(f"no console script beside {sys.executable} (catgan is not pip-installed here)")
        command = [str(script)]
    bad = subprocess.run([*command, "train", "--lam", "-1", "--out-dir", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "catgan train: error: lam must be a number >= 0, got -1.0"
    assert bad.stdout == ""


def test_evaluate_refuses_data_with_other_classes(tmp_path, capsys):
    import numpy as np

    def write(path, classes):
        rng = np.random.default_rng(0)
        y = np.arange(60) % classes
        np.savez(path, x_train=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y_train=y,
                 x_test=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y_test=y[:30])

    write(tmp_path / "three.npz", 3)
    write(tmp_path / "four.npz", 4)
    argv = ["train", *TINY, "--batch-size", "20", "--labels-per-class", "2", "--dataset", "arrays",
            "--data-dir", str(tmp_path / "three.npz"), "--out-dir", str(tmp_path / "runs"), "--name", "three"]
    assert main(argv) == 0
    run = str(tmp_path / "runs" / "three")
    assert main(["evaluate", run, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", run, "--data-dir", str(tmp_path / "four.npz"), "--device", "cpu"]) == 2
    assert "was trained on 3 classes" in capsys.readouterr().err




def test_library_messages_name_fields_and_the_command_shows_flags():
    from catgan.cli import _flags

    assert _flags("try a higher `lr` or more `d_noise`; `folder` only") == "try a higher --lr or more --d-noise; `folder` only"


def test_training_through_the_library_leaves_the_process_allocator_alone(make_config, digits, monkeypatch):
    from catgan import performance
    from catgan.trainer import Trainer

    def refuse():
        raise AssertionError("the library tuned glibc's allocator")

    monkeypatch.setattr(performance, "tune_cpu", refuse)
    Trainer(make_config(epochs=1), digits, report=lambda line: None).fit()  # the command's job, not the library's


def test_a_recorded_train_command_gives_back_its_configuration():
    from catgan.cli import train_config

    config = train_config("catgan train --dataset mnist --labels-per-class 10 --epochs 3 --name 'a b' --no-progress")
    assert (config.dataset, config.labels_per_class, config.epochs, config.name, config.progress) == \
        ("mnist", 10, 3, "a b", False)
    for command in ("python scripts/compare.py digits-cluster", "catgan train --no-such-flag 1"):
        with pytest.raises(CatGANError):
            train_config(command)
