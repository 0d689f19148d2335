"""What a run records as it trains: metrics.jsonl, TensorBoard's event files, the training clock,
and the summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from torch import Tensor

from catgan import runs
from catgan.config import CatGANError, TrainConfig
from catgan.diagnostics import d_score

__all__ = ["Clock", "Records", "check_tensorboard"]


class Clock:
    """Training seconds: this process's, plus those recorded in the checkpoint it resumed from
    (work done after that checkpoint by a killed process is not counted); and the time since the
    last checkpoint."""

    def __init__(self) -> None:
        self.elapsed, self.started = 0.0, time.perf_counter()
        self.last_save = self.started

    def restart(self, elapsed: float) -> None:
        """Count on from ``elapsed`` seconds, starting now."""
        self.elapsed, self.started = elapsed, time.perf_counter()

    def seconds(self) -> float:
        return self.elapsed + time.perf_counter() - self.started

    def saved(self) -> None:
        self.last_save = time.perf_counter()

    def minutes_since_save(self) -> float:
        return (time.perf_counter() - self.last_save) / 60


class Records:
    """The records of one process: appended to ``run_dir``'s metrics.jsonl (when there is a run
    directory) and kept in ``records``; with ``tensorboard``, scalars also go to TensorBoard."""

    def __init__(self, run_dir: Path | None, tensorboard: bool) -> None:
        self.path = run_dir / runs.METRICS if run_dir is not None else None
        self.records: list[dict[str, Any]] = []
        self._tensorboard = tensorboard and run_dir is not None
        self._run_dir = run_dir
        self._writer = None

    def __enter__(self) -> "Records":
        if self._tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self._run_dir / runs.TENSORBOARD_DIR))
        return self

    def __exit__(self, *exc_info) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def append(self, step: int, epoch: int, record: dict[str, Any]) -> dict[str, Any]:
        record = {"step": step, "epoch": epoch, **record}
        self.records.append(record)
        if self.path is not None:
            runs.append_jsonl(self.path, record)
        return record

    def training(self, step: int, epoch: int, seconds: float, lrs: tuple[float, float],
                 terms_d: dict[str, Tensor], terms_g: dict[str, Tensor]) -> dict[str, Any]:
        """Record the loss terms of D's and G's latest updates, the learning rates and the D-scores."""
        d, g = _plain(terms_d), _plain(terms_g)
        histogram = g.pop("class_histogram", None)
        record: dict[str, Any] = {"seconds": round(seconds, 3), "lr_d": lrs[0], "lr_g": lrs[1], "d": d, "g": g}
        if "marginal_entropy_real" in d:
            record["d_score_real"] = d_score(d["marginal_entropy_real"], d["conditional_entropy_real"])
        if "marginal_entropy_fake" in g:
            record["d_score_fake"] = d_score(g["marginal_entropy_fake"], g["conditional_entropy_fake"])
        if histogram is not None:
            record["fake_class_histogram"] = histogram
        record = self.append(step, epoch, record)
        self.scalars(step, {
            **{f"d/{name}": value for name, value in d.items()}, **{f"g/{name}": value for name, value in g.items()},
            **{name: value for name, value in record.items() if name.startswith(("lr_", "d_score"))},
            **{f"fake_class/{k}": share for k, share in enumerate(histogram or [])},
        })
        return record

    def test(self, step: int, epoch: int, seconds: float, figures: dict[str, float], scalars: bool = False) -> None:
        """Record test figures with the training seconds until they were known (and, with
        ``scalars``, show them in TensorBoard)."""
        self.append(step, epoch, {"split": "test", "seconds": round(seconds, 3), **figures})
        if scalars:
            self.scalars(step, {f"test/{name}": value for name, value in figures.items()})

    def scalars(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is not None:
            for name, value in scalars.items():
                self._writer.add_scalar(name, value, step)

    def size(self) -> int:
        """The bytes metrics.jsonl holds (0 without one)."""
        return self.path.stat().st_size if self.path is not None and self.path.is_file() else 0

    def cut_back(self, size: int, step: int, report: Callable[[str], None]) -> None:
        """Cut metrics.jsonl back to its first ``size`` bytes (as at a checkpoint of ``step``)."""
        if self.path is None or not self.path.is_file():
            return
        if self.path.stat().st_size < size:
            report(f"note: {self.path} holds less than when the checkpoint was saved; some records before step "
                   f"{step} are missing")
        else:
            with open(self.path, "r+b") as f:
                f.truncate(size)


def check_tensorboard(config: TrainConfig) -> None:
    if config.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise CatGANError("`tensorboard` needs the tensorboard package: pip install tensorboard")


def _plain(terms: dict[str, Tensor]) -> dict[str, Any]:
    """Detached tensors as floats (scalars) or lists of floats."""
    return {name: float(value) if value.dim() == 0 else value.tolist() for name, value in terms.items()}
