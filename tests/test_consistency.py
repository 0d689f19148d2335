"""The consistency terms (`catgan.consistency`): virtual adversarial training (the direction it
finds, the term), augmentation consistency (the translations, the term), and their place in D's step."""

import pytest
import torch
import torch.nn.functional as F

from catgan.config import TrainConfig
from catgan.consistency import (
    adversarial_direction,
    augmentation_consistency_loss,
    shift_in_pixels,
    translate,
    virtual_adversarial_loss,
    without_noise,
)
from catgan.models import CatGAN
from catgan.training import Batch, Practices, discriminator_step, make_optimizers


def _model(**options):
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16, **options)
    return config, CatGAN(config, (1, 8, 8), num_clusters=10)


def _images(n=32, seed=1):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _kl(d, x, r):
    with torch.no_grad(), without_noise(d):
        log_p = F.log_softmax(d(x), dim=1)
        return (log_p.exp() * (log_p - F.log_softmax(d(x + r), dim=1))).sum(dim=1)


def test_without_noise_switches_d_noise_off_in_training_mode_and_back_on():
    _, model = _model()
    d, x = model.discriminator, _images()
    d.train()
    with torch.no_grad():
        assert not torch.equal(d(x), d(x))
        with without_noise(d):
            assert torch.equal(d(x), d(x))
        assert not torch.equal(d(x), d(x))


def test_the_adversarial_direction_is_unit_and_moves_d_more_than_a_random_one():
    _, model = _model()
    d, x = model.discriminator, _images(64)
    d.train()
    torch.manual_seed(2)
    direction = adversarial_direction(d, x)
    assert torch.allclose(direction.flatten(1).norm(dim=1), torch.ones(64), atol=1e-5)
    random = torch.randn_like(x)
    random = random / random.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    adversarial, other = _kl(d, x, 0.5 * direction), _kl(d, x, 0.5 * random)
    assert adversarial.mean() > 5 * other.mean()
    assert (adversarial > other).float().mean() > 0.9


def test_the_direction_is_found_on_images_whose_pixels_sit_at_the_ends_of_the_scale():
    # MNIST-like: 28x28, most pixels exactly -1 or 1, where float32's rounding step is largest
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16)
    d = CatGAN(config, (1, 28, 28), num_clusters=10).discriminator
    d.train()
    x = torch.where(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3)) < 0.8, -1.0, 1.0)
    direction = adversarial_direction(d, x)
    random = torch.randn_like(x)
    random = random / random.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    assert _kl(d, x, 2.0 * direction).mean() > 5 * _kl(d, x, 2.0 * random).mean()


def test_finding_the_direction_leaves_d_parameters_and_statistics_alone():
    _, model = _model()
    d = model.discriminator
    d.train()
    before = {name: value.clone() for name, value in d.state_dict().items()}
    adversarial_direction(d, _images())
    assert all(torch.equal(before[name], value) for name, value in d.state_dict().items())
    assert all(p.grad is None for p in d.parameters())


def test_the_term_is_zero_without_perturbation_or_noise_and_positive_with_either():
    _, model = _model()
    d, x = model.discriminator, _images()
    d.train()
    with without_noise(d):
        logits = d(x)
        assert virtual_adversarial_loss(d, x, logits, epsilon=0.0).item() == pytest.approx(0.0, abs=1e-6)
        assert virtual_adversarial_loss(d, x, logits, epsilon=0.1).item() > 1e-4
    assert virtual_adversarial_loss(d, x, d(x), epsilon=0.0).item() > 1e-4
    with pytest.raises(ValueError, match="vat_epsilon must be >= 0"):
        virtual_adversarial_loss(d, x, logits, epsilon=-1.0)


def test_the_term_trains_d_through_the_perturbed_pass_only():
    _, model = _model()
    d, x = model.discriminator, _images()
    d.train()
    logits = d(x)
    loss = virtual_adversarial_loss(d, x, logits, epsilon=0.1)
    loss.backward()
    assert all(p.grad is not None for p in d.parameters())
    # the target is held fixed: the term's gradient does not reach the logits it was given
    logits_leaf = logits.detach().requires_grad_(True)
    virtual_adversarial_loss(d, x, logits_leaf, epsilon=0.1).backward()
    assert logits_leaf.grad is None


@pytest.mark.parametrize("term, switch", [("vat", dict(vat_weight=2.0, vat_epsilon=0.1)),
                                          ("augment", dict(augment_weight=2.0, augment_shift=0.2))])
