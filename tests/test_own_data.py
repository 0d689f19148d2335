"""A user's own images, end to end through `catgan train`: labelled, unlabelled and test folders,
any image size, grey or colour, two classes or clusters."""

import json

import numpy as np
import pytest

from catgan.cli import main

SMALL = ["--epochs", "1", "--batch-size", "4", "--latent-dim", "8", "--d-width", "4", "--g-width", "4",
         "--feature-dim", "8", "--device", "cpu", "--no-progress"]


def _images(folder, count, size, mode, seed):
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")


def _own_folder(root, size, mode, test=True):
    for k, name in enumerate(["healthy", "sick"]):
        _images(root / "labelled" / name, 2, size, mode, seed=k)
        if test:
            _images(root / "test" / name, 2, size, mode, seed=10 + k)
    _images(root / "unlabelled" / "scan-2026", 8, size, mode, seed=20)


@pytest.mark.parametrize("size, mode", [(256, "L"), (64, "RGB")])
def test_two_classes_of_own_images_train_at_their_size(tmp_path, capsys, size, mode):
    _own_folder(tmp_path / "data", size, mode)
    args = ["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", str(size),
            *SMALL, "--out-dir", str(tmp_path), "--name", "own"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test error" in out and "(4 test images)" in out
    summary = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert summary["labelled"] == 4  # every given label, though labels_per_class defaults to 5
    indices = json.loads((tmp_path / "own" / "labelled_indices.json").read_text())
    assert sorted(indices["indices"] if isinstance(indices, dict) else indices) == [0, 1, 2, 3]
    assert main(["evaluate", str(tmp_path / "own"), "--device", "cpu"]) == 0


def test_clustering_own_images_needs_no_labels_and_reports_no_test_figures(tmp_path, capsys):
    _images(tmp_path / "data" / "unlabelled", 12, 32, "L", seed=0)
    base = ["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), *SMALL, "--out-dir", str(tmp_path)]
    assert main([*base, "--labels-per-class", "0", "--clusters", "2", "--name", "k2"]) == 0
    assert "no test split" in capsys.readouterr().out
    summary = json.loads((tmp_path / "k2" / "summary.json").read_text())
    assert summary["labelled"] == 0 and "clustering_accuracy" not in summary
    assert main([*base, "--labels-per-class", "0", "--name", "no-k"]) == 2
    assert "set --clusters to the number of clusters" in capsys.readouterr().err
    assert main([*base, "--name", "no-labels"]) == 2
    assert "no training image is labelled" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "k2"), "--device", "cpu"]) == 2
    assert "has no test split" in capsys.readouterr().err


def test_a_folder_without_unlabelled_images_trains_and_says_why_it_should_have_some(tmp_path, capsys):
    root = tmp_path / "data"
    for k, name in enumerate(["a", "b"]):
        _images(root / "labelled" / name, 4, 16, "L", seed=k)
    args = ["train", "--dataset", "folder", "--data-dir", str(root), "--image-size", "16", *SMALL,
            "--out-dir", str(tmp_path), "--name", "all-labelled"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "every training image is labelled" in captured.err + captured.out
