"""Datasets as in-memory tensors, and the class-balanced labelled subset.

Every dataset is loaded once into an `ImageData`: float32 images (N, C, H, W) scaled to [-1, 1]
and int64 labels in [0, K). Training draws batches from these tensors by index, so there is no
per-sample Python in the training loop.

Sources:
- ``digits``: scikit-learn's 8x8 digits (shipped with scikit-learn), split into a stratified
  two-thirds training and one-third test set with a fixed seed (the same split for every run).
- ``mnist`` and ``fashion-mnist``: torchvision's MNIST / FashionMNIST under ``data_dir`` (with
  ``download`` for users who are online); offline, the four IDX files (``.gz`` or not) directly
  in ``data_dir`` or in torchvision's ``<data_dir>/<Name>/raw``. Without a ``data_dir``,
  Fashion-MNIST is also looked for in the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``).
- ``cifar10``: ``cifar10.npz`` (x_train, y_train, x_test, y_test) in ``data_dir``, else
  torchvision's CIFAR10.
- ``svhn``: torchvision's SVHN (``train`` and ``test`` splits).
- ``folder``: an image-folder tree, ``data_dir/<class>/<image>``, or ``data_dir/train/<class>/...``
  and ``data_dir/test/<class>/...``; without train/ and test/, a stratified fifth is held out. Or,
  with genuinely unlabelled images: ``data_dir/labelled/<class>/...``, ``data_dir/unlabelled/...``
  (any depth, no classes) and optionally ``data_dir/test/<class>/...``; either of the first two
  may be missing.
- ``arrays``: an ``.npz`` file with x_train, y_train, x_test, y_test (``y_train == -1`` marks an
  unlabelled image; the test arrays may be empty); or `ImageData.from_arrays` for arrays already
  in memory.

Benchmark datasets label every training image, and `labels_per_class` says how many of those
labels training may read. A dataset with unlabelled images records which images carry a label
(`ImageData.labelled`); training then reads every label given.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from catgan.config import CatGANError, TrainConfig

__all__ = ["ImageData", "UNLABELLED", "Usable", "images_below", "load_dataset", "labelled_indices", "read_idx", "read_images"]

DEFAULT_DATA_DIR = Path("data")  # when the configuration names no data_dir
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
DEEP_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}  # PIL modes of more than 8 bits per value
UNLABELLED = -1  # the label of an unlabelled training image, in y_train
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class ImageData:
    """A labelled image dataset held in memory.

    Attributes:
        name: the dataset's name.
        x_train: (N, C, H, W) float32 training images in [-1, 1].
        y_train: (N,) int64 training labels in [0, K), or ``UNLABELLED`` (-1) for an image without one.
        x_test: (M, C, H, W) float32 test images in [-1, 1]; M may be 0 (no test split).
        y_test: (M,) int64 test labels in [0, K).
        classes: the K class names; label k stands for ``classes[k]`` (none when no image is labelled).
        source: where the data was read from, for the log.
        labelled: the indices of the training images that carry a label, when some do not; None
            when every training image is labelled (benchmark data).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    source: str = ""
    labelled: np.ndarray | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        c, h, w = self.image_shape
        given = "" if self.labelled is None else f" ({len(self.labelled)} labelled)"
        return (
            f"{self.name}: {len(self.x_train)} training{given} / {len(self.x_test)} test images, "
            f"{c}x{h}x{w}, {self.num_classes} classes ({self.source})"
        )

    @classmethod
    def from_arrays(
        cls,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        name: str = "arrays",
        source: str = "arrays in memory",
    ) -> "ImageData":
        """Build a dataset from numpy arrays.

        Images may be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3, 4}; the last
        axis is taken as channels when it has 1, 3 or 4 entries and the second does not. uint8
        images are read as 0..255; floating-point images must lie in [0, 1]. Labels may be any
        values; they are mapped to 0..K-1 in sorted order, their original values kept as
        ``classes``. A training label -1 (or "-1") marks an unlabelled image; a dataset with
        any records them in ``labelled``. The test split may be empty.
        """
        x_train, x_test = to_nchw(np.asarray(x_train), "x_train"), to_nchw(np.asarray(x_test), "x_test")
        y_train, y_test = np.asarray(y_train).reshape(-1), np.asarray(y_test).reshape(-1)
        if len(x_test) and x_train.shape[1:] != x_test.shape[1:]:
            raise CatGANError(f"{source}: training images are {x_train.shape[1:]} but test images {x_test.shape[1:]}")
        for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
            if len(x) != len(y):
                raise CatGANError(f"{source}: {len(x)} {split} images but {len(y)} {split} labels")
        if len(x_train) == 0:
            raise CatGANError(f"{source}: the train split is empty")
        given = (y_train != UNLABELLED) if np.issubdtype(y_train.dtype, np.number) else (y_train != str(UNLABELLED))
        classes = np.unique(y_train[given] if given.any() else y_test)  # no training label: clustering, scored
        if given.any() and len(classes) < 2:
            raise CatGANError(f"{source}: the training labels hold only one class ({classes[0]})")
        unseen = np.setdiff1d(np.unique(y_test), classes)
        if len(unseen):
            raise CatGANError(f"{source}: test labels {unseen[:5].tolist()} do not occur in the training labels")
        y_train_idx = np.full(len(y_train), UNLABELLED, dtype=np.int64)
        y_train_idx[given] = np.searchsorted(classes, y_train[given])
        return cls(
            name=name,
            x_train=scale_images(x_train, "x_train", source),
            y_train=torch.from_numpy(y_train_idx),
            x_test=scale_images(x_test, "x_test", source) if len(x_test) else torch.empty((0, *x_train.shape[1:])),
            y_test=torch.from_numpy(np.searchsorted(classes, y_test).astype(np.int64)),
            classes=[str(c) for c in classes.tolist()],
            source=source,
            labelled=None if given.all() else np.flatnonzero(given).astype(np.int64),
        )


