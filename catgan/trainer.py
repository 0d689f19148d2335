"""The trainer: one fixed schedule on data already in memory, from a fresh start or a checkpoint."""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from catgan import performance, runs, state, steps
from catgan.config import CatGANError, TrainConfig
from catgan.data import ImageData, labelled_indices
from catgan.diagnostics import HealthMonitor
from catgan.distributed import ProcessGroup
from catgan.evaluation import evaluate
from catgan.models import CatGAN
from catgan.records import Clock, Records
from catgan.runtime import Runtime
from catgan.schedule import Batches, Schedule, WeightAverage, make_optimizers

__all__ = ["Stop", "Trainer", "TrainingStopped", "choose_labelled"]


class Stop:
    """A request to stop training, settable from anywhere (a signal handler, another thread): the
    trainer stops at the next step boundary, saves a checkpoint and raises `TrainingStopped`.
    ``reason`` is a nonzero code of the requester's choosing (the ``catgan`` command: the signal)."""

    def __init__(self) -> None:
        self.reason = 0


class TrainingStopped(Exception):
    """Training stopped at a step boundary on request (`Stop`), after saving a checkpoint."""

    def __init__(self, reason: int, step: int, run_dir: Path | None) -> None:
        self.reason, self.step, self.run_dir = reason, step, run_dir
        where = f"checkpoint saved in {run_dir / runs.CHECKPOINT}" if run_dir is not None else "no run directory to save into"
        super().__init__(f"at step {step}; {where}")

    @property
    def signum(self) -> int:
        """The reason, by its earlier name (the ``catgan`` command stops for a signal's number)."""
        return self.reason


