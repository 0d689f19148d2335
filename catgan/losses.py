"""The CatGAN objective as pure functions on logits.

Reference: J. T. Springenberg, "Unsupervised and Semi-supervised Learning with Categorical
Generative Adversarial Networks", ICLR 2016 (arXiv:1511.06390), Eqs. 4-7 and Sec. 3.3.

The paper writes the discriminator's objective as a maximisation. Every function here returns
the quantity to **minimise**. Logits have shape (B, K): B samples, K classes or clusters, and
p(y = k | x) = softmax(logits)_k.

Entropies come from ``log_softmax`` and ``logsumexp`` (never ``log(softmax + eps)``), so they
are exact and unbiased, and stay finite, with finite gradients, for logits of magnitude 1e4 and
beyond (the spread of a row's logits must itself be representable).

The ``*_loss`` functions return ``(loss, terms)``: the scalar loss tensor, and a dict holding
every term as a Python float for logging. The training loop uses the ``*_terms`` variants, which
keep the terms as detached tensors so that no host synchronisation happens per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "conditional_entropy",
    "marginal_entropy",
    "discriminator_loss",
    "generator_loss",
    "discriminator_terms",
    "generator_terms",
]


def _entropy(log_p: Tensor) -> Tensor:
    """Entropy -sum_k p_k log p_k over the last axis, from log-probabilities (shape (..., K))."""
    return -(log_p.exp() * log_p).sum(dim=-1)


def conditional_entropy(logits: Tensor) -> Tensor:
    """Mean conditional entropy E_x H[p(y|x)] of a batch.

    Args:
        logits: (B, K) unnormalised class scores.

    Returns:
        Scalar tensor: mean_i ( -sum_k p_ik log p_ik ), in nats. It is 0 for certain predictions
        and log K for uniform ones.
    """
    return _entropy(F.log_softmax(logits, dim=1)).mean()


def marginal_entropy(logits: Tensor) -> Tensor:
    """Entropy H[p_bar] of the batch's marginal class distribution p_bar = mean_i p(y|x_i).

    The log of the marginal is taken as ``logsumexp(log_p, dim=0) - log B``, exactly.

    Args:
        logits: (B, K) unnormalised class scores.

    Returns:
        Scalar tensor in nats: log K when the batch uses every class equally often, 0 when every
        sample puts all its mass on the same class.
    """
    log_p = F.log_softmax(logits, dim=1)
    log_p_bar = torch.logsumexp(log_p, dim=0) - math.log(log_p.shape[0])
    return _entropy(log_p_bar)


def discriminator_terms(
    logits_real: Tensor,
    logits_fake: Tensor,
    logits_lab: Tensor | None = None,
    y_lab: Tensor | None = None,
    lam: float = 1.0,
    label_smoothing: float = 0.0,
    marginal_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The discriminator's loss and its terms as detached tensors (see `discriminator_loss`)."""
    if (logits_lab is None) != (y_lab is None):
        raise ValueError("logits_lab and y_lab must be given together")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    if marginal_weight <= 0:
        raise ValueError(f"marginal_weight must be > 0, got {marginal_weight}")
    h_marginal_real = marginal_entropy(logits_real)
    h_conditional_real = conditional_entropy(logits_real)
    h_conditional_fake = conditional_entropy(logits_fake)
    loss = -marginal_weight * h_marginal_real + h_conditional_real - h_conditional_fake
    terms = {
        "marginal_entropy_real": h_marginal_real,
        "conditional_entropy_real": h_conditional_real,
        "conditional_entropy_fake": h_conditional_fake,
    }
    if logits_lab is not None:
        cross_entropy = F.cross_entropy(logits_lab, y_lab, label_smoothing=label_smoothing)
        terms["cross_entropy"] = cross_entropy
        if lam > 0:
            loss = loss + lam * cross_entropy
    terms["loss_d"] = loss
    return loss, {name: value.detach() for name, value in terms.items()}


def generator_terms(logits_fake: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The generator's loss and its terms as detached tensors (see `generator_loss`)."""
    h_marginal_fake = marginal_entropy(logits_fake)
    h_conditional_fake = conditional_entropy(logits_fake)
    loss = -h_marginal_fake + h_conditional_fake
    terms = {
        "marginal_entropy_fake": h_marginal_fake,
        "conditional_entropy_fake": h_conditional_fake,
        "loss_g": loss,
    }
    return loss, {name: value.detach() for name, value in terms.items()}


def _as_floats(terms: dict[str, Tensor]) -> dict[str, float]:
    return {name: float(value) for name, value in terms.items()}


def discriminator_loss(
    logits_real: Tensor,
    logits_fake: Tensor,
    logits_lab: Tensor | None = None,
    y_lab: Tensor | None = None,
    lam: float = 1.0,
    label_smoothing: float = 0.0,
    marginal_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """The discriminator's CatGAN loss (paper Eq. 7, with Sec. 3.3's supervised term), minimised.

        loss_D = - w * H[p_bar_real] + E_real H[p(y|x)] - E_fake H[p(y|G(z))] + lam * CE(lab)

    D is asked to use every class equally often on real data, to be certain about each real
    sample, to be uncertain about generated samples, and to classify the labelled samples. The
    cross-entropy is added (it is minimised, never ascended). Without labels, or with
    ``lam == 0``, the loss is the unsupervised one; it is bounded below by -2 log K.

    Args:
        logits_real: (B, K) D's logits on unlabelled real data.
        logits_fake: (B', K) D's logits on generated data.
        logits_lab: (L, K) D's logits on labelled real data, or None.
        y_lab: (L,) int64 class indices in [0, K) for ``logits_lab``, or None.
        lam: weight of the supervised cross-entropy, >= 0.
        label_smoothing: eps in [0, 1): the cross-entropy's target puts 1 - eps on the label and
            spreads eps evenly over the K classes (0: the plain cross-entropy).
        marginal_weight: w > 0, the weight of the marginal entropy (the paper: 1). A larger w
            asks D harder to use every class equally often, as regularised information
            maximisation (Krause et al. 2010) and IMSAT (Hu et al. 2017) weight the same term.

    Returns:
        ``(loss, terms)``: the scalar loss and a dict of floats with ``marginal_entropy_real``,
        ``conditional_entropy_real``, ``conditional_entropy_fake``, ``loss_d`` and, when labels
        are given, ``cross_entropy`` (logged even when ``lam == 0``).
    """
    loss, terms = discriminator_terms(logits_real, logits_fake, logits_lab, y_lab, lam, label_smoothing,
                                      marginal_weight)
    return loss, _as_floats(terms)


def generator_loss(logits_fake: Tensor) -> tuple[Tensor, dict[str, float]]:
    """The generator's CatGAN loss (paper Eq. 7), minimised; labels do not change it.

        loss_G = - H[p_bar_fake] + E_fake H[p(y|G(z))]

    G is asked to generate every class equally often and samples that D is certain about. The
    loss is bounded below by -log K.

    Args:
        logits_fake: (B, K) D's logits on generated data.

    Returns:
        ``(loss, terms)``: the scalar loss and a dict of floats with ``marginal_entropy_fake``,
        ``conditional_entropy_fake`` and ``loss_g``.
    """
    loss, terms = generator_terms(logits_fake)
    return loss, _as_floats(terms)