def to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """Images (N, H, W), (N, C, H, W) or (N, H, W, C) as (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise CatGANError(f"{what} must have 3 or 4 dimensions (N, H, W[, C]), got shape {x.shape}")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def scale_images(x: np.ndarray, what: str, source: str) -> Tensor:
    """uint8 0..255 or float [0, 1] -> float32 [-1, 1]."""
    if x.dtype == np.uint8:
        return torch.from_numpy(x.astype(np.float32)).div_(127.5).sub_(1.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise CatGANError(f"{source}: {what} must be uint8 (0..255) or floating point in [0, 1], got {x.dtype}")
    lo, hi = float(np.min(x)), float(np.max(x))
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
        raise CatGANError(f"{source}: floating-point {what} must lie in [0, 1], found values in [{lo:g}, {hi:g}]")
    return torch.from_numpy(x.astype(np.float32)).mul_(2.0).sub_(1.0)


def labelled_indices(y: Tensor | np.ndarray, per_class: int | str, seed: int) -> np.ndarray:
    """Indices of a class-balanced labelled subset: ``per_class`` images of every class.

    The draw depends only on the labels and ``seed``. Indices are sorted; 0 per class gives an
    empty subset, ``"all"`` every index.
    """
    y = np.asarray(y)
    if per_class == "all":
        return np.arange(len(y), dtype=np.int64)
    classes, counts = np.unique(y, return_counts=True)
    if per_class > counts.min():
        smallest = classes[counts.argmin()]
        raise CatGANError(
            f"`labels_per_class` {per_class} is more than the training split holds for class {smallest} "
            f"({counts.min()} images)"
        )
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), size=per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not, checking its header and size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise CatGANError(f"cannot read {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise CatGANError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CatGANError(f"{path} is truncated (incomplete header)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise CatGANError(f"{path} holds {len(raw)} bytes, its header announces {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_dataset(config: TrainConfig) -> ImageData:
    """Load the dataset that ``config`` names, raising `CatGANError` with a one-line reason."""
    loaders = {
        "digits": _load_digits,
        "mnist": _load_mnist_like,
        "fashion-mnist": _load_mnist_like,
        "cifar10": _load_cifar10,
        "svhn": _load_svhn,
        "folder": _load_folder,
        "arrays": _load_npz_from_config,
    }
    return loaders[config.dataset](config)


def _data_dir(config: TrainConfig, required: bool = False) -> Path:
    """The configuration's data folder (or file), ``./data`` when it names none."""
    if config.data_dir is None:
        if required:
            raise CatGANError(f"`dataset` {config.dataset} needs `data_dir` to say where the data is")
        return DEFAULT_DATA_DIR
    return Path(config.data_dir).expanduser()


