"""Training: the discriminator and generator steps, and the trainer that runs a fixed schedule.

One training step (Springenberg, ICLR 2016, Eq. 7 and Sec. 3.3) is a discriminator update on a
batch of unlabelled real images, a batch of generated images and, in semi-supervised runs, a batch
of labelled images; then a generator update on a fresh batch of generated images. The step
functions return their loss terms as detached tensors; the trainer turns them into floats only
when it logs, so the inner loop does not wait on the device.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catgan import __version__
from catgan.config import CatGANError, TrainConfig, check_device_name
from catgan.data import ImageData, labelled_indices, load_dataset
from catgan.losses import discriminator_terms, generator_terms
from catgan.metrics import clustering_report, error_rate
from catgan.models import CatGAN, frozen_batchnorm_statistics
from catgan import runs

__all__ = [
    "Batch",
    "Trainer",
    "discriminator_step",
    "generator_step",
    "evaluate",
    "learning_rate",
    "make_optimizers",
    "predict_logits",
    "resolve_device",
    "supervised_step",
    "train",
]


class Batch(NamedTuple):
    """One step's real data: labelled images with their labels, and unlabelled images (each or None)."""

    x_lab: Tensor | None  # (L, C, H, W)
    y_lab: Tensor | None  # (L,) int64
    x_unl: Tensor | None  # (B, C, H, W)


def make_optimizers(model: CatGAN, config: TrainConfig) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the discriminator and for the generator, with the configuration's lr and betas."""
    betas = (config.beta1, config.beta2)
    return (
        torch.optim.Adam(model.discriminator.parameters(), lr=config.lr, betas=betas),
        torch.optim.Adam(model.generator.parameters(), lr=config.lr, betas=betas),
    )


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The learning rate for ``step`` (0-based) of ``total``: ``config.lr``, falling linearly to 0
    over the schedule's last ``1 - config.lr_decay_start`` part."""
    start = config.lr_decay_start * total
    if step < start:
        return config.lr
    return config.lr * (total - step) / (total - start)


def discriminator_step(model: CatGAN, optimizer: torch.optim.Optimizer, batch: Batch, lam: float) -> dict[str, Tensor]:
    """One update of the discriminator on ``batch`` and as many generated images as unlabelled ones.

    Real images (unlabelled and labelled together) go through D in one batch, generated images in
    another with D's batch-norm running statistics left unchanged. Returns the loss terms of
    `catgan.losses.discriminator_loss` as detached tensors, plus ``accuracy_lab`` (D's accuracy
    on the labelled batch) when there is one.
    """
    discriminator, generator = model.discriminator, model.generator
    with torch.no_grad():
        x_fake = generator(model.sample_latent(len(batch.x_unl)))
    if batch.x_lab is None:
        logits_real, logits_lab = discriminator(batch.x_unl), None
    else:
        logits = discriminator(torch.cat([batch.x_unl, batch.x_lab]))
        logits_real, logits_lab = logits[: len(batch.x_unl)], logits[len(batch.x_unl) :]
    with frozen_batchnorm_statistics(discriminator):
        logits_fake = discriminator(x_fake)
    loss, terms = discriminator_terms(logits_real, logits_fake, logits_lab, batch.y_lab, lam)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if logits_lab is not None:
        terms["accuracy_lab"] = _accuracy(logits_lab, batch.y_lab)
    return terms


def generator_step(model: CatGAN, optimizer: torch.optim.Optimizer, batch_size: int) -> dict[str, Tensor]:
    """One update of the generator on ``batch_size`` fresh generated images.

    D sees them in training mode (its noise on, batch statistics, running statistics unchanged);
    only G's parameters receive gradients. Returns the terms of `catgan.losses.generator_loss`
    as detached tensors.
    """
    discriminator, generator = model.discriminator, model.generator
    x_fake = generator(model.sample_latent(batch_size))
    with frozen_batchnorm_statistics(discriminator):
        logits_fake = discriminator(x_fake)
    loss, terms = generator_terms(logits_fake)
    optimizer.zero_grad(set_to_none=True)
    loss.backward(inputs=list(generator.parameters()))
    optimizer.step()
    return terms


def supervised_step(model: CatGAN, optimizer: torch.optim.Optimizer, batch: Batch) -> dict[str, Tensor]:
    """One cross-entropy update of the discriminator on the labelled batch alone: the supervised
    baseline, with the same network, noise and batch norm as CatGAN's discriminator.

    Returns ``cross_entropy`` and ``accuracy_lab`` as detached tensors.
    """
    logits_lab = model.discriminator(batch.x_lab)
    loss = F.cross_entropy(logits_lab, batch.y_lab)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"cross_entropy": loss.detach(), "accuracy_lab": _accuracy(logits_lab, batch.y_lab)}


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    return (logits.detach().argmax(dim=1) == y).float().mean()