def test_d_step_adds_the_weighted_term_and_leaves_the_default_step_unchanged(term, switch):
    batch = Batch(None, None, _images())
    results = {}
    off = Practices(**switch)._replace(**{f"{term}_weight": 0.0})  # the term's other setting kept
    for weight, practices in ((0.0, off), (2.0, Practices(**switch))):
        config, model = _model()
        opt_d, _ = make_optimizers(model, config)
        torch.manual_seed(5)
        terms = discriminator_step(model, opt_d, batch, lam=1.0, practices=practices)
        results[weight] = terms, model.discriminator.convs[0].weight.detach().clone()
    plain, weighted = results[0.0][0], results[2.0][0]
    assert term not in plain and weighted[term] > 0
    entropies = (-weighted["marginal_entropy_real"] + weighted["conditional_entropy_real"]
                 - weighted["conditional_entropy_fake"])
    assert weighted["loss_d"] == pytest.approx(float(entropies + 2.0 * weighted[term]), rel=1e-5)
    assert not torch.equal(results[0.0][1], results[2.0][1])
    # with the term off, the step draws nothing extra: the same seed gives the same update as before
    config, model = _model()
    opt_d, _ = make_optimizers(model, config)
    torch.manual_seed(5)
    discriminator_step(model, opt_d, batch, lam=1.0)
    assert torch.equal(model.discriminator.convs[0].weight, results[0.0][1])


def test_translate_moves_every_image_by_at_most_the_shift_and_keeps_it_whole():
    x = torch.full((64, 2, 9, 9), -1.0)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the middle, far from the border
    moved = translate(x, 2, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    assert torch.equal(moved[:, 0], moved[:, 1])  # one move per image, for all its channels
    for image in moved[:, 0]:
        rows, cols = torch.nonzero(image > 0, as_tuple=True)
        assert len(rows) == 1 and abs(int(rows[0]) - 4) <= 2 and abs(int(cols[0]) - 4) <= 2
    offsets = {(int(r), int(c)) for r, c in (torch.nonzero(moved[:, 0] > 0)[:, 1:]).tolist()}
    assert len(offsets) > 10  # the images move differently
    assert torch.equal(translate(x, 0, torch.Generator()), x)


def test_the_translation_is_a_share_of_the_image_side_and_at_least_a_pixel():
    assert shift_in_pixels(0.075, (1, 28, 28)) == 2 and shift_in_pixels(0.075, (1, 8, 8)) == 1
    assert shift_in_pixels(0.1, (3, 32, 16)) == 3 and shift_in_pixels(0.0, (1, 28, 28)) == 0


def test_the_augmentation_term_sees_moved_images_and_trains_d_through_them_only():
    _, model = _model()
    d, x = model.discriminator, _images()
    d.train()
    flat = torch.full_like(x, 0.5)  # moving a uniform image leaves it as it was
    with without_noise(d):
        assert augmentation_consistency_loss(d, flat, d(flat), shift=1).item() == pytest.approx(0.0, abs=1e-6)
        assert augmentation_consistency_loss(d, x, d(x), shift=1).item() > 1e-4
    norm = d.convs[1]
    logits = d(x).detach().requires_grad_(True)
    before = norm.running_mean.clone()
    augmentation_consistency_loss(d, x, logits, shift=1).backward()
    assert torch.equal(norm.running_mean, before)  # batch-norm running statistics untouched
    assert logits.grad is None and all(p.grad is not None for p in d.parameters())


def test_the_consistency_flags_reach_the_configuration():
    from catgan.cli import _build_parser

    args = _build_parser().parse_args(["train", "--vat-weight", "1", "--vat-epsilon", "0.2", "--augment-weight", "2",
                                       "--augment-shift", "0.1"])
    assert (args.vat_weight, args.vat_epsilon, args.augment_weight, args.augment_shift) == (1.0, 0.2, 2.0, 0.1)
    with pytest.raises(ValueError, match="vat_weight"):
        TrainConfig(vat_weight=-1)
    with pytest.raises(ValueError, match="augment_shift must be in"):
        TrainConfig(augment_shift=0.5)
    with pytest.raises(ValueError, match="augment_weight translates images, which the mlp architecture reads"):
        TrainConfig(architecture="mlp", augment_weight=1.0)


def test_the_supervised_method_refuses_the_consistency_terms():
    with pytest.raises(ValueError, match="reads no unlabelled image; drop vat_weight"):
        TrainConfig(method="supervised", vat_weight=1.0)
    with pytest.raises(ValueError, match="reads no unlabelled image; drop augment_weight"):
        TrainConfig(method="supervised", augment_weight=1.0)