def _load_digits(config: TrainConfig) -> ImageData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=1 / 3, stratify=digits.target, random_state=0
    )
    return ImageData.from_arrays(
        x_train, y_train, x_test, y_test, name="digits", source="scikit-learn, stratified 1/3 test split, seed 0"
    )


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in ``folder`` (plain or .gz), or None when any is missing."""
    found = []
    for stem in _IDX_FILES:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                found.append(candidate)
                break
        else:
            return None
    return found


def _load_mnist_like(config: TrainConfig) -> ImageData:
    from torchvision import datasets

    torchvision_class = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[config.dataset]
    root = _data_dir(config)
    raw_dir = root / torchvision_class.__name__ / "raw"
    extracted = all((raw_dir / stem).is_file() for stem in _IDX_FILES)
    if config.download or extracted:
        train = _torchvision(torchvision_class, config, root=str(root), train=True)
        test = _torchvision(torchvision_class, config, root=str(root), train=False)
        return ImageData.from_arrays(
            train.data.numpy(),
            train.targets.numpy(),
            test.data.numpy(),
            test.targets.numpy(),
            name=config.dataset,
            source=f"torchvision {torchvision_class.__name__} in {root}",
        )
    folders = [root, raw_dir]
    if config.dataset == "fashion-mnist" and config.data_dir is None:
        folders.append(FASHION_MNIST_DEBIAN_DIR)
    for folder in folders:
        files = _find_idx_files(folder)
        if files is not None:
            x_train, y_train, x_test, y_test = (read_idx(f) for f in files)
            return ImageData.from_arrays(
                x_train, y_train, x_test, y_test, name=config.dataset, source=f"IDX files in {folder}"
            )
    searched = ", ".join(str(f) for f in folders)
    raise CatGANError(
        f"{config.dataset} not found: no {_IDX_FILES[0]}[.gz] and its three companions in {searched}; "
        f"set `download` to fetch it, or `data_dir` to point at it"
    )


def _torchvision(dataset_class, config: TrainConfig, **kwargs):
    """Open a torchvision dataset, turning its failures (not found, offline, bad checksum) into one line."""
    try:
        return dataset_class(download=config.download, **kwargs)
    except Exception as err:  # torchvision raises RuntimeError, URLError, OSError, ... here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        action = "download" if config.download else "find"
        raise CatGANError(f"could not {action} {config.dataset} in {kwargs['root']}: {reason}") from None


def _load_cifar10(config: TrainConfig) -> ImageData:
    from torchvision import datasets

    root = _data_dir(config)
    if (root / "cifar10.npz").is_file():
        return _load_npz(root / "cifar10.npz", name="cifar10")
    train = _torchvision(datasets.CIFAR10, config, root=str(root), train=True)
    test = _torchvision(datasets.CIFAR10, config, root=str(root), train=False)
    return ImageData.from_arrays(
        train.data, np.array(train.targets), test.data, np.array(test.targets),
        name="cifar10", source=f"torchvision CIFAR10 in {root}",
    )


def _load_svhn(config: TrainConfig) -> ImageData:
    from torchvision import datasets

    root = str(_data_dir(config))
    train = _torchvision(datasets.SVHN, config, root=root, split="train")
    test = _torchvision(datasets.SVHN, config, root=root, split="test")
    return ImageData.from_arrays(
        train.data, train.labels, test.data, test.labels, name="svhn", source=f"torchvision SVHN in {root}"
    )


def _load_npz_from_config(config: TrainConfig) -> ImageData:
    path = _data_dir(config, required=True)
    if path.is_dir():
        candidates = sorted(path.glob("*.npz"))
        if len(candidates) != 1:
            raise CatGANError(f"{path} must hold exactly one .npz file for `dataset` arrays, found {len(candidates)}")
        path = candidates[0]
    return _load_npz(path, name="arrays")


def _load_npz(path: Path, name: str) -> ImageData:
    if not path.is_file():
        raise CatGANError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in ARRAY_KEYS if key not in archive.files]
            if missing:
                raise CatGANError(f"{path} lacks the arrays {', '.join(missing)} (needs {', '.join(ARRAY_KEYS)})")
            arrays = [archive[key] for key in ARRAY_KEYS]
    except CatGANError:
        raise
    except Exception as err:  # zipfile.BadZipFile, ValueError (pickled objects), OSError
        raise CatGANError(f"cannot read {path} as an .npz archive: {err}") from None
    return ImageData.from_arrays(*arrays, name=name, source=f"arrays in {path}")


def _load_folder(config: TrainConfig) -> ImageData:
    root = _data_dir(config, required=True)
    if not root.is_dir():
        raise CatGANError(f"no such folder: {root}")
    size, usable = config.image_size, Usable(config.skip_unreadable)
    if (root / "labelled").is_dir() or (root / "unlabelled").is_dir():
        return _load_partly_labelled_folder(root, size, usable)
    if (root / "train").is_dir() and (root / "test").is_dir():
        (train_paths, y_train), (test_paths, y_test) = (usable(*_class_tree(root / "train")),
                                                        usable(*_class_tree(root / "test")))
        grey = _all_grey(train_paths + test_paths, root)
        x_train, x_test = read_images(train_paths, size, grey), read_images(test_paths, size, grey)
        source = f"image folders {root}/train and {root}/test{usable.said()}"
    else:
        from sklearn.model_selection import train_test_split

        paths, y = usable(*_class_tree(root))
        x = read_images(paths, size, _all_grey(paths, root))
        try:
            x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
        except ValueError as err:
            raise CatGANError(f"{root}: cannot hold out a stratified fifth for testing: {err}") from None
        source = f"image folder {root}, stratified 1/5 test split, seed 0{usable.said()}"
    return ImageData.from_arrays(x_train, y_train, x_test, y_test, name="folder", source=source)


def _load_partly_labelled_folder(root: Path, size: int, usable: "Usable") -> ImageData:
    """``root/labelled/<class>/...``, ``root/unlabelled/...`` and an optional ``root/test/<class>/...``."""
    others = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                    and d.name not in ("labelled", "unlabelled", "test"))
    if others:
        raise CatGANError(f"{root} holds labelled/ or unlabelled/, so its other folders would not be read "
                          f"({', '.join(others)}); move them into labelled/<class>/, unlabelled/ or test/<class>/")
    labelled, labels = usable(*_class_tree(root / "labelled")) if (root / "labelled").is_dir() else ([], [])
    unlabelled = usable(images_below(root / "unlabelled"))[0] if (root / "unlabelled").is_dir() else []
    test, test_labels = usable(*_class_tree(root / "test")) if (root / "test").is_dir() else ([], [])
    if not labelled and not unlabelled:
        raise CatGANError(f"{root} holds no images in labelled/<class>/ or unlabelled/")
    grey = _all_grey(labelled + unlabelled + test, root)
    x_train = read_images(labelled + unlabelled, size, grey)
    y_train = np.array(labels + [str(UNLABELLED)] * len(unlabelled))
    x_test = read_images(test, size, grey) if test else np.zeros((0, *x_train.shape[1:]), dtype=np.uint8)
    parts = [f"{len(labelled)} labelled", f"{len(unlabelled)} unlabelled", f"{len(test)} test"]
    data = ImageData.from_arrays(x_train, y_train, x_test, np.array(test_labels), name="folder",
                                 source=f"image folder {root}: {', '.join(parts)}{usable.said()}")
    if data.labelled is None:  # no unlabelled images: still every given label, not a per-class draw
        data.labelled = np.arange(len(labelled), dtype=np.int64)
    return data


class Usable:
    """With ``skip``, drops the image files PIL cannot open and decode (counting them); without it,
    passes every file on, so that the first unreadable one is named in an error when read."""

    def __init__(self, skip: bool) -> None:
        self.skip, self.skipped = skip, 0

    def __call__(self, paths: list[Path], labels: list[str] | None = None) -> tuple[list[Path], list[str]]:
        labels = [""] * len(paths) if labels is None else labels
        if not self.skip:
            return paths, labels
        from PIL import Image

        kept = []
        for path, label in zip(paths, labels):
            try:
                with Image.open(path) as im:
                    im.load()
                kept.append((path, label))
            except Exception:  # PIL raises OSError, SyntaxError, ValueError, ... on broken files
                self.skipped += 1
        return [path for path, _ in kept], [label for _, label in kept]

    def said(self) -> str:
        """The count for the data's description ("" when nothing was skipped)."""
        return f"; {self.skipped} unreadable image files skipped" if self.skipped else ""


