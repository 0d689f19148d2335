"""What training looks like from the inside: gradient norms, D-scores, and warnings of known failures.

The trainer logs, every ``log_every`` steps, each loss term, the gradient norms of D and G, the
class histogram of generated images and two D-scores. A `HealthMonitor` reads those records and
warns, once each, when a known failure mode sets in:

- ``non_finite``: a loss is NaN or infinite; the trainer stops and keeps its last good weights.
- ``generator_collapse``: D sorts generated images into few classes (the entropy of their class
  shares stays far below log K), i.e. the generator makes one or a few kinds of image. (The
  average of D's soft predictions on them would not show it: D is trained to be unsure about
  generated images, so that average stays near uniform.)
- ``discriminator_overpowering``: D is sure generated images are fake (in CatGAN: maximally
  uncertain about their class, conditional entropy near log K) while G's gradients have all but
  vanished, so G has nothing left to learn from.
- ``stuck``: D is at chance on real images (conditional entropy near log K, and chance accuracy
  on the labelled batch when there is one) and the losses do not move.

At the end of a semi-supervised run, `starved_class` compares the classes D gives the unlabelled
training images with the labelled images' classes, and the trainer raises ``class_starved`` when
one class gets under half its labelled share: D fits its few labelled images of that class and files
the rest of it under other classes, which neither the labelled accuracy nor the marginal entropy
shows (on mnist-100, seed 2 of the augmentation row gave the 1s 2.9% of the unlabelled images and
ended at 11.67% test error; every other finished MNIST run gave each class 8.6 to 11.2%;
results/semi-supervised-class-shares.md). That run's cause was D's batch-norm running averages: with
them re-estimated for its final weights it errs on 1.91% (results/bn-statistics-diagnosis.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from catgan.config import CatGANError

__all__ = [
    "HealthMonitor",
    "TrainingDiverged",
    "TrainingWarning",
    "WARNINGS",
    "class_histogram",
    "class_shares",
    "d_score",
    "gradient_norm",
    "starved_class",
]

# Each warning's name and what to try, printed once when it first fires.
WARNINGS = {
    "non_finite": "A loss or weight became NaN or infinite; training stopped. Try a lower `lr`, or more noise on D "
                  "(`d_noise`), and check the data for NaN pixels",
    "generator_collapse": "The generator makes few kinds of image (D puts its samples into few classes). "
                          "Try a lower generator learning rate, more D noise (`d_noise`), or a longer schedule",
    "discriminator_overpowering": "The discriminator is sure the generated images are fake and the generator's "
                                  "gradients have vanished. Try more D noise (`d_noise`), a narrower D "
                                  "(`d_width`), or a lower learning rate",
    "stuck": "The discriminator is at chance on real images and the losses do not move. Check the data "
             "(are images scaled to [-1, 1]?), try a higher `lr`, or a wider D",
    "class_starved": "D may have filed part of that class under others, which its accuracy on the labelled "
                     "images cannot show; unless the class is that much rarer among your unlabelled images, "
                     "try D's batch-norm statistics re-estimated for its final weights (`catgan evaluate RUN "
                     "--bn-recalibration 20000`, or train with it; on MNIST that undid such a failure), look at "
                     "samples_by_class.png, and compare a run with another seed",
}
STARVED_FRACTION = 0.5  # a class given under this fraction of its labelled share of the unlabelled images


class TrainingDiverged(CatGANError):
    """Training stopped at a non-finite loss or weight; the run keeps its last good weights."""


def gradient_norm(module: nn.Module) -> Tensor:
    """The L2 norm of all of ``module``'s parameter gradients taken together (0 when none)."""
    norms = [torch.linalg.vector_norm(p.grad) for p in module.parameters() if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(norms))


def class_histogram(logits: Tensor) -> Tensor:
    """The fraction of a batch (B, K) assigned to each of the K classes by its largest logit: (K,).

    Computed on the logits' device without reading anything back (no host synchronisation).
    """
    logits = logits.detach()
    classes = torch.arange(logits.shape[1], device=logits.device)
    return (logits.argmax(dim=1, keepdim=True) == classes).float().mean(dim=0)


