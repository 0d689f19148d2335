"""Training: the discriminator and generator steps, and the trainer that runs a fixed schedule.

One training step (Springenberg, ICLR 2016, Eq. 7 and Sec. 3.3) is a discriminator update on a
batch of unlabelled real images, a batch of generated images and, in semi-supervised runs, a batch
of labelled images; then a generator update on a fresh batch of generated images. The step
functions return their loss terms as detached tensors; the trainer turns them into floats only
when it logs, so the inner loop does not wait on the device.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, NamedTuple, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catgan import __version__
from catgan.config import RESUME_MAY_CHANGE, CatGANError, TrainConfig, check_device_name
from catgan.data import ImageData, labelled_indices, load_dataset
from catgan.diagnostics import (
    HealthMonitor,
    TrainingDiverged,
    TrainingWarning,
    class_histogram,
    d_score,
    gradient_norm,
)
from catgan.distributed import DistributedCatGAN, ProcessGroup, convert_batch_norm, digest
from catgan.distributed import gather as gather_across_processes
from catgan.losses import discriminator_terms, generator_terms
from catgan.metrics import clustering_report, error_rate
from catgan.models import CatGAN, NoiseStreams, drawing_noise_from, frozen_batchnorm_statistics
from catgan import performance, runs

__all__ = [
    "Batch",
    "Practices",
    "Trainer",
    "WeightAverage",
    "discriminator_step",
    "generator_step",
    "evaluate",
    "learning_rate",
    "make_optimizers",
    "predict_features",
    "predict_logits",
    "resolve_device",
    "resume",
    "supervised_step",
    "train",
    "TrainingStopped",
]


class Batch(NamedTuple):
    """One step's real data: labelled images with their labels, and unlabelled images (each or None)."""

    x_lab: Tensor | None  # (L, C, H, W)
    y_lab: Tensor | None  # (L,) int64
    x_unl: Tensor | None  # (B, C, H, W)


def make_optimizers(model: CatGAN, config: TrainConfig) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the discriminator (``lr``) and for the generator (``lr_g``, or ``lr``), with the betas."""
    betas = (config.beta1, config.beta2)
    return (
        torch.optim.Adam(model.discriminator.parameters(), lr=config.lr, betas=betas),
        torch.optim.Adam(model.generator.parameters(), lr=config.lr_g or config.lr, betas=betas),
    )


def learning_rate(config: TrainConfig, step: int, total: int, base: float | None = None) -> float:
    """The learning rate for ``step`` (0-based) of ``total``: ``base`` (default ``config.lr``),
    falling linearly to 0 over the schedule's last ``1 - config.lr_decay_start`` part."""
    base = config.lr if base is None else base
    start = config.lr_decay_start * total
    if step < start:
        return base
    return base * (total - step) / (total - start)


class WeightAverage:
    """An exponential moving average of a module's weights and batch-norm statistics, for evaluation.

    At the t-th update (t = 1, 2, ...) the copy moves ``1 - min(decay, (1 + t) / (10 + t))`` of
    the way to the module's current parameters and floating-point buffers, so the first updates
    forget the initial weights quickly; integer buffers (batch counters) are copied.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        weight = 1 - min(self.decay, (1 + self.updates) / (10 + self.updates))
        for averaged, current in zip(self.module.parameters(), module.parameters()):
            averaged.lerp_(current, weight)
        for averaged, current in zip(self.module.buffers(), module.buffers()):
            if averaged.is_floating_point():
                averaged.lerp_(current, weight)
            else:
                averaged.copy_(current)


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
    images. Returns the loss terms of `catgan.losses.discriminator_loss` as detached tensors, plus
    ``grad_norm`` (of D's gradients) and ``accuracy_lab`` (D's accuracy on the labelled batch,
    against the true labels) when there is one.

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
    loss, terms = discriminator_terms(logits_real, logits_fake, logits_lab, y_lab, lam, practices.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    terms["grad_norm"] = gradient_norm(discriminator).detach()
    optimizer.step()
    if logits_lab is not None:
        terms["accuracy_lab"] = _accuracy(logits_lab, y_true)
    return terms


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
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=list(generator.parameters()))
    terms["grad_norm"] = gradient_norm(generator).detach()
    terms["class_histogram"] = class_histogram(logits_fake)
    optimizer.step()
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
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norm = gradient_norm(model.discriminator).detach()
    optimizer.step()
    return {"cross_entropy": loss.detach(), "accuracy_lab": _accuracy(logits_lab, y_true), "grad_norm": norm}


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


@torch.no_grad()
def predict_logits(discriminator: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """D's logits (N, K) on images ``x`` in evaluation mode (no noise, running statistics), on the CPU."""
    return _in_eval_mode(discriminator, x, batch_size, lambda batch: discriminator(batch))


