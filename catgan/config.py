"""The training configuration: one dataclass, validated on construction, saved with every run."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ARCHITECTURES", "COMPILE_MODES", "CatGANError", "TrainConfig", "DATASETS", "DEFAULT_EPOCHS", "METHODS",
    "PRECISIONS",
]

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "svhn", "folder", "arrays")
METHODS = ("catgan", "supervised")
ARCHITECTURES = ("conv", "mlp")
LATENT_DISTRIBUTIONS = ("gaussian", "uniform")
NOISE_SCHEDULES = ("linear", "constant")
ON_NAN = ("stop", "restart")
PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
# Fields a resumed run may take from the resuming command; any other must match the saved configuration.
RESUME_MAY_CHANGE = ("data_dir", "download", "progress", "checkpoint_steps", "checkpoint_minutes")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes seeds below 2**63
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")

# Epochs (passes over the unlabelled pool) when --epochs is not given. scikit-learn's digits have
# only 1,198 training images, so their schedule needs many more passes for the same updates.
DEFAULT_EPOCHS = {
    "digits": 300,
    "mnist": 20,
    "fashion-mnist": 20,
    "cifar10": 50,
    "svhn": 30,
    "folder": 50,
    "arrays": 50,
}


class CatGANError(ValueError):
    """A problem with the user's input (options, data, run directory), reported in one line.
    A `ValueError`, as scikit-learn and most Python code expect of bad input."""


def check_device_name(name: object) -> None:
    """Refuse a device name other than auto, cpu, cuda or cuda:N."""
    if not (isinstance(name, str) and _DEVICE_NAME.fullmatch(name)):
        raise CatGANError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")


def check_seed(seed: object) -> None:
    """Refuse a seed that is not an integer in [0, 2**63)."""
    if not (_is_int(seed) and 0 <= seed <= MAX_SEED):
        raise CatGANError(f"seed must be an integer in [0, 2**63), got {seed!r}")


@dataclass
class TrainConfig:
    """Every option of a training run. Saved as ``config.json`` and inside each checkpoint."""

    dataset: str = "digits"  # one of DATASETS
    data_dir: str | None = None  # where the data is; None: ./data (and Debian's folder for fashion-mnist)
    download: bool = False  # let torchvision download the dataset into data_dir
    image_size: int = 32  # `folder` only: images are resized to image_size x image_size
    labels_per_class: int | str = 5  # labelled images per class, or "all"; 0 trains without labels (clustering)
    method: str = "catgan"  # catgan, or supervised: the same D trained by cross-entropy on the labels alone
    clusters: int | None = None  # K, the discriminator's outputs; None: the number of classes
    lam: float = 1.0  # weight of the supervised cross-entropy in D's loss
    epochs: int | None = None  # passes over the unlabelled pool; None: DEFAULT_EPOCHS[dataset]
    batch_size: int = 100  # unlabelled (and generated) images per step, at least 2 (batch norm)
    lr: float = 2e-4  # Adam learning rate of D (and of G unless lr_g is given)
    lr_g: float | None = None  # Adam learning rate of G; None: lr
    lr_decay_start: float = 1.0  # fraction of the schedule after which both rates fall linearly to 0 (1: constant)
    beta1: float = 0.5  # Adam's first-moment decay
    beta2: float = 0.999  # Adam's second-moment decay
    architecture: str = "conv"  # conv: convolutional networks; mlp: fully connected (permutation-invariant) ones
    latent_dim: int = 100  # size of the generator's latent vector
    latent_distribution: str = "gaussian"  # gaussian: N(0, I); uniform: U(-1, 1) per coordinate
    d_width: int = 32  # conv only: channels of D's first two layers, doubling at each further halving of the image
    g_width: int = 32  # conv only: channels of G's last hidden layer, doubling at each step towards its input
    mlp_width: int = 1000  # mlp only: D's hidden layers have W, W/2, W/4, W/4 units, G's two W/2
    feature_dim: int = 128  # size of D's penultimate layer
    d_noise: float = 0.3  # std of the Gaussian noise on D's hidden activations while training
    instance_noise: float = 0.0  # std of Gaussian noise added to every image D trains on, real and generated
    instance_noise_schedule: str = "linear"  # linear: the instance noise falls to 0 over the schedule; or constant
    label_smoothing: float = 0.0  # the supervised term's targets: 1 - eps on the label, eps spread over the K classes
    label_noise: float = 0.0  # each step, this fraction of the labelled batch gets a random class instead
    joint_batches: bool = False  # real and generated images through D in one batch (shared batch statistics)
    d_steps: int = 1  # D updates per round of G updates
    g_steps: int = 1  # G updates per round
    feature_matching: float = 0.0  # weight of ||E f(x) - E f(G(z))||^2 in G's loss (f: D's penultimate layer)
    ema_decay: float = 0.0  # evaluate with an exponential moving average of D's weights (0: off; e.g. 0.999)
    seed: int = 0  # seeds the labelled subset, initialisation, batches and noise
    device: str = "auto"  # auto (CUDA when available), cpu, cuda or cuda:N
    precision: str = "fp32"  # fp32, or bf16: forward passes under bfloat16 autocast (GPUs, CPUs with AMX)
    compile: str = "off"  # torch.compile both networks: off, default, reduce-overhead (CUDA graphs), max-autotune
    out_dir: str = "runs"  # parent folder of run directories
    name: str | None = None  # run directory name; None: dataset, labels, seed and a timestamp
    eval_every: int = 0  # evaluate on the test split every N epochs, for the log only (0: at the end only)
    log_every: int = 20  # write loss terms and diagnostics to metrics.jsonl every N steps
    sample_every: int = 0  # also save a grid from fixed noise every N epochs into samples/ (0: at the end only)
    tensorboard: bool = False  # also write the logged figures for TensorBoard (needs the tensorboard package)
    progress: bool = True  # show a progress bar
    checkpoint_steps: int = 0  # save a resumable checkpoint every N steps (0: by time only)
    checkpoint_minutes: float = 10.0  # and every M minutes of training (0: by steps only)
    on_nan: str = "stop"  # a non-finite loss or weight: stop (keep the last good checkpoint) or restart from it
    max_restarts: int = 3  # with on_nan restart: restarts allowed before the run stops
    restart_lr_factor: float = 0.5  # with on_nan restart: each restart multiplies both learning rates by this

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise CatGANError(message)

        need(self.dataset in DATASETS, f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        need(self.method in METHODS, f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        positive_ints = ("image_size", "latent_dim", "d_width", "g_width", "mlp_width", "feature_dim", "log_every")
        for name in positive_ints:
            value = getattr(self, name)
            need(_is_int(value) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        need(
            _is_int(self.batch_size) and self.batch_size >= 2,
            f"batch_size must be an integer >= 2 (batch norm needs two images), got {self.batch_size!r}",
        )
        need(
            self.labels_per_class == "all" or (_is_int(self.labels_per_class) and self.labels_per_class >= 0),
            f"labels_per_class must be an integer >= 0 or 'all', got {self.labels_per_class!r}",
        )
        need(
            self.method != "supervised" or self.labels_per_class != 0,
            "the supervised method needs labels: labels_per_class must be at least 1",
        )
        need(
            self.clusters is None or (_is_int(self.clusters) and self.clusters >= 2),
            f"clusters (K) must be an integer >= 2, got {self.clusters!r}",
        )
        need(_is_number(self.lam) and self.lam >= 0, f"lam must be a number >= 0, got {self.lam!r}")
        need(
            self.epochs is None or (_is_int(self.epochs) and self.epochs >= 1),
            f"epochs must be a positive integer, got {self.epochs!r}",
        )
        need(_is_number(self.lr) and self.lr > 0, f"lr must be a number > 0, got {self.lr!r}")
        need(self.lr_g is None or (_is_number(self.lr_g) and self.lr_g > 0), f"lr_g must be a number > 0, got {self.lr_g!r}")
        need(
            self.architecture in ARCHITECTURES,
            f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}",
        )
        need(
            self.latent_distribution in LATENT_DISTRIBUTIONS,
            f"unknown latent_distribution {self.latent_distribution!r}; choose one of {', '.join(LATENT_DISTRIBUTIONS)}",
        )
        for name in ("instance_noise", "feature_matching"):
            value = getattr(self, name)
            need(_is_number(value) and value >= 0, f"{name} must be a number >= 0, got {value!r}")
        for name in ("label_smoothing", "label_noise", "ema_decay"):
            value = getattr(self, name)
            need(_is_number(value) and 0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        for name in ("d_steps", "g_steps"):
            value = getattr(self, name)
            need(_is_int(value) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        need(
            self.instance_noise_schedule in NOISE_SCHEDULES,
            f"unknown instance_noise_schedule {self.instance_noise_schedule!r}; choose one of {', '.join(NOISE_SCHEDULES)}",
        )
        for name in ("download", "joint_batches", "tensorboard", "progress"):
            value = getattr(self, name)
            need(isinstance(value, bool), f"{name} must be True or False, got {value!r}")
        if self.method == "supervised":  # no generator is trained: its switches would do nothing
            generator_only = {"d_steps": 1, "g_steps": 1, "lr_g": None, "feature_matching": 0.0, "joint_batches": False}
            changed = [name for name, default in generator_only.items() if getattr(self, name) != default]
            need(not changed, f"the supervised method trains no generator; drop {', '.join(changed)}")
        need(
            _is_number(self.lr_decay_start) and 0 <= self.lr_decay_start <= 1,
            f"lr_decay_start must be in [0, 1], got {self.lr_decay_start!r}",
        )
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            need(_is_number(value) and 0 <= value < 1, f"{name} must be in [0, 1), got {value!r}")
        need(_is_number(self.d_noise) and self.d_noise >= 0, f"d_noise must be a number >= 0, got {self.d_noise!r}")
        check_seed(self.seed)
        check_device_name(self.device)
        for name in ("eval_every", "sample_every", "checkpoint_steps", "max_restarts"):
            value = getattr(self, name)
            need(_is_int(value) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        need(
            _is_number(self.checkpoint_minutes) and self.checkpoint_minutes >= 0,
            f"checkpoint_minutes must be a number >= 0, got {self.checkpoint_minutes!r}",
        )
        need(self.precision in PRECISIONS,
             f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        need(self.compile in COMPILE_MODES,
             f"unknown compile mode {self.compile!r}; choose one of {', '.join(COMPILE_MODES)}")
        need(self.on_nan in ON_NAN, f"unknown on_nan {self.on_nan!r}; choose one of {', '.join(ON_NAN)}")
        need(
            _is_number(self.restart_lr_factor) and 0 < self.restart_lr_factor <= 1,
            f"restart_lr_factor must be in (0, 1], got {self.restart_lr_factor!r}",
        )
        need(
            self.name is None or (isinstance(self.name, str) and self.name not in ("", ".", "..") and "/" not in self.name),
            f"name must be a plain folder name, got {self.name!r}",
        )

    @property
    def uses_labels(self) -> bool:
        """Whether labelled images enter training. D's outputs are then the classes; otherwise
        they are clusters, which evaluation matches to the classes."""
        return self.labels_per_class != 0 and (self.method == "supervised" or self.lam > 0)

    def resolved_epochs(self) -> int:
        """The number of epochs this run trains for."""
        return self.epochs if self.epochs is not None else DEFAULT_EPOCHS[self.dataset]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Rebuild a saved configuration; unknown fields are refused by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CatGANError(f"unknown configuration fields: {', '.join(unknown)}")
        return cls(**values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
