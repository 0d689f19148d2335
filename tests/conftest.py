"""Shared fixtures: small configurations and the MNIST location set by .ci/run."""

import os
import shutil
from pathlib import Path

import pytest

from catgan.config import TrainConfig
from catgan.data import load_dataset

MNIST_ENV = "CATGAN_MNIST_DIR"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits as an ImageData, loaded once."""
    return load_dataset(TrainConfig())


@pytest.fixture
def make_config(tmp_path):
    """Build a configuration that trains in a second or two on digits, writing under tmp_path."""

    def make(**overrides) -> TrainConfig:
        options = dict(
            out_dir=str(tmp_path / "runs"),
            epochs=2,
            batch_size=50,
            latent_dim=16,
            d_width=8,
            g_width=8,
            feature_dim=32,
            log_every=5,
            progress=False,
            device="cpu",
        )
        options.update(overrides)
        return TrainConfig(**options)

    return make


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four original MNIST .gz files (from $CATGAN_MNIST_DIR)."""
    location = os.environ.get(MNIST_ENV)
    if not location:
        pytest.skip(f"{MNIST_ENV} is not set: point it at a folder with the four MNIST .gz files (.ci/run does)")
    folder = Path(location)
    missing = [name for name in MNIST_FILES if not (folder / name).is_file()]
    if missing:
        pytest.fail(f"{MNIST_ENV}={folder} lacks {', '.join(missing)}")
    return folder


@pytest.fixture
def mnist_torchvision_root(mnist_dir, tmp_path) -> Path:
    """A copy of the MNIST archives laid out as torchvision expects them: ROOT/MNIST/raw/*.gz."""
    raw = tmp_path / "mnist-root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(mnist_dir / name, raw / name)
    return tmp_path / "mnist-root"