class Trainer:
    """Runs one fixed training schedule on data already in memory (it never loads a dataset).

    Args:
        config: the run's configuration.
        data: the dataset.
        run_dir: the run directory to write, created beforehand and empty; None writes nothing.
        command: the command line that started the run, recorded in the summary.
        report: where warnings go, one line each (default: stderr).
        labelled: the indices of the training images whose labels D learns from; None takes every
            labelled image of data with unlabelled images (`ImageData.labelled`; none with
            ``labels_per_class`` 0), and otherwise draws ``config.labels_per_class`` per class
            (`labelled_indices`). The labels of the other training images are never read.
        group: this process's place among several started by torchrun (see `catgan.distributed`);
            None trains in this process alone. Only rank 0 should be given a ``run_dir``. `train`
            and `resume` leave the process group when training ends; a direct user of the Trainer
            calls ``torch.distributed.barrier()`` and then
            ``torch.distributed.destroy_process_group()`` after ``fit``.
        on_step: called after every step with the step count, the total and the record written
            at that step (or None): a progress bar's hook.
        stop: a `Stop` whose request ends training at the next step boundary.

    A dataset whose test split is empty trains without the final evaluation.
    """

    def __init__(self, config: TrainConfig, data: ImageData, run_dir: Path | None = None, command: str | None = None,
                 report: Callable[[str], None] | None = None, labelled: np.ndarray | None = None,
                 group: ProcessGroup | None = None, on_step: Callable[[int, int, dict | None], None] | None = None,
                 stop: Stop | None = None) -> None:
        self.config = config = dataclasses.replace(config, epochs=config.resolved_epochs())
        self.data, self.run_dir, self.command = data, run_dir, command
        if group is not None and run_dir is not None and not group.is_main:
            raise CatGANError(f"only the process of rank 0 writes the run directory; rank {group.rank} was given one")
        self.runtime = runtime = Runtime(config, group)
        if config.bn_recalibration and runtime.world_size > 1:
            raise CatGANError("bn_recalibration re-estimates D's statistics in one process; drop it under torchrun")
        self.num_clusters = config.clusters or data.num_classes
        self.labelled = choose_labelled(config, data, labelled, self.num_clusters, runtime.world_size)
        runtime.seed(config.seed)
        if runtime.device.type == "cuda":
            performance.tune_cuda()
        self.model = CatGAN(config, data.image_shape, self.num_clusters).to(runtime.device)
        performance.prepare_networks([self.model.generator, self.model.discriminator], config.architecture == "conv",
                                     config.compile, runtime.device, config.precision, runtime.noise)
        self.networks = runtime.distribute(self.model)  # what the steps train
        self.opt_d, self.opt_g = make_optimizers(self.model, config)
        # D's weights averaged over the updates, for evaluation (None: evaluate D as trained)
        self.weight_average = WeightAverage(self.model.discriminator, config.ema_decay) if config.ema_decay else None
        storage = runtime.storage(data.x_train)  # batches are copied to the device if need be
        self.x_train, self.y_train = data.x_train.to(storage), data.y_train.to(storage)
        self.schedule = Schedule(config, len(self.x_train) // (config.batch_size * runtime.world_size))
        self.step = self.epoch = 0
        report = report or _report
        self.monitor = HealthMonitor(self.num_clusters, report=report)
        if data.labelled is not None and labelled is None and config.labels_per_class not in (0, "all", _DEFAULT_LABELS):
            report(f"`labels_per_class` {config.labels_per_class} is not applied: with unlabelled images "
                   f"every given label is used ({len(self.labelled)})")
        if data.labelled is not None and config.method == "catgan" and len(self.labelled) == len(data.x_train):
            report("every training image is labelled: CatGAN's terms for unlabelled images see the "
                   "labelled ones alone; give it unlabelled images to learn from them")
        self.recorder = Records(run_dir, config.tensorboard)
        self.clock = Clock()
        self.lr_scale = 1.0  # both learning rates' factor, lowered by each restart after a non-finite loss
        self.restarts: list[dict[str, Any]] = []  # one record per restart (on_nan restart)
        self.resumed_at: list[int] = []  # the steps at which this run was resumed
        self.git_commits: list[str | None] = []  # the code's commit at the start, then at each resume
        self.terms_g: dict[str, Tensor] = {}  # G's terms from its latest update
        self.last_good: dict[str, Any] | None = None  # the latest state known finite, in host memory
        self.saved_step: int | None = None  # the step of the checkpoint in run_dir, once this process wrote one
        self.on_step, self.stop = on_step or (lambda step, total, record: None), stop or Stop()
        self.batches = Batches(config, self.x_train, self.y_train, self.labelled, runtime)

    @functools.cached_property
    def data_fingerprint(self) -> dict[str, Any]:
        """The data's split sizes and SHA-256, kept in checkpoints: a resumed run must see the same data."""
        return state.fingerprint(self.data)

    @property
    def records(self) -> list[dict[str, Any]]:
        """What this process appended to metrics.jsonl (for a resumed run, since the resume)."""
        return self.recorder.records

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def evaluated_discriminator(self) -> torch.nn.Module:
        """The D a run reports: its weight average when ``ema_decay`` is on, else D as trained."""
        return self.weight_average.module if self.weight_average else self.model.discriminator

    def fit(self, resume: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train for the configured epochs (from ``resume``, a checkpoint of this run, when given:
        the run then ends exactly as it would have without the stop), evaluate on the test split,
        write the run's files; return the summary (also written as ``summary.json``).

        Raises `TrainingDiverged` when a loss or weight stopped being finite (and ``on_nan``
        restarts did not help; the last finite state is kept), and `TrainingStopped` on request."""
        state.start(self, resume)
        self.on_step(self.step, self.schedule.total, None)
        try:
            with self.recorder:
                self._run_schedule()
                return state.finish(self)
        except KeyboardInterrupt:
            if not self.stop.reason:  # not a second Ctrl-C: keep the latest consistent state
                state.save_last_good(self, unless_older=True)
            raise
        except state.NonFinite as error:
            state.stop_diverged(self, error.warning)  # raises TrainingDiverged

    def _run_schedule(self) -> None:
        """Steps until the end of the schedule; after each, what is due: a record (which checks the
        losses), the end of an epoch (which checks the weights), a checkpoint, a stop."""
        schedule = self.schedule
        while self.step < schedule.total:
            try:
                record = self._train_step()
                self.on_step(self.step, schedule.total, record)
                if schedule.ends_epoch(self.step):
                    state.end_epoch(self)
                stopping, checkpoint_due = state.stop_or_checkpoint_due(self)
                if stopping or checkpoint_due:
                    state.save_checkpoint(self)
            except state.NonFinite as error:
                if not state.restart(self, error.warning):
                    raise
                self.on_step(self.step, schedule.total, None)
                continue
            if stopping:
                raise TrainingStopped(self.stop.reason, self.step, self.run_dir)

    def _train_step(self) -> dict[str, Any] | None:
        """One step: learning rates, batch, D's update, G's updates when due, the weight average;
        then the step's record when one is due (None otherwise)."""
        schedule, config, networks, runtime = self.schedule, self.config, self.networks, self.runtime
        self.epoch = schedule.epoch(self.step)
        lrs = schedule.learning_rates(self.step, self.lr_scale)
        for optimizer, lr in zip((self.opt_d, self.opt_g), lrs):
            for group in optimizer.param_groups:
                group["lr"] = lr
        batch, practices = self.batches.next(), schedule.practices(self.step)
        run = {"autocast": runtime.autocast, "gather": runtime.gather}
        if config.method == "supervised":
            terms_d = steps.supervised_step(networks, self.opt_d, batch, practices, **run)
        else:
            terms_d = steps.discriminator_step(networks, self.opt_d, batch, config.lam, practices, **run)
        if schedule.generator_due(self.step):
            for _ in range(config.g_steps):
                self.terms_g = steps.generator_step(networks, self.opt_g, config.batch_size, practices, batch.x_unl,
                                                    **run)
        if self.weight_average is not None:
            self.weight_average.update(self.model.discriminator)
        self.step += 1
        if not schedule.log_due(self.step):
            return None
        record = self.recorder.training(self.step, self.epoch, self.clock.seconds(), lrs, terms_d, self.terms_g)
        state.check_losses(self, record)
        return record

    def evaluate_test(self) -> dict[str, float]:
        """The test-split figures of the current model (see `catgan.evaluation.evaluate`)."""
        return evaluate(self.model, self.data.x_test, self.data.y_test, self.config.uses_labels,
                        self.evaluated_discriminator)


def choose_labelled(config: TrainConfig, data: ImageData, labelled: np.ndarray | None, num_clusters: int,
                    world_size: int) -> np.ndarray:
    """The labelled training indices, checked against the data and the configuration."""
    if num_clusters < 2:
        raise CatGANError("no training image is labelled, so the data names no classes: set `clusters` to the number "
                          "of clusters (and `labels_per_class` 0)")
    if config.uses_labels and num_clusters != data.num_classes:
        raise CatGANError(f"with labels, clusters must equal the number of classes ({data.num_classes}), got "
                          f"{num_clusters}; set `labels_per_class` 0 (or `lam` 0) to cluster into another number")
    if config.method != "cnn" and config.batch_size * world_size > len(data.x_train):  # cnn: its own batches
        raise CatGANError(f"batch_size {config.batch_size}{f' x {world_size} processes' if world_size > 1 else ''} "
                          f"exceeds the {len(data.x_train)} training images")
    if labelled is None and data.labelled is not None:  # genuinely unlabelled images: every given label is used
        labelled = data.labelled if config.labels_per_class != 0 else np.zeros(0, dtype=np.int64)
        if config.uses_labels and len(labelled) == 0:
            raise CatGANError("no training image is labelled: set `labels_per_class` 0 to cluster, or label some")
    elif labelled is None:
        labelled = labelled_indices(data.y_train, config.labels_per_class, config.seed)
    else:
        labelled = np.asarray(labelled, dtype=np.int64)
        in_range = (0 <= labelled) & (labelled < len(data.x_train))
        if labelled.ndim != 1 or not in_range.all() or len(np.unique(labelled)) != len(labelled):
            raise CatGANError(f"labelled must be distinct indices of the {len(data.x_train)} training images")
        if config.uses_labels and len(labelled) == 0:
            raise CatGANError("no training image is labelled")
        if data.labelled is not None and not np.isin(labelled, data.labelled).all():
            raise CatGANError("labelled names training images that carry no label")
    return labelled


_DEFAULT_LABELS = TrainConfig.__dataclass_fields__["labels_per_class"].default  # not said to apply to own data


def _report(line: str) -> None:
    print(line, file=sys.stderr)
