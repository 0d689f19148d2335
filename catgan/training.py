"""Training runs end to end: `train` starts one, `resume` continues one from its checkpoint; both
take one path through the `catgan.trainer.Trainer`.

The pieces live in their own modules: the updates of a step in `catgan.steps`, the schedule in
`catgan.schedule`, the device and random state in `catgan.runtime`, the checkpoint format and the
moves between states in `catgan.state`, the records in `catgan.records`. This module also names
them for the users of earlier versions (``catgan.training.Trainer`` and so on).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from catgan import runs
from catgan.config import RESUME_MAY_CHANGE, CatGANError, TrainConfig
from catgan.data import ImageData, load_dataset
from catgan.distributed import ProcessGroup
from catgan.evaluation import evaluate, predict_features, predict_logits
from catgan.records import check_tensorboard
from catgan.runtime import resolve_device
from catgan.schedule import WeightAverage, learning_rate, make_optimizers
from catgan.state import fingerprint, resume_point
from catgan.steps import Batch, Practices, discriminator_step, generator_step, supervised_step
from catgan.trainer import Stop, Trainer, TrainingStopped, choose_labelled

__all__ = [
    "Batch", "Practices", "RunResult", "Stop", "Trainer", "TrainingStopped", "WeightAverage", "discriminator_step",
    "evaluate", "generator_step", "learning_rate", "make_optimizers", "predict_features", "predict_logits",
    "resolve_device", "resume", "supervised_step", "train",
]

OnStep = Callable[[int, int, "dict | None"], None]


class RunResult(NamedTuple):
    """A finished run: its directory (None in processes other than rank 0 of several), its
    summary and the data it trained on."""

    run_dir: Path | None
    summary: dict[str, Any]
    data: ImageData


def train(config: TrainConfig, data: ImageData | None = None, log=print, command: str | None = None,
          on_step: OnStep | None = None, stop: Stop | None = None,
          report: Callable[[str], None] | None = None) -> RunResult:
    """Train one run end to end: check the output folder, load the data, train, write the run.

    Args:
        config: the run's configuration.
        data: the dataset; None loads the one ``config`` names.
        log: where one-line progress messages go.
        command: the command line that started the run, recorded in the summary.
        on_step, stop, report: as for `Trainer` (a progress bar's hook, called in every process
            of several; a stop request; where warnings go, rank 0's only).

    Raises:
        CatGANError: for bad input, before any run directory is created.
        TrainingDiverged: training stopped at a non-finite loss or weight (see `Trainer.fit`).
        TrainingStopped: ``stop`` was requested; a checkpoint was saved.
    """
    group, main, log = _this_process(config, log)
    if config.method == "cnn" and group is not None:
        raise CatGANError("the cnn method trains in one process; start it without torchrun")
    check_tensorboard(config)
    run_dir = runs.plan_run_dir(config) if main else None
    if data is None:
        data = load_dataset(config)
    log(data.describe())
    if config.method == "cnn":
        return _plain_cnn(config, data, run_dir, log, command, on_step, stop)
    return _run(config, data, run_dir, group, main, log, command=command, on_step=on_step, stop=stop, report=report)


def resume(run_dir: str | Path, changes: dict[str, Any] | None = None, log=print, data: ImageData | None = None,
           on_step: OnStep | None = None, stop: Stop | None = None,
           report: Callable[[str], None] | None = None) -> RunResult:
    """Continue a stopped or killed run from its checkpoint; it ends as the uninterrupted run would.

    Args:
        run_dir: the run directory (it holds a checkpoint and no summary yet).
        changes: configuration fields the resuming command set. Those in
            ``config.RESUME_MAY_CHANGE`` (where the data is, ``progress``, the checkpoint cadence)
            replace the saved ones; any other must equal the saved value.
        log: where one-line progress messages go.
        data: the dataset the run trained on, when it was not the one its configuration loads
            (for instance a validation split); None loads the configured one.
        on_step, stop, report: as for `train`.

    Raises:
        CatGANError: no such run, a finished run, a checkpoint without training state, other
            settings, or data other than the run's own; the run directory is then untouched.
        TrainingDiverged, TrainingStopped: as for `train`.
    """
    run_dir = Path(run_dir).expanduser()
    if (run_dir / runs.SUMMARY).is_file():
        raise CatGANError(f"{run_dir} has finished (it holds {runs.SUMMARY}); there is nothing to resume")
    checkpoint = runs.load_checkpoint(run_dir)
    saved, trained_by, trained_on, step = resume_point(checkpoint, str(run_dir / runs.CHECKPOINT))
    changes = changes or {}
    differing = sorted(name for name, value in changes.items()
                       if name not in RESUME_MAY_CHANGE and value != getattr(saved, name))
    if differing:
        listed = ", ".join(f"{name} (saved {getattr(saved, name)!r}, asked {changes[name]!r})" for name in differing)
        raise CatGANError(f"{run_dir} was trained with other settings: {listed}; resume it with its own")
    config = dataclasses.replace(saved, **{name: changes[name] for name in changes if name in RESUME_MAY_CHANGE})
    group, main, log = _this_process(config, log)
    processes = group.world_size if group is not None else 1
    if trained_by != processes:
        raise CatGANError(f"{run_dir} was trained by {trained_by} process{'es' * (trained_by > 1)}; resume it with "
                          f"as many (this is {processes})")
    check_tensorboard(config)
    if data is None:
        data = load_dataset(config)
    now = fingerprint(data)
    if now != trained_on:
        was = trained_on
        raise CatGANError(
            f"{run_dir} was trained on other data ({was['train']} training and {was['test']} test images, "
            f"SHA-256 {was['sha256'][:12]}) than {config.dataset} found now ({now['train']} and {now['test']}, "
            f"{now['sha256'][:12]})"
        )
    return _run(config, data, run_dir if main else None, group, main, log, checkpoint=checkpoint,
                data_fingerprint=now, resumed_at=step, on_step=on_step, stop=stop, report=report)


def _run(config: TrainConfig, data: ImageData, run_dir: Path | None, group: ProcessGroup | None, main: bool, log,
         checkpoint: dict[str, Any] | None = None, data_fingerprint: dict[str, Any] | None = None,
         resumed_at: int | None = None,
         command: str | None = None, on_step: OnStep | None = None, stop: Stop | None = None,
         report: Callable[[str], None] | None = None) -> RunResult:
    """Train a new run into ``run_dir`` (to be created), or continue it from ``checkpoint``; ``main``:
    whether this process is the one that writes and prints."""
    with _joined(group):
        trainer = Trainer(config, data, run_dir, command, report=report if main else _silent, group=group,
                          on_step=on_step, stop=stop)
        where = f"device {trainer.runtime.describe()}"
        if checkpoint is None:
            if run_dir is not None:
                runs.create_run_dir(run_dir)
            processes = f", {group.world_size} processes" if group is not None else ""
            log(f"run directory: {run_dir}  ({where}{processes}, {len(trainer.labelled)} labelled images, "
                f"K = {trainer.num_clusters}, epochs: {trainer.config.epochs})")
        else:
            trainer.data_fingerprint = data_fingerprint  # checked by resume; not hashed again
            log(data.describe())
            log(f"resuming {run_dir} at step {resumed_at} of {trainer.schedule.total} ({where})")
        summary = trainer.fit(resume=checkpoint)
    return RunResult(run_dir, summary, data)


def _plain_cnn(config: TrainConfig, data: ImageData, run_dir: Path, log, command: str | None,
               on_step: OnStep | None, stop: Stop | None) -> RunResult:
    """The plain-CNN baseline's run (`catgan.plain_cnn`): no GAN, no checkpoint along the way."""
    from catgan import plain_cnn
    from catgan.runtime import Runtime

    runtime = Runtime(config)
    labelled = choose_labelled(config, data, None, data.num_classes, 1)
    log(f"run directory: {run_dir}  (device {runtime.describe()}, {len(labelled)} labelled images, a plain CNN "
        f"cross-validated over them)")
    summary = plain_cnn.train_run(config, data, labelled, run_dir, runtime.device, runtime.describe(), command, log,
                                  on_step=on_step or (lambda step, total, record: None), stop=stop)
    return RunResult(run_dir, summary, data)


def _this_process(config: TrainConfig, log) -> tuple[ProcessGroup | None, bool, Callable[[str], None]]:
    """The torchrun group (None for a single process), whether this process is the one that
    writes and prints (rank 0), and its log; refuses what several processes cannot do."""
    group = ProcessGroup.from_environment()
    if group is None:
        return None, True, log
    if config.download:
        raise CatGANError("`download` with several processes would download once per process; download with one "
                          "process first, then start torchrun without it")
    return group, group.is_main, log if group.is_main else _silent


def _silent(line: str) -> None:
    """Where the messages of processes other than rank 0 go."""


@contextlib.contextmanager
def _joined(group: ProcessGroup | None):
    """Leave the process group (when one was joined) once training ends, however it ends.

    After a normal end and after a stop, every process waits at a barrier before leaving: gloo
    aborts a process (SIGABRT) whose peer tears its connections down while messages are still on
    their way. A stop during training is shared, so every process stops at the same step; one during
    the final evaluation, after the last collective, may reach only some of them, which then meet
    the others at the same barrier. After an error there is no barrier, since a failed peer would
    never reach it; and a peer that left without one (failed, or interrupted outside a step) closes
    the barrier with an error, which changes nothing here: training and its files (or its
    checkpoint) are complete."""
    try:
        yield
    except TrainingStopped:
        _barrier(group)
        raise
    else:
        _barrier(group)
    finally:
        if group is not None and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _barrier(group: ProcessGroup | None) -> None:
    """Wait for the other processes of the group, if there is one; a peer that already left is not an error."""
    if group is not None and torch.distributed.is_initialized():
        try:
            torch.distributed.barrier()
        except RuntimeError:  # DistBackendError and gloo's "connection closed" are RuntimeErrors
            pass
