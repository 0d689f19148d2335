"""What training looks like from the inside: gradient norms, D-scores, and warnings of known failures.

The trainer logs, every ``log_every`` steps, each loss term, the gradient norms of D and G, the
class histogram of generated images and two D-scores. A `HealthMonitor` reads those records and
warns, once each, when a known failure mode sets in:

- ``non_finite``: a loss is NaN or infinite; the trainer stops and keeps its last good weights.
- ``generator_collapse``: D sorts generated images into few classes (their marginal entropy stays
  far below log K), i.e. the generator makes one or a few kinds of image.
- ``discriminator_overpowering``: D is sure generated images are fake (in CatGAN: maximally
  uncertain about their class, conditional entropy near log K) while G's gradients have all but
  vanished, so G has nothing left to learn from.
- ``stuck``: D is at chance on real images (conditional entropy near log K, and chance accuracy
  on the labelled batch when there is one) and the losses do not move.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from catgan.config import CatGANError

__all__ = [
    "HealthMonitor",
    "TrainingDiverged",
    "TrainingWarning",
    "WARNINGS",
    "class_histogram",
    "d_score",
    "gradient_norm",
]

# Each warning's name and what to try, printed once when it first fires.
WARNINGS = {
    "non_finite": "A loss or weight became NaN or infinite; training stopped. Try a lower --lr, or more noise on D "
                  "(--d-noise), and check the data for NaN pixels",
    "generator_collapse": "The generator makes few kinds of image (D puts its samples into few classes). "
                          "Try a lower generator learning rate, more D noise (--d-noise), or a longer schedule",
    "discriminator_overpowering": "The discriminator is sure the generated images are fake and the generator's "
                                  "gradients have vanished. Try more D noise (--d-noise), a narrower D "
                                  "(--d-width), or a lower learning rate",
    "stuck": "The discriminator is at chance on real images and the losses do not move. Check the data "
             "(are images scaled to [-1, 1]?), try a higher --lr, or a wider D",
}


class TrainingDiverged(CatGANError):
    """Training stopped at a non-finite loss or weight; the run keeps its last good weights."""


def gradient_norm(module: nn.Module) -> Tensor:
    """The L2 norm of all of ``module``'s parameter gradients taken together (0 when none)."""
    norms = [torch.linalg.vector_norm(p.grad) for p in module.parameters() if p.grad is not None]
    if not norms:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(norms))


def class_histogram(logits: Tensor) -> Tensor:
    """The fraction of a batch (B, K) assigned to each of the K classes by its largest logit: (K,)."""
    counts = torch.bincount(logits.detach().argmax(dim=1), minlength=logits.shape[1])
    return counts.float() / len(logits)


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

    Args:
        num_clusters: K, D's number of outputs.
        patience: how many consecutive logged records a condition must hold before it is reported.
        collapse_fraction: generated images' marginal entropy below this fraction of log K counts
            as collapse.
        certain_fraction: a conditional entropy above this fraction of log K counts as D being at
            chance (on real images) or sure that images are fake (on generated ones).
        vanished_fraction: G's gradient norm below this fraction of its typical early value counts
            as vanished.
        flat_fraction: losses whose range over ``patience`` records stays below this fraction of
            log K are flat.
        report: called with each new warning's line.
    """

    def __init__(
        self,
        num_clusters: int,
        patience: int = 5,
        collapse_fraction: float = 0.5,
        certain_fraction: float = 0.95,
        vanished_fraction: float = 0.01,
        flat_fraction: float = 0.01,
        report: Callable[[str], None] = print,
    ) -> None:
        self.log_k = math.log(num_clusters)
        self.patience = patience
        self.collapse_fraction, self.certain_fraction = collapse_fraction, certain_fraction
        self.vanished_fraction, self.flat_range = vanished_fraction, flat_fraction * self.log_k
        self.report = report
        self.warnings: list[TrainingWarning] = []
        self._streaks: dict[str, int] = {}
        self._early_g_norms: list[float] = []
        self._recent_losses: deque[tuple[float, ...]] = deque(maxlen=patience)

    @property
    def fired(self) -> set[str]:
        return {w.name for w in self.warnings}

    def observe(self, record: dict[str, Any], step: int, epoch: int) -> list[TrainingWarning]:
        """Read one logged record (``d`` and ``g`` hold D's and G's terms as floats); return the
        warnings it raised for the first time."""
        d, g = record.get("d", {}), record.get("g", {})
        new = []
        losses = [value for key, value in (*d.items(), *g.items()) if key.startswith("loss") or key == "cross_entropy"]
        if any(not math.isfinite(value) for value in losses):
            bad = ", ".join(f"{k}={v}" for k, v in (*d.items(), *g.items()) if not math.isfinite(v))
            return self._fire("non_finite", step, epoch, f"non-finite loss terms: {bad}")
        if "marginal_entropy_fake" in g:
            h = g["marginal_entropy_fake"]
            if self._held("generator_collapse", h < self.collapse_fraction * self.log_k):
                new += self._fire("generator_collapse", step, epoch,
                                  f"marginal entropy of generated images {h:.3f} < {self.collapse_fraction} x log K "
                                  f"= {self.collapse_fraction * self.log_k:.3f} for {self.patience} logs")
        if "grad_norm" in g and "conditional_entropy_fake" in g:
            norm, h_fake = g["grad_norm"], g["conditional_entropy_fake"]
            if len(self._early_g_norms) < self.patience:
                self._early_g_norms.append(norm)
            reference = sorted(self._early_g_norms)[len(self._early_g_norms) // 2]
            vanished = len(self._early_g_norms) == self.patience and norm < self.vanished_fraction * reference
            if self._held("discriminator_overpowering", vanished and h_fake > self.certain_fraction * self.log_k):
                new += self._fire("discriminator_overpowering", step, epoch,
                                  f"G's gradient norm {norm:.2e} < {self.vanished_fraction} x its early value "
                                  f"{reference:.2e}, conditional entropy on generated images {h_fake:.3f} near "
                                  f"log K = {self.log_k:.3f}")
        if "conditional_entropy_real" in d or "accuracy_lab" in d:
            at_chance = d.get("conditional_entropy_real", self.log_k) > self.certain_fraction * self.log_k
            if "accuracy_lab" in d:
                at_chance = at_chance and d["accuracy_lab"] <= 2 * math.exp(-self.log_k)
            self._recent_losses.append(tuple(losses))
            flat = len(self._recent_losses) == self.patience and all(
                max(column) - min(column) < self.flat_range for column in zip(*self._recent_losses)
            )
            if at_chance and flat and "stuck" not in self.fired:
                new += self._fire("stuck", step, epoch,
                                  f"losses flat within {self.flat_range:.3f} nats over {self.patience} logs, D at "
                                  "chance on real images")
        return new

    def _held(self, name: str, condition: bool) -> bool:
        """Count consecutive records on which ``condition`` held; True once they reach patience."""
        self._streaks[name] = self._streaks.get(name, 0) + 1 if condition else 0
        return self._streaks[name] >= self.patience and name not in self.fired

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
