"""Pictures of a run: generated images sorted by D's class, and training curves from metrics.jsonl.

``class_grid`` shows what each class or cluster of D means: generated images, one row per class,
each row holding the images D is most sure belong to it. ``plot_run`` (the ``catgan plot``
command) draws the logged loss terms, entropies, gradient norms, D-scores, the classes D gives
generated images, and the test figures, one PNG each.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from catgan.config import CatGANError
from catgan.models import CatGAN, evaluation_mode
from catgan.runs import METRICS, PLOTS_DIR, image_grid

__all__ = ["class_grid", "class_sorted_samples", "plot_run"]


@torch.no_grad()
def class_sorted_samples(
    model: CatGAN,
    per_class: int = 10,
    pool_per_class: int = 20,
    seed: int = 0,
    batch_size: int = 500,
    discriminator: torch.nn.Module | None = None,
) -> tuple[list[Tensor], Tensor]:
    """Generated images grouped by D's predicted class, most confident first.

    Draws ``K * per_class * pool_per_class`` images from fixed noise (G and D in evaluation mode;
    ``discriminator`` replaces ``model.discriminator``, e.g. its weight average). Returns, for each
    class k, up to ``per_class`` images (n_k, C, H, W) that D assigns to k, sorted by D's
    probability of k, and the share of the pool D assigns to each class (K,).
    """
    generator, discriminator = model.generator, discriminator or model.discriminator
    k = model.num_clusters
    z = model.sample_latent(k * per_class * pool_per_class, generator=torch.Generator().manual_seed(seed))
    images, probs = [], []
    with evaluation_mode(generator, discriminator):
        for start in range(0, len(z), batch_size):
            x = generator(z[start : start + batch_size])
            images.append(x.cpu())
            probs.append(torch.softmax(discriminator(x).float(), dim=1).cpu())
    images, probs = torch.cat(images), torch.cat(probs)
    predicted = probs.argmax(dim=1)
    rows = []
    for c in range(k):
        members = (predicted == c).nonzero().flatten()
        order = probs[members, c].argsort(descending=True)[:per_class]
        rows.append(images[members[order]])
    share = torch.bincount(predicted, minlength=k).float() / len(predicted)
    return rows, share


def class_grid(
    model: CatGAN,
    path: Path,
    class_names: list[str] | None = None,
    per_class: int = 10,
    seed: int = 0,
    discriminator: torch.nn.Module | None = None,
) -> None:
    """Save generated images as a PNG, one row per class or cluster (see `class_sorted_samples`).

    Rows are labelled with the class name (or ``cluster k`` without one) and the share of
    generated images D puts there; a row with fewer images than ``per_class`` is padded with white.
    """
    rows, share = class_sorted_samples(model, per_class, seed=seed, discriminator=discriminator)
    channels, height, width = model.image_shape
    blank = torch.ones(channels, height, width)  # white once mapped from [-1, 1]
    tiles = torch.stack([row[i] if i < len(row) else blank for row in rows for i in range(per_class)])
    grid = image_grid(tiles, nrow=per_class)  # (C, H', W') in [0, 1]
    tile = (grid.shape[1] - 2) / len(rows)  # each row: a tile and its 2-pixel border
    labels = [f"{class_names[c] if class_names else f'cluster {c}'} ({100 * share[c]:.0f}%)" for c in range(len(rows))]
    fig, ax = _figure(1.0 + 0.45 * per_class, 0.45 * len(rows) + 0.6)
    ax.imshow(grid.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks([2 + tile * (r + 0.5) - 1 for r in range(len(rows))], labels, fontsize=8)
    ax.set_xticks([])
    ax.set_title("generated images by D's class\n(share of all generated images)", fontsize=9)
    _save(fig, path)


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Draw a run's logged curves into PNG files (default folder: RUN/plots); return their paths.

    One file per figure, each drawn only when the log holds its data: ``losses.png`` (D's and G's
    losses, the supervised cross-entropy), ``entropies.png`` (marginal and conditional entropies
    on real and generated images, beside log K), ``gradients.png`` (D's and G's gradient norms),
    ``d_scores.png`` (exp(H[p_bar] - E H[p(y|x)]) on real and generated images, beside K),
    ``fake_classes.png`` (the share of generated images D gives each class, over time) and
    ``test.png`` (test error, or clustering accuracy without labels, at each evaluation). A last
    line still being written by a running trainer is skipped.

    Raises:
        CatGANError: not a run directory, nothing logged yet, or the folder cannot be written.
    """
    run_dir = Path(run_dir).expanduser()
    metrics = run_dir / METRICS
    if not metrics.is_file():
        raise CatGANError(f"{run_dir} is not a catgan run directory (no {METRICS})")
    lines = [line for line in metrics.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):  # only the last line may be half-written
                raise CatGANError(f"{metrics} line {number} is not valid JSON: {err}") from None
    logged = [r for r in records if "d" in r]
    tested = [r for r in records if r.get("split") == "test"]
    if not logged and any(r.get("split") == "cross-validation" for r in records):
        raise CatGANError(f"{run_dir} is a plain CNN's run (method cnn): it logs cross-validation folds, not "
                          f"training curves; its summary.json holds them")
    if not logged:
        raise CatGANError(f"{metrics} holds no logged training steps yet")
    out_dir = Path(out_dir).expanduser() if out_dir is not None else run_dir / PLOTS_DIR
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = _draw(run_dir.name, logged, tested, out_dir)
    except OSError as err:
        raise CatGANError(f"cannot write plots into {out_dir}: {err.strerror or err}") from None
    if not written:
        raise CatGANError(f"{metrics} holds nothing that can be drawn (no finite logged values)")
    return written