@torch.no_grad()
def predict_features(discriminator: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """D's penultimate features (N, F) on images ``x`` in evaluation mode, on the CPU."""
    return _in_eval_mode(discriminator, x, batch_size, lambda batch: discriminator(batch, return_features=True)[1])


def _in_eval_mode(discriminator: nn.Module, x: Tensor, batch_size: int, output: Callable[[Tensor], Tensor]) -> Tensor:
    """``output`` of each batch of ``x`` with D in evaluation mode, concatenated on the CPU (in
    float32, or float64 for a float64 D)."""
    was_training = discriminator.training
    discriminator.eval()
    parameter = next(discriminator.parameters())
    dtype = torch.float64 if parameter.dtype == torch.float64 else torch.float32
    try:
        return torch.cat([output(x[i : i + batch_size].to(parameter.device)).to(dtype).cpu()
                          for i in range(0, len(x), batch_size)])
    finally:
        discriminator.train(was_training)


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


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; a CUDA device that is absent is an error."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CatGANError(f"device {name} was asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CatGANError(f"device {name} was asked for, but only {torch.cuda.device_count()} CUDA devices exist")
    return device


class IndexCycler:
    """Endless shuffled passes over ``indices``, drawn ``batch_size`` at a time.

    Each pass is a fresh permutation; a remainder smaller than a batch is dropped, so every batch
    is full and a pass over N indices yields N // batch_size batches.
    """

    def __init__(self, indices: Tensor, batch_size: int, generator: torch.Generator) -> None:
        self.indices, self.batch_size, self.generator = indices, batch_size, generator
        self.batches_per_pass = len(indices) // batch_size
        self._order: Tensor | None = None
        self._next = 0

    def __call__(self) -> Tensor:
        if self._order is None or self._next == self.batches_per_pass:
            permutation = torch.randperm(len(self.indices), generator=self.generator)
            self._order = self.indices[permutation.to(self.indices.device)]
            self._next = 0
        start = self._next * self.batch_size
        self._next += 1
        return self._order[start : start + self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        """The current pass's order and position in it (the generator's state is saved by its owner)."""
        return {"order": None if self._order is None else self._order.cpu(), "next": self._next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._order = None if state["order"] is None else state["order"].to(self.indices.device)
        self._next = state["next"]


class Trainer:
    """Runs one fixed training schedule on data already in memory.

    Args:
        config: the run's configuration.
        data: the dataset (the trainer never loads one itself).
        run_dir: the run directory to write, created beforehand and empty; None writes nothing.
        command: the command line that started the run, recorded in the summary.
        report: where warnings go, one line each (default: stderr, above the progress bar).
        labelled: the indices of the training images whose labels D learns from; None draws
            ``config.labels_per_class`` per class (`labelled_indices`). The labels of the other
            training images are never read.
        group: this process's place among several started by torchrun (see
            `catgan.distributed`); None trains in this process alone. Only the process of rank 0
            should be given a ``run_dir``. The Trainer joins the process group; `train` and
            `resume` leave it when training ends, while a direct user of the Trainer calls
            ``torch.distributed.destroy_process_group()`` after ``fit``.

    A dataset whose test split is empty trains without the final evaluation (the summary then
    holds no test figures). The records this process writes to ``metrics.jsonl`` (for a resumed
    run, those after the resume) are also kept in ``records``.
    """

    def __init__(
        self,
        config: TrainConfig,
        data: ImageData,
        run_dir: Path | None = None,
        command: str | None = None,
        report: Callable[[str], None] | None = None,
        labelled: np.ndarray | None = None,
        group: ProcessGroup | None = None,
    ) -> None:
        self.config = dataclasses.replace(config, epochs=config.resolved_epochs())
        self.data, self.run_dir, self.command = data, run_dir, command
        self.group = group  # world_size reads it
        self.device = resolve_device(config.device)
        if group is not None:
            if run_dir is not None and not group.is_main:
                raise CatGANError(f"only the process of rank 0 writes the run directory; rank {group.rank} "
                                  "was given one")
            if config.compile != "off":
                raise CatGANError("--compile with several processes is untested; train them without it")
            self.device = group.device(self.device)
            group.start(self.device)
        if config.precision == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise CatGANError(f"--precision bf16: {torch.cuda.get_device_name(self.device)} has no bfloat16 support; "
                              "use --precision fp32")
        world = self.world_size
        self.num_clusters = config.clusters or data.num_classes
        if config.uses_labels and self.num_clusters != data.num_classes:
            raise CatGANError(
                f"with labels, clusters must equal the number of classes ({data.num_classes}), got {self.num_clusters}; "
                f"use --labels-per-class 0 (or --lam 0) to cluster into another number"
            )
        if config.batch_size * world > len(data.x_train):
            raise CatGANError(f"batch_size {config.batch_size}{f' x {world} processes' if world > 1 else ''} exceeds "
                              f"the {len(data.x_train)} training images")
        if labelled is None:
            self.labelled = labelled_indices(data.y_train, config.labels_per_class, config.seed)
        else:
            self.labelled = np.asarray(labelled, dtype=np.int64)
            in_range = (0 <= self.labelled) & (self.labelled < len(data.x_train))
            if self.labelled.ndim != 1 or not in_range.all() or len(np.unique(self.labelled)) != len(self.labelled):
                raise CatGANError(f"labelled must be distinct indices of the {len(data.x_train)} training images")
            if config.uses_labels and len(self.labelled) == 0:
                raise CatGANError("no training image is labelled")
        # D's noise on the CPU: drawn on every thread torch computes with, from streams seeded with the
        # latents (compiled networks draw their own)
        threads = torch.get_num_threads()
        self.noise = None
        if self.device.type == "cpu" and threads > 1 and config.compile == "off":
            self.noise = NoiseStreams(threads)
        self._seed_random(config.seed)
        if self.device.type == "cuda":
            performance.tune_cuda()
        else:
            performance.tune_cpu()
        self.model = CatGAN(self.config, data.image_shape, self.num_clusters).to(self.device)
        performance.prepare_networks([self.model.generator, self.model.discriminator], config.architecture == "conv",
                                     config.compile, self.device, config.precision)
        self._autocast = performance.autocast_for(self.device, config.precision)
        # what the step functions train: the model, or its networks wrapped for several processes
        self.networks: CatGAN | DistributedCatGAN = self.model
        self._gather_across = None
        if group is not None:
            convert_batch_norm(self.model)
            self.networks, self._gather_across = DistributedCatGAN(self.model, self.device), gather_across_processes
        self.opt_d, self.opt_g = make_optimizers(self.model, self.config)
        # D's weights averaged over the updates, for evaluation (None: evaluate D as trained)
        self.weight_average = WeightAverage(self.model.discriminator, config.ema_decay) if config.ema_decay else None
        self.storage = _storage_device(data.x_train, self.device)  # batches are copied to the device if need be
        self.x_train, self.y_train = data.x_train.to(self.storage), data.y_train.to(self.storage)
        self.step = 0
        self.epoch = 0
        self.monitor = HealthMonitor(self.num_clusters, report=report or _report)
        self._last_good: dict[str, Any] | None = None  # the latest state known finite, in host memory
        self._writer = None  # TensorBoard's SummaryWriter, when asked for
        self.lr_scale = 1.0  # both learning rates' factor, lowered by each restart after a non-finite loss
        self.records: list[dict[str, Any]] = []  # what this process appended to metrics.jsonl
        self.restarts: list[dict[str, Any]] = []  # one record per restart (on_nan restart)
        self.resumed_at: list[int] = []  # the steps at which this run was resumed
        self.git_commits: list[str | None] = []  # the code's commit at the start, then at each resume
        self._elapsed = 0.0  # training seconds spent before `_started` (by earlier processes, for a resumed run)
        self._started = self._last_save = time.perf_counter()
        self._terms_g: dict[str, Tensor] = {}  # G's terms from its latest update
        self._order = torch.Generator()  # draws the order of the batches; seeded by fit
        self.next_unlabelled = self.next_labelled = None
        # Each global batch (of every process together) is drawn in the same order by every
        # process, which takes its own slice of it.
        if config.method == "catgan":
            self.next_unlabelled = IndexCycler(torch.arange(len(self.x_train), device=self.storage),
                                               config.batch_size * world, self._order)
        if config.uses_labels:
            labelled = torch.from_numpy(self.labelled).to(self.storage)
            per_process = min(config.batch_size * world, len(labelled)) // world
            if per_process == 0:
                raise CatGANError(f"{len(labelled)} labelled images cannot be shared among {world} processes")
            self.next_labelled = IndexCycler(labelled, per_process * world, self._order)

    @functools.cached_property
    def data_fingerprint(self) -> dict[str, Any]:
        """The data's split sizes and SHA-256, kept in checkpoints: a resumed run must see the same data."""
        return _fingerprint(self.data)

    @property
    def world_size(self) -> int:
        """The number of processes training together (1 without torchrun)."""
        return self.group.world_size if self.group is not None else 1

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x_train) // (self.config.batch_size * self.world_size)

    def fit(self, resume: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train for the configured epochs, evaluate on the test split, write the run's files.

        Args:
            resume: a checkpoint of this run (see `checkpoint_state`) to continue from, instead of
                starting afresh; the run then ends exactly as it would have without the stop.

        Returns the summary (also written as ``summary.json``).

        Raises:
            TrainingDiverged: a loss or weight stopped being finite (and ``on_nan`` restarts, if
                asked for, did not help); the run directory then holds the last finite state and a
                summary that says so.
            TrainingStopped: SIGINT or SIGTERM arrived; a checkpoint of the last finished step is saved.
        """
        config = self.config
        if self.group is not None:  # after resume() has set the fingerprint it checked: not hashed twice
            self.group.check_agreement("the seed, the labelled subset and the data",
                                       (config.seed, digest(self.labelled), self.data_fingerprint["sha256"]))
        self._started = self._last_save = time.perf_counter()
        if resume is None:
            if self.run_dir is not None and (self.run_dir / runs.CONFIG).exists():
                raise CatGANError(f"{self.run_dir} already holds a run; give the trainer a new directory")
            self._write_start_files()
            self._seed_random(self._draw_seed())  # the noise and latents; whatever ran since __init__
            self._order.manual_seed(config.seed)
            self.git_commits = [runs.git_commit()]
            self._keep_last_good()
            self.save_checkpoint()  # a run killed at any moment can be resumed, from step 0 at worst
        else:
            try:
                self.load_training_state(resume)
            except CatGANError:
                raise
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
                raise CatGANError(f"cannot resume from this checkpoint: {type(err).__name__}: {err}") from None
            self.resumed_at.append(self.step)
            self.git_commits.append(runs.git_commit())
            if self.group is not None:  # the checkpoint holds rank 0's random state: each process takes its own
                self._seed_random(self.group.seed(config.seed, self.step))
        total = config.epochs * self.steps_per_epoch
        bar = _progress_bar(total, config, initial=self.step)
        self._writer = _tensorboard_writer(self.run_dir) if config.tensorboard and self.run_dir else None
        stop = _StopSignals()
        try:
            with stop:
                self._run_schedule(total, bar, stop)
                bar.close()
                self.save_checkpoint()  # before the final record, so that a resume from it writes that record once
                figures = self.evaluate_test() if len(self.data.x_test) else {}
                if figures:
                    self._append_test_record(figures)
                summary = {**figures, **self._common_summary()}
                if self.run_dir is not None and config.method == "catgan":
                    self.save_samples(self.run_dir / runs.SAMPLES)
                    self.save_class_samples(self.run_dir / runs.CLASS_SAMPLES)
                if stop.signum is not None:  # during the final evaluation: the checkpoint above resumes it
                    raise TrainingStopped(stop.signum, self.step, self.run_dir)
                if self.run_dir is not None:
                    runs.write_json(self.run_dir / runs.SUMMARY, summary)
        except KeyboardInterrupt:
            if stop.signum is None:  # not a second Ctrl-C (that one aborts at once): keep the last finite state
                self._save_last_good()
            raise
        except _NonFinite as error:
            self._stop_diverged(error.warning)  # raises TrainingDiverged
        finally:
            bar.close()
            if self._writer is not None:
                self._writer.close()
        return summary

    def _draw_seed(self) -> int:
        """The seed of the latents and noise: the run's, or with several processes one per process."""
        return self.config.seed if self.group is None else self.group.seed(self.config.seed)

    def _seed_random(self, seed: int) -> None:
        """Seed what the steps draw from: torch's generator (latents, and D's noise on a GPU or with
        one thread) and the CPU's noise streams."""
        torch.manual_seed(seed)
        if self.noise is not None:
            self.noise.seed(seed)

    def seconds(self) -> float:
        """Training seconds so far: this process's, plus those recorded in the checkpoint it
        resumed from (work done after that checkpoint by a killed process is not counted)."""
        return self._elapsed + time.perf_counter() - self._started

    def _run_schedule(self, total: int, bar, stop: "_StopSignals") -> None:
        """Steps until ``total``, with checkpoints, restarts after non-finite values (when asked
        for) and a stop at the first step boundary after a signal."""
        while self.step < total:
            try:
                self._one_step(total, bar)
                stopping, checkpoint_due = self._stop_or_save(stop, total)
                if stopping or checkpoint_due:
                    self.save_checkpoint()
            except _NonFinite as error:
                if not self._restart(error.warning):
                    raise
                bar.n = self.step
                bar.refresh()
                continue
            if stopping:
                raise TrainingStopped(stop.signum, self.step, self.run_dir)

    def _stop_or_save(self, stop: "_StopSignals", total: int) -> tuple[bool, bool]:
        """Whether a signal stops training after this step, and whether a checkpoint is due.

        With several processes every one must decide alike (a checkpoint checks the weights, a
        stop ends the collectives): they share, at the logging cadence, whether any received a
        signal and whether rank 0's checkpoint time has come (a host synchronisation, hence not
        at every step); checkpoints by step count need no sharing."""
        by_steps = self._checkpoint_due_by_steps()
        if self.group is None:
            return stop.signum is not None, by_steps or self._checkpoint_due_by_time()
        if self.step % self.config.log_every and self.step != total:
            return False, by_steps
        due_on_main = self.group.is_main and self._checkpoint_due_by_time()
        signum, by_time = self.group.largest([stop.signum or 0, int(due_on_main)], self.device)
        stop.signum = signum or None
        return stop.signum is not None, by_steps or bool(by_time)

    def _one_step(self, total: int, bar) -> None:
        """One step of the schedule, its log record when due, and the end of an epoch when due."""
        config = self.config
        self.epoch = self.step // self.steps_per_epoch + 1
        x_lab, y_lab = self._gather(self.next_labelled)
        x_unl, _ = self._gather(self.next_unlabelled)
        terms_d, self._terms_g = self._train_step(Batch(x_lab, y_lab, x_unl), total, self._terms_g)
        self.step += 1
        bar.update()
        if self.step % config.log_every == 0 or self.step == total:
            self._log(terms_d, self._terms_g, self.seconds(), bar)
        if self.step % self.steps_per_epoch == 0:
            self._end_epoch()

    def _checkpoint_due_by_steps(self) -> bool:
        return bool(self.config.checkpoint_steps) and self.step % self.config.checkpoint_steps == 0

    def _checkpoint_due_by_time(self) -> bool:
        minutes = self.config.checkpoint_minutes
        return bool(minutes) and time.perf_counter() - self._last_save >= 60 * minutes

    def _restart(self, warning: TrainingWarning) -> bool:
        """With ``on_nan restart`` and restarts left: go back to the last finite state with lower
        learning rates, and return True; otherwise return False."""
        config = self.config
        if config.on_nan != "restart" or len(self.restarts) >= config.max_restarts:
            return False
        good = self._last_good
        scale = self.lr_scale * config.restart_lr_factor
        restarts = [*self.restarts, {"at_step": warning.step, "back_to_step": good["step"],
                                     "message": warning.message, "lr_scale": scale}]
        seconds, resumed_at, commits = self.seconds(), self.resumed_at, self.git_commits
        self.load_training_state(good)
        if self.group is not None:  # after a resume, the state went back to holds rank 0's random state
            self._seed_random(self.group.seed(config.seed, good["step"], len(restarts)))
        self.restarts, self.lr_scale = restarts, scale
        self.resumed_at, self.git_commits = resumed_at, commits  # the run's history is not undone
        self._elapsed, self._started = seconds, time.perf_counter()
        self.monitor.report(
            f"restart {len(restarts)} of at most {config.max_restarts}: {warning.message} at step {warning.step}; "
            f"back to step {good['step']} with the learning rates x{scale:g}"
        )
        self._keep_last_good()
        return True

    def _train_step(
        self, batch: Batch, total: int, terms_g: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One step of the schedule: a D update, then G's updates when the D:G ratio calls for
        them. Returns D's terms and G's (from its latest update, ``terms_g`` if none was due)."""
        config = self.config
        for optimizer, base in ((self.opt_d, config.lr), (self.opt_g, config.lr_g or config.lr)):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, self.step, total, base) * self.lr_scale
        noise = config.instance_noise * ((1 - self.step / total) if config.instance_noise_schedule == "linear" else 1.0)
        practices = Practices(noise, config.label_smoothing, config.label_noise, config.joint_batches,
                              config.feature_matching)
        networks, run = self.networks, {"autocast": self._autocast, "gather": self._gather_across}
        with drawing_noise_from(self.noise):
            if config.method == "supervised":
                terms_d = supervised_step(networks, self.opt_d, batch, practices, **run)
            else:
                terms_d = discriminator_step(networks, self.opt_d, batch, config.lam, practices, **run)
                if (self.step + 1) % config.d_steps == 0:
                    for _ in range(config.g_steps):
                        terms_g = generator_step(networks, self.opt_g, config.batch_size, practices, batch.x_unl,
                                                 **run)
        if self.weight_average is not None:
            self.weight_average.update(self.model.discriminator)
        return terms_d, terms_g

    def _common_summary(self) -> dict[str, Any]:
        """What every summary records besides the figures: time, sizes, versions, warnings, restarts."""
        config = self.config
        return {
            "wall_seconds": self.seconds(),
            "steps": self.step,
            "epochs": config.epochs,
            "labelled": len(self.labelled) if config.uses_labels else 0,
            "clusters": self.num_clusters,
            "dataset": self.data.name,
            "test_images": len(self.data.x_test),
            "device": _device_description(self.device),
            "processes": self.world_size,
            "global_batch_size": self.config.batch_size * self.world_size,
            "cpu_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "catgan_version": __version__,
            "git_commit": self.git_commits[0] if self.git_commits else runs.git_commit(),  # the code it started with
            "command": self.command,
            "warnings": [warning.to_dict() for warning in self.monitor.warnings],
            "restarts": self.restarts,
            "resumed_at_steps": self.resumed_at,
            "resumed_with_commits": self.git_commits[1:],
        }

    def _end_epoch(self) -> None:
        """Check that the weights are finite, draw the epoch's samples, evaluate if asked, and keep
        the state as the point a restart after a NaN goes back to."""
        config = self.config
        self._check_finite_weights()
        if config.sample_every and self.epoch % config.sample_every == 0 and config.method == "catgan" and self.run_dir:
            (self.run_dir / runs.SAMPLES_DIR).mkdir(exist_ok=True)
            self.save_samples(self.run_dir / runs.SAMPLES_DIR / f"epoch-{self.epoch:04d}.png")
        if config.eval_every and self.epoch % config.eval_every == 0 and self.epoch < config.epochs and len(self.data.x_test):
            figures = self.evaluate_test()
            self._append_test_record(figures)
            self._tensorboard_scalars({f"test/{name}": value for name, value in figures.items()})
        self._keep_last_good()

    def _check_finite_weights(self) -> None:
        bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            message = f"non-finite weights in {len(bad)} parameters ({bad[0]}, ...)"
            warning = self.monitor.fire("non_finite", self.step, self.epoch, message)
            raise _NonFinite(warning or TrainingWarning("non_finite", self.step, self.epoch, message))

    def _keep_last_good(self) -> None:
        """Keep a copy of the whole training state, in host memory, to fall back on after a NaN."""
        self._last_good = _on_cpu(self.checkpoint_state(with_restart_point=False))

    def _save_last_good(self) -> None:
        if self.run_dir is not None and self._last_good is not None:
            runs.save_checkpoint(self.run_dir / runs.CHECKPOINT, self._last_good)

    def _stop_diverged(self, warning: TrainingWarning) -> NoReturn:
        """After a non-finite loss: put back the last good state, save it, record why, raise."""
        good = self._last_good
        seconds = self.seconds()
        self.model.generator.load_state_dict(good["generator"])
        self.model.discriminator.load_state_dict(good["discriminator"])
        summary = {
            "status": "diverged",
            "diverged_at_step": warning.step,
            "last_good_step": good["step"],
            "last_good_epoch": good["epoch"],
            **self._common_summary(),
            "wall_seconds": seconds,
        }
        where = "nothing was written"
        if self.run_dir is not None:
            self._save_last_good()
            runs.write_json(self.run_dir / runs.SUMMARY, summary)
            where = f"{self.run_dir / runs.CHECKPOINT} holds the state at step {good['step']} (epoch {good['epoch']})"
        tried = f" after {len(self.restarts)} restarts" if self.restarts else ""
        raise TrainingDiverged(f"training diverged at step {warning.step}{tried} ({warning.message}); {where}")

    def _gather(self, cycler: IndexCycler | None) -> tuple[Tensor | None, Tensor | None]:
        """The next batch of training images and labels from ``cycler`` (None: no batch)."""
        if cycler is None:
            return None, None
        index = cycler()
        if self.group is not None:  # this process's slice of the global batch
            size = len(index) // self.group.world_size
            index = index[self.group.rank * size : (self.group.rank + 1) * size]
        return self.x_train[index].to(self.device), self.y_train[index].to(self.device)

    def evaluate_test(self) -> dict[str, float]:
        """The test-split figures of the current model (see `evaluate`), with D's averaged weights
        when ``ema_decay`` is on."""
        discriminator = self.weight_average.module if self.weight_average else None
        return evaluate(self.model, self.data.x_test, self.data.y_test, self.config.uses_labels, discriminator)

    def save_samples(self, path: Path, n: int = 100) -> None:
        """A grid of ``n`` generated images from noise fixed by the seed (generator in evaluation mode)."""
        z = self.model.sample_latent(n, generator=torch.Generator().manual_seed(self.config.seed))
        self.model.generator.eval()
        with torch.no_grad():
            images = self.model.generator(z)
        self.model.generator.train()
        runs.save_image_grid(images, path)

    def save_class_samples(self, path: Path) -> None:
        """Generated images arranged by D's predicted class, one row per class (see `plots.class_grid`)."""
        from catgan.plots import class_grid

        names = list(self.data.classes) if self.config.uses_labels else None
        discriminator = self.weight_average.module if self.weight_average else None  # the one evaluated
        class_grid(self.model, path, class_names=names, seed=self.config.seed, discriminator=discriminator)

    def checkpoint_state(self, with_restart_point: bool = True) -> dict[str, Any]:
        """Everything needed to rebuild the networks, and under ``training`` everything needed to
        continue exactly where training is: random states, the batch order and the position in
        it, the monitor, the weight average, the data's fingerprint, and with ``on_nan restart``
        the state a restart or a divergence goes back to (the last epoch end). Weights-only
        loadable (tensors and plain values)."""
        restart_point = self._last_good if with_restart_point else None
        return {
            "config": self.config.to_dict(),
            "image_shape": list(self.data.image_shape),
            "num_clusters": self.num_clusters,
            "classes": list(self.data.classes),
            "step": self.step,
            "epoch": self.epoch,
            "generator": self.model.generator.state_dict(),
            "discriminator": self.model.discriminator.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "catgan_version": __version__,
            **({"discriminator_average": self.weight_average.module.state_dict()} if self.weight_average else {}),
            "training": {
                "rng": _rng_state(self.device, self.noise),
                "order": self._order.get_state(),
                "unlabelled": self.next_unlabelled.state_dict() if self.next_unlabelled else None,
                "labelled": self.next_labelled.state_dict() if self.next_labelled else None,
                "weight_average_updates": self.weight_average.updates if self.weight_average else 0,
                "monitor": self.monitor.state_dict(),
                "terms_g": {name: value.detach() for name, value in self._terms_g.items()},
                "lr_scale": self.lr_scale,
                "restarts": copy.deepcopy(self.restarts),
                "resumed_at": list(self.resumed_at),
                "git_commits": list(self.git_commits),
                "seconds": self.seconds(),
                "metrics_bytes": self._metrics_bytes(),
                "command": self.command,
                "processes": self.world_size,
                "data": self.data_fingerprint,
                "restart_point": restart_point,
            },
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (`checkpoint_state`'s output): networks, optimisers, random
        states, batch order, monitor; metrics.jsonl is cut back to what it held then."""
        training = state["training"]
        self.model.generator.load_state_dict(state["generator"])
        self.model.discriminator.load_state_dict(state["discriminator"])
        self.opt_d.load_state_dict(_on_cpu(state["opt_d"]))  # copies: the optimisers update their state in place
        self.opt_g.load_state_dict(_on_cpu(state["opt_g"]))
        if self.weight_average is not None:
            self.weight_average.load_state_dict(
                {"module": state["discriminator_average"], "updates": training["weight_average_updates"]})
        self.step, self.epoch = state["step"], state["epoch"]
        if not _set_rng_state(training["rng"], self.device, self.noise):
            self.monitor.report("note: this process draws D's noise from other streams than the checkpoint's "
                                f"({_streams(self.noise)} against {_streams(training['rng'].get('noise'))}: "
                                "another thread count or catgan version), so the run will not repeat an "
                                "uninterrupted one exactly")
        self._order.set_state(training["order"])
        for cycler, key in ((self.next_unlabelled, "unlabelled"), (self.next_labelled, "labelled")):
            if cycler is not None:
                cycler.load_state_dict(training[key])
        self.monitor.load_state_dict(training["monitor"])
        self._terms_g = {name: value.to(self.device) for name, value in training["terms_g"].items()}
        self.lr_scale, self.restarts = training["lr_scale"], copy.deepcopy(training["restarts"])
        self.resumed_at = list(training["resumed_at"])
        self.git_commits = list(training["git_commits"])
        self._elapsed, self._started = training["seconds"], time.perf_counter()
        self.command = training["command"]
        self._last_good = training["restart_point"] or _on_cpu(self.checkpoint_state(with_restart_point=False))
        metrics = self.run_dir / runs.METRICS if self.run_dir is not None else None
        if metrics is not None and metrics.is_file():
            if metrics.stat().st_size < training["metrics_bytes"]:
                self.monitor.report(f"note: {metrics} holds less than when the checkpoint was saved; "
                                    f"some records before step {self.step} are missing")
            else:
                with open(metrics, "r+b") as f:
                    f.truncate(training["metrics_bytes"])

    def save_checkpoint(self) -> None:
        """Check that the weights are finite and save the state, atomically. (The point a restart
        goes back to stays the last epoch end, whatever the checkpoint cadence.)"""
        self._check_finite_weights()
        if self.run_dir is not None:
            runs.save_checkpoint(self.run_dir / runs.CHECKPOINT, self.checkpoint_state())
        self._last_save = time.perf_counter()

    def _metrics_bytes(self) -> int:
        path = self.run_dir / runs.METRICS if self.run_dir is not None else None
        return path.stat().st_size if path is not None and path.is_file() else 0

    def _write_start_files(self) -> None:
        if self.run_dir is None:
            return
        runs.write_json(self.run_dir / runs.CONFIG, self.config.to_dict())
        runs.write_json(
            self.run_dir / runs.LABELLED,
            {"dataset": self.data.name, "seed": self.config.seed, "split": "train", "indices": self.labelled.tolist()},
        )

    def _append_test_record(self, figures: dict[str, float]) -> None:
        """A record of test figures, with the training seconds until they were known."""
        self._append_metrics({"split": "test", "seconds": round(self.seconds(), 3), **figures})

    def _append_metrics(self, record: dict[str, Any]) -> None:
        record = {"step": self.step, "epoch": self.epoch, **record}
        self.records.append(record)
        if self.run_dir is not None:
            runs.append_jsonl(self.run_dir / runs.METRICS, record)

    def _log(self, terms_d: dict[str, Tensor], terms_g: dict[str, Tensor], seconds: float, bar) -> None:
        """Write one record to metrics.jsonl (and TensorBoard), let the monitor read it; stop on NaN."""
        d, g = _plain(terms_d), _plain(terms_g)
        histogram = g.pop("class_histogram", None)
        lr_d, lr_g = self.opt_d.param_groups[0]["lr"], self.opt_g.param_groups[0]["lr"]
        record: dict[str, Any] = {"seconds": round(seconds, 3), "lr_d": lr_d, "lr_g": lr_g, "d": d, "g": g}
        if "marginal_entropy_real" in d:
            record["d_score_real"] = d_score(d["marginal_entropy_real"], d["conditional_entropy_real"])
        if "marginal_entropy_fake" in g:
            record["d_score_fake"] = d_score(g["marginal_entropy_fake"], g["conditional_entropy_fake"])
        if histogram is not None:
            record["fake_class_histogram"] = histogram
        self._append_metrics(record)
        self._tensorboard_scalars({
            **{f"d/{name}": value for name, value in d.items()}, **{f"g/{name}": value for name, value in g.items()},
            **{name: value for name, value in record.items() if name.startswith(("lr_", "d_score"))},
            **{f"fake_class/{k}": share for k, share in enumerate(histogram or [])},
        })
        shown = {"loss_d": d.get("loss_d"), "loss_g": g.get("loss_g"), "ce": d.get("cross_entropy")}
        bar.set_postfix({name: f"{value:.3f}" for name, value in shown.items() if value is not None}, refresh=False)
        for warning in self.monitor.observe(record, self.step, self.epoch):
            if warning.name == "non_finite":
                raise _NonFinite(warning)

    def _tensorboard_scalars(self, scalars: dict[str, float]) -> None:
        if self._writer is not None:
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, self.step)


class _NonFinite(Exception):
    """Raised inside the training loop when a loss or a weight stops being finite."""

    def __init__(self, warning: TrainingWarning) -> None:
        super().__init__(warning.message)
        self.warning = warning


class TrainingStopped(Exception):
    """Training stopped at a step boundary on SIGINT or SIGTERM, after saving a checkpoint."""

    def __init__(self, signum: int, step: int, run_dir: Path | None) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        where = (f"checkpoint saved in {run_dir / runs.CHECKPOINT}; continue with: catgan train --resume {run_dir}"
                 if run_dir is not None else "no run directory to save into")
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; {where}")

    @property
    def exit_status(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class _StopSignals:
    """While active (in the main thread only), SIGINT and SIGTERM ask the training loop to stop at
    the next step boundary (``signum`` records which); a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _fingerprint(data: ImageData) -> dict[str, Any]:
    """The split sizes and a SHA-256 of the images and labels: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        digest.update(array.detach().cpu().contiguous().numpy().tobytes())
    return {"train": len(data.x_train), "test": len(data.x_test), "sha256": digest.hexdigest()}


def _check_tensorboard(config: TrainConfig) -> None:
    if config.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise CatGANError("--tensorboard needs the tensorboard package: pip install tensorboard")


def _rng_state(device: torch.device, noise: NoiseStreams | None) -> dict[str, Any]:
    """Every random state training may draw from: torch's (CPU and CUDA), the noise streams',
    Python's and NumPy's."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    if noise is not None:
        state["noise"] = noise.get_state()
    return state


def _streams(noise: NoiseStreams | list | None) -> str:
    count = len(noise.generators if isinstance(noise, NoiseStreams) else noise or ())
    return f"{count} streams" if count else "torch's generator"


def _set_rng_state(state: dict[str, Any], device: torch.device, noise: NoiseStreams | None) -> bool:
    """Restore `_rng_state`'s ``state``. Returns False when D's noise cannot continue as it was
    drawn: the state holds no noise streams or another number of them (these are then seeded
    afresh from the state), or it holds streams and this process has none."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda"])
    if noise is None:
        return "noise" not in state
    if len(state.get("noise", ())) == len(noise.generators):
        noise.set_state(state["noise"])
        return True
    restored = torch.Generator()
    restored.set_state(state["torch"])
    noise.seed(int(torch.randint(2**62, (), generator=restored)))
    return False


def _on_cpu(state: Any) -> Any:
    """A copy of ``state`` (nested dicts and lists of tensors and plain values) with every tensor on the CPU."""
    if isinstance(state, Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_on_cpu(value) for value in state)
    return copy.deepcopy(state)


def _plain(terms: dict[str, Tensor]) -> dict[str, Any]:
    """Detached tensors as floats (scalars) or lists of floats."""
    return {name: float(value) if value.dim() == 0 else value.tolist() for name, value in terms.items()}


def _report(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def _tensorboard_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / runs.TENSORBOARD_DIR))


def _storage_device(x: Tensor, device: torch.device) -> torch.device:
    """Where training images ``x`` are held: on the training device when they take at most half
    of its free memory, else in host memory."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if x.element_size() * x.nelement() <= free // 2 else torch.device("cpu")


def _progress_bar(total: int, config: TrainConfig, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=f"train {config.dataset}", unit="step", disable=not config.progress,
                dynamic_ncols=True)


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


class RunResult(NamedTuple):
    """A finished run: its directory (None in processes other than rank 0 of several), its
    summary and the data it trained on."""

    run_dir: Path | None
    summary: dict[str, Any]
    data: ImageData


def train(config: TrainConfig, data: ImageData | None = None, log=print, command: str | None = None) -> RunResult:
    """Train one run end to end: check the output folder, load the data, train, write the run.

    Args:
        config: the run's configuration.
        data: the dataset; None loads the one ``config`` names.
        log: where one-line progress messages go.
        command: the command line that started the run, recorded in the summary.

    Raises:
        CatGANError: for bad input, before any run directory is created.
        TrainingDiverged: training stopped at a non-finite loss or weight (see `Trainer.fit`).
        TrainingStopped: SIGINT or SIGTERM stopped training after saving a checkpoint.
    """
    group, main, log, config = _this_process(config, log)
    _check_tensorboard(config)
    run_dir = runs.plan_run_dir(config) if main else None
    if data is None:
        data = load_dataset(config)
    log(data.describe())
    with _joined(group):
        trainer = Trainer(config, data, run_dir, command, report=None if main else _silent, group=group)
        if run_dir is not None:
            runs.create_run_dir(run_dir)
        processes = f", {group.world_size} processes" if group is not None else ""
        log(f"run directory: {run_dir}  (device {_device_description(trainer.device)}{processes}, "
            f"{len(trainer.labelled)} labelled images, K = {trainer.num_clusters}, epochs: {trainer.config.epochs})")
        summary = trainer.fit()
    return RunResult(run_dir, summary, data)


def _this_process(config: TrainConfig, log) -> tuple[ProcessGroup | None, bool, Callable[[str], None], TrainConfig]:
    """The torchrun group (None for a single process), whether this process is the one that
    writes and prints (rank 0), and its log and configuration (no progress bar but on rank 0)."""
    group = ProcessGroup.from_environment()
    if group is None:
        return None, True, log, config
    if config.download:
        raise CatGANError("--download with several processes would download once per process; download with one "
                          "process first (catgan train --download --epochs 1), then start torchrun without it")
    if group.is_main:
        return group, True, log, config
    return group, False, _silent, dataclasses.replace(config, progress=False)


def _silent(line: str) -> None:
    """Where the messages of processes other than rank 0 go."""


@contextlib.contextmanager
def _joined(group: ProcessGroup | None):
    """Leave the process group (when one was joined) once training ends, however it ends."""
    try:
        yield
    finally:
        if group is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def resume(run_dir: str | Path, changes: dict[str, Any] | None = None, log=print, data: ImageData | None = None) -> RunResult:
    """Continue a stopped or killed run from its checkpoint; it ends as the uninterrupted run would.

    Args:
        run_dir: the run directory (it holds a checkpoint and no summary yet).
        changes: configuration fields the resuming command set. Those in
            ``config.RESUME_MAY_CHANGE`` (where the data is, the progress bar, the checkpoint
            cadence) replace the saved ones; any other must equal the saved value.
        log: where one-line progress messages go.
        data: the dataset the run trained on, when it was not the one its configuration loads
            (for instance a validation split); None loads the configured one.

    Raises:
        CatGANError: no such run, a finished run, a checkpoint without training state, other
            settings, or data other than the run's own; the run directory is then untouched.
        TrainingDiverged, TrainingStopped: as for `train`.
    """
    run_dir = Path(run_dir).expanduser()
    if (run_dir / runs.SUMMARY).is_file():
        raise CatGANError(f"{run_dir} has finished (it holds {runs.SUMMARY}); there is nothing to resume")
    checkpoint = runs.load_checkpoint(run_dir)
    training = checkpoint.get("training")
    if not isinstance(training, dict) or not _RESUME_KEYS <= set(training):
        raise CatGANError(f"{run_dir / runs.CHECKPOINT} holds no training state this version can resume from")
    saved = TrainConfig.from_dict(checkpoint["config"])
    changes = changes or {}
    differing = sorted(name for name, value in changes.items()
                       if name not in RESUME_MAY_CHANGE and value != getattr(saved, name))
    if differing:
        listed = ", ".join(f"{name} (saved {getattr(saved, name)!r}, asked {changes[name]!r})" for name in differing)
        raise CatGANError(f"{run_dir} was trained with other settings: {listed}; resume it with its own")
    config = dataclasses.replace(saved, **{name: changes[name] for name in changes if name in RESUME_MAY_CHANGE})
    group, main, log, config = _this_process(config, log)
    processes, trained_by = group.world_size if group is not None else 1, training.get("processes", 1)
    if trained_by != processes:
        raise CatGANError(f"{run_dir} was trained by {trained_by} process{'es' * (trained_by > 1)}; resume it with "
                          f"as many (this is {processes})")
    _check_tensorboard(config)
    if data is None:
        data = load_dataset(config)
    now = _fingerprint(data)
    if now != training["data"]:
        was = training["data"]
        raise CatGANError(
            f"{run_dir} was trained on other data ({was['train']} training and {was['test']} test images, "
            f"SHA-256 {was['sha256'][:12]}) than {config.dataset} found now ({now['train']} and {now['test']}, "
            f"{now['sha256'][:12]})"
        )
    with _joined(group):
        trainer = Trainer(config, data, run_dir if main else None, report=None if main else _silent, group=group)
        trainer.data_fingerprint = now  # checked above; not hashed again
        log(data.describe())
        total = trainer.config.epochs * trainer.steps_per_epoch
        log(f"resuming {run_dir} at step {checkpoint['step']} of {total} "
            f"(device {_device_description(trainer.device)})")
        summary = trainer.fit(resume=checkpoint)
    return RunResult(run_dir if main else None, summary, data)


_RESUME_KEYS = {"rng", "order", "unlabelled", "labelled", "weight_average_updates", "monitor", "terms_g", "lr_scale",
                "restarts", "resumed_at", "git_commits", "seconds", "metrics_bytes", "command", "data", "restart_point"}
