"""The plain-CNN baseline: a small CNN trained on the labelled images alone, as a practitioner would.

Users with a few labels first ask whether CatGAN beats the CNN they would train on those labels.
This module trains that CNN with a fair chance: `catgan.models.PlainCNN`, small random rotations,
resizings and translations and Gaussian input noise as augmentation (chosen on held-out training
images by scripts/plain_cnn_recipe.py), AdamW, and its weight decay, dropout and length chosen by
k-fold cross-validation over the labelled images alone (no unlabelled image and no test label is
read):

1. each candidate of `Recipe.candidates` trains on k - 1 folds, its loss on the held-out fold
   measured after every epoch; a fold stops when that loss has not improved for ``patience``
   epochs (or at ``max_epochs``);
2. the candidate with the lowest validation loss (the mean over folds of each fold's lowest)
   wins; its length is the median, over folds, of the number of epochs after which each fold's
   validation loss was lowest;
3. the CNN trains again on every labelled image with the winner's settings for that many epochs
   (so for more updates than a fold: it has k / (k - 1) times the images), and is evaluated once
   on the test split.

`train_run` does this as a run (``catgan train --method cnn``): its directory holds the files a
CatGAN run's does (configuration, labelled indices, metrics.jsonl with one record per fold and the
test figures, checkpoint, summary), so ``catgan evaluate``, ``predict`` and ``export`` read it. It
keeps no checkpoint along the way: a stopped run starts again.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from catgan import runs
from catgan.config import CatGANError, TrainConfig
from catgan.consistency import shift_in_pixels, translate
from catgan.data import ImageData
from catgan.evaluation import evaluate, predict_logits
from catgan.models import CatGAN, PlainCNN
from catgan.state import networks_state, on_cpu, run_facts
from catgan.trainer import Stop, TrainingStopped

__all__ = ["RECIPE", "Recipe", "augment", "cross_validate", "fit", "number_of_folds", "train_run"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the plain CNN is trained and what cross-validation chooses among."""

    folds: int = 5  # k of k-fold cross-validation (fewer when a class has fewer labelled images)
    batch_size: int = 32  # labelled images per update
    lr: float = 1e-3  # AdamW's learning rate
    max_epochs: int = 300  # passes over a fold's training images at most
    patience: int = 40  # epochs without a lower validation loss before a fold stops
    shift: float = 2 / 28  # largest random translation, as a share of the image side (2 pixels on MNIST)
    rotation: float = 15.0  # largest random rotation in degrees (0 with scale 0: whole-pixel translations only)
    scale: float = 0.1  # largest random change of size, as a share (0.1: from 90% to 110%)
    input_noise: float = 0.3  # std of Gaussian noise added to the training images (on the [-1, 1] scale)
    weight_decays: tuple[float, ...] = (0.01, 0.1)  # AdamW's decoupled weight decay: the candidates
    dropouts: tuple[float, ...] = (0.25, 0.5)  # dropout on the pooled features: the candidates

    @property
    def candidates(self) -> list[dict[str, float]]:
        return [{"weight_decay": wd, "dropout": p} for wd in self.weight_decays for p in self.dropouts]


RECIPE = Recipe()  # what ``catgan train --method cnn`` trains with


def augment(x: Tensor, recipe: Recipe, generator: torch.Generator) -> Tensor:
    """The images ``x`` (B, C, H, W) as training sees them: with ``recipe.rotation`` and
    ``recipe.scale`` 0, each moved by whole pixels (`translate`); otherwise each rotated, resized
    and moved by its own random amounts (bilinear, border pixels repeated); then
    ``recipe.input_noise`` added."""
    if recipe.rotation == 0 and recipe.scale == 0:
        x = translate(x, shift_in_pixels(recipe.shift, x.shape), generator)
    else:
        u = (torch.rand(len(x), 4, generator=generator) * 2 - 1).to(x)  # (B, 4) in [-1, 1)
        angle, size = u[:, 0] * math.radians(recipe.rotation), 1 + u[:, 1] * recipe.scale
        shift = u[:, 2:] * 2 * recipe.shift  # affine_grid's coordinates span the side as [-1, 1]
        cos, sin = torch.cos(angle) / size, torch.sin(angle) / size
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], dim=1),
                             torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if recipe.input_noise > 0:
        x = x + recipe.input_noise * torch.randn(x.shape, generator=generator).to(x)
    return x


