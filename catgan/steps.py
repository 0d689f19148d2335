"""The updates of one training step: D's, G's, and the supervised baseline's.

One CatGAN step (Springenberg, ICLR 2016, Eq. 7 and Sec. 3.3) is a discriminator update on a
batch of unlabelled real images, a batch of generated images and, in semi-supervised runs, a batch
of labelled images; then a generator update on a fresh batch of generated images. Each function
takes the networks, an optimiser and a batch, and returns its loss terms as detached tensors (the
trainer turns them into floats only when it logs, so the inner loop does not wait on the device).
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catgan.consistency import augmentation_consistency_loss, shift_in_pixels, virtual_adversarial_loss
from catgan.diagnostics import class_histogram, gradient_norm
from catgan.losses import discriminator_terms, generator_terms
from catgan.models import CatGAN, frozen_batchnorm_statistics

__all__ = ["Batch", "Practices", "discriminator_step", "generator_step", "supervised_step"]


class Batch(NamedTuple):
    """One step's real data: labelled images with their labels, and unlabelled images (each or None)."""

    x_lab: Tensor | None  # (L, C, H, W)
    y_lab: Tensor | None  # (L,) int64
    x_unl: Tensor | None  # (B, C, H, W)


class Practices(NamedTuple):
    """GAN practices a step can apply; the defaults (all off) are the plain CatGAN step.

    ``instance_noise`` is the std for this step (the trainer anneals it); see `TrainConfig` for
    what each one does.
    """

    instance_noise: float = 0.0
    label_smoothing: float = 0.0
    label_noise: float = 0.0
    joint_batches: bool = False
    feature_matching: float = 0.0
    marginal_weight: float = 1.0  # of H[p_bar_real] in D's loss (an objective weight; 1 is the paper's)
    vat_weight: float = 0.0  # of the virtual adversarial term in D's loss (`catgan.consistency`)
    vat_epsilon: float = 0.1  # its perturbation's RMS per pixel value
    augment_weight: float = 0.0  # of the augmentation-consistency term in D's loss (`catgan.consistency`)
    augment_shift: float = 0.075  # its largest translation, as a share of the longer image side


