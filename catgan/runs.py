"""Run directories: their files, checkpoints and image grids.

A run directory holds:

- ``config.json``: the run's configuration (`TrainConfig`), with the number of epochs resolved;
- ``labelled_indices.json``: the indices (into the training split) of the labelled images;
- ``metrics.jsonl``: one JSON object per logged step, and one per evaluation;
- ``checkpoint.pt``: configuration, networks and optimisers, readable with ``weights_only=True``;
- ``samples.png``: a grid of generated images from fixed noise;
- ``samples_by_class.png``: generated images in rows by the class D gives them;
- ``samples/epoch-NNNN.png``: the fixed-noise grid along training (with ``sample_every``);
- ``tensorboard/``: TensorBoard event files (with ``tensorboard``);
- ``plots/``: PNG curves drawn by ``catgan plot``;
- ``summary.json``: the final figures (``test_error`` in percent, ``wall_seconds``, ...) and the
  warnings raised during training.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from catgan.config import CatGANError, TrainConfig

if TYPE_CHECKING:
    from catgan.models import CatGAN

CONFIG = "config.json"
LABELLED = "labelled_indices.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
SAMPLES = "samples.png"
SUMMARY = "summary.json"
CLASS_SAMPLES = "samples_by_class.png"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
CLUSTER_SHEET = "clusters.png"  # clustering runs: each cluster's most confident images (catgan.clusters)
CLUSTER_SIZES = "cluster_sizes.csv"
RUN_FILES = (CONFIG, LABELLED, METRICS, CHECKPOINT, SAMPLES, CLASS_SAMPLES, SUMMARY, CLUSTER_SHEET, CLUSTER_SIZES)


def plan_run_dir(config: TrainConfig) -> Path:
    """Check that ``config.out_dir`` is writable and choose a run directory that does not exist.

    Nothing is created but ``out_dir`` itself. A name given in ``config.name`` that is already
    taken is refused (an earlier run is never overwritten); a default name gets a numeric suffix.
    """
    out_dir = Path(config.out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as err:
        raise CatGANError(f"output folder {out_dir} is not writable: {err.strerror or err}") from None
    if config.name is not None:
        run_dir = out_dir / config.name
        if run_dir.exists():
            raise CatGANError(f"run directory {run_dir} already exists; choose another `name`")
        return run_dir
    labels = {0: f"k{config.clusters or 'auto'}", "all": "all-labels"}.get(config.labels_per_class)
    labels = labels or f"{config.labels_per_class}lpc"
    method = "" if config.method == "catgan" else f"-{config.method}"
    stem = f"{config.dataset}-{labels}{method}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = out_dir / stem, 2
    while run_dir.exists():
        run_dir, suffix = out_dir / f"{stem}-{suffix}", suffix + 1
    return run_dir


def create_run_dir(run_dir: Path) -> None:
    """Create the run directory planned by `plan_run_dir`; refuse if it appeared meanwhile."""
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise CatGANError(f"run directory {run_dir} already exists; choose another `name`") from None
    except OSError as err:
        raise CatGANError(f"cannot create run directory {run_dir}: {err.strerror or err}") from None


def set_aside(run_dir: Path) -> Path:
    """Rename an unfinished run directory to ``NAME.incomplete`` (or ``NAME.incomplete-N`` when
    that is taken), so that the run can start again under its name; returns the new path."""
    aside, n = run_dir.with_name(run_dir.name + ".incomplete"), 1
    while aside.exists():
        aside, n = run_dir.with_name(f"{run_dir.name}.incomplete-{n}"), n + 1
    return run_dir.rename(aside)


def write_start_files(run_dir: Path, config: TrainConfig, dataset: str, labelled) -> None:
    """A run's ``config.json`` and ``labelled_indices.json`` (the indices into the training split)."""
    write_json(run_dir / CONFIG, config.to_dict())
    write_json(run_dir / LABELLED, {"dataset": dataset, "seed": config.seed, "split": "train",
                                    "indices": [int(i) for i in labelled]})


def read_labelled(run_dir: str | os.PathLike) -> list[int]:
    """The indices (into the training split) of a run's labelled images, from its ``labelled_indices.json``."""
    path = Path(run_dir) / LABELLED
    if not path.is_file():
        raise CatGANError(f"{run_dir} has no {LABELLED}: not a catgan run directory")
    return json.loads(path.read_text())["indices"]


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically (a temporary file renamed into place)."""
    _atomic_write(path, lambda f: f.write((json.dumps(value, indent=2) + "\n").encode()))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Save a checkpoint atomically: a kill during the save leaves the previous one intact."""
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a run's checkpoint with ``weights_only=True``; refuse missing, foreign or unsafe files."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise CatGANError(f"no such run directory: {run_dir}")
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise CatGANError(f"{run_dir} is not a catgan run directory (no {CHECKPOINT})")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        raise CatGANError(f"refusing to load {path}: it holds more than weights ({reason})") from None
    except Exception as err:  # truncated or not a torch file at all
        raise CatGANError(f"cannot read {path}: {err}") from None
    if not isinstance(checkpoint, dict) or "config" not in checkpoint or "generator" not in checkpoint:
        raise CatGANError(f"{path} is not a catgan checkpoint")
    return checkpoint


def image_grid(images: Tensor, nrow: int | None = None, min_tile: int = 32) -> Tensor:
    """Images in [-1, 1] (B, C, H, W) tiled ``nrow`` per row (default: a square) into one image
    (C, H', W') in [0, 1] with white borders, small images enlarged (nearest) to at least
    ``min_tile`` pixels so that 8x8 digits stay visible."""
    from torchvision.utils import make_grid

    images = images.detach().float().cpu()
    nrow = nrow or math.ceil(math.sqrt(len(images)))
    scale = max(1, -(-min_tile // max(images.shape[-2:])))
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="nearest")
    return make_grid(images * 0.5 + 0.5, nrow=nrow, padding=2, pad_value=1.0).clamp(0, 1)


def save_image_grid(images: Tensor, path: Path, nrow: int | None = None, min_tile: int = 32) -> None:
    """Save images in [-1, 1] (B, C, H, W) as one PNG grid (see `image_grid`)."""
    from torchvision.utils import save_image

    save_image(image_grid(images, nrow, min_tile), path)


def load_run(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[TrainConfig, CatGAN, list[str]]:
    """Rebuild a run's configuration, networks (on ``device``) and class names from its checkpoint
    (see `catgan.state.load_networks`)."""
    from catgan.state import load_networks

    config, model, classes = load_networks(load_checkpoint(run_dir), str(run_dir))
    return config, model.to(device), classes


def save_samples(model: CatGAN, path: Path, seed: int, n: int = 100) -> None:
    """A grid of ``n`` images that ``model``'s generator (in evaluation mode) draws from noise fixed by ``seed``."""
    from catgan.models import evaluation_mode

    z = model.sample_latent(n, generator=torch.Generator().manual_seed(seed))
    with evaluation_mode(model.generator), torch.no_grad():
        images = model.generator(z)
    save_image_grid(images, path)


def git_commit(folder: Path | None = None) -> str | None:
    """The commit of the git checkout holding ``folder`` (default: this package), marked when the
    files under ``folder`` differ from it; None outside a git checkout."""
    package = folder or Path(__file__).parent

    def git(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *words], cwd=package, capture_output=True, text=True, timeout=10)

    try:
        head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", ".")
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (with uncommitted changes)" if status.stdout.strip() else "")