def fit(x: Tensor, y: Tensor, num_classes: int, settings: dict[str, float], recipe: Recipe, seed: int,
        epochs: int | None = None, x_val: Tensor | None = None, y_val: Tensor | None = None,
        stop: Stop | None = None) -> tuple[PlainCNN, dict[str, Any]]:
    """Train a `PlainCNN` on images ``x`` (N, C, H, W) in [-1, 1] with labels ``y`` (N,).

    With validation images (``x_val``, ``y_val``) it trains until their loss has not improved for
    ``recipe.patience`` epochs and reports when it was lowest; otherwise it trains for ``epochs``
    epochs. ``settings`` holds ``weight_decay`` and ``dropout``; a request of ``stop`` ends it
    after the epoch with `TrainingStopped` (nothing is saved).

    Returns the network as trained (not rewound to its best epoch: the lengths cross-validation
    reports are what the final fit uses) and a record: ``steps`` and ``epochs``, and with
    validation images ``best_epoch``, ``best_step``, ``best_validation_loss`` and
    ``validation_error`` (percent) after that epoch."""
    if (epochs is None) == (x_val is None):
        raise ValueError("give either epochs or validation images")
    torch.manual_seed(seed)
    device = x.device
    network = PlainCNN(tuple(x.shape[1:]), num_classes, dropout=settings["dropout"]).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr, weight_decay=settings["weight_decay"])
    order, shifts = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    record: dict[str, Any] = {"best_step": 0, "best_epoch": 0, "best_validation_loss": float("inf"),
                              "validation_error": 100.0}
    step = epoch = 0
    while True:
        batches = torch.randperm(len(x), generator=order).split(recipe.batch_size)
        if len(batches) > 1 and len(batches[-1]) < 2:  # batch norm needs two images
            batches = batches[:-1]
        network.train()
        for batch in batches:
            batch = batch.to(device)
            loss = F.cross_entropy(network(augment(x[batch], recipe, shifts)), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        epoch += 1
        if stop is not None and stop.reason:
            raise TrainingStopped(stop.reason, step, None)
        if epochs is not None:
            if epoch >= epochs:
                break
            continue
        logits = predict_logits(network, x_val)
        loss = F.cross_entropy(logits, y_val.cpu()).item()
        if loss < record["best_validation_loss"]:
            error = 100.0 * (logits.argmax(dim=1) != y_val.cpu()).float().mean().item()
            record.update(best_step=step, best_validation_loss=loss, validation_error=error, best_epoch=epoch)
        if epoch - record["best_epoch"] >= recipe.patience or epoch >= recipe.max_epochs:
            break
    record.update(steps=step, epochs=epoch)
    return network, record


def cross_validate(x: Tensor, y: Tensor, num_classes: int, recipe: Recipe, seed: int,
                   on_fit: Callable[[dict[str, Any]], None] = lambda record: None,
                   stop: Stop | None = None, log: Callable[[str], None] = lambda line: None
                   ) -> tuple[dict[str, float], int, list[dict[str, Any]]]:
    """Choose the settings and the number of updates by stratified k-fold cross-validation over
    the labelled images ``x``, ``y`` (see the module's description).

    Returns the winning settings, the number of epochs to train them for on all of ``x``, and
    one row per candidate (its settings, mean lowest validation loss, mean validation error at
    it, and the median epochs and updates to it). ``on_fit`` receives each fold's record as it finishes, ``log`` a
    line per candidate."""
    from sklearn.model_selection import StratifiedKFold

    labels = y.cpu().numpy()
    folds = number_of_folds(labels, num_classes, recipe)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed % 2**32).split(np.zeros(len(labels)), labels))
    rows = []
    for c, settings in enumerate(recipe.candidates):
        records = []
        for f, (train, held_out) in enumerate(splits):
            started = time.perf_counter()
            train, held_out = torch.from_numpy(train).to(x.device), torch.from_numpy(held_out).to(x.device)
            _, record = fit(x[train], y[train], num_classes, settings, recipe, seed + 1000 * c + f,
                            x_val=x[held_out], y_val=y[held_out], stop=stop)
            record = {"candidate": c, **settings, "fold": f, **record, "seconds": round(time.perf_counter() - started, 3)}
            records.append(record)
            on_fit(record)
        row = {**settings, "validation_loss": statistics.fmean(r["best_validation_loss"] for r in records),
               "validation_error": statistics.fmean(r["validation_error"] for r in records),
               "epochs": int(statistics.median(r["best_epoch"] for r in records)),
               "steps": int(statistics.median(r["best_step"] for r in records))}
        rows.append(row)
        log(f"candidate {c + 1} of {len(recipe.candidates)} (weight decay {row['weight_decay']}, dropout "
            f"{row['dropout']}): validation loss {row['validation_loss']:.3f}, error {row['validation_error']:.1f}% "
            f"over {folds} folds, lowest after {row['epochs']} epochs (median)")
    best = min(rows, key=lambda row: (row["validation_loss"], row["validation_error"]))
    return {name: best[name] for name in ("weight_decay", "dropout")}, max(1, best["epochs"]), rows


