"""The training state and its moves: a fresh start or a resume, the checks and checkpoints between
steps, the epoch end (the point a restart goes back to), a restart or a stop after a non-finite
value, and the end of the run.

The checkpoint format is written by `checkpoint_state` and read by `load_training_state` and
`load_networks`, here alone. A checkpoint is weights-only loadable (tensors and plain values).
"""

from __future__ import annotations

import copy
import hashlib
from typing import TYPE_CHECKING, Any, NoReturn

import torch
from torch import Tensor

from catgan import __version__, runs
from catgan.config import CatGANError, TrainConfig
from catgan.data import ImageData
from catgan.diagnostics import TrainingDiverged, TrainingWarning
from catgan.distributed import digest
from catgan.models import CatGAN

if TYPE_CHECKING:
    from catgan.trainer import Trainer

__all__ = ["NonFinite", "checkpoint_state", "fingerprint", "load_networks", "load_training_state", "resume_point"]

CLUSTER_VIEW_IMAGES = 10_000  # training images a clustering run's contact sheet and sizes are drawn from


class NonFinite(Exception):
    """Raised inside the training loop when a loss or a weight stops being finite."""

    def __init__(self, warning: TrainingWarning) -> None:
        super().__init__(warning.message)
        self.warning = warning


def checkpoint_state(trainer: Trainer, with_restart_point: bool = True) -> dict[str, Any]:
    """Everything needed to rebuild the networks, and under ``training`` everything needed to
    continue exactly where training is: random states, the batch order and the position in it,
    the monitor, the weight average, the data's fingerprint, and the state a restart or a
    divergence goes back to (the last epoch end)."""
    t = trainer
    return {
        **networks_state(t.config, t.data.image_shape, t.num_clusters, t.data.classes, t.model.generator,
                         t.model.discriminator, t.step),
        "epoch": t.epoch,
        "opt_d": t.opt_d.state_dict(),
        "opt_g": t.opt_g.state_dict(),
        **({"discriminator_average": t.weight_average.module.state_dict()} if t.weight_average else {}),
        "training": {
            "rng": t.runtime.rng_state(),
            "order": t.batches.order.get_state(),
            "unlabelled": t.batches.unlabelled.state_dict() if t.batches.unlabelled else None,
            "labelled": t.batches.labelled.state_dict() if t.batches.labelled else None,
            "weight_average_updates": t.weight_average.updates if t.weight_average else 0,
            "monitor": t.monitor.state_dict(),
            "terms_g": {name: value.detach() for name, value in t.terms_g.items()},
            "lr_scale": t.lr_scale,
            "restarts": copy.deepcopy(t.restarts),
            "resumed_at": list(t.resumed_at),
            "git_commits": list(t.git_commits),
            "seconds": t.clock.seconds(),
            "metrics_bytes": t.recorder.size(),
            "command": t.command,
            "processes": t.runtime.world_size,
            "data": t.data_fingerprint,
            "restart_point": t.last_good if with_restart_point else None,
        },
    }


def networks_state(config: TrainConfig, image_shape, num_clusters: int, classes, generator: torch.nn.Module,
                   discriminator: torch.nn.Module, step: int) -> dict[str, Any]:
    """The part of a checkpoint that `load_networks` reads: enough to rebuild the networks (a
    finished run's, or a fitted estimator's saved as a run), with no training state."""
    return {
        "config": config.to_dict(),
        "image_shape": list(image_shape),
        "num_clusters": num_clusters,
        "classes": list(classes),
        "step": step,
        "generator": generator.state_dict() if generator is not None else {},  # none: a plain CNN's run
        "discriminator": discriminator.state_dict(),
        "catgan_version": __version__,
    }


