"""Consistency terms on D, beyond the paper: D's prediction on a real image should not change when
the image changes a little. Two ways, each off unless its weight is set:

- virtual adversarial training (`vat_weight`): the change is the small perturbation that moves D's
  prediction most (Miyato et al., "Virtual Adversarial Training", TPAMI 2018; IMSAT, Hu et al.
  2017, uses it for clustering);
- augmentation consistency (`augment_weight`): the change is a random translation by a few pixels,
  an augmentation that keeps the class (IMSAT's self-augmented training with a random
  augmentation in place of the adversarial one), `augmentation_consistency_loss`.

Virtual adversarial training in detail:

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

__all__ = ["adversarial_direction", "augmentation_consistency_loss", "shift_in_pixels", "translate",
           "virtual_adversarial_loss", "without_noise"]

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


def translate(x: Tensor, shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Each image of ``x`` (B, C, H, W) moved by its own random whole number of pixels in
    [-shift, shift] along each axis, the border pixels repeated into the space it leaves; the
    moves are drawn from ``generator`` (None: torch's global generator)."""
    if shift == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b, 1), generator=generator).to(x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    images = torch.arange(b, device=x.device)[:, None, None, None]
    channels = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[images, channels, rows, cols]  # (B, C, H, W)


def shift_in_pixels(share: float, image_shape: tuple[int, ...]) -> int:
    """The largest translation for ``share`` of the longer image side: at least one pixel, none for 0."""
    return max(1, round(share * max(image_shape[-2:]))) if share > 0 else 0


def augmentation_consistency_loss(
    discriminator: nn.Module,
    x: Tensor,
    logits: Tensor,
    shift: int,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
) -> Tensor:
    """The consistency term for real images ``x`` whose logits under D (as it trains) are
    ``logits``: mean KL(p(y|x) || p(y|T x)), T moving each image by up to ``shift`` pixels
    (`translate`). D's noise stays on, its batch-norm running statistics untouched; gradients
    reach D's parameters through the moved images' pass only."""
    log_p = F.log_softmax(logits.detach().float(), dim=1)
    with autocast(), frozen_batchnorm_statistics(discriminator):
        logits_moved = discriminator(translate(x.detach(), shift))
    return _kl(log_p, logits_moved.float())
