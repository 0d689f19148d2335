"""The training schedule: the batches and their order, learning rates, annealed instance noise, the D:G ratio, and
the weight average of D.

Everything here is decided from the configuration once; a step asks what holds at its number.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from catgan.config import CatGANError, TrainConfig
from catgan.models import CatGAN
from catgan.steps import Batch, Practices

__all__ = ["Batches", "IndexCycler", "Schedule", "WeightAverage", "learning_rate", "make_optimizers"]


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


class Schedule:
    """What a run's configuration fixes for each step of its ``total``: the learning rates, the
    GAN practices (instance noise annealed), and whether G updates after D's update."""

    def __init__(self, config: TrainConfig, steps_per_epoch: int) -> None:
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.total = config.epochs * steps_per_epoch
        self.practices_fixed = Practices(**{name: getattr(config, name) for name in Practices._fields})

    def epoch(self, step: int) -> int:
        """The 1-based epoch that step ``step`` (0-based) belongs to."""
        return step // self.steps_per_epoch + 1

    def learning_rates(self, step: int, scale: float = 1.0) -> tuple[float, float]:
        """D's and G's learning rates at ``step``, times ``scale`` (lowered by restarts)."""
        config = self.config
        return (learning_rate(config, step, self.total, config.lr) * scale,
                learning_rate(config, step, self.total, config.lr_g or config.lr) * scale)

    def practices(self, step: int) -> Practices:
        """The practices at ``step``: the instance noise falls linearly to 0, or stays."""
        config = self.config
        noise = config.instance_noise * ((1 - step / self.total) if config.instance_noise_schedule == "linear" else 1.0)
        return self.practices_fixed._replace(instance_noise=noise)

    def generator_due(self, step: int) -> bool:
        """Whether G's ``g_steps`` updates follow D's update at ``step``."""
        return self.config.method == "catgan" and (step + 1) % self.config.d_steps == 0

    def ends_epoch(self, step: int) -> bool:
        """Whether ``step`` steps done complete an epoch."""
        return step % self.steps_per_epoch == 0

    def log_due(self, step: int) -> bool:
        """Whether a record is written after ``step`` steps."""
        return step % self.config.log_every == 0 or step == self.total


class Batches:
    """The training batches, in an order drawn from ``order`` (seeded by the trainer): each step's
    global batch (of every process together) is drawn alike by every process, which takes its own
    slice of it (``runtime.my_slice``). Labelled images are drawn first, then unlabelled ones."""

    def __init__(self, config: TrainConfig, x: Tensor, y: Tensor, labelled: np.ndarray, runtime) -> None:
        self.x, self.y, self.runtime = x, y, runtime
        self.order = torch.Generator()
        global_batch = config.batch_size * runtime.world_size
        self.unlabelled = self.labelled = None
        if config.method == "catgan":
            self.unlabelled = IndexCycler(torch.arange(len(x), device=x.device), global_batch, self.order)
        if config.uses_labels:
            per_process = min(global_batch, len(labelled)) // runtime.world_size
            if per_process == 0:
                raise CatGANError(f"{len(labelled)} labelled images cannot be shared among {runtime.world_size} "
                                  "processes")
            self.labelled = IndexCycler(torch.from_numpy(labelled).to(x.device), per_process * runtime.world_size,
                                        self.order)

    def next(self) -> Batch:
        """This process's part of the next batch, on its device."""
        x_lab, y_lab = self._draw(self.labelled)
        x_unl, _ = self._draw(self.unlabelled)
        return Batch(x_lab, y_lab, x_unl)

    def _draw(self, cycler: IndexCycler | None) -> tuple[Tensor | None, Tensor | None]:
        if cycler is None:
            return None, None
        index = self.runtime.my_slice(cycler())
        return self.x[index].to(self.runtime.device), self.y[index].to(self.runtime.device)


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
