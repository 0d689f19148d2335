"""The CatGAN objective: values, bounds, signs and gradient directions of each term."""

import math

import pytest
import torch
import torch.nn.functional as F

from catgan.losses import (
    conditional_entropy,
    discriminator_loss,
    generator_loss,
    marginal_entropy,
)


def reference_entropies(logits: torch.Tensor) -> tuple[float, float]:
    """Conditional and marginal entropy in float64, written out term by term."""
    logits = logits.double()
    log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    p = log_p.exp()
    conditional = -(p * log_p).sum(dim=1).mean()
    p_bar = p.mean(dim=0)
    marginal = -(p_bar * torch.where(p_bar > 0, p_bar.log(), torch.zeros_like(p_bar))).sum()
    return float(conditional), float(marginal)


def confident_balanced(batch: int, k: int, magnitude: float = 1e4) -> torch.Tensor:
    """Certain predictions spread evenly over the k classes."""
    return magnitude * F.one_hot(torch.arange(batch) % k, k).float()


@pytest.mark.parametrize("k", [2, 3, 10, 50])
@pytest.mark.parametrize("offset", [0.0, 1e4, -1e4])
def test_uniform_logits_give_log_k(k, offset):
    logits = torch.full((7, k), offset)
    assert conditional_entropy(logits).item() == pytest.approx(math.log(k), rel=1e-6)
    assert marginal_entropy(logits).item() == pytest.approx(math.log(k), rel=1e-6)


@pytest.mark.parametrize("k", [2, 10])
def test_confident_balanced_logits(k):
    logits = confident_balanced(4 * k, k)
    assert conditional_entropy(logits).item() == pytest.approx(0.0, abs=1e-6)
    assert marginal_entropy(logits).item() == pytest.approx(math.log(k), rel=1e-6)


def test_confident_collapsed_logits_have_zero_marginal():
    logits = 1e4 * F.one_hot(torch.zeros(12, dtype=torch.long), 5).float()
    assert marginal_entropy(logits).item() == pytest.approx(0.0, abs=1e-6)


def test_entropies_match_a_float64_reference():
    torch.manual_seed(0)
    for scale in (0.1, 1.0, 10.0, 100.0):
        logits = scale * torch.randn(32, 6)
        conditional, marginal = reference_entropies(logits)
        assert conditional_entropy(logits).item() == pytest.approx(conditional, rel=1e-5, abs=1e-6)
        assert marginal_entropy(logits).item() == pytest.approx(marginal, rel=1e-5, abs=1e-6)


def test_entropy_of_near_certain_predictions_is_exact_not_eps_biased():
    # p = softmax([0, -30]) = (1 - 9.4e-14, 9.4e-14): H = 2.9e-12. A log(p + 1e-8) entropy gives
    # about -1e-8 here (negative); the exact one stays positive and tiny.
    logits = torch.tensor([[0.0, -30.0]], dtype=torch.float64)
    expected = 30 * math.exp(-30) + math.exp(-30)  # -sum p log p to first order
    value = conditional_entropy(logits).item()
    assert 0 < value == pytest.approx(expected, rel=1e-3)


def test_huge_logits_give_finite_values_and_gradients():
    torch.manual_seed(0)
    logits_real = (1e4 * torch.randn(16, 10)).requires_grad_()
    logits_fake = (1e4 * torch.randn(16, 10)).requires_grad_()
    logits_lab = (1e4 * torch.randn(8, 10)).requires_grad_()
    y_lab = torch.randint(0, 10, (8,))
    loss_d, terms_d = discriminator_loss(logits_real, logits_fake, logits_lab, y_lab)
    loss_g, terms_g = generator_loss(logits_fake)
    (loss_d + loss_g).backward()
    assert all(math.isfinite(v) for v in {**terms_d, **terms_g}.values())
    for tensor in (logits_real, logits_fake, logits_lab):
        assert torch.isfinite(tensor.grad).all()


