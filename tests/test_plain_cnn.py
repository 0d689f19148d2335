"""The plain-CNN baseline (catgan.plain_cnn, method cnn): its network, augmentation,
cross-validation and runs."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from catgan import plain_cnn
from catgan.cli import main
from catgan.config import CatGANError, TrainConfig
from catgan.models import PlainCNN
from catgan.plain_cnn import Recipe, augment, cross_validate, fit

TINY = Recipe(folds=2, max_epochs=3, patience=1, weight_decays=(0.01,), dropouts=(0.25, 0.5))


def halves(n_per_class: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two easy classes: images bright in the left half (0) or in the right half (1), with noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((2 * n_per_class, 1, size, size), -1.0)
    x[:n_per_class, :, :, : size // 2] = 1.0
    x[n_per_class:, :, :, size // 2 :] = 1.0
    x += 0.3 * torch.randn(x.shape, generator=g)
    y = torch.arange(2).repeat_interleave(n_per_class)
    return x.clamp(-1, 1), y


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 5, 7)])
def test_the_network_takes_any_image_size_and_returns_logits_and_features(shape):
    network = PlainCNN(shape, 4, width=8)
    logits, features = network(torch.randn(3, *shape), return_features=True)
    assert logits.shape == (3, 4) and features.shape == (3, 32)
    assert network.image_shape == shape and network.num_classes == 4


def test_affine_augmentation_moves_images_within_its_bounds_and_adds_the_noise_asked():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((8, 1, 16, 16), 0.25)
    assert torch.allclose(augment(flat, Recipe(rotation=15, scale=0.1, input_noise=0), g), flat, atol=1e-6)  # border repeated
    square = torch.full((64, 1, 16, 16), -1.0)
    square[:, :, 6:10, 6:10] = 1.0
    moved = augment(square, Recipe(rotation=15, scale=0.1, shift=2 / 16, input_noise=0), g)
    assert moved.shape == square.shape and not torch.allclose(moved, square)
    centres = [(torch.nonzero(image[0] > 0).float().mean(dim=0) - 7.5).abs().max() for image in moved]
    assert 1.5 < max(centres) <= 2.5  # moved by up to 2 pixels (and rounding), not off the image
    mass = ((moved + 1) / 2).sum(dim=(1, 2, 3))
    assert ((mass > 16 * 0.75 ** 2) & (mass < 16 * 1.15 ** 2)).all()  # resized by at most 10% per side
    noisy = augment(flat, Recipe(rotation=0, scale=0, input_noise=0.3), g)
    assert 0.25 < (noisy - flat).std() < 0.35


def test_fit_stops_on_the_validation_loss_and_learns_an_easy_task():
    x, y = halves(16)
    x_val, y_val = halves(8, seed=1)
    recipe = Recipe(max_epochs=60, patience=5)
    network, record = fit(x, y, 2, {"weight_decay": 0.01, "dropout": 0.25}, recipe, seed=0, x_val=x_val, y_val=y_val)
    assert 0 < record["best_step"] <= record["steps"] <= 60 * 1  # one batch of 32 per epoch
    assert record["epochs"] == min(record["best_epoch"] + recipe.patience, recipe.max_epochs)
    assert record["validation_error"] <= 10.0
    assert (network.eval()(x_val).argmax(dim=1) == y_val).float().mean() >= 0.9


def test_fit_for_a_number_of_epochs_takes_exactly_that_many_and_is_seeded():
    x, y = halves(20)
    settings = {"weight_decay": 0.1, "dropout": 0.5}
    first, record = fit(x, y, 2, settings, Recipe(batch_size=16), seed=3, epochs=7)
    again, _ = fit(x, y, 2, settings, Recipe(batch_size=16), seed=3, epochs=7)
    assert record["epochs"] == 7 and record["steps"] == 7 * 3  # batches of 16, 16 and 8
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError):
        fit(x, y, 2, settings, Recipe(), seed=0)


def test_cross_validation_reports_every_candidate_and_picks_the_lowest_validation_loss():
    x, y = halves(6)
    fits = []
    settings, steps, rows = cross_validate(x, y, 2, TINY, seed=0, on_fit=fits.append)
    assert [(r["weight_decay"], r["dropout"]) for r in rows] == [(0.01, 0.25), (0.01, 0.5)]
    assert len(fits) == 2 * 2 and {f["fold"] for f in fits} == {0, 1}
    best = min(rows, key=lambda r: (r["validation_loss"], r["validation_error"]))
    assert settings == {"weight_decay": best["weight_decay"], "dropout": best["dropout"]}
    assert steps == max(1, best["epochs"])


def test_cross_validation_needs_two_labelled_images_per_class():
    x, y = halves(3)
    with pytest.raises(CatGANError, match="at least 2 per class"):
        cross_validate(x[:4], y[:4], 2, TINY, seed=0)  # class 1 has one image


def test_the_cnn_method_refuses_what_it_does_not_read():
    with pytest.raises(CatGANError, match="`epochs`, `lr`; drop them"):
        TrainConfig(method="cnn", lr=1e-3, epochs=3)
    for labels in (0, 1):
        with pytest.raises(CatGANError, match="at least 2"):
            TrainConfig(method="cnn", labels_per_class=labels)
    assert TrainConfig(method="cnn", seed=3, device="cpu").uses_labels
    assert TrainConfig(method="cnn").resolved_epochs() is None  # cross-validation chooses it


def test_a_cnn_run_from_the_command_line_is_read_by_evaluate_predict_and_export(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plain_cnn, "RECIPE", dataclasses.replace(TINY, folds=5))  # 3 labels per class: 3 folds
    argv = ["train", "--method", "cnn", "--labels-per-class", "3", "--device", "cpu", "--out-dir", str(tmp_path),
            "--name", "cnn", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    run = tmp_path / "cnn"
    summary = json.loads((run / "summary.json").read_text())
    assert f"test error: {summary['test_error']:.2f}%" in out
    assert summary["labelled"] == 30 and summary["cnn"]["folds"] == 3
    assert [row["dropout"] for row in summary["cnn"]["cross_validation"]] == [0.25, 0.5]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in records] == ["cross-validation"] * 2 * 3 + ["test"]
    assert len(json.loads((run / "labelled_indices.json").read_text())["indices"]) == 30  # as a CatGAN run writes it
    assert json.loads((run / "config.json").read_text())["method"] == "cnn"

    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    assert f"test error: {summary['test_error']:.2f}%" in capsys.readouterr().out

    from catgan.data import load_dataset
    from catgan.runs import load_run

    data = load_dataset(TrainConfig())
    np.savez(tmp_path / "test.npz", x=(data.x_test[:50].numpy() * 127.5 + 127.5).round().astype(np.uint8))
    assert main(["predict", str(run), str(tmp_path / "test.npz"), "--out", str(tmp_path / "p.csv"),
                 "--no-progress"]) == 0
    rows = (tmp_path / "p.csv").read_text().splitlines()
    _, model, _ = load_run(run)
    expected = model.discriminator.eval()(data.x_test[:50]).argmax(dim=1)
    assert [int(row.split(",")[1]) for row in rows[1:]] == expected.tolist()

    assert main(["sample", str(run), "--out", str(tmp_path / "s.png")]) == 2
    assert "no generator" in capsys.readouterr().err
    from catgan.estimators import CatGANClassifier

    with pytest.raises(ValueError, match="plain CNN"):
        CatGANClassifier.from_run(run)
    with pytest.raises(ValueError, match="catgan train --method cnn"):
        CatGANClassifier(method="cnn").fit(np.zeros((4, 8, 8)), [0, 1, 0, 1])
    assert main(["plot", str(run)]) == 2
    assert "plain CNN's run" in capsys.readouterr().err

    pytest.importorskip("torch.export")
    assert main(["export", str(run), "--out", str(tmp_path / "cnn.pt2")]) == 0
    program = torch.export.load(str(tmp_path / "cnn.pt2")).module()
    images = torch.from_numpy(np.load(tmp_path / "test.npz")["x"]).float()  # (50, 1, 8, 8)
    probabilities = [[float(p) for p in row.split(",")[2:]] for row in rows[1:]]
    assert torch.allclose(program(images), torch.tensor(probabilities), atol=1e-5)


def test_the_command_line_names_the_flags_the_cnn_method_does_not_read(tmp_path, capsys):
    assert main(["train", "--method", "cnn", "--lr", "0.001", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("reads none of --lr; drop them") and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_stop_request_ends_a_cnn_run_between_epochs_and_writes_nothing(tmp_path, digits):
    from catgan.trainer import Stop, TrainingStopped
    from catgan.training import train

    stop = Stop()

    def on_step(done, total, record):
        stop.reason = 15  # asked during the first fold

    with pytest.raises(TrainingStopped):
        train(TrainConfig(method="cnn", labels_per_class=3, out_dir=str(tmp_path), name="stopped", device="cpu"),
              data=digits, log=lambda line: None, on_step=on_step, stop=stop)
    assert not (tmp_path / "stopped").exists()


def test_a_cnn_run_on_fewer_images_than_a_catgan_batch(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plain_cnn, "RECIPE", TINY)
    x, y = halves(10, size=12)
    images = ((x[:, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
    np.savez(tmp_path / "small.npz", x_train=images, y_train=y.numpy(), x_test=images[:6], y_test=y.numpy()[:6])
    argv = ["train", "--method", "cnn", "--dataset", "arrays", "--data-dir", str(tmp_path / "small.npz"),
            "--labels-per-class", "4", "--device", "cpu", "--out-dir", str(tmp_path), "--name", "small", "--no-progress"]
    assert main(argv) == 0
    assert json.loads((tmp_path / "small" / "summary.json").read_text())["labelled"] == 8
    tiny = np.zeros((20, 3, 3), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x_train=tiny, y_train=y.numpy(), x_test=tiny[:2], y_test=y.numpy()[:2])
    argv[argv.index("--data-dir") + 1], argv[argv.index("--name") + 1] = str(tmp_path / "tiny.npz"), "tiny"
    assert main(argv) == 2
    assert "needs at least 4x4 pixels; these are 3x3" in capsys.readouterr().err