def _class_tree(root: Path) -> tuple[list[Path], list[str]]:
    """The images of ``root/<class>/...`` (any depth below each class) and their class names."""
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels = [], []
    for class_dir in class_dirs:
        found = images_below(class_dir)
        paths += found
        labels += [class_dir.name] * len(found)
    if not paths:
        raise CatGANError(f"{root} holds no images in class sub-folders ({root}/<class>/<image>.png)")
    if len(set(labels)) < 2:
        raise CatGANError(f"{root} holds images of only one class ({labels[0]}); at least two are needed")
    return paths, labels


def images_below(root: Path) -> list[Path]:
    """The image files anywhere below ``root``, sorted (hidden files and folders left out)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _all_grey(paths: list[Path], root: Path) -> bool:
    """Whether every image is greyscale (read from the headers alone); refuses images of more than 8 bits."""
    from PIL import Image, UnidentifiedImageError

    modes, path = set(), root
    try:
        for path in paths:
            with Image.open(path) as im:
                modes.add(im.mode)
    except (OSError, UnidentifiedImageError) as err:
        raise CatGANError(f"cannot read image {path}: {err}") from None
    deep = modes & DEEP_MODES
    if deep:
        raise CatGANError(f"{root} holds {', '.join(sorted(deep))} images (more than 8 bits); convert them to 8-bit")
    return modes <= {"L", "1"}


def read_images(paths: list[Path], size: int | tuple[int, int], grey: bool) -> np.ndarray:
    """The images at ``paths`` as (N, C, H, W) uint8, resized to ``size`` (square, or (H, W)): one
    channel when ``grey``, else three; an unreadable file is named in a `CatGANError`."""
    from PIL import Image, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                if im.mode in DEEP_MODES:
                    raise CatGANError(f"{path} is a {im.mode} image (more than 8 bits); convert it to 8-bit")
                height, width = (size, size) if isinstance(size, int) else size
                array = np.asarray(im.convert("L" if grey else "RGB").resize((width, height), Image.BILINEAR))
        except (OSError, UnidentifiedImageError) as err:
            raise CatGANError(f"cannot read image {path}: {err}") from None
        images.append(array[None] if grey else array.transpose(2, 0, 1))
    return np.stack(images)