def _draw(name: str, logged: list[dict], tested: list[dict], out_dir: Path) -> list[Path]:
    """Draw the figures of `plot_run` from the logged and test records; return the files written."""
    steps = [r["step"] for r in logged]
    histograms = [r["fake_class_histogram"] for r in logged if "fake_class_histogram" in r]
    k = len(histograms[0]) if histograms else None

    def series(*keys: str) -> list[float] | None:
        values = []
        for record in logged:
            value = record
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            values.append(math.nan if value is None else value)
        return None if all(math.isnan(v) for v in values) else values

    figures = {
        "losses": ("nats", [("D's loss", series("d", "loss_d")), ("G's loss", series("g", "loss_g")),
                            ("supervised cross-entropy", series("d", "cross_entropy"))], None),
        "entropies": ("nats", [("H[p_bar] real (D maximises)", series("d", "marginal_entropy_real")),
                               ("E H[p(y|x)] real (D minimises)", series("d", "conditional_entropy_real")),
                               ("E H[p(y|G(z))] generated (D maximises, G minimises)", series("d", "conditional_entropy_fake")),
                               ("H[p_bar] generated (G maximises)", series("g", "marginal_entropy_fake"))],
                      ("log K", math.log(k)) if k else None),
        "gradients": ("gradient L2 norm", [("D", series("d", "grad_norm")), ("G", series("g", "grad_norm"))], "log"),
        "d_scores": ("exp(H[p_bar] - E H[p(y|x)])", [("real images", series("d_score_real")),
                                                     ("generated images", series("d_score_fake"))],
                     ("K", k) if k else None),
    }
    written = []
    for figure, (ylabel, lines, extra) in figures.items():
        lines = [(label, values) for label, values in lines if values is not None]
        if not lines:
            continue
        fig, ax = _figure(7, 4)
        for label, values in lines:
            ax.plot(steps, values, label=label, linewidth=1)
        if extra == "log":
            ax.set_yscale("log")
        elif extra is not None:
            ax.axhline(extra[1], color="gray", linestyle="--", linewidth=1, label=extra[0])
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{name}: {figure.replace('_', ' ')}", fontsize=10)
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / f"{figure}.png"))
    if histograms:
        hist_steps = [r["step"] for r in logged if "fake_class_histogram" in r]
        fig, ax = _figure(7, 0.25 * k + 1.5)
        image = ax.imshow(torch.tensor(histograms).T.numpy(), aspect="auto", cmap="viridis", vmin=0,
                          extent=(hist_steps[0], hist_steps[-1], k - 0.5, -0.5), interpolation="nearest")
        fig.colorbar(image, ax=ax, label="share of generated images")
        ax.set_xlabel("step")
        ax.set_ylabel("D's class")
        ax.set_title(f"{name}: classes D gives generated images", fontsize=10)
        written.append(_save(fig, out_dir / "fake_classes.png"))
    if tested:
        key = "clustering_accuracy" if "clustering_accuracy" in tested[0] else "test_error"
        fig, ax = _figure(7, 4)
        ax.plot([r["step"] for r in tested], [r[key] for r in tested], marker="o")
        ax.set_xlabel("step")
        ax.set_ylabel("test error %" if key == "test_error" else "clustering accuracy % (one-to-one)")
        ax.set_title(f"{name}: test split (for the log; nothing is chosen on it)", fontsize=10)
        written.append(_save(fig, out_dir / "test.png"))
    return written


def _figure(width: float, height: float):
    """A matplotlib figure and its axes, outside pyplot (no global state, no display needed)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # labels and title never clipped
    return path
