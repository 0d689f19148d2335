"""Training steps and the trainer: updates, run files, determinism, clustering and the baseline."""

import copy
import json
import math
import re
import subprocess

import numpy as np
import pytest
import torch

from catgan.config import CatGANError, TrainConfig
from catgan.models import CatGAN
from catgan.runs import git_commit, load_checkpoint, load_run, read_labelled
from catgan.schedule import IndexCycler
from catgan.training import (
    Batch,
    Trainer,
    discriminator_step,
    generator_step,
    learning_rate,
    make_optimizers,
    supervised_step,
    train,
)


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16)
    model = CatGAN(config, (1, 8, 8), num_clusters=10)
    batch = Batch(
        x_lab=torch.rand(10, 1, 8, 8) * 2 - 1, y_lab=torch.arange(10), x_unl=torch.rand(32, 1, 8, 8) * 2 - 1
    )
    return config, model, batch


def _copy_parameters(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_discriminator_step_updates_only_d_and_returns_finite_terms(model_and_batch):
    config, model, batch = model_and_batch
    opt_d, _ = make_optimizers(model, config)
    d_before, g_before = _copy_parameters(model.discriminator), _copy_parameters(model.generator)
    terms = discriminator_step(model, opt_d, batch, lam=1.0)
    assert set(terms) >= {"loss_d", "cross_entropy", "accuracy_lab", "marginal_entropy_real"}
    assert all(math.isfinite(float(value)) for value in terms.values())
    assert _changed(d_before, model.discriminator)
    assert not _changed(g_before, model.generator)
    assert all(p.grad is None for p in model.generator.parameters())  # no gradient leaks into G


def test_generator_step_updates_only_g_and_leaves_d_untouched(model_and_batch):
    config, model, _ = model_and_batch
    _, opt_g = make_optimizers(model, config)
    d_before, g_before = _copy_parameters(model.discriminator), _copy_parameters(model.generator)
    running_mean = model.discriminator.convs[1].running_mean.clone()
    terms = generator_step(model, opt_g, batch_size=32)
    assert set(terms) == {"loss_g", "marginal_entropy_fake", "conditional_entropy_fake", "grad_norm", "class_histogram"}
    assert terms["grad_norm"] > 0 and terms["class_histogram"].shape == (10,)
    assert _changed(g_before, model.generator)
    assert not _changed(d_before, model.discriminator)
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert torch.equal(model.discriminator.convs[1].running_mean, running_mean)  # fakes do not move D's statistics


def test_discriminator_statistics_come_from_real_data_only(model_and_batch):
    _, _, batch = model_and_batch
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16, d_noise=0.0)
    model = CatGAN(config, (1, 8, 8), num_clusters=10)
    twin = copy.deepcopy(model)
    opt_d, _ = make_optimizers(model, config)
    discriminator_step(model, opt_d, batch, lam=1.0)
    twin.discriminator.train()(torch.cat([batch.x_unl, batch.x_lab]))  # the real images alone
    norms = [(a, b) for a, b in zip(model.discriminator.modules(), twin.discriminator.modules()) if hasattr(a, "running_mean")]
    assert len(norms) == 3
    for stepped, real_only in norms:
        assert torch.allclose(stepped.running_mean, real_only.running_mean, atol=1e-6)
        assert torch.allclose(stepped.running_var, real_only.running_var, atol=1e-6)


def test_supervised_step_lowers_the_cross_entropy(model_and_batch):
    config, model, batch = model_and_batch
    opt_d, _ = make_optimizers(model, config)
    first = float(supervised_step(model, opt_d, batch)["cross_entropy"])
    for _ in range(20):
        last = float(supervised_step(model, opt_d, batch)["cross_entropy"])
    assert last < first


def test_index_cycler_visits_every_index_once_per_pass():
    cycler = IndexCycler(torch.arange(10, 20), batch_size=3, generator=torch.Generator().manual_seed(0))
    first_pass = torch.cat([cycler() for _ in range(3)])  # 10 // 3 = 3 full batches
    assert len(first_pass.unique()) == 9 and set(first_pass.tolist()) <= set(range(10, 20))
    second_pass = torch.cat([cycler() for _ in range(3)])
    assert len(second_pass.unique()) == 9 and not torch.equal(first_pass, second_pass)


