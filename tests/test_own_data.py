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


@pytest.mark.parametrize("size, mode", [(256, "L"), (128, "RGB"), (64, "RGB"), (32, "L")])
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
    for k, name in enumerate(["round", "square"]):  # a labelled test split scores the clusters
        _images(tmp_path / "data" / "test" / name, 3, 32, "L", seed=5 + k)
    assert main([*base, "--labels-per-class", "0", "--name", "scored"]) == 0  # K: the test split's 2 classes
    assert "clustering accuracy" in capsys.readouterr().out


def test_unreadable_images_stop_loading_by_name_or_are_skipped_and_counted(tmp_path, capsys):
    _own_folder(tmp_path / "data", 16, "L")
    (tmp_path / "data" / "unlabelled" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    base = ["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16", *SMALL,
            "--out-dir", str(tmp_path)]
    assert main([*base, "--name", "stops"]) == 2
    assert "truncated.png" in capsys.readouterr().err
    assert main([*base, "--skip-unreadable", "--name", "skips"]) == 0
    assert "1 unreadable image files skipped" in capsys.readouterr().out
    assert json.loads((tmp_path / "skips" / "summary.json").read_text())["labelled"] == 4


def test_a_folder_without_unlabelled_images_trains_and_says_why_it_should_have_some(tmp_path, capsys):
    root = tmp_path / "data"
    for k, name in enumerate(["a", "b"]):
        _images(root / "labelled" / name, 4, 16, "L", seed=k)
    args = ["train", "--dataset", "folder", "--data-dir", str(root), "--image-size", "16", *SMALL,
            "--out-dir", str(tmp_path), "--name", "all-labelled"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "every training image is labelled" in captured.err + captured.out


def _digits_as_pngs(root, labelled_per_class=3):
    """scikit-learn's digits (the first 300 of digits-quick's split) as PNG files in the three folders."""
    from PIL import Image

    from catgan.config import TrainConfig
    from catgan.data import load_dataset

    digits = load_dataset(TrainConfig())
    seen = {}
    for i, (x, y) in enumerate(zip(digits.x_train[:200], digits.y_train[:200].tolist())):
        seen[y] = seen.get(y, 0) + 1
        folder = root / "labelled" / str(y) if seen[y] <= labelled_per_class else root / "unlabelled"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((x[0].numpy() + 1) * 127.5).round().astype(np.uint8), "L").save(folder / f"{i}.png")
    for i, (x, y) in enumerate(zip(digits.x_test[:100], digits.y_test[:100].tolist())):
        (root / "test" / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(((x[0].numpy() + 1) * 127.5).round().astype(np.uint8), "L").save(root / "test" / str(y) / f"{i}.png")


def test_predict_agrees_with_evaluate_image_for_image_and_refuses_what_does_not_fit(tmp_path, capsys):
    import csv

    import torch

    from catgan.data import load_dataset
    from catgan.evaluation import predict_logits
    from catgan.runs import load_run

    _digits_as_pngs(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "8", *SMALL,
                 "--batch-size", "20", "--out-dir", str(tmp_path), "--name", "run"]) == 0
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(tmp_path / "data" / "test"), "--out", str(out), "--no-progress"]) == 0
    assert "100 images in" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 100 and list(rows[0])[:2] == ["input", "prediction"] and len(rows[0]) == 2 + 10
    config, model, classes = load_run(run)
    data = load_dataset(config)
    logits = predict_logits(model.discriminator, data.x_test)
    expected = logits.argmax(dim=1)
    given = torch.tensor([[float(row[f"p_{name}"]) for name in classes] for row in rows])
    assert torch.allclose(given, logits.softmax(dim=1), atol=2e-6)
    # the same images in the same order (sorted paths), so the same classes, image for image
    assert [row["prediction"] for row in rows] == [classes[k] for k in expected.tolist()]
    assert all(abs(sum(float(v) for k, v in row.items() if k.startswith("p_")) - 1) < 1e-4 for row in rows)

    assert main(["predict", str(run), str(tmp_path / "data" / "test"), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 16, 16), dtype=np.uint8))
    assert main(["predict", str(run), str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "w.csv")]) == 2
    assert "cannot feed a run trained on (1, 8, 8)" in capsys.readouterr().err
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert main(["predict", str(run), str(tmp_path / "broken.png"), "--out", str(tmp_path / "b.csv")]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["predict", str(run), str(tmp_path / "broken.png"), str(tmp_path / "data" / "test" / "0"),
                 "--out", str(tmp_path / "b.csv"), "--skip-unreadable", "--no-progress"]) == 0
    assert "skipped 1 unreadable image files" in capsys.readouterr().out
    assert len((tmp_path / "b.csv").read_text().splitlines()) == 1 + len(list((tmp_path / "data" / "test" / "0").iterdir()))
    assert main(["predict", str(tmp_path / "data"), str(tmp_path / "broken.png"), "--out", str(tmp_path / "c.csv")]) == 2
    assert "not a catgan run directory" in capsys.readouterr().err
    assert main(["predict", str(run), str(tmp_path / "data" / "test"), "--out", str(tmp_path / "no" / "p.csv")]) == 2
    assert "no such folder" in capsys.readouterr().err
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), dtype=np.uint8))
    assert main(["predict", str(run), str(tmp_path / "empty.npz"), "--out", str(tmp_path / "e.csv")]) == 2
    assert "holds no images" in capsys.readouterr().err
    from PIL import Image

    Image.fromarray(np.full((8, 8), 1000, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert main(["predict", str(run), str(tmp_path / "deep.png"), "--out", str(tmp_path / "d.csv")]) == 2
    assert "more than 8 bits" in capsys.readouterr().err
    # the exported program, loaded without catgan, reads the same PNG files to the same probabilities
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt2")]) == 0
    extra = {"catgan.json": ""}
    program = torch.export.load(str(tmp_path / "model.pt2"), extra_files=extra).module()
    pngs = sorted((tmp_path / "data" / "test").rglob("*.png"))
    images = torch.tensor(np.stack([np.asarray(Image.open(p))[None] for p in pngs]), dtype=torch.float32)
    assert torch.allclose(program(images), given, atol=1e-5)
    assert json.loads(extra["catgan.json"])["classes"] == classes
    assert program(torch.zeros(2, 1, 28, 28)).shape == (2, 10)  # any size: resized to the run's 8x8
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt2")]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    np.savez(tmp_path / "ok.npz", x=((data.x_test[:5, 0].numpy() + 1) / 2).astype(np.float32))
    assert main(["predict", str(run), str(tmp_path / "ok.npz"), "--out", str(tmp_path / "n.csv"), "--no-progress"]) == 0
    npz_rows = list(csv.DictReader(open(tmp_path / "n.csv")))
    assert npz_rows[0]["input"].endswith("ok.npz[0]") and len(npz_rows) == 5
    assert torch.equal(torch.tensor([classes.index(r["prediction"]) for r in npz_rows]), expected[:5])


def test_a_clustering_run_shows_its_clusters_and_predict_redraws_them(tmp_path, capsys):
    import csv

    _images(tmp_path / "data" / "unlabelled", 12, 16, "L", seed=0)
    assert main(["train", "--dataset", "folder", "--data-dir", str(tmp_path / "data"), "--image-size", "16", *SMALL,
                 "--labels-per-class", "0", "--clusters", "3", "--out-dir", str(tmp_path), "--name", "k3"]) == 0
    run = tmp_path / "k3"
    sizes = list(csv.DictReader(open(run / "cluster_sizes.csv")))
    assert [int(r["cluster"]) for r in sizes] == [0, 1, 2] and sum(int(r["images"]) for r in sizes) == 12
    before = (run / "clusters.png").stat().st_mtime_ns
    _images(tmp_path / "new", 5, 20, "RGB", seed=3)  # colour and another size: made to fit the grey 16x16 run
    assert main(["predict", str(run), str(tmp_path / "new"), "--out", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert list(rows[0]) == ["input", "cluster", "confidence"] and len(rows) == 5
    assert all(0 <= int(r["cluster"]) < 3 and 1 / 3 - 1e-6 <= float(r["confidence"]) <= 1 for r in rows)
    assert sum(int(r["images"]) for r in csv.DictReader(open(run / "cluster_sizes.csv"))) == 5
    assert (run / "clusters.png").stat().st_mtime_ns > before


def test_an_onnx_export_gives_the_torch_export_probabilities(tmp_path, make_config, digits):
    onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'catgan[onnx]'")
    import onnx
    import torch

    from catgan.training import train

    run = train(make_config(), data=digits, log=lambda m: None).run_dir
    assert main(["export", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "model.pt2")]) == 0
    images = np.random.default_rng(0).uniform(0, 255, (5, 1, 12, 12)).astype(np.float32)  # resized to 8x8 inside
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (from_onnx,) = session.run(None, {"images": images})
    from_torch = torch.export.load(str(tmp_path / "model.pt2")).module()(torch.from_numpy(images))
    assert np.allclose(from_onnx, from_torch.numpy(), atol=1e-5)
    properties = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert json.loads(properties["catgan.json"])["classes"] == [str(k) for k in range(10)]
