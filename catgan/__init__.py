"""catgan: Categorical GANs for semi-supervised classification with few labels, and for clustering.

Reference: J. T. Springenberg, "Unsupervised and Semi-supervised Learning with Categorical
Generative Adversarial Networks", ICLR 2016, arXiv:1511.06390.
"""

import os
import sys

__version__ = "0.1.0"

# GNU OpenMP's idle workers (torch's CPU threads between operations) spin for milliseconds before
# they sleep (libgomp's default: 300,000 spins), taking the cores on which D's noise is drawn in
# parallel (catgan.models.NoiseStreams). OpenMP reads this once, when torch is first imported; a
# value the user set wins.
OPENMP_SPINCOUNT = "30000"
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)

from catgan.config import CatGANError, TrainConfig  # noqa: E402
from catgan.estimators import CatGANClassifier, CatGANClusterer  # noqa: E402
from catgan.data import ImageData, labelled_indices, load_dataset  # noqa: E402
from catgan.losses import conditional_entropy, discriminator_loss, generator_loss, marginal_entropy  # noqa: E402
from catgan.models import CatGAN, Discriminator, Generator  # noqa: E402
from catgan.training import Trainer, evaluate, train  # noqa: E402

__all__ = [
    "__version__",
    "CatGAN",
    "CatGANClassifier",
    "CatGANClusterer",
    "CatGANError",
    "Discriminator",
    "Generator",
    "ImageData",
    "TrainConfig",
    "Trainer",
    "conditional_entropy",
    "discriminator_loss",
    "evaluate",
    "generator_loss",
    "labelled_indices",
    "load_dataset",
    "marginal_entropy",
    "train",
]