def class_shares(classes: Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """The share of ``classes`` (N,) in each of ``num_classes`` classes: (num_classes,), summing to 1."""
    counts = np.bincount(np.asarray(classes), minlength=num_classes)
    return counts / max(counts.sum(), 1)


def starved_class(unlabelled: np.ndarray, labelled: np.ndarray) -> int | None:
    """The class whose share of the unlabelled images (D's predictions) falls furthest below
    `STARVED_FRACTION` of its share of the labelled images, or None when none does."""
    shortfall = np.where(labelled > 0, unlabelled / np.maximum(labelled, 1e-12), np.inf)
    worst = int(shortfall.argmin())
    return worst if shortfall[worst] < STARVED_FRACTION else None


def d_score(marginal_entropy: float, conditional_entropy: float) -> float:
    """exp(H[p_bar] - E H[p(y|x)]): the Inception Score with D as the classifier.

    Between 1 (D's predictions carry no information about the classes) and K (D is certain on
    every image and uses all K classes equally).
    """
    return math.exp(marginal_entropy - conditional_entropy)


@dataclass
class TrainingWarning:
    """A failure mode noticed during training, with the step at which it was first seen."""

    name: str  # a key of WARNINGS
    step: int
    epoch: int
    message: str  # what was seen, with the numbers
    advice: str = field(init=False)

    def __post_init__(self) -> None:
        self.advice = WARNINGS[self.name]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "step": self.step, "epoch": self.epoch, "message": self.message,
                "advice": self.advice}

    def line(self) -> str:
        return f"warning: {self.name} at step {self.step} (epoch {self.epoch}): {self.message}. {self.advice}."