def test_discriminator_loss_value_and_terms():
    torch.manual_seed(1)
    logits_real, logits_fake, logits_lab = torch.randn(20, 4), torch.randn(20, 4), torch.randn(6, 4)
    y_lab = torch.randint(0, 4, (6,))
    loss, terms = discriminator_loss(logits_real, logits_fake, logits_lab, y_lab, lam=0.5)
    cond_real, marg_real = reference_entropies(logits_real)
    cond_fake, _ = reference_entropies(logits_fake)
    ce = float(F.cross_entropy(logits_lab.double(), y_lab))
    expected = -marg_real + cond_real - cond_fake + 0.5 * ce
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert set(terms) == {
        "marginal_entropy_real", "conditional_entropy_real", "conditional_entropy_fake", "cross_entropy", "loss_d"
    }
    assert all(type(value) is float for value in terms.values())
    assert terms["loss_d"] == pytest.approx(expected, rel=1e-5)
    assert terms["cross_entropy"] == pytest.approx(ce, rel=1e-5)


def test_generator_loss_value_and_terms():
    torch.manual_seed(2)
    logits_fake = torch.randn(20, 5)
    loss, terms = generator_loss(logits_fake)
    cond, marg = reference_entropies(logits_fake)
    assert loss.item() == pytest.approx(-marg + cond, rel=1e-5)
    assert set(terms) == {"marginal_entropy_fake", "conditional_entropy_fake", "loss_g"}
    assert all(type(value) is float for value in terms.values())


def test_lower_bounds_are_reached_at_the_ideal_points():
    k = 10
    certain_balanced, uniform = confident_balanced(50, k), torch.zeros(50, k)
    loss_d, _ = discriminator_loss(certain_balanced, uniform)
    loss_g, _ = generator_loss(certain_balanced)
    assert loss_d.item() == pytest.approx(-2 * math.log(k), rel=1e-6)
    assert loss_g.item() == pytest.approx(-math.log(k), rel=1e-6)
    torch.manual_seed(3)
    for _ in range(20):
        assert discriminator_loss(5 * torch.randn(50, k), 5 * torch.randn(50, k))[0].item() >= -2 * math.log(k) - 1e-5
        assert generator_loss(5 * torch.randn(50, k))[0].item() >= -math.log(k) - 1e-5


def _sgd_step(loss: torch.Tensor, *leaves: torch.Tensor, lr: float = 0.1) -> None:
    loss.backward()
    with torch.no_grad():
        for leaf in leaves:
            leaf -= lr * leaf.grad
            leaf.grad = None


def test_one_discriminator_step_sharpens_real_and_flattens_fake():
    torch.manual_seed(4)
    logits_real = torch.randn(64, 10).requires_grad_()
    logits_fake = torch.randn(64, 10).requires_grad_()
    before_real, before_fake = conditional_entropy(logits_real).item(), conditional_entropy(logits_fake).item()
    loss, _ = discriminator_loss(logits_real, logits_fake)
    _sgd_step(loss, logits_real, logits_fake)
    assert conditional_entropy(logits_real).item() < before_real
    assert conditional_entropy(logits_fake).item() > before_fake


def test_one_discriminator_step_spreads_collapsed_real_predictions():
    torch.manual_seed(0)
    two_of_ten = 3.0 * F.one_hot(torch.arange(40) % 2, 10).float()  # mostly classes 0 and 1
    logits_real = (two_of_ten + torch.randn(40, 10)).requires_grad_()
    before = marginal_entropy(logits_real).item()
    loss, _ = discriminator_loss(logits_real, torch.zeros(40, 10))
    _sgd_step(loss, logits_real)
    assert marginal_entropy(logits_real).item() > before


def test_one_generator_step_sharpens_fake():
    torch.manual_seed(5)
    logits_fake = torch.randn(64, 10).requires_grad_()
    before = conditional_entropy(logits_fake).item()
    loss, _ = generator_loss(logits_fake)
    _sgd_step(loss, logits_fake)
    assert conditional_entropy(logits_fake).item() < before


def test_one_generator_step_spreads_collapsed_fake_classes():
    torch.manual_seed(0)
    class_zero = 3.0 * F.one_hot(torch.zeros(40, dtype=torch.long), 10).float()  # mostly class 0
    logits_fake = (class_zero + torch.randn(40, 10)).requires_grad_()
    before = marginal_entropy(logits_fake).item()
    loss, _ = generator_loss(logits_fake)
    _sgd_step(loss, logits_fake)
    assert marginal_entropy(logits_fake).item() > before