def test_a_run_writes_its_files(make_config, digits):
    result = train(make_config(), data=digits, log=lambda message: None)
    run_dir = result.run_dir
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"config.json", "metrics.jsonl", "labelled_indices.json", "checkpoint.pt", "samples.png",
                     "samples_by_class.png", "summary.json"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 <= summary["test_error"] <= 100 and summary["wall_seconds"] > 0
    assert summary["steps"] == 2 * (1198 // 50) and summary["labelled"] == 50
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["labels_per_class"] == 5
    indices = read_labelled(run_dir)
    assert np.bincount(digits.y_train[indices].numpy()).tolist() == [5] * 10
    with pytest.raises(CatGANError, match="no labelled_indices.json"):
        read_labelled(run_dir / "missing")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "d" in r]
    assert steps[0]["step"] == 5 and steps[-1]["step"] == summary["steps"]
    assert {"loss_d", "cross_entropy", "conditional_entropy_fake", "grad_norm", "accuracy_lab"} <= set(steps[-1]["d"])
    assert {"loss_g", "marginal_entropy_fake", "grad_norm"} <= set(steps[-1]["g"])
    assert steps[-1]["lr_d"] == steps[-1]["lr_g"] == 2e-4 and 1 <= steps[-1]["d_score_real"] <= 10
    assert len(steps[-1]["fake_class_histogram"]) == 10 and sum(steps[-1]["fake_class_histogram"]) == pytest.approx(1)
    # two epochs on digits leave D unsure of some digit: at most the end-of-run class check speaks
    assert [w["name"] for w in summary["warnings"]] in ([], ["class_starved"])
    assert len(summary["unlabelled_class_shares"]) == 10 and sum(summary["labelled_class_shares"]) == pytest.approx(1)
    assert records[-1]["split"] == "test" and records[-1]["test_error"] == summary["test_error"]
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["config"] == config and checkpoint["step"] == summary["steps"]
    from PIL import Image

    with Image.open(run_dir / "samples.png") as image:
        assert image.size[0] >= 10 * 32


def test_same_seed_same_numbers_and_weights(make_config, digits):
    first = train(make_config(name="a"), data=digits, log=lambda message: None)
    second = train(make_config(name="b"), data=digits, log=lambda message: None)
    other = train(make_config(name="c", seed=1), data=digits, log=lambda message: None)
    assert first.summary["test_error"] == second.summary["test_error"]
    metrics = [(r.run_dir / "metrics.jsonl").read_text() for r in (first, second)]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in m.splitlines()] for m in metrics]
    assert strip[0] == strip[1]
    weights = [load_checkpoint(r.run_dir)["discriminator"] for r in (first, second, other)]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])
    assert not all(torch.equal(weights[0][name], weights[2][name]) for name in weights[0])


def test_summary_records_the_command_and_versions(make_config, digits):
    summary = train(make_config(), data=digits, log=lambda message: None, command="catgan train --x").summary
    assert summary["command"] == "catgan train --x"
    assert summary["torch_version"] == torch.__version__ and summary["device"] == "cpu"
    assert summary["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}( \(with uncommitted changes\))?", summary["git_commit"])


