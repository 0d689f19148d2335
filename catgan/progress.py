"""Progress bars for the applications (the ``catgan`` command, the estimators' ``verbose``),
driven by the trainer's ``on_step`` hook; the library itself draws none."""

from __future__ import annotations

import sys


class ProgressBar:
    """A tqdm bar over a run's steps, created at the trainer's first call; warnings written with
    `write` appear above it. Use as a context manager, or call `close`."""

    def __init__(self, description: str, enabled: bool = True) -> None:
        self.description, self.enabled = description, enabled
        self._bar = None

    def __call__(self, step: int, total: int, record: dict | None) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=step, desc=self.description, unit="step",
                             disable=not self.enabled, dynamic_ncols=True)
            return
        if record is not None:
            d, g = record.get("d", {}), record.get("g", {})
            shown = {"loss_d": d.get("loss_d"), "loss_g": g.get("loss_g"), "ce": d.get("cross_entropy")}
            self._bar.set_postfix({name: f"{value:.3f}" for name, value in shown.items() if value is not None},
                                  refresh=False)
        self._bar.update(step - self._bar.n)  # back after a restart, else on by one

    def write(self, line: str) -> None:
        """A line on stderr, above the bar."""
        from tqdm.auto import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