class HealthMonitor:
    """Watches logged training records and raises each warning at most once.

    Apart from ``non_finite`` (at once), a warning fires when its condition has held on every
    logged record for at least ``window_steps`` steps (and ``min_logs`` records), and none is
    looked for during the first ``warmup_steps`` steps, when D's outputs are still near uniform.
    Windows count steps, not records, so ``log_every`` does not change what fires.

    Args:
        num_clusters: K, D's number of outputs.
        warmup_steps: steps before any condition but ``non_finite`` is looked at; G's gradient
            norms logged until then are its reference ("early") value.
        window_steps: how many steps a condition must hold before it is reported.
        min_logs: how many consecutive records, at least, it must hold on.
        collapse_fraction: the entropy of the classes D gives generated images (their histogram)
            below this fraction of log K counts as collapse.
        certain_fraction: a conditional entropy above this fraction of log K counts as D being at
            chance (on real images) or sure that images are fake (on generated ones).
        vanished_fraction: G's gradient norm below this fraction of its early value counts as vanished.
        flat_fraction: losses whose range over the window stays below this fraction of log K are flat.
        report: called with each new warning's line.
    """

    def __init__(
        self,
        num_clusters: int,
        warmup_steps: int = 200,
        window_steps: int = 100,
        min_logs: int = 3,
        collapse_fraction: float = 0.5,
        certain_fraction: float = 0.95,
        vanished_fraction: float = 0.01,
        flat_fraction: float = 0.01,
        report: Callable[[str], None] = print,
    ) -> None:
        self.log_k = math.log(num_clusters)
        self.warmup_steps, self.window_steps, self.min_logs = warmup_steps, window_steps, min_logs
        self.collapse_fraction, self.certain_fraction = collapse_fraction, certain_fraction
        self.vanished_fraction, self.flat_range = vanished_fraction, flat_fraction * self.log_k
        self.report = report
        self.warnings: list[TrainingWarning] = []
        self._streaks: dict[str, list[tuple[int, tuple[float, ...]]]] = {}  # name -> (step, losses) while held
        self._early_g_norms: list[float] = []

    @property
    def fired(self) -> set[str]:
        return {w.name for w in self.warnings}

    def state_dict(self) -> dict[str, Any]:
        """What the monitor has seen so far, as plain lists (for a resumable checkpoint)."""
        return {
            "warnings": [[w.name, w.step, w.epoch, w.message] for w in self.warnings],
            "streaks": {name: [[step, list(losses)] for step, losses in streak] for name, streak in self._streaks.items()},
            "early_g_norms": list(self._early_g_norms),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict`'s output (warnings already raised are not reported again)."""
        self.warnings = [TrainingWarning(*fields) for fields in state["warnings"]]
        self._streaks = {name: [(step, tuple(losses)) for step, losses in streak] for name, streak in state["streaks"].items()}
        self._early_g_norms = list(state["early_g_norms"])

    def observe(self, record: dict[str, Any], step: int, epoch: int) -> list[TrainingWarning]:
        """Read one logged record (``d`` and ``g`` hold D's and G's terms as floats, and
        ``fake_class_histogram`` the generated-class shares); return the warnings it raised for
        the first time."""
        d, g = record.get("d", {}), record.get("g", {})
        losses = tuple(v for k, v in (*d.items(), *g.items()) if k.startswith("loss") or k == "cross_entropy")
        if any(not math.isfinite(value) for value in losses):
            bad = ", ".join(f"{k}={v}" for k, v in (*d.items(), *g.items()) if not math.isfinite(v))
            return self._fire("non_finite", step, epoch, f"non-finite loss terms: {bad}")
        if "grad_norm" in g and (step <= self.warmup_steps or not self._early_g_norms):
            self._early_g_norms.append(g["grad_norm"])
        if step <= self.warmup_steps:
            return []
        new = []
        histogram = record.get("fake_class_histogram")
        if histogram is not None:
            h = -sum(p * math.log(p) for p in histogram if p > 0)
            if self._held("generator_collapse", h < self.collapse_fraction * self.log_k, step, losses):
                new += self._fire("generator_collapse", step, epoch,
                                  f"D gives generated images few classes: entropy of their class shares {h:.3f} < "
                                  f"{self.collapse_fraction} x log K = {self.collapse_fraction * self.log_k:.3f} "
                                  f"for {self.window_steps} steps")
        if "grad_norm" in g and "conditional_entropy_fake" in g:
            norm, h_fake = g["grad_norm"], g["conditional_entropy_fake"]
            reference = sorted(self._early_g_norms)[len(self._early_g_norms) // 2]
            condition = norm < self.vanished_fraction * reference and h_fake > self.certain_fraction * self.log_k
            if self._held("discriminator_overpowering", condition, step, losses):
                new += self._fire("discriminator_overpowering", step, epoch,
                                  f"G's gradient norm {norm:.2e} < {self.vanished_fraction} x its early value "
                                  f"{reference:.2e}, conditional entropy on generated images {h_fake:.3f} near "
                                  f"log K = {self.log_k:.3f}")
        if "conditional_entropy_real" in d or "accuracy_lab" in d:
            at_chance = d.get("conditional_entropy_real", self.log_k) > self.certain_fraction * self.log_k
            if "accuracy_lab" in d:
                at_chance = at_chance and d["accuracy_lab"] <= 2 / math.exp(self.log_k)
            if self._held("stuck", at_chance, step, losses):
                recent = [l for s, l in self._streaks["stuck"] if s >= step - self.window_steps]
                if all(max(column) - min(column) < self.flat_range for column in zip(*recent)):
                    new += self._fire("stuck", step, epoch,
                                      f"D at chance on real images and every loss within {self.flat_range:.3f} nats "
                                      f"for {self.window_steps} steps")
        return new

    def _held(self, name: str, condition: bool, step: int, losses: tuple[float, ...]) -> bool:
        """Track the records on which ``condition`` held in a row; True once they span the window."""
        streak = self._streaks.setdefault(name, [])
        if not condition:
            streak.clear()
            return False
        streak.append((step, losses))
        spans = step - streak[0][0] >= self.window_steps and len(streak) >= self.min_logs
        return spans and name not in self.fired

    def fire(self, name: str, step: int, epoch: int, message: str) -> TrainingWarning | None:
        """Raise warning ``name`` with ``message``, unless it was raised before (then None)."""
        fired = self._fire(name, step, epoch, message)
        return fired[0] if fired else None

    def _fire(self, name: str, step: int, epoch: int, message: str) -> list[TrainingWarning]:
        if name in self.fired:
            return []
        warning = TrainingWarning(name, step, epoch, message)
        self.warnings.append(warning)
        self.report(warning.line())
        return [warning]