def discriminator_step(
    model: CatGAN,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    lam: float,
    practices: Practices = Practices(),
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """One update of the discriminator on ``batch`` and as many generated images as unlabelled ones.

    Real images (unlabelled and labelled together) go through D in one batch, generated images in
    another with D's batch-norm running statistics left unchanged; with ``joint_batches`` all go
    through in one batch, whose statistics (and running averages) then mix real and generated
    images. With ``vat_weight`` > 0, D's loss also holds that weight times the virtual adversarial
    term on the real images (`catgan.consistency`), returned as ``vat``; with ``augment_weight`` > 0,
    that weight times the augmentation-consistency term, returned as ``augment``. Returns the loss
    terms of `catgan.losses.discriminator_loss` as detached tensors, plus ``grad_norm`` (of D's
    gradients) and ``accuracy_lab`` (D's accuracy on the labelled batch, against the true labels)
    when there is one.

    The forward passes run inside ``autocast()`` (see `catgan.performance.autocast_for`); the
    losses are computed in float32. With several processes, ``gather`` concatenates a tensor
    across them (carrying gradients), so that the losses, marginal entropies included, are those
    of the global batch (see `catgan.distributed`).
    """
    discriminator, generator = model.discriminator, model.generator
    with autocast():
        with torch.no_grad():
            x_fake = generator(model.sample_latent(len(batch.x_unl)))
        x_real = batch.x_unl if batch.x_lab is None else torch.cat([batch.x_unl, batch.x_lab])
        x_real, x_fake = _with_instance_noise(x_real, practices), _with_instance_noise(x_fake, practices)
        if practices.joint_batches:
            logits = discriminator(torch.cat([x_real, x_fake]))
            logits_all_real, logits_fake = logits[: len(x_real)], logits[len(x_real) :]
        else:
            logits_all_real = discriminator(x_real)
            with frozen_batchnorm_statistics(discriminator):
                logits_fake = discriminator(x_fake)
    logits_all_real, logits_fake = logits_all_real.float(), logits_fake.float()
    logits_real, logits_lab = logits_all_real[: len(batch.x_unl)], None
    y_lab, y_true = _with_label_noise(batch.y_lab, model.num_clusters, practices), batch.y_lab
    if batch.x_lab is not None:
        logits_lab = logits_all_real[len(batch.x_unl) :]
    if gather is not None:
        logits_real, logits_fake = gather(logits_real), gather(logits_fake)
        if logits_lab is not None:
            logits_lab, y_lab, y_true = gather(logits_lab), gather(y_lab), gather(y_true)
    loss, terms = discriminator_terms(logits_real, logits_fake, logits_lab, y_lab, lam, practices.label_smoothing,
                                      practices.marginal_weight)
    for name, weight, term in _consistency_terms(discriminator, x_real, logits_all_real, practices, autocast):
        loss = loss + weight * term
        terms[name], terms["loss_d"] = term.detach(), loss.detach()
    terms["grad_norm"] = _update(optimizer, loss, discriminator)
    if logits_lab is not None:
        terms["accuracy_lab"] = _accuracy(logits_lab, y_true)
    return terms


def _consistency_terms(discriminator: nn.Module, x_real: Tensor, logits_real: Tensor, practices: Practices,
                       autocast: Callable[[], ContextManager]) -> Iterator[tuple[str, float, Tensor]]:
    """D's consistency terms on the real images that ``practices`` switches on, as (name, weight,
    term), VAT first: each draws random numbers, so the order is part of a run's stream."""
    if practices.vat_weight > 0:
        yield "vat", practices.vat_weight, virtual_adversarial_loss(discriminator, x_real, logits_real,
                                                                    practices.vat_epsilon, autocast)
    if practices.augment_weight > 0:
        shift = shift_in_pixels(practices.augment_shift, x_real.shape)
        yield "augment", practices.augment_weight, augmentation_consistency_loss(discriminator, x_real, logits_real,
                                                                                 shift, autocast)


def generator_step(
    model: CatGAN,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    practices: Practices = Practices(),
    x_real: Tensor | None = None,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """One update of the generator on ``batch_size`` fresh generated images.

    D sees them in training mode (its noise on, batch statistics, running statistics unchanged);
    only G's parameters receive gradients. With ``feature_matching`` > 0, G's loss also holds
    that weight times ||mean f(x_real) - mean f(G(z))||^2, f being D's penultimate features and
    ``x_real`` a batch of real images. Returns the terms of `catgan.losses.generator_loss` as
    detached tensors (``loss_g`` the whole loss), ``feature_matching`` when used, G's
    ``grad_norm`` and ``class_histogram`` (K,): the share of generated images D gives each class.
    ``autocast`` and ``gather`` as for `discriminator_step` (with ``gather``, the feature means
    are those of the global batch).
    """
    discriminator, generator = model.discriminator, model.generator
    with autocast():
        x_fake = _with_instance_noise(generator(model.sample_latent(batch_size)), practices)
        with frozen_batchnorm_statistics(discriminator), _without_gradient_sync(discriminator):
            if practices.feature_matching > 0:
                if x_real is None:
                    raise ValueError("feature matching needs a batch of real images (x_real)")
                logits_fake, features_fake = discriminator(x_fake, return_features=True)
                with torch.no_grad():
                    _, features_real = discriminator(_with_instance_noise(x_real, practices), return_features=True)
            else:
                logits_fake = discriminator(x_fake)
    logits_fake = logits_fake.float()
    if gather is not None:
        logits_fake = gather(logits_fake)
    loss, terms = generator_terms(logits_fake)
    if practices.feature_matching > 0:
        features_real, features_fake = features_real.float(), features_fake.float()
        if gather is not None:
            features_real, features_fake = gather(features_real), gather(features_fake)
        matching = (features_real.mean(dim=0) - features_fake.mean(dim=0)).pow(2).sum()
        loss = loss + practices.feature_matching * matching
        terms["feature_matching"], terms["loss_g"] = matching.detach(), loss.detach()
    terms["grad_norm"] = _update(optimizer, loss, generator, inputs=list(generator.parameters()))
    terms["class_histogram"] = class_histogram(logits_fake)
    return terms


def supervised_step(
    model: CatGAN,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    practices: Practices = Practices(),
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    gather: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """One cross-entropy update of the discriminator on the labelled batch alone: the supervised
    baseline, with the same network, noise and batch norm as CatGAN's discriminator, and the same
    instance noise, label smoothing and label noise when those are on.

    Returns ``cross_entropy``, ``accuracy_lab`` and ``grad_norm`` as detached tensors.
    ``autocast`` and ``gather`` as for `discriminator_step`.
    """
    with autocast():
        logits_lab = model.discriminator(_with_instance_noise(batch.x_lab, practices))
    logits_lab = logits_lab.float()
    y_lab, y_true = _with_label_noise(batch.y_lab, model.num_clusters, practices), batch.y_lab
    if gather is not None:
        logits_lab, y_lab, y_true = gather(logits_lab), gather(y_lab), gather(y_true)
    loss = F.cross_entropy(logits_lab, y_lab, label_smoothing=practices.label_smoothing)
    norm = _update(optimizer, loss, model.discriminator)
    return {"cross_entropy": loss.detach(), "accuracy_lab": _accuracy(logits_lab, y_true), "grad_norm": norm}


def _update(optimizer: torch.optim.Optimizer, loss: Tensor, network: nn.Module,
            inputs: list[Tensor] | None = None) -> Tensor:
    """Backpropagate ``loss`` (into ``inputs`` alone, when given) and take one step of
    ``optimizer``; returns the norm of ``network``'s gradients, detached."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=inputs)
    norm = gradient_norm(network).detach()
    optimizer.step()
    return norm


def _without_gradient_sync(network: nn.Module) -> ContextManager:
    """For a DistributedDataParallel ``network``: no gradient synchronisation for the passes inside
    (G's update backpropagates through D without updating it); nothing otherwise."""
    return network.no_sync() if isinstance(network, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()


def _with_instance_noise(x: Tensor, practices: Practices) -> Tensor:
    return x + practices.instance_noise * torch.randn_like(x) if practices.instance_noise > 0 else x


def _with_label_noise(y: Tensor | None, num_classes: int, practices: Practices) -> Tensor | None:
    """``y`` with a ``label_noise`` share of its entries (drawn afresh) replaced by random classes."""
    if y is None or practices.label_noise == 0:
        return y
    flip = torch.rand(y.shape, device=y.device) < practices.label_noise
    return torch.where(flip, torch.randint(num_classes, y.shape, device=y.device), y)


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.detach().argmax(dim=1) == y).float().mean()
