"""catgan: Categorical GANs for semi-supervised classification with few labels, and for clustering.

Reference: J. T. Springenberg, "Unsupervised and Semi-supervised Learning with Categorical
Generative Adversarial Networks", ICLR 2016, arXiv:1511.06390.

Importing the package changes no process-wide state and loads torch only when one of the names
below is first used (so that ``catgan``, the command, can set OpenMP up before torch starts).

The modules, each with one job:
- ``config``: `TrainConfig`, every option declared once (default, rule, help);
- ``losses``: the objective, pure functions on logits; ``models``: the networks, plain modules;
- ``data``: datasets in memory; ``metrics``, ``evaluation``: test error and clustering figures;
- ``steps``: the updates of one step; ``schedule``: batch order, learning rates, weight average;
- ``runtime``: device, autocast, processes, random state; ``state``: the checkpoint format and the
  moves between states (start, resume, restart); ``records``: metrics.jsonl, TensorBoard, clock;
- ``trainer``: the loop; ``training``: `train` and `resume`, end to end;
- ``performance``, ``kernels``: the fast path, swapped into the networks by the trainer;
- ``distributed``: several processes; ``diagnostics``: the health monitor; ``runs``, ``plots``:
  run directories and pictures; ``estimators``: the scikit-learn face; ``cli``, ``progress``: the
  ``catgan`` command (signals, exit codes, progress bars).
"""

import importlib
import importlib.util

__version__ = "0.1.0"

# each public name and the module that defines it
_PUBLIC = {
    "CatGAN": "catgan.models",
    "CatGANClassifier": "catgan.estimators",
    "CatGANClusterer": "catgan.estimators",
    "CatGANError": "catgan.config",
    "Discriminator": "catgan.models",
    "Generator": "catgan.models",
    "ImageData": "catgan.data",
    "TrainConfig": "catgan.config",
    "Trainer": "catgan.trainer",
    "conditional_entropy": "catgan.losses",
    "discriminator_loss": "catgan.losses",
    "evaluate": "catgan.evaluation",
    "generator_loss": "catgan.losses",
    "labelled_indices": "catgan.data",
    "load_dataset": "catgan.data",
    "marginal_entropy": "catgan.losses",
    "resume": "catgan.training",
    "train": "catgan.training",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if importlib.util.find_spec(f"catgan.{name}") is not None:  # a submodule: catgan.losses, ...
        return importlib.import_module(f"catgan.{name}")
    raise AttributeError(f"module 'catgan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