def load_training_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Continue from ``state`` (`checkpoint_state`'s output): networks, optimisers, random states,
    batch order, monitor; metrics.jsonl is cut back to what it held then."""
    t, training = trainer, state["training"]
    t.model.generator.load_state_dict(state["generator"])
    t.model.discriminator.load_state_dict(state["discriminator"])
    t.opt_d.load_state_dict(on_cpu(state["opt_d"]))  # copies: the optimisers update their state in place
    t.opt_g.load_state_dict(on_cpu(state["opt_g"]))
    if t.weight_average is not None:
        t.weight_average.module.load_state_dict(state["discriminator_average"])
        t.weight_average.updates = training["weight_average_updates"]
    t.step, t.epoch = state["step"], state["epoch"]
    note = t.runtime.set_rng_state(training["rng"])
    if note:
        t.monitor.report(note)
    t.batches.order.set_state(training["order"])
    for cycler, key in ((t.batches.unlabelled, "unlabelled"), (t.batches.labelled, "labelled")):
        if cycler is not None:
            cycler.load_state_dict(training[key])
    t.monitor.load_state_dict(training["monitor"])
    t.terms_g = {name: value.to(t.device) for name, value in training["terms_g"].items()}
    t.lr_scale, t.restarts = training["lr_scale"], copy.deepcopy(training["restarts"])
    t.resumed_at, t.git_commits = list(training["resumed_at"]), list(training["git_commits"])
    t.clock.restart(training["seconds"])
    t.command = training["command"]
    t.last_good = training["restart_point"] or on_cpu(checkpoint_state(t, with_restart_point=False))
    t.recorder.cut_back(training["metrics_bytes"], t.step, t.monitor.report)


def load_networks(checkpoint: dict[str, Any], where: str) -> tuple[TrainConfig, CatGAN, list[str]]:
    """A checkpoint's configuration, networks and class names. D holds the weights the run was
    evaluated with: its moving average when the run used ``ema_decay``, else its weights as trained."""
    config = TrainConfig.from_dict(checkpoint["config"])
    model = CatGAN(config, tuple(checkpoint["image_shape"]), int(checkpoint["num_clusters"]))
    try:
        if model.generator is not None:
            model.generator.load_state_dict(checkpoint["generator"])
        model.discriminator.load_state_dict(checkpoint.get("discriminator_average", checkpoint["discriminator"]))
    except (RuntimeError, KeyError) as err:
        reason = str(err).strip().splitlines()[0]
        raise CatGANError(f"the checkpoint in {where} does not match its configuration: {reason}") from None
    return config, model, list(checkpoint["classes"])


def resume_point(checkpoint: dict[str, Any], where: str) -> tuple[TrainConfig, int, dict[str, Any], int]:
    """What a resume checks before it starts: the saved configuration, the number of processes
    that trained the run, the data's fingerprint and the step. Refuses a checkpoint without
    training state."""
    training = checkpoint.get("training")
    if not isinstance(training, dict) or "data" not in training:
        raise CatGANError(f"{where} holds no training state this version can resume from")
    return (TrainConfig.from_dict(checkpoint["config"]), training.get("processes", 1), training["data"],
            checkpoint["step"])


def start(trainer: Trainer, resume: dict[str, Any] | None) -> None:
    """Start afresh (write the start files and a checkpoint of step 0) or continue from ``resume``."""
    t, config, runtime = trainer, trainer.config, trainer.runtime
    if runtime.group is not None:  # after resume() has set the fingerprint it checked: not hashed twice
        runtime.group.check_agreement("the seed, the labelled subset and the data",
                                      (config.seed, digest(t.labelled), t.data_fingerprint["sha256"]))
    t.clock.restart(0.0)
    t.clock.saved()
    if resume is None:
        if t.run_dir is not None and (t.run_dir / runs.CONFIG).exists():
            raise CatGANError(f"{t.run_dir} already holds a run; give the trainer a new directory")
        if t.run_dir is not None:
            runs.write_start_files(t.run_dir, config, t.data.name, t.labelled)
        runtime.seed(runtime.process_seed(config.seed))  # the noise and latents; whatever ran since __init__
        t.batches.order.manual_seed(config.seed)
        t.git_commits = [runs.git_commit()]
        keep_last_good(t)
        save_checkpoint(t)  # a run killed at any moment can be resumed, from step 0 at worst
        return
    try:
        load_training_state(t, resume)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
        if isinstance(err, CatGANError):
            raise
        raise CatGANError(f"cannot resume from this checkpoint: {type(err).__name__}: {err}") from None
    t.resumed_at.append(t.step)
    t.git_commits.append(runs.git_commit())
    t.saved_step = t.step if t.run_dir is not None else None  # the checkpoint it resumed from
    if runtime.group is not None:  # the checkpoint holds rank 0's random state: each process takes its own
        runtime.seed(runtime.process_seed(config.seed, t.step))


def finish(trainer: Trainer) -> dict[str, Any]:
    """Save the last checkpoint, evaluate on the test split, draw the samples, write the summary."""
    from catgan.clusters import write_cluster_views
    from catgan.evaluation import predict_logits
    from catgan.plots import class_grid
    from catgan.trainer import TrainingStopped

    t = trainer
    recalibrated = recalibrate_batchnorm(t)
    save_checkpoint(t)  # before the final record, so that a resume from it writes that record once
    figures = t.evaluate_test() if len(t.data.x_test) else {}
    if figures:
        t.recorder.test(t.step, t.epoch, t.clock.seconds(), figures)
    shares = check_class_shares(t)
    summary = {**figures, **shares, **recalibrated, **common_summary(t)}
    if t.run_dir is not None and t.config.method == "catgan":
        runs.save_samples(t.model, t.run_dir / runs.SAMPLES, t.config.seed)
        names = list(t.data.classes) if t.config.uses_labels else None
        class_grid(t.model, t.run_dir / runs.CLASS_SAMPLES, class_names=names, seed=t.config.seed,
                   discriminator=t.evaluated_discriminator)
        if not t.config.uses_labels:  # clusters: show which of the user's own images each one holds
            x = t.data.x_train[:CLUSTER_VIEW_IMAGES]
            write_cluster_views(t.run_dir, x, predict_logits(t.evaluated_discriminator, x).softmax(dim=1))
    if t.stop.reason:  # during the final evaluation: the checkpoint above resumes it
        raise TrainingStopped(t.stop.reason, t.step, t.run_dir)
    if t.run_dir is not None:
        runs.write_json(t.run_dir / runs.SUMMARY, summary)
    return summary


def recalibrate_batchnorm(trainer: Trainer) -> dict[str, Any]:
    """With ``bn_recalibration``, the reported D's batch-norm statistics re-estimated with its final
    weights (`catgan.evaluation.reestimate_batchnorm`), before the checkpoint that holds them; as
    ``bn_recalibration_batches`` for the summary. The same weights give the same statistics, so a
    run resumed after this point re-estimates them to the same values. (The statistics as training
    left them are not kept; `scripts/bn_recalibration.py` compares both on a run trained without
    the switch.)"""
    from catgan.evaluation import reestimate_batchnorm

    t = trainer
    if not t.config.bn_recalibration:
        return {}
    batches = reestimate_batchnorm(t.evaluated_discriminator, t.x_train, t.config.method == "catgan",
                                   t.labelled if t.config.uses_labels else None, t.config.bn_recalibration,
                                   t.config.batch_size, t.config.seed)
    return {"bn_recalibration_batches": batches}


def check_class_shares(trainer: Trainer) -> dict[str, Any]:
    """For a semi-supervised CatGAN run: the share of each class among D's predictions on unlabelled
    training images and among the labelled images (`catgan.evaluation.class_shares_of_run`), as
    ``unlabelled_class_shares`` and ``labelled_class_shares``; raises the ``class_starved`` warning
    when `catgan.diagnostics.starved_class` finds one. Reads no label of an unlabelled image."""
    from catgan.diagnostics import starved_class
    from catgan.evaluation import class_shares_of_run

    t = trainer
    if t.config.method != "catgan" or not t.config.uses_labels:
        return {}
    shares, labelled, read = class_shares_of_run(t.evaluated_discriminator, t.data.x_train, t.data.y_train,
                                                 t.labelled, t.num_clusters)
    if not read:
        return {}
    starved = starved_class(shares, labelled)
    if starved is not None:
        name = t.data.classes[starved] if starved < len(t.data.classes) else starved
        t.monitor.fire("class_starved", t.step, t.epoch,
                       f"D gives class {name!r} {100 * shares[starved]:.1f}% of {read} unlabelled training "
                       f"images, against {100 * labelled[starved]:.1f}% of the labelled ones")
    return {"unlabelled_class_shares": [round(float(s), 4) for s in shares],
            "labelled_class_shares": [round(float(s), 4) for s in labelled]}


def run_facts(data: ImageData, device: str, git_commit: str | None, command: str | None) -> dict[str, Any]:
    """What every run's summary (a CatGAN's, a plain CNN's) records of its data, machine and code."""
    return {
        "dataset": data.name,
        "test_images": len(data.x_test),
        "device": device,
        "cpu_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "catgan_version": __version__,
        "git_commit": git_commit,
        "command": command,
    }


def common_summary(trainer: Trainer) -> dict[str, Any]:
    """What every summary records besides the figures: time, sizes, versions, warnings, restarts."""
    t, config = trainer, trainer.config
    return {
        "wall_seconds": t.clock.seconds(),
        "steps": t.step,
        "epochs": config.epochs,
        "labelled": len(t.labelled) if config.uses_labels else 0,
        "clusters": t.num_clusters,
        "processes": t.runtime.world_size,
        "global_batch_size": config.batch_size * t.runtime.world_size,
        # the code it started with
        **run_facts(t.data, t.runtime.describe(), t.git_commits[0] if t.git_commits else runs.git_commit(), t.command),
        "warnings": [warning.to_dict() for warning in t.monitor.warnings],
        "restarts": t.restarts,
        "resumed_at_steps": t.resumed_at,
        "resumed_with_commits": t.git_commits[1:],
    }


def check_losses(trainer: Trainer, record: dict[str, Any]) -> None:
    """Let the monitor read a training record; raise `NonFinite` on a non-finite loss."""
    for warning in trainer.monitor.observe(record, trainer.step, trainer.epoch):
        if warning.name == "non_finite":
            raise NonFinite(warning)


def check_weights(trainer: Trainer) -> None:
    """Raise `NonFinite` when a weight is not finite."""
    bad = [name for name, p in trainer.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        message = f"non-finite weights in {len(bad)} parameters ({bad[0]}, ...)"
        warning = trainer.monitor.fire("non_finite", trainer.step, trainer.epoch, message)
        raise NonFinite(warning or TrainingWarning("non_finite", trainer.step, trainer.epoch, message))


def end_epoch(trainer: Trainer) -> None:
    """Check the weights, draw the epoch's samples and evaluate when asked, and keep the state as
    the point a restart after a non-finite value goes back to."""
    t, config = trainer, trainer.config
    check_weights(t)
    if config.sample_every and t.epoch % config.sample_every == 0 and config.method == "catgan" and t.run_dir:
        (t.run_dir / runs.SAMPLES_DIR).mkdir(exist_ok=True)
        runs.save_samples(t.model, t.run_dir / runs.SAMPLES_DIR / f"epoch-{t.epoch:04d}.png", config.seed)
    if config.eval_every and t.epoch % config.eval_every == 0 and t.epoch < config.epochs and len(t.data.x_test):
        t.recorder.test(t.step, t.epoch, t.clock.seconds(), t.evaluate_test(), scalars=True)
    keep_last_good(t)


def stop_or_checkpoint_due(trainer: Trainer) -> tuple[bool, bool]:
    """Whether a stop request ends training after this step, and whether a checkpoint is due.

    With several processes every one must decide alike (a checkpoint checks the weights, a stop
    ends the collectives): they share, at the logging cadence, whether any was asked to stop and
    whether rank 0's checkpoint time has come (a host synchronisation, hence not at every step);
    checkpoints by step count need no sharing."""
    t, config = trainer, trainer.config
    by_steps = bool(config.checkpoint_steps) and t.step % config.checkpoint_steps == 0
    by_time = bool(config.checkpoint_minutes) and t.clock.minutes_since_save() >= config.checkpoint_minutes
    group = t.runtime.group
    if group is None:
        return bool(t.stop.reason), by_steps or by_time
    if t.step % config.log_every and t.step != t.schedule.total:
        return False, by_steps
    reason, time_on_main = group.largest([t.stop.reason, int(t.runtime.is_main and by_time)], t.device)
    t.stop.reason = reason
    return bool(reason), by_steps or bool(time_on_main)


def save_checkpoint(trainer: Trainer) -> None:
    """Check that the weights are finite and save the state, atomically. (The point a restart goes
    back to stays the last epoch end, whatever the checkpoint cadence.)"""
    check_weights(trainer)
    if trainer.run_dir is not None:
        runs.save_checkpoint(trainer.run_dir / runs.CHECKPOINT, checkpoint_state(trainer))
        trainer.saved_step = trainer.step
    trainer.clock.saved()


def keep_last_good(trainer: Trainer) -> None:
    """Keep a copy of the whole training state, in host memory, to fall back on after a NaN."""
    trainer.last_good = on_cpu(checkpoint_state(trainer, with_restart_point=False))


def save_last_good(trainer: Trainer, unless_older: bool = False) -> None:
    """Write the last finite state as the checkpoint (with ``unless_older``, only when the saved
    checkpoint is older, so that an interrupt never takes a run back past a newer checkpoint)."""
    if trainer.run_dir is None or trainer.last_good is None:
        return
    if unless_older and trainer.saved_step is not None and trainer.saved_step >= trainer.last_good["step"]:
        return
    runs.save_checkpoint(trainer.run_dir / runs.CHECKPOINT, trainer.last_good)


def restart(trainer: Trainer, warning: TrainingWarning) -> bool:
    """With ``on_nan restart`` and restarts left: go back to the last finite state with lower
    learning rates, and return True; otherwise return False."""
    t, config = trainer, trainer.config
    if config.on_nan != "restart" or len(t.restarts) >= config.max_restarts:
        return False
    good = t.last_good
    scale = t.lr_scale * config.restart_lr_factor
    restarts = [*t.restarts, {"at_step": warning.step, "back_to_step": good["step"],
                              "message": warning.message, "lr_scale": scale}]
    seconds, resumed_at, commits = t.clock.seconds(), t.resumed_at, t.git_commits
    load_training_state(t, good)
    if t.runtime.group is not None:  # after a resume, the state went back to holds rank 0's random state
        t.runtime.seed(t.runtime.process_seed(config.seed, good["step"], len(restarts)))
    t.restarts, t.lr_scale = restarts, scale
    t.resumed_at, t.git_commits = resumed_at, commits  # the run's history is not undone
    t.clock.restart(seconds)
    t.monitor.report(f"restart {len(restarts)} of at most {config.max_restarts}: {warning.message} at step "
                     f"{warning.step}; back to step {good['step']} with the learning rates x{scale:g}")
    keep_last_good(t)
    return True


def stop_diverged(trainer: Trainer, warning: TrainingWarning) -> NoReturn:
    """After a non-finite loss: put back the last good state, save it, record why, raise."""
    t, good = trainer, trainer.last_good
    seconds = t.clock.seconds()
    t.model.generator.load_state_dict(good["generator"])
    t.model.discriminator.load_state_dict(good["discriminator"])
    summary = {"status": "diverged", "diverged_at_step": warning.step, "last_good_step": good["step"],
               "last_good_epoch": good["epoch"], **common_summary(t), "wall_seconds": seconds}
    where = "nothing was written"
    if t.run_dir is not None:
        save_last_good(t)
        runs.write_json(t.run_dir / runs.SUMMARY, summary)
        where = f"{t.run_dir / runs.CHECKPOINT} holds the state at step {good['step']} (epoch {good['epoch']})"
    tried = f" after {len(t.restarts)} restarts" if t.restarts else ""
    raise TrainingDiverged(f"training diverged at step {warning.step}{tried} ({warning.message}); {where}")


def fingerprint(data: ImageData) -> dict[str, Any]:
    """The split sizes and a SHA-256 of the images and labels: a resumed run must see the same data."""
    sha = hashlib.sha256()
    for array in (data.x_train, data.y_train, data.x_test, data.y_test):
        sha.update(array.detach().cpu().contiguous().numpy().tobytes())
    return {"train": len(data.x_train), "test": len(data.x_test), "sha256": sha.hexdigest()}


def on_cpu(state: Any) -> Any:
    """A copy of ``state`` (nested dicts and lists of tensors and plain values) with every tensor on the CPU."""
    if isinstance(state, Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(on_cpu(value) for value in state)
    return copy.deepcopy(state)
