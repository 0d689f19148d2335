"""Diagnostics: gradient norms, D-scores, the class histogram, and each warning on a constructed
case that triggers it beside a healthy case that does not."""

import json
import math

import numpy as np
import pytest
import torch

import catgan.steps
import catgan.runs
from catgan.cli import EXIT_DIVERGED, main
from catgan.config import CatGANError, TrainConfig
from catgan.diagnostics import (HealthMonitor, TrainingDiverged, class_histogram, class_shares, d_score, gradient_norm,
                                starved_class)
from catgan.losses import discriminator_terms, generator_terms
from catgan.models import CatGAN
from catgan.runs import load_checkpoint
from catgan.training import Trainer, generator_step, make_optimizers, train

K = 10


def test_gradient_norm_is_the_norm_of_all_gradients_together():
    layer = torch.nn.Linear(3, 2)
    assert gradient_norm(layer) == 0
    layer.weight.grad, layer.bias.grad = torch.full((2, 3), 2.0), torch.tensor([3.0, 0.0])
    assert gradient_norm(layer).item() == pytest.approx(math.sqrt(6 * 4 + 9))


def test_class_histogram_counts_the_largest_logit():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 4.0, 0], [1.0, 0, 0]])
    assert class_histogram(logits).tolist() == [0.5, 0.5, 0.0]


def test_d_score_is_1_without_information_and_k_when_certain_and_balanced():
    uniform = torch.zeros(20, K)
    _, terms = generator_terms(uniform)
    assert d_score(terms["marginal_entropy_fake"], terms["conditional_entropy_fake"]) == pytest.approx(1.0)
    certain = 50.0 * torch.eye(K).repeat(2, 1)  # every class, equally often, with certainty
    _, terms = generator_terms(certain)
    assert d_score(terms["marginal_entropy_fake"], terms["conditional_entropy_fake"]) == pytest.approx(K, rel=1e-4)


def _record(logits_real, logits_fake, g_norm=1.0, logits_lab=None, y_lab=None):
    """A logged record built from logits through the real loss functions."""
    _, d = discriminator_terms(logits_real, logits_fake, logits_lab, y_lab)
    _, g = generator_terms(logits_fake)
    record = {"d": {k: float(v) for k, v in d.items()}, "g": {k: float(v) for k, v in g.items()},
              "fake_class_histogram": class_histogram(logits_fake).tolist()}
    record["g"]["grad_norm"] = g_norm
    if logits_lab is not None:
        record["d"]["accuracy_lab"] = float((logits_lab.argmax(1) == y_lab).float().mean())
    return record


def _healthy(seed):
    """D confident on real images spread over every class; generated images also spread."""
    generator = torch.Generator().manual_seed(seed)
    logits_real = 8.0 * torch.eye(K)[torch.randint(K, (100,), generator=generator)]
    logits_fake = torch.randn(100, K, generator=generator)
    return _record(logits_real, logits_fake, g_norm=1.0 + 0.1 * torch.rand(1, generator=generator).item())


def _observe_all(monitor, records, every=20):
    """Feed records logged every ``every`` steps; return (warning, step) for each that fired."""
    fired = []
    for i, record in enumerate(records, start=1):
        fired += [(w.name, i * every) for w in monitor.observe(record, i * every, epoch=1)]
    return fired


def _quiet(**options):
    return HealthMonitor(K, report=lambda line: None, **options)


def test_a_healthy_stream_raises_nothing():
    assert _observe_all(_quiet(), [_healthy(seed) for seed in range(40)]) == []


def test_generator_collapse_fires_once_after_its_window_and_not_before():
    lines = []
    monitor = HealthMonitor(K, report=lines.append)  # warm-up 200 steps, window 100 steps
    one_kind = torch.tensor([[9.0] + [0.0] * (K - 1)]).repeat(100, 1)  # D gives every generated image class 0
    collapsed = [_record(torch.randn(100, K), one_kind) for _ in range(12)]
    fired = _observe_all(monitor, [_healthy(seed) for seed in range(12)] + collapsed)  # collapse from step 260 on
    assert fired == [("generator_collapse", 360)]
    assert len(lines) == 1 and "generator_collapse" in lines[0] and "Try" in lines[0]


