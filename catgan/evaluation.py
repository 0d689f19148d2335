"""D's predictions and the figures a run reports: test error, or clustering figures."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from catgan.config import CatGANError, TrainConfig
from catgan.metrics import clustering_report, error_rate
from catgan.models import CatGAN, evaluation_mode

__all__ = ["check_reestimable", "class_shares_of_run", "evaluate", "predict_features", "predict_logits",
           "reestimate_batchnorm"]

PROBE_IMAGES = 10_000  # unlabelled training images whose predicted classes `class_shares_of_run` counts


@torch.no_grad()
def predict_logits(discriminator: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """D's logits (N, K) on images ``x`` in evaluation mode (no noise, running statistics), on the CPU."""
    return _in_batches(discriminator, x, batch_size, lambda batch: discriminator(batch))


@torch.no_grad()
def predict_features(discriminator: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """D's penultimate features (N, F) on images ``x`` in evaluation mode, on the CPU."""
    return _in_batches(discriminator, x, batch_size, lambda batch: discriminator(batch, return_features=True)[1])


def _in_batches(discriminator: nn.Module, x: Tensor, batch_size: int, output: Callable[[Tensor], Tensor]) -> Tensor:
    """``output`` of each batch of ``x`` with D in evaluation mode, concatenated on the CPU (in
    float32, or float64 for a float64 D)."""
    parameter = next(discriminator.parameters())
    dtype = torch.float64 if parameter.dtype == torch.float64 else torch.float32
    with evaluation_mode(discriminator):
        return torch.cat([output(x[i : i + batch_size].to(parameter.device)).to(dtype).cpu()
                          for i in range(0, len(x), batch_size)])


def evaluate(
    model: CatGAN, x: Tensor, y: Tensor, classifies: bool, discriminator: nn.Module | None = None
) -> dict[str, float]:
    """Figures on images ``x`` with labels ``y``, accuracies and errors in percent.

    When D was trained on labels (``classifies``): ``test_error``, its classification error.
    Otherwise D's outputs are clusters, reported by `catgan.metrics.clustering_report`.
    ``discriminator`` replaces ``model.discriminator`` (for example its weight average).
    """
    predictions = predict_logits(discriminator or model.discriminator, x).argmax(dim=1).numpy()
    labels = np.asarray(y.cpu())
    if classifies:
        return {"test_error": 100.0 * error_rate(labels, predictions)}
    return clustering_report(labels, predictions, num_clusters=model.num_clusters)


def class_shares_of_run(discriminator: nn.Module, x_train: Tensor, y_train: Tensor, labelled: np.ndarray,
                        num_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The share of each class among D's predictions on the first `PROBE_IMAGES` training images that
    are not in ``labelled``, the share of each class among the ``labelled`` images' labels, and how
    many unlabelled images were read (0 when there are none; their shares are then all 0).
    Reads no label of an unlabelled image."""
    from catgan.diagnostics import class_shares

    unlabelled = np.setdiff1d(np.arange(len(x_train)), labelled)[:PROBE_IMAGES]
    labelled_shares = class_shares(np.asarray(y_train[labelled]), num_classes)
    if not len(unlabelled):
        return np.zeros(num_classes), labelled_shares, 0
    predicted = predict_logits(discriminator, x_train[unlabelled]).argmax(dim=1).numpy()
    return class_shares(predicted, num_classes), labelled_shares, len(unlabelled)


@torch.no_grad()
def reestimate_batchnorm(discriminator: nn.Module, x_train: Tensor, unlabelled: bool, labelled: np.ndarray | None,
                         images: int, batch_size: int, seed: int) -> int:
    """Re-estimate D's batch-norm statistics with its weights as they are now ("precise batch norm").

    During training each batch-norm layer keeps running averages of its batches' means and
    variances (PyTorch's momentum 0.1: mostly the last few dozen batches, taken while the weights
    were still moving), and evaluation uses them. Here they are reset and recomputed as plain
    averages over ``images`` training images in batches of ``batch_size``, each made as training
    makes D's batch of real images: ``batch_size`` of all training images when ``unlabelled``, and
    as many of the ``labelled`` ones (all of them when fewer) when given. The batches are drawn
    with ``seed``, from a generator of their own; D is in training mode with its noise off, the
    images it sees at evaluation. Returns the number of batches (0 when D has no batch norm or
    ``images`` is 0); the result depends only on D's weights, the data and the seed.
    """
    from catgan.consistency import without_noise
    from catgan.schedule import IndexCycler

    norms = [m for m in discriminator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or images <= 0:
        return 0
    order = torch.Generator().manual_seed(seed)
    draws = []
    if unlabelled:
        draws.append(IndexCycler(torch.arange(len(x_train)), batch_size, order))
    if labelled is not None and len(labelled):
        draws.append(IndexCycler(torch.from_numpy(np.asarray(labelled)), min(batch_size, len(labelled)), order))
    device = next(discriminator.parameters()).device
    momenta, mode = [norm.momentum for norm in norms], discriminator.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: every batch weighs the same
    batches = -(-images // batch_size)
    try:
        discriminator.train()
        with without_noise(discriminator):
            for _ in range(batches):
                index = torch.cat([draw() for draw in draws])
                discriminator(x_train[index.to(x_train.device)].to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        discriminator.train(mode)
    return batches


def check_reestimable(run: str, config: TrainConfig, images: int) -> None:
    """Refuse to re-estimate a finished run's batch-norm statistics over ``images`` training images
    where training would have refused ``bn_recalibration`` (a D without batch norm, joint batches),
    and for a run whose statistics that switch already re-estimated."""
    if config.bn_recalibration:
        raise CatGANError(f"{run} was trained with --bn-recalibration {config.bn_recalibration}: its statistics "
                          "are already re-estimated")
    dataclasses.replace(config, bn_recalibration=images)  # TrainConfig's own checks
