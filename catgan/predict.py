"""A trained run's predictions on images it has never seen: image files, folders of them, or the
arrays of an ``.npz`` file, written one row per image to a CSV file (``catgan predict``).

Images are made to fit the run as its training data was: image files are resized (bilinear) to
the run's height and width and read as grey or colour to match its channels; arrays must already
have the run's height and width (a grey array may feed a colour run, each channel the same), and
are scaled from uint8 0..255 or floats in [0, 1] to [-1, 1].
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from catgan.config import CatGANError
from catgan.data import IMAGE_SUFFIXES, images_below, read_images, scale_images, to_nchw

__all__ = ["predict_probabilities", "read_inputs", "write_predictions"]

BATCH = 500  # images read and predicted at a time


def read_inputs(inputs: list[str], image_shape: tuple[int, int, int], usable=None) -> tuple[list[str], list]:
    """The names of the images in ``inputs`` (a file's path, or ``FILE.npz[i]``) and where each
    comes from, in order: image files, the images below folders, and the rows of ``.npz`` files
    (their array ``x``, else ``x_test``). Refuses, naming it, an input that is none of these or
    arrays that cannot fit ``image_shape``. ``usable`` (a `catgan.data.Usable`) may drop unreadable
    image files."""
    names, sources = [], []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = images_below(path)
            found = usable(found)[0] if usable is not None and found else found
            if not found:
                raise CatGANError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            names += [str(p) for p in found]
            sources += found
        elif path.suffix.lower() == ".npz" and path.is_file():
            x = _npz_images(path, image_shape)
            names += [f"{path}[{i}]" for i in range(len(x))]
            sources += list(x)
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            kept = usable([path])[0] if usable is not None else [path]
            names += [str(p) for p in kept]
            sources += kept
        else:
            raise CatGANError(f"no such image, folder of images or .npz file: {path}")
    return names, sources


def _npz_images(path: Path, image_shape: tuple[int, int, int]) -> Tensor:
    try:
        with np.load(path, allow_pickle=False) as archive:
            key = next((k for k in ("x", "x_test") if k in archive.files), None)
            if key is None:
                raise CatGANError(f"{path} holds no array named x or x_test")
            x = to_nchw(archive[key], f"{path}: {key}")
    except CatGANError:
        raise
    except Exception as err:  # not a zip, pickled objects, unreadable
        raise CatGANError(f"cannot read {path} as an .npz archive: {err}") from None
    c, h, w = image_shape
    if x.shape[2:] != (h, w) or x.shape[1] not in (1, c):
        raise CatGANError(f"{path}: images of shape {tuple(x.shape[1:])} (C, H, W) cannot feed a run trained on "
                          f"{image_shape}")
    if len(x) == 0:
        raise CatGANError(f"{path} holds no images")
    images = scale_images(x, "its images", str(path))
    return images.expand(-1, c, -1, -1) if images.shape[1] != c else images


def _load(sources: list, image_shape: tuple[int, int, int]) -> Tensor:
    """One batch of ``sources`` (paths or image tensors already scaled) as (B, C, H, W) in [-1, 1]."""
    c, h, w = image_shape
    paths = [s for s in sources if isinstance(s, Path)]
    files = iter(scale_images(read_images(paths, (h, w), grey=c == 1), "images", "image files")) if paths else None
    return torch.stack([next(files) if isinstance(s, Path) else s for s in sources])


@torch.no_grad()
def predict_probabilities(discriminator: nn.Module, sources: list, image_shape: tuple[int, int, int],
                          on_batch: Callable[[int], None] = lambda n: None) -> tuple[Tensor, Tensor | None]:
    """D's class (or cluster) probabilities (N, K) for ``sources`` (from `read_inputs`), read and
    predicted ``BATCH`` at a time (``on_batch`` is told each batch's size); and, for a contact
    sheet, the images themselves when there are at most 10,000 of them (else None)."""
    from catgan.evaluation import predict_logits

    probabilities, kept = [], []
    for start in range(0, len(sources), BATCH):
        x = _load(sources[start : start + BATCH], image_shape)
        probabilities.append(predict_logits(discriminator, x).softmax(dim=1))
        if len(sources) <= 10_000:
            kept.append(x)
        on_batch(len(x))
    return torch.cat(probabilities), (torch.cat(kept) if kept else None)


def write_predictions(path: Path, names: list[str], probabilities: Tensor, classes: list[str] | None) -> None:
    """One CSV row per image: its name, then for a classifier (``classes`` given) the predicted
    class and the probability of each class; for a clustering run, the cluster and D's
    confidence in it."""
    confidence, chosen = probabilities.max(dim=1)
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        if classes is not None:
            out.writerow(["input", "prediction", *(f"p_{name}" for name in classes)])
            for name, k, row in zip(names, chosen.tolist(), probabilities.tolist()):
                out.writerow([name, classes[k], *(f"{p:.6f}" for p in row)])
        else:
            out.writerow(["input", "cluster", "confidence"])
            for name, k, p in zip(names, chosen.tolist(), confidence.tolist()):
                out.writerow([name, k, f"{p:.6f}"])