def test_collapse_is_read_from_the_classes_not_from_d_averaged_soft_predictions():
    # D unsure about every generated image, but leaning to class 0 for all of them: G makes one kind
    # of image, while the average of D's soft predictions stays almost uniform.
    leaning = torch.tensor([[0.3] + [0.0] * (K - 1)]).repeat(100, 1)
    record = _record(torch.randn(100, K), leaning)
    assert record["g"]["marginal_entropy_fake"] > 0.99 * math.log(K)
    assert ("generator_collapse", 360) in _observe_all(_quiet(), [_healthy(s) for s in range(12)] + [record] * 12)


def test_nothing_but_non_finite_is_looked_for_during_warm_up():
    collapsed = [_record(torch.randn(100, K), torch.tensor([[9.0] + [0.0] * (K - 1)]).repeat(100, 1))] * 10
    assert _observe_all(_quiet(), collapsed) == []  # steps 20 to 200
    nan = {"d": {"loss_d": math.nan}, "g": {}}
    assert _observe_all(_quiet(), [nan]) == [("non_finite", 20)]


def test_the_window_counts_steps_not_log_lines():
    one_kind = torch.tensor([[9.0] + [0.0] * (K - 1)]).repeat(100, 1)
    collapsed = _record(torch.randn(100, K), one_kind)
    every_step = _observe_all(_quiet(), [_healthy(s) for s in range(200)] + [collapsed] * 150, every=1)
    assert every_step == [("generator_collapse", 301)]  # from step 201 on, for 100 steps


def test_discriminator_overpowering_fires_when_g_gradients_vanish_and_d_is_sure_of_fakes():
    early = [_healthy(seed) for seed in range(12)]
    # D all but uniform on every generated image (tiny differences decide its argmax)
    sure_fake = [_record(8.0 * torch.eye(K).repeat(10, 1), 0.01 * torch.randn(100, K), g_norm=1e-5) for _ in range(6)]
    assert sure_fake[0]["g"]["conditional_entropy_fake"] == pytest.approx(math.log(K), rel=1e-3)
    assert _observe_all(_quiet(), early + sure_fake) == [("discriminator_overpowering", 360)]
    # the same vanished gradients while D still tells generated images apart: no warning
    certain_fakes = [_record(8.0 * torch.eye(K).repeat(10, 1), 8.0 * torch.eye(K).repeat(10, 1), g_norm=1e-5)
                     for _ in range(6)]
    assert _observe_all(_quiet(), early + certain_fakes) == []


def test_generator_gradients_really_vanish_when_d_gives_every_image_the_same_output():
    """The constructed overpowering case above, on real networks: G's gradient through a D whose
    output ignores its input is exactly 0, and the generated images' conditional entropy is log K."""
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16)
    model = CatGAN(config, (1, 8, 8), K)
    _, opt_g = make_optimizers(model, config)
    assert generator_step(model, opt_g, 32)["grad_norm"] > 0
    torch.nn.init.zeros_(model.discriminator.classifier.weight)
    terms = generator_step(model, opt_g, 32)
    assert terms["grad_norm"] == 0 and terms["conditional_entropy_fake"] == pytest.approx(math.log(K))


def test_stuck_fires_on_a_run_that_does_not_learn_and_not_on_ones_that_do(make_config, digits):
    # 15 epochs of 23 steps: past the 200-step warm-up and a 100-step window
    stuck = Trainer(make_config(labels_per_class=0, lr=1e-9, d_noise=0.0, epochs=15), digits, report=lambda line: None)
    assert [w["name"] for w in stuck.fit()["warnings"]] == ["stuck"]
    for options in (dict(), dict(labels_per_class=0, log_every=1)):
        learning = Trainer(make_config(epochs=15, **options), digits, report=lambda line: None)
        assert learning.fit()["warnings"] == [], options


def test_starved_class_is_the_one_furthest_under_half_its_labelled_share():
    balanced = np.full(10, 0.1)
    assert starved_class(np.array([0.086, 0.112, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.102, 0.1]), balanced) is None
    # mnist-100's failed seed: the 1s get 2.9% of the unlabelled images, the 8s 16.1%
    failed = np.array([0.106, 0.029, 0.107, 0.096, 0.112, 0.084, 0.1, 0.119, 0.161, 0.086])
    assert starved_class(failed, balanced) == 1
    assert starved_class(np.array([0.3, 0.04, 0.03, 0.63]), np.array([0.4, 0.1, 0.1, 0.4])) == 2  # the worst of two
    assert starved_class(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0])) is None  # a class without labels
    assert list(class_shares(torch.tensor([0, 2, 2, 2]), 4)) == [0.25, 0.0, 0.75, 0.0]