def test_git_commit_names_the_checkout_and_marks_changed_files(tmp_path):
    assert git_commit(tmp_path) is None  # not a checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    (tmp_path / "a.py").write_text("x = 1\n")
    for words in (["init", "-q"], ["add", "a.py"], ["commit", "-qm", "a"]):
        subprocess.run(git + words, check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == head + " (with uncommitted changes)"


def test_results_do_not_depend_on_random_draws_between_building_and_fitting(make_config, digits):
    first = Trainer(make_config(), digits)
    second = Trainer(make_config(), digits)
    torch.rand(1000)  # someone else uses the global generator in between
    assert first.fit()["test_error"] == second.fit()["test_error"]


def test_a_trainer_refuses_a_directory_that_holds_a_run(make_config, digits, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CatGANError, match="already holds a run"):
        Trainer(make_config(), digits, run_dir=tmp_path).fit()
    assert (tmp_path / "config.json").read_text() == "{}"


def test_lam_zero_clusters_and_reports_no_labels_used(make_config, digits):
    summary = train(make_config(lam=0.0, clusters=12), data=digits, log=lambda message: None).summary
    assert summary["labelled"] == 0 and summary["clusters"] == 12 and "clustering_accuracy" in summary


def test_clustering_run_reports_clustering_metrics(make_config, digits):
    summary = train(make_config(labels_per_class=0), data=digits, log=lambda message: None).summary
    assert {"clustering_accuracy", "nmi", "ari"} <= set(summary) and "many_to_one_accuracy" not in summary
    assert summary["test_error"] == pytest.approx(100 - summary["clustering_accuracy"])
    assert 0 <= summary["nmi"] <= 1 and summary["labelled"] == 0


@pytest.mark.parametrize("k", [3, 20])
def test_any_k_without_labels(make_config, digits, k):
    result = train(make_config(labels_per_class=0, clusters=k, epochs=1), data=digits, log=lambda message: None)
    assert result.summary["clusters"] == k
    assert ("many_to_one_accuracy" in result.summary) == (k > 10)
    _, model, classes = load_run(result.run_dir)
    assert model.num_clusters == k and classes == digits.classes


def test_labels_need_k_equal_to_the_classes(make_config, digits):
    with pytest.raises(CatGANError, match="clusters must equal the number of classes"):
        Trainer(make_config(clusters=5), digits)


def test_supervised_baseline_uses_the_same_labels_and_updates(make_config, digits):
    catgan = train(make_config(name="catgan", epochs=5), data=digits, log=lambda message: None)
    baseline = train(make_config(name="baseline", method="supervised", epochs=5), data=digits, log=lambda message: None)
    assert baseline.summary["steps"] == catgan.summary["steps"]
    read = lambda r: json.loads((r.run_dir / "labelled_indices.json").read_text())["indices"]  # noqa: E731
    assert read(baseline) == read(catgan)
    assert "samples.png" not in {p.name for p in baseline.run_dir.iterdir()}
    assert 0 <= baseline.summary["test_error"] < 40  # 5 epochs of a tiny network (seen: 14%); chance is 90%


def test_catgan_learns_digits_from_50_labels_and_beats_the_same_network_without_unlabelled_data(tmp_path, digits):
    # A shortened main job (30 of its 300 epochs, default networks): seen at about 5% error for
    # CatGAN and 10% for the cross-entropy-only discriminator on the same 50 labels.
    quiet = lambda message: None  # noqa: E731
    common = dict(epochs=30, out_dir=str(tmp_path), progress=False, device="cpu")
    catgan = train(TrainConfig(name="catgan", **common), data=digits, log=quiet).summary
    baseline = train(TrainConfig(name="baseline", method="supervised", **common), data=digits, log=quiet).summary
    assert catgan["test_error"] < 8.0
    assert catgan["test_error"] < baseline["test_error"]


def test_catgan_clusters_digits_without_labels(tmp_path, digits):
    # 30 epochs without labels: seen at NMI 0.72; unrelated clusters give about 0.
    config = TrainConfig(labels_per_class=0, epochs=30, out_dir=str(tmp_path), progress=False, device="cpu")
    summary = train(config, data=digits, log=lambda message: None).summary
    assert summary["nmi"] > 0.5 and summary["clustering_accuracy"] > 40.0


def test_kmeans_baseline_on_digits(digits):
    from catgan.baselines import kmeans_on_pixels

    report = kmeans_on_pixels(digits, clusters=10, seed=0, n_init=2)
    assert 50.0 < report["clustering_accuracy"] <= 100.0  # k-means clusters digits well above chance (10%)
    assert report["test_error"] == pytest.approx(100 - report["clustering_accuracy"]) and report["wall_seconds"] > 0


def test_kmeans_names_clusters_by_labelled_images_and_clusters_d_features(digits):
    from catgan.baselines import kmeans_on_features, kmeans_on_pixels
    from catgan.data import labelled_indices
    from catgan.models import CatGAN

    naming = labelled_indices(digits.y_train, 5, seed=0)
    report = kmeans_on_pixels(digits, clusters=20, seed=0, n_init=2, naming=naming)
    # with 20 clusters, one-to-one matching leaves half of them wrong; naming each by its labelled images does not
    assert report["named_error"] < 30.0 < report["test_error"]
    torch.manual_seed(0)
    untrained = CatGAN(TrainConfig(), digits.image_shape, num_clusters=10).discriminator
    features = kmeans_on_features(untrained, digits, clusters=10, seed=0, n_init=2)
    assert 20.0 < features["clustering_accuracy"] <= 100.0 and "named_error" not in features


def test_all_labels(make_config, digits):
    result = train(make_config(labels_per_class="all", method="supervised", epochs=1), data=digits, log=lambda m: None)
    assert result.summary["labelled"] == len(digits.x_train)
    assert result.run_dir.name.startswith("digits-all-labels-supervised-seed0")


def test_learning_rate_schedule():
    constant = TrainConfig(lr=0.1)
    assert [learning_rate(constant, step, 10) for step in (0, 5, 9)] == [0.1, 0.1, 0.1]
    decayed = TrainConfig(lr=0.1, lr_decay_start=0.5)
    assert [round(learning_rate(decayed, step, 10), 6) for step in (0, 4, 5, 6, 9)] == [0.1, 0.1, 0.1, 0.08, 0.02]


def test_a_run_applies_the_decayed_rate(make_config, digits):
    trainer = Trainer(make_config(lr_decay_start=0.5, epochs=2), digits)
    trainer.fit()
    total = 2 * trainer.schedule.steps_per_epoch
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(learning_rate(trainer.config, total - 1, total))
    assert trainer.opt_g.param_groups[0]["lr"] == pytest.approx(2 * trainer.config.lr / total)  # the last step