@torch.no_grad()
def predict_logits(discriminator: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """D's logits (N, K) on images ``x`` in evaluation mode (no noise, running statistics), on the CPU."""
    was_training = discriminator.training
    discriminator.eval()
    device = next(discriminator.parameters()).device
    try:
        return torch.cat([discriminator(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])
    finally:
        discriminator.train(was_training)


def evaluate(model: CatGAN, x: Tensor, y: Tensor, classifies: bool) -> dict[str, float]:
    """Figures on images ``x`` with labels ``y``, accuracies and errors in percent.

    When D was trained on labels (``classifies``): ``test_error``, its classification error.
    Otherwise D's outputs are clusters, reported by `catgan.metrics.clustering_report`.
    """
    predictions = predict_logits(model.discriminator, x).argmax(dim=1).numpy()
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


class Trainer:
    """Runs one fixed training schedule on data already in memory.

    Args:
        config: the run's configuration.
        data: the dataset (the trainer never loads one itself).
        run_dir: the run directory to write, created beforehand and empty; None writes nothing.
        command: the command line that started the run, recorded in the summary.
    """

    def __init__(
        self, config: TrainConfig, data: ImageData, run_dir: Path | None = None, command: str | None = None
    ) -> None:
        self.config = dataclasses.replace(config, epochs=config.resolved_epochs())
        self.data, self.run_dir, self.command = data, run_dir, command
        self.device = resolve_device(config.device)
        self.num_clusters = config.clusters or data.num_classes
        if config.uses_labels and self.num_clusters != data.num_classes:
            raise CatGANError(
                f"with labels, clusters must equal the number of classes ({data.num_classes}), got {self.num_clusters}; "
                f"use --labels-per-class 0 (or --lam 0) to cluster into another number"
            )
        if config.batch_size > len(data.x_train):
            raise CatGANError(f"batch_size {config.batch_size} exceeds the {len(data.x_train)} training images")
        self.labelled = labelled_indices(data.y_train, config.labels_per_class, config.seed)
        torch.manual_seed(config.seed)
        self.model = CatGAN(self.config, data.image_shape, self.num_clusters).to(self.device)
        self.opt_d, self.opt_g = make_optimizers(self.model, self.config)
        self.storage = _storage_device(data.x_train, self.device)  # batches are copied to the device if need be
        self.x_train, self.y_train = data.x_train.to(self.storage), data.y_train.to(self.storage)
        self.step = 0
        self.epoch = 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.x_train) // self.config.batch_size

    def fit(self) -> dict[str, Any]:
        """Train for the configured epochs, evaluate on the test split, write the run's files.

        Returns the summary (also written as ``summary.json``).
        """
        config, start = self.config, time.perf_counter()
        if self.run_dir is not None and (self.run_dir / runs.CONFIG).exists():
            raise CatGANError(f"{self.run_dir} already holds a run; give the trainer a new directory")
        self._write_start_files()
        torch.manual_seed(config.seed)  # the noise and latents; whatever ran since __init__
        order = torch.Generator().manual_seed(config.seed)
        next_unlabelled = next_labelled = None
        if config.method == "catgan":
            next_unlabelled = IndexCycler(torch.arange(len(self.x_train), device=self.storage), config.batch_size, order)
        if config.uses_labels:
            labelled = torch.from_numpy(self.labelled).to(self.storage)
            next_labelled = IndexCycler(labelled, min(config.batch_size, len(labelled)), order)
        total = config.epochs * self.steps_per_epoch
        bar = _progress_bar(total, config)
        try:
            for self.epoch in range(1, config.epochs + 1):
                for _ in range(self.steps_per_epoch):
                    for optimizer in (self.opt_d, self.opt_g):
                        for group in optimizer.param_groups:
                            group["lr"] = learning_rate(config, self.step, total)
                    x_lab, y_lab = self._gather(next_labelled)
                    x_unl, _ = self._gather(next_unlabelled)
                    batch = Batch(x_lab, y_lab, x_unl)
                    if config.method == "supervised":
                        terms_d, terms_g = supervised_step(self.model, self.opt_d, batch), {}
                    else:
                        terms_d = discriminator_step(self.model, self.opt_d, batch, config.lam)
                        terms_g = generator_step(self.model, self.opt_g, config.batch_size)
                    self.step += 1
                    bar.update()
                    if self.step % config.log_every == 0 or self.step == total:
                        self._log(terms_d, terms_g, time.perf_counter() - start, bar)
                if config.eval_every and self.epoch % config.eval_every == 0 and self.epoch < config.epochs:
                    self._append_metrics({"split": "test", **self.evaluate_test()})
        except KeyboardInterrupt:
            self.save_checkpoint()
            raise
        finally:
            bar.close()
        figures = self.evaluate_test()
        self._append_metrics({"split": "test", **figures})
        summary = {
            **figures,
            "wall_seconds": time.perf_counter() - start,
            "steps": self.step,
            "epochs": config.epochs,
            "labelled": len(self.labelled) if config.uses_labels else 0,
            "clusters": self.num_clusters,
            "dataset": self.data.name,
            "test_images": len(self.data.x_test),
            "device": _device_description(self.device),
            "cpu_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "catgan_version": __version__,
            "git_commit": _git_commit(),
            "command": self.command,
        }
        if self.run_dir is not None:
            self.save_checkpoint()
            if config.method == "catgan":
                self.save_samples(self.run_dir / runs.SAMPLES)
            runs.write_json(self.run_dir / runs.SUMMARY, summary)
        return summary

    def _gather(self, cycler: IndexCycler | None) -> tuple[Tensor | None, Tensor | None]:
        """The next batch of training images and labels from ``cycler`` (None: no batch)."""
        if cycler is None:
            return None, None
        index = cycler()
        return self.x_train[index].to(self.device), self.y_train[index].to(self.device)

    def evaluate_test(self) -> dict[str, float]:
        """The test-split figures of the current model (see `evaluate`)."""
        return evaluate(self.model, self.data.x_test, self.data.y_test, self.config.uses_labels)

    def save_samples(self, path: Path, n: int = 100) -> None:
        """A grid of ``n`` generated images from noise fixed by the seed (generator in evaluation mode)."""
        z = torch.randn(n, self.config.latent_dim, generator=torch.Generator().manual_seed(self.config.seed))
        self.model.generator.eval()
        with torch.no_grad():
            images = self.model.generator(z.to(self.device))
        self.model.generator.train()
        runs.save_image_grid(images, path)

    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to rebuild the networks and continue training, weights-only loadable."""
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
        }

    def save_checkpoint(self) -> None:
        if self.run_dir is not None:
            runs.save_checkpoint(self.run_dir / runs.CHECKPOINT, self.checkpoint_state())

    def _write_start_files(self) -> None:
        if self.run_dir is None:
            return
        runs.write_json(self.run_dir / runs.CONFIG, self.config.to_dict())
        runs.write_json(
            self.run_dir / runs.LABELLED,
            {"dataset": self.data.name, "seed": self.config.seed, "split": "train", "indices": self.labelled.tolist()},
        )

    def _append_metrics(self, record: dict[str, Any]) -> None:
        if self.run_dir is not None:
            runs.append_jsonl(self.run_dir / runs.METRICS, {"step": self.step, "epoch": self.epoch, **record})

    def _log(self, terms_d: dict[str, Tensor], terms_g: dict[str, Tensor], seconds: float, bar) -> None:
        d = {name: float(value) for name, value in terms_d.items()}
        g = {name: float(value) for name, value in terms_g.items()}
        self._append_metrics({"seconds": round(seconds, 3), "d": d, "g": g})
        shown = {"loss_d": d.get("loss_d"), "loss_g": g.get("loss_g"), "ce": d.get("cross_entropy")}
        bar.set_postfix({name: f"{value:.3f}" for name, value in shown.items() if value is not None}, refresh=False)


def _storage_device(x: Tensor, device: torch.device) -> torch.device:
    """Where training images ``x`` are held: on the training device when they take at most half
    of its free memory, else in host memory."""
    if device.type != "cuda":
        return device
    free, _ = torch.cuda.mem_get_info(device)
    return device if x.element_size() * x.nelement() <= free // 2 else torch.device("cpu")


def _progress_bar(total: int, config: TrainConfig):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"train {config.dataset}", unit="step", disable=not config.progress, dynamic_ncols=True)


def _git_commit() -> str | None:
    """The commit of the catgan checkout this code runs from (None outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


class RunResult(NamedTuple):
    run_dir: Path
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
    """
    run_dir = runs.plan_run_dir(config)
    if data is None:
        data = load_dataset(config)
    log(data.describe())
    trainer = Trainer(config, data, run_dir, command)
    runs.create_run_dir(run_dir)
    log(f"run directory: {run_dir}  (device {_device_description(trainer.device)}, "
        f"{len(trainer.labelled)} labelled images, K = {trainer.num_clusters}, epochs: {trainer.config.epochs})")
    summary = trainer.fit()
    return RunResult(run_dir, summary, data)