def test_semi_supervised_runs_record_class_shares_and_warn_of_a_starved_class(make_config, digits, monkeypatch):
    import catgan.diagnostics
    from catgan.evaluation import predict_logits

    trainer = Trainer(make_config(epochs=1), digits, report=lambda line: None)
    summary = trainer.fit()
    unlabelled = np.setdiff1d(np.arange(len(digits.x_train)), trainer.labelled)
    predicted = predict_logits(trainer.model.discriminator, digits.x_train[unlabelled]).argmax(dim=1).numpy()
    assert summary["unlabelled_class_shares"] == [round(float(np.mean(predicted == k)), 4) for k in range(K)]
    assert summary["labelled_class_shares"] == [0.1] * K  # 5 labelled images of each digit
    # every class under twice its labelled share would count as starved: the warning names the worst one
    monkeypatch.setattr(catgan.diagnostics, "STARVED_FRACTION", 2.0)
    lines = []
    summary = Trainer(make_config(epochs=1), digits, report=lines.append).fit()
    worst = int(np.argmin(summary["unlabelled_class_shares"]))
    assert [w["name"] for w in summary["warnings"]] == ["class_starved"]
    assert f"class '{digits.classes[worst]}'" in summary["warnings"][0]["message"] and "class_starved" in lines[-1]
    clustering = Trainer(make_config(epochs=1, labels_per_class=0), digits, report=lambda line: None).fit()
    assert "unlabelled_class_shares" not in clustering and clustering["warnings"] == []


def test_stuck_needs_chance_accuracy_on_the_labelled_batch():
    y = torch.arange(K).repeat(5)
    flat_chance = [_record(torch.zeros(100, K), torch.zeros(100, K), logits_lab=torch.zeros(50, K), y_lab=y)] * 20
    assert ("stuck", 320) in _observe_all(_quiet(), flat_chance)
    right = [_record(torch.zeros(100, K), torch.zeros(100, K), logits_lab=9.0 * torch.eye(K)[y], y_lab=y)] * 20
    assert "stuck" not in {name for name, _ in _observe_all(_quiet(), right)}


def _poison_after(monkeypatch, step_to_poison):
    """Make generator_step put NaN into G's weights from step ``step_to_poison`` on."""
    original = catgan.steps.generator_step
    calls = {"n": 0}

    def poisoned(model, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= step_to_poison:
            with torch.no_grad():
                next(model.generator.parameters()).fill_(math.nan)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(catgan.steps, "generator_step", poisoned)


def test_non_finite_losses_stop_the_run_and_keep_the_last_good_weights(make_config, digits, monkeypatch):
    steps_per_epoch = 1198 // 50
    _poison_after(monkeypatch, steps_per_epoch + 3)  # in epoch 2; the next log (step 25 or 30) sees NaN
    lines = []
    config = make_config(epochs=4)
    run_dir = catgan.runs.plan_run_dir(config)
    catgan.runs.create_run_dir(run_dir)
    trainer = Trainer(config, digits, run_dir, report=lines.append)
    with pytest.raises(TrainingDiverged, match=r"diverged at step .* the state at step 23 \(epoch 1\)"):
        trainer.fit()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["last_good_epoch"] == 1
    assert [w["name"] for w in summary["warnings"]] == ["non_finite"] and "test_error" not in summary
    assert summary["diverged_at_step"] <= 2 * steps_per_epoch
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint["epoch"] == 1 and checkpoint["step"] == steps_per_epoch
    weights = list(checkpoint["generator"].values()) + list(checkpoint["discriminator"].values())
    assert all(torch.isfinite(w.float()).all() for w in weights)
    assert len(lines) == 1 and lines[0].startswith("warning: non_finite")


def test_a_diverged_run_exits_3_from_the_cli(tmp_path, monkeypatch, capsys):
    _poison_after(monkeypatch, 3)
    status = main(["train", "--epochs", "2", "--d-width", "8", "--g-width", "8", "--out-dir", str(tmp_path),
                   "--name", "nan", "--no-progress"])
    err = capsys.readouterr().err
    assert status == EXIT_DIVERGED
    assert "catgan train: stopped: training diverged" in err and "the state at step 0 (epoch 0)" in err
    assert "Traceback" not in err


def test_tensorboard_is_refused_clearly_when_missing(make_config, digits, monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(CatGANError, match="pip install tensorboard"):
        train(make_config(tensorboard=True), data=digits, log=lambda message: None)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_tensorboard_events_are_written(make_config, digits):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install tensorboard)")
    result = train(make_config(tensorboard=True, epochs=1), data=digits, log=lambda message: None)
    events = list((result.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
