"""Virtual adversarial training: a consistency term that makes D's prediction smooth around each
real image (Miyato et al., "Virtual Adversarial Training", TPAMI 2018; IMSAT, Hu et al. 2017,
uses it for clustering). Beyond the paper: off unless `vat_weight` is set.

For a batch of real images x with D's class probabilities p(y|x), the term is

    mean_i KL( p(y|x_i) || p(y|x_i + r_i) ),   r_i = the perturbation of size eps_i that changes
                                                D's prediction at x_i most,

found by one step of power iteration: r_i is the direction of the gradient, with respect to a
tiny random perturbation d_i, of KL(p(y|x_i) || p(y|x_i + d_i)). The target p(y|x_i) is held
fixed (no gradient flows into it). The size eps_i is `vat_epsilon` times sqrt(C H W): epsilon is
the perturbation's root mean square per pixel value, on the [-1, 1] scale every image is given,
so one value reads the same on 8x8 digits and 32x32 colour images.

The direction is found with D's hidden-activation noise off, in float32 without TF32 (the finite
difference it rests on is far below D's noise and below bfloat16's or TF32's resolution), from a
probe of RMS 1e-3 per value (about 1e4 float32 rounding steps at the image scale's ends, so that
the probed image is not rounded back to the image itself); the term itself is computed as D
trains, noise on. Both passes leave D's batch-norm running statistics untouched.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, ContextManager, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catgan.models import GaussianNoise, frozen_batchnorm_statistics

__all__ = ["adversarial_direction", "virtual_adversarial_loss", "without_noise"]

XI = 1e-3  # RMS per value of the power iteration's probe


@contextlib.contextmanager
def without_noise(module: nn.Module) -> Iterator[None]:
    """Switch off the Gaussian noise layers of ``module`` inside the block (the rest stays in its mode)."""
    layers = [m for m in module.modules() if isinstance(m, GaussianNoise)]
    modes = [layer.training for layer in layers]
    for layer in layers:
        layer.training = False
    try:
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.training = mode


def _unit(d: Tensor) -> Tensor:
    """Each sample of ``d`` scaled to L2 norm 1 over its C, H, W values."""
    norm = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d / norm.view(-1, *([1] * (d.dim() - 1)))


def _kl(log_p: Tensor, logits_q: Tensor) -> Tensor:
    """Mean over the batch of KL(p || q), p given by its log-probabilities, q by logits."""
    return (log_p.exp() * (log_p - F.log_softmax(logits_q, dim=1))).sum(dim=1).mean()


def adversarial_direction(discriminator: nn.Module, x: Tensor) -> Tensor:
    """Unit directions (per sample, L2 over C, H, W) in which D's prediction at ``x`` changes
    most, by one power iteration from a random start; D's noise off, float32, no running statistics
    updated, no gradient left on D's parameters."""
    if isinstance(discriminator, nn.parallel.DistributedDataParallel):
        discriminator = discriminator.module  # no parameter gradients: nothing to synchronise
    x = x.detach().float()
    with without_noise(discriminator), frozen_batchnorm_statistics(discriminator), _full_float32():
        with torch.no_grad():
            log_p = F.log_softmax(discriminator(x).float(), dim=1)
        probe = (XI * math.sqrt(x[0].numel()) * _unit(torch.randn_like(x))).requires_grad_(True)
        kl = _kl(log_p, discriminator(x + probe).float())
        (gradient,) = torch.autograd.grad(kl, probe)
    return _unit(gradient)


@contextlib.contextmanager
def _full_float32() -> Iterator[None]:
    """Float32 matrix products and convolutions at full precision (no TF32) inside the block."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def virtual_adversarial_loss(
    discriminator: nn.Module,
    x: Tensor,
    logits: Tensor,
    epsilon: float,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
) -> Tensor:
    """The consistency term for real images ``x`` whose logits under D (as it trains) are
    ``logits``: mean KL(p(y|x) || p(y|x + r)), r of RMS ``epsilon`` per value in the adversarial
    direction (``epsilon`` 0: D's own noise is the only perturbation). Gradients reach D's parameters
    through the perturbed pass only."""
    if epsilon < 0:
        raise ValueError(f"vat_epsilon must be >= 0, got {epsilon}")
    log_p = F.log_softmax(logits.detach().float(), dim=1)
    x = x.detach()
    if epsilon > 0:
        size = epsilon * math.sqrt(x[0].numel())
        x = x + (size * adversarial_direction(discriminator, x)).to(x.dtype)
    with autocast(), frozen_batchnorm_statistics(discriminator):
        logits_perturbed = discriminator(x)
    return _kl(log_p, logits_perturbed.float())
