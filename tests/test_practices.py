"""The switchable GAN practices: each one does what its flag says, and all off is the plain CatGAN."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import catgan.evaluation
import catgan.steps
from catgan.cli import _build_parser
from catgan.config import CatGANError, TrainConfig
from catgan.losses import discriminator_loss
from catgan.models import CatGAN
from catgan.runs import load_checkpoint, load_run, read_labelled
from catgan.steps import _with_label_noise
from catgan.training import (
    Batch,
    Practices,
    Trainer,
    WeightAverage,
    discriminator_step,
    generator_step,
    make_optimizers,
    train,
)

SMALL = dict(latent_dim=8, d_width=8, g_width=8, feature_dim=16)


def _model(**options):
    torch.manual_seed(0)
    config = TrainConfig(**SMALL, **options)
    return config, CatGAN(config, (1, 8, 8), num_clusters=10)


def _batch():
    generator = torch.Generator().manual_seed(1)
    return Batch(x_lab=torch.rand(10, 1, 8, 8, generator=generator) * 2 - 1, y_lab=torch.arange(10),
                 x_unl=torch.rand(32, 1, 8, 8, generator=generator) * 2 - 1)


def test_every_config_field_has_a_command_line_flag():
    commands = next(a for a in _build_parser()._actions if a.dest == "command")
    destinations = {action.dest for action in commands.choices["train"]._actions}
    assert {field.name for field in dataclasses.fields(TrainConfig)} <= destinations


def test_uniform_latent_lies_in_the_cube_and_fixed_noise_does_not_depend_on_the_global_seed():
    _, model = _model(latent_distribution="uniform")
    z = model.sample_latent(1000)
    assert z.min() >= -1 and z.max() <= 1 and z.std() == pytest.approx(1 / math.sqrt(3), rel=0.1)
    _, gaussian = _model()
    assert gaussian.sample_latent(1000).abs().max() > 1
    fixed = [model.sample_latent(5, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*fixed)


def test_label_smoothing_is_the_cross_entropy_against_smoothed_targets():
    logits_lab, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    _, plain = discriminator_loss(torch.randn(8, 4), torch.randn(8, 4), logits_lab, y)
    _, smooth = discriminator_loss(torch.randn(8, 4), torch.randn(8, 4), logits_lab, y, label_smoothing=0.2)
    targets = F.one_hot(y, 4).float() * 0.8 + 0.2 / 4
    expected = -(targets * F.log_softmax(logits_lab, dim=1)).sum(dim=1).mean()
    assert smooth["cross_entropy"] == pytest.approx(expected.item(), rel=1e-5)
    assert plain["cross_entropy"] == pytest.approx(F.cross_entropy(logits_lab, y).item(), rel=1e-5)


def test_label_noise_replaces_about_its_share_of_the_labels():
    y = torch.zeros(10_000, dtype=torch.int64)
    torch.manual_seed(0)
    noisy = _with_label_noise(y, 10, Practices(label_noise=0.5))
    changed = (noisy != y).float().mean().item()
    assert changed == pytest.approx(0.5 * 0.9, abs=0.02)  # a random class is the old one 1 time in 10
    assert _with_label_noise(y, 10, Practices()) is y


def test_joint_batches_let_generated_images_into_d_running_statistics():
    means = {}
    for joint in (False, True):
        config, model = _model()
        opt_d, _ = make_optimizers(model, config)
        torch.manual_seed(5)
        discriminator_step(model, opt_d, _batch(), lam=1.0, practices=Practices(joint_batches=joint))
        means[joint] = model.discriminator.convs[1].running_mean.clone()
    config, model = _model()
    with torch.no_grad():  # what separate batches should give: statistics of the real images alone
        model.discriminator(torch.cat([_batch().x_unl, _batch().x_lab]))
    assert torch.allclose(means[False], model.discriminator.convs[1].running_mean, atol=1e-6)
    assert not torch.allclose(means[True], means[False], atol=1e-4)


def test_feature_matching_adds_its_weighted_term_to_g_loss():
    config, model = _model()
    _, opt_g = make_optimizers(model, config)
    terms = generator_step(model, opt_g, 32, Practices(feature_matching=2.0), x_real=_batch().x_unl)
    entropy_part = -terms["marginal_entropy_fake"] + terms["conditional_entropy_fake"]
    assert terms["feature_matching"] > 0
    assert terms["loss_g"] == pytest.approx(float(entropy_part + 2.0 * terms["feature_matching"]), rel=1e-5)
    with pytest.raises(ValueError, match="needs a batch of real images"):
        generator_step(model, opt_g, 32, Practices(feature_matching=1.0))


def test_weight_average_moves_part_of_the_way():
    layer = torch.nn.Linear(2, 1)
    average = WeightAverage(layer, decay=0.75)
    average.updates = 100  # past the warm-up: the decay itself
    before = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(4.0)
    average.update(layer)
    assert torch.allclose(average.module.weight, before + 1.0)


class _Spy:
    """Wraps a step function of catgan.steps, counting calls and keeping their practices."""

    def __init__(self, monkeypatch, name):
        self.calls, self.practices = 0, []
        original = getattr(catgan.steps, name)
        position = {"discriminator_step": 4, "generator_step": 3}[name]  # where ``practices`` is passed

        def spy(*args, **kwargs):
            self.calls += 1
            self.practices.append(kwargs.get("practices", args[position] if len(args) > position else None))
            return original(*args, **kwargs)

        monkeypatch.setattr(catgan.steps, name, spy)


def test_instance_noise_falls_linearly_to_zero_unless_kept_constant(make_config, digits, monkeypatch):
    spy = _Spy(monkeypatch, "discriminator_step")
    Trainer(make_config(instance_noise=0.4), digits).fit()
    noise = [p.instance_noise for p in spy.practices]
    total = len(noise)
    assert noise[0] == pytest.approx(0.4) and noise[-1] == pytest.approx(0.4 / total)
    assert all(a > b for a, b in zip(noise, noise[1:]))
    spy = _Spy(monkeypatch, "discriminator_step")
    Trainer(make_config(instance_noise=0.4, instance_noise_schedule="constant"), digits).fit()
    assert {p.instance_noise for p in spy.practices} == {0.4}


@pytest.mark.parametrize("d_steps, g_steps, g_per_d", [(1, 1, 1), (2, 1, 0.5), (1, 3, 3)])
def test_d_to_g_update_ratio(make_config, digits, monkeypatch, d_steps, g_steps, g_per_d):
    d_spy, g_spy = _Spy(monkeypatch, "discriminator_step"), _Spy(monkeypatch, "generator_step")
    Trainer(make_config(d_steps=d_steps, g_steps=g_steps), digits).fit()
    assert d_spy.calls == 2 * (1198 // 50) and g_spy.calls == d_spy.calls * g_per_d


def test_the_supervised_method_refuses_switches_that_only_act_on_the_generator():
    with pytest.raises(CatGANError, match="trains no generator and reads no unlabelled image; drop d_steps, feature_matching"):
        TrainConfig(method="supervised", d_steps=2, feature_matching=1.0)
    TrainConfig(method="supervised", label_smoothing=0.1, instance_noise=0.1, ema_decay=0.9)  # these act on D


def test_weight_average_forgets_the_start_quickly_and_averages_batch_norm_statistics():
    norm = torch.nn.BatchNorm1d(2)
    average = WeightAverage(norm, decay=0.999)
    with torch.no_grad():
        norm.weight.fill_(3.0)
        norm.running_mean.fill_(1.0)
    average.update(norm)  # first update: weight 1 - 2/11 on the new values, not 1 - 0.999
    assert average.module.weight[0].item() == pytest.approx(1 + 2 * 9 / 11)
    assert average.module.running_mean[0].item() == pytest.approx(9 / 11)
    norm.num_batches_tracked.fill_(7)
    average.update(norm)
    assert average.module.num_batches_tracked.item() == 7


def test_separate_learning_rate_for_g(make_config, digits):
    trainer = Trainer(make_config(lr_g=1e-3), digits)
    assert trainer.opt_d.param_groups[0]["lr"] == 2e-4 and trainer.opt_g.param_groups[0]["lr"] == 1e-3
    trainer.fit()
    assert trainer.opt_g.param_groups[0]["lr"] == 1e-3


def test_a_run_with_a_weight_average_is_evaluated_and_reloaded_with_it(make_config, digits):
    result = train(make_config(ema_decay=0.9), data=digits, log=lambda message: None)
    checkpoint = load_checkpoint(result.run_dir)
    averaged, trained = checkpoint["discriminator_average"], checkpoint["discriminator"]
    assert not torch.equal(averaged["classifier.weight"], trained["classifier.weight"])
    _, model, _ = load_run(result.run_dir)
    assert torch.equal(model.discriminator.classifier.weight, averaged["classifier.weight"])
    x, y = digits.x_test, digits.y_test
    assert catgan.evaluation.evaluate(model, x, y, True)["test_error"] == result.summary["test_error"]


def test_every_practice_at_once_trains_with_finite_losses(make_config, digits):
    options = dict(latent_distribution="uniform", instance_noise=0.1, label_smoothing=0.1, label_noise=0.1,
                   joint_batches=True, d_steps=2, g_steps=2, lr_g=1e-3, feature_matching=0.5, ema_decay=0.99)
    summary = train(make_config(**options), data=digits, log=lambda message: None).summary
    # a two-epoch run may leave D unsure of some digit: only the end-of-run class check may speak
    assert 0 <= summary["test_error"] <= 100
    assert [w["name"] for w in summary["warnings"]] in ([], ["class_starved"])
    on_d = dict(instance_noise=0.1, label_smoothing=0.1, label_noise=0.1, ema_decay=0.99)
    summary = train(make_config(method="supervised", **on_d), data=digits, log=lambda message: None).summary
    assert 0 <= summary["test_error"] <= 100


def test_reestimated_batchnorm_statistics_are_plain_averages_over_batches_drawn_as_training_draws_them():
    from catgan.evaluation import reestimate_batchnorm
    from catgan.models import GaussianNoise

    _, model = _model()
    d = model.discriminator
    norms = [m for m in d.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    labelled = torch.arange(30, 40).numpy()
    seen = []
    hook = norms[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))
    d.train()
    assert reestimate_batchnorm(d, x, True, labelled, images=60, batch_size=20, seed=3) == 3
    hook.remove()
    # each batch: 20 of the 40 images, then all 10 labelled ones; D's noise off, its mode and momentum kept
    assert [len(batch) for batch in seen] == [30, 30, 30]
    assert d.training and all(m.momentum == 0.1 for m in norms)
    assert all(m.training for m in d.modules() if isinstance(m, GaussianNoise))
    per_batch = torch.stack([batch.mean(dim=(0, 2, 3) if batch.dim() == 4 else 0) for batch in seen])
    torch.testing.assert_close(norms[0].running_mean, per_batch.mean(dim=0))  # every batch weighs the same
    first = [m.running_var.clone() for m in norms]
    # the statistics depend on the weights, data and seed alone: a second pass gives the same; D
    # left in evaluation mode stays there
    d.eval()
    reestimate_batchnorm(d, x, True, labelled, images=60, batch_size=20, seed=3)
    assert all(torch.equal(a, m.running_var) for a, m in zip(first, norms))
    assert not any(m.training for m in d.modules())
    reestimate_batchnorm(d, x, True, labelled, images=60, batch_size=20, seed=4)
    assert not torch.equal(first[0], norms[0].running_var)
    _, weight_normed = _model(d_norm="weight")
    assert reestimate_batchnorm(weight_normed.discriminator, x, True, None, 60, 20, 3) == 0


def test_bn_recalibration_re_estimates_the_reported_ds_statistics_before_the_last_checkpoint(make_config, digits):
    plain = train(make_config(epochs=1), data=digits, log=lambda m: None)
    recalibrated = train(make_config(epochs=1, bn_recalibration=500), data=digits, log=lambda m: None)
    assert recalibrated.summary["bn_recalibration_batches"] == 10 and "bn_recalibration_batches" not in plain.summary
    before, after = (load_run(run.run_dir)[1].discriminator for run in (plain, recalibrated))
    old, new = before.state_dict(), after.state_dict()
    statistics = {name for name in old if "running" in name or "num_batches" in name}
    # the same training (the re-estimate draws from its own generator), other statistics
    assert all(torch.equal(old[name], new[name]) for name in set(old) - statistics)
    assert not all(torch.equal(old[name], new[name]) for name in statistics if "running_mean" in name)
    # re-estimating a finished run's D afterwards gives what the run with the switch saved (to float
    # rounding: training runs D in its own memory layout)
    config = load_run(recalibrated.run_dir)[0]
    catgan.evaluation.reestimate_batchnorm(before, digits.x_train, True, read_labelled(plain.run_dir), 500,
                                           config.batch_size, config.seed)
    for name in (name for name in statistics if "running" in name):
        torch.testing.assert_close(before.state_dict()[name], new[name])


def test_bn_recalibration_is_refused_where_d_has_no_batch_norm_or_trained_it_on_generated_images():
    with pytest.raises(CatGANError, match="with d_norm 'weight' D has none"):
        TrainConfig(bn_recalibration=100, d_norm="weight")
    with pytest.raises(CatGANError, match="joint_batches"):
        TrainConfig(bn_recalibration=100, joint_batches=True)