def train_run(config: TrainConfig, data: ImageData, labelled: np.ndarray, run_dir: Path | None, device: torch.device,
              describe_device: str, command: str | None = None, log: Callable[[str], None] = print,
              on_step: Callable[[int, int, dict | None], None] = lambda step, total, record: None,
              stop: Stop | None = None, recipe: Recipe | None = None) -> dict[str, Any]:
    """Cross-validate, train and evaluate the plain CNN on ``data``'s ``labelled`` training images;
    write the run into ``run_dir`` (created at the end; None writes nothing); return the summary.
    ``recipe`` defaults to `RECIPE`.

    ``on_step`` is called with the number of fits done and their total (the folds of every
    candidate, and the final fit)."""
    started, recipe, commit = time.perf_counter(), recipe or RECIPE, runs.git_commit()  # the code it starts with
    if min(data.image_shape[1:]) < 4:
        raise CatGANError(f"the cnn method's network halves the image twice and needs at least 4x4 pixels; these "
                          f"are {data.image_shape[1]}x{data.image_shape[2]}")
    x, y = data.x_train[labelled].to(device), data.y_train[labelled].to(device)
    folds = number_of_folds(y.cpu().numpy(), data.num_classes, recipe)
    total = len(recipe.candidates) * folds + 1
    done = 0
    fits: list[dict[str, Any]] = []

    def fitted(record: dict[str, Any]) -> None:
        nonlocal done
        fits.append(record)
        done += 1
        on_step(done, total, None)

    on_step(0, total, None)
    settings, epochs, rows = cross_validate(x, y, data.num_classes, recipe, config.seed, on_fit=fitted, stop=stop,
                                          log=log)
    log(f"cross-validation over {len(labelled)} labelled images chose weight decay {settings['weight_decay']}, "
        f"dropout {settings['dropout']}, {epochs} epochs")
    network, final = fit(x, y, data.num_classes, settings, recipe, config.seed, epochs=epochs, stop=stop)
    steps = final["steps"]
    on_step(total, total, None)
    model = CatGAN(config, data.image_shape, data.num_classes)
    model.discriminator = network
    figures = evaluate(model, data.x_test, data.y_test, classifies=True) if len(data.x_test) else {}
    summary = {**figures, "wall_seconds": time.perf_counter() - started, "steps": steps, "epochs": epochs,
               "labelled": len(labelled), "clusters": data.num_classes, "processes": 1,
               **run_facts(data, describe_device, commit, command), "warnings": [],
               "cnn": {**settings, **{k: v for k, v in dataclasses.asdict(recipe).items()
                                      if k not in ("weight_decays", "dropouts")},
                       "folds": folds, "cross_validation": rows}}  # the folds used (fewer with few labels)
    if run_dir is not None:
        _write_run(run_dir, config, data, labelled, model, fits, figures, summary)
    return summary


def number_of_folds(labels: np.ndarray, num_classes: int, recipe: Recipe) -> int:
    """k: ``recipe.folds``, or fewer when a class has fewer labelled images; at least 2."""
    smallest = int(np.bincount(labels, minlength=num_classes).min())
    if smallest < 2:
        raise CatGANError(f"the cnn method cross-validates over the labelled images and needs at least 2 per class; "
                          f"one class has {smallest}")
    return min(recipe.folds, smallest)


def _write_run(run_dir: Path, config: TrainConfig, data: ImageData, labelled: np.ndarray, model: CatGAN,
               fits: list[dict[str, Any]], figures: dict[str, float], summary: dict[str, Any]) -> None:
    """The run's files, as a CatGAN run's (no samples: there is no generator)."""
    runs.create_run_dir(run_dir)
    runs.write_start_files(run_dir, config, data.name, labelled)
    for record in fits:
        runs.append_jsonl(run_dir / runs.METRICS, {"split": "cross-validation", **record})
    if figures:
        runs.append_jsonl(run_dir / runs.METRICS, {"split": "test", "step": summary["steps"],
                                                   "seconds": round(summary["wall_seconds"], 3), **figures})
    state = networks_state(config, data.image_shape, data.num_classes, data.classes, None, model.discriminator,
                           summary["steps"])
    runs.save_checkpoint(run_dir / runs.CHECKPOINT, on_cpu(state))
    runs.write_json(run_dir / runs.SUMMARY, summary)