def test_labelled_cross_entropy_is_added_and_minimised():
    torch.manual_seed(6)
    logits_real, logits_fake = torch.randn(32, 10), torch.randn(32, 10)
    logits_lab = torch.randn(16, 10).requires_grad_()
    y_lab = torch.randint(0, 10, (16,))
    loss_unsup, _ = discriminator_loss(logits_real, logits_fake)
    loss, terms = discriminator_loss(logits_real, logits_fake, logits_lab, y_lab, lam=2.0)
    assert loss.item() - loss_unsup.item() == pytest.approx(2.0 * terms["cross_entropy"], rel=1e-5)
    _sgd_step(loss, logits_lab)
    _, after = discriminator_loss(logits_real, logits_fake, logits_lab, y_lab, lam=2.0)
    assert after["cross_entropy"] < terms["cross_entropy"]


def test_lam_zero_or_no_labels_equals_the_unsupervised_loss():
    torch.manual_seed(7)
    logits_real, logits_fake = torch.randn(32, 10), torch.randn(32, 10)
    logits_lab, y_lab = torch.randn(8, 10), torch.randint(0, 10, (8,))
    unsupervised, _ = discriminator_loss(logits_real, logits_fake)
    lam_zero, terms = discriminator_loss(logits_real, logits_fake, logits_lab, y_lab, lam=0.0)
    assert lam_zero.item() == unsupervised.item()
    assert terms["cross_entropy"] > 0  # still logged


def test_batch_order_does_not_change_any_value():
    torch.manual_seed(8)
    logits_real, logits_fake = torch.randn(40, 7), torch.randn(30, 7)
    logits_lab, y_lab = torch.randn(14, 7), torch.randint(0, 7, (14,))
    _, terms = discriminator_loss(logits_real, logits_fake, logits_lab, y_lab)
    _, terms_g = generator_loss(logits_fake)
    p_real, p_fake, p_lab = torch.randperm(40), torch.randperm(30), torch.randperm(14)
    _, shuffled = discriminator_loss(logits_real[p_real], logits_fake[p_fake], logits_lab[p_lab], y_lab[p_lab])
    _, shuffled_g = generator_loss(logits_fake[p_fake])
    assert shuffled == pytest.approx(terms, rel=1e-6)
    assert shuffled_g == pytest.approx(terms_g, rel=1e-6)


def test_bad_arguments_are_refused():
    logits = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="together"):
        discriminator_loss(logits, logits, logits_lab=logits)
    with pytest.raises(ValueError, match="lam"):
        discriminator_loss(logits, logits, lam=-1.0)
    with pytest.raises(ValueError, match="marginal_weight must be > 0"):
        discriminator_loss(logits, logits, marginal_weight=0.0)


def test_the_marginal_weight_scales_the_marginal_entropy_term_alone():
    torch.manual_seed(9)
    logits_real, logits_fake = torch.randn(50, 10), torch.randn(50, 10)
    plain, terms = discriminator_loss(logits_real, logits_fake)
    for weight in (1.0, 2.0, 3.5):
        weighted, weighted_terms = discriminator_loss(logits_real, logits_fake, marginal_weight=weight)
        assert weighted.item() == pytest.approx(plain.item() - (weight - 1) * terms["marginal_entropy_real"], abs=1e-5)
        assert weighted_terms["marginal_entropy_real"] == terms["marginal_entropy_real"]  # the term itself, unweighted
    one, _ = discriminator_loss(logits_real, logits_fake, marginal_weight=1.0)
    assert one.item() == plain.item()  # the paper's weight is the default, bit for bit


def test_a_larger_marginal_weight_spreads_collapsed_real_predictions_faster():
    torch.manual_seed(10)
    collapsed = torch.randn(60, 5) + torch.tensor([4.0, 0, 0, 0, 0])  # nearly every image in cluster 0
    fake = torch.randn(60, 5)
    gains = []
    for weight in (1.0, 3.0):
        logits = collapsed.clone().requires_grad_()
        loss, _ = discriminator_loss(logits, fake, marginal_weight=weight)
        loss.backward()
        step = logits.detach() - 0.1 * logits.grad
        gains.append((marginal_entropy(step) - marginal_entropy(collapsed)).item())
    assert 0 < gains[0] < gains[1]  # both steps use more clusters; the weighted one more so
