"""The training configuration: one dataclass, validated on construction, saved with every run.

Each field is declared once, with `option`: its default, its help text, the rule its values obey
(or its allowed values) and the group it belongs to. From that one table come `TrainConfig`'s
validation, the ``catgan train`` flags and their help (`catgan.cli`), and the estimators'
parameter documentation (`describe`). Help texts name other fields as `name`; the command line
shows them as --name. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

__all__ = [
    "ARCHITECTURES", "COMPILE_MODES", "CatGANError", "TrainConfig", "DATASETS", "DEFAULT_EPOCHS", "D_LAYOUTS",
    "D_NORMS", "GROUPS", "METHODS", "PRECISIONS", "describe", "option",
]

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "svhn", "folder", "arrays")
METHODS = ("catgan", "supervised", "cnn")
ARCHITECTURES = ("conv", "mlp")
D_NORMS = ("batch", "weight")
D_LAYOUTS = ("strided", "paper")
LATENT_DISTRIBUTIONS = ("gaussian", "uniform")
NOISE_SCHEDULES = ("linear", "constant")
ON_NAN = ("stop", "restart")
PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
# Fields a resumed run may take from the resuming command; any other must match the saved configuration.
RESUME_MAY_CHANGE = ("data_dir", "download", "progress", "checkpoint_steps", "checkpoint_minutes")
# The fields the cnn method reads; it refuses any other that is not at its default.
CNN_READS = ("dataset", "data_dir", "download", "image_size", "skip_unreadable", "labels_per_class", "method", "seed",
             "device", "out_dir", "name", "progress")
MAX_SEED = 2**63 - 1  # torch.manual_seed takes seeds below 2**63
_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:\d+)?")

# Epochs (passes over the unlabelled pool) when `epochs` is not given. scikit-learn's digits have
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

# the groups of fields, in the order the command's help shows them
GROUPS = {
    "data": "data",
    "model": "objective and networks",
    "practices": "GAN practices (off by default; scripts/ablation.py measures each against the defaults)",
    "schedule": "schedule",
    "speed": "speed (see the README's \"Speed\" section)",
    "output": "output",
    "long runs": "long runs",
}


class CatGANError(ValueError):
    """A problem with the user's input (options, data, run directory), reported in one line.
    A `ValueError`, as scikit-learn and most Python code expect of bad input."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# A rule: a test of a value and what the value must be, as the error message says it.
Rule = tuple[Callable[[Any], bool], str]
POSITIVE_INT: Rule = (lambda v: _is_int(v) and v >= 1, "be a positive integer")
COUNT: Rule = (lambda v: _is_int(v) and v >= 0, "be an integer >= 0")
POSITIVE: Rule = (lambda v: _is_number(v) and v > 0, "be a number > 0")
NON_NEGATIVE: Rule = (lambda v: _is_number(v) and v >= 0, "be a number >= 0")
SHARE: Rule = (lambda v: _is_number(v) and 0 <= v < 1, "be in [0, 1)")
FLAG: Rule = (lambda v: isinstance(v, bool), "be True or False")


def _or_none(rule: Rule) -> Rule:
    test, must = rule
    return (lambda v: v is None or test(v), must)


def option(default: Any, help: str, group: str, rule: Rule | None = None, choices: tuple[str, ...] | None = None,
           kind: type | None = None, label: str | None = None, **command: Any) -> Any:
    """A `TrainConfig` field: its ``default``, ``help`` and ``group`` (a key of `GROUPS`), the
    ``rule`` its values obey or the ``choices`` allowed, the ``kind`` of value the command line
    parses (default: the default's type), the ``label`` errors call it by (default: its name), and
    extra ``command`` settings for its flag (argparse's keywords)."""
    metadata = {"help": help, "group": group, "rule": rule, "choices": choices, "kind": kind or type(default),
                "label": label, "command": command}
    return dataclasses.field(default=default, metadata=metadata)


SEED: Rule = (lambda v: _is_int(v) and 0 <= v <= MAX_SEED, "be an integer in [0, 2**63)")
DEVICE: Rule = (lambda v: isinstance(v, str) and _DEVICE_NAME.fullmatch(v) is not None,
                "be auto, cpu, cuda or cuda:N")


def check_device_name(name: object) -> None:
    """Refuse a device name other than auto, cpu, cuda or cuda:N (for commands that take one)."""
    _obey(DEVICE, "device", name)


def check_seed(seed: object) -> None:
    """Refuse a seed that is not an integer in [0, 2**63) (for commands that take one)."""
    _obey(SEED, "seed", seed)


def _obey(rule: Rule, label: str, value: Any) -> None:
    if not rule[0](value):
        raise CatGANError(f"{label} must {rule[1]}, got {value!r}")


def _labels(text: str) -> int | str:
    """`labels_per_class` from the command line: ``all`` or an integer."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer or 'all', got {text!r}") from None


@dataclass
class TrainConfig:
    """Every option of a training run. Saved as ``config.json`` and inside each checkpoint."""

    dataset: str = option("digits", "dataset to train on", "data", choices=DATASETS)
    data_dir: str | None = option(
        None, "folder holding the data (default: ./data, and for fashion-mnist also Debian's "
        "/usr/share/datasets/fashion-mnist); for `arrays`, an .npz file with x_train, y_train, x_test, y_test",
        "data", kind=str)
    download: bool = option(False, "let torchvision download the dataset into `data_dir`", "data", FLAG)
    image_size: int = option(32, "`folder` only: resize images to this many pixels square", "data", POSITIVE_INT)
    skip_unreadable: bool = option(False, "`folder` only: skip image files that cannot be read, and say how many "
                                   "(default: stop at the first, naming it)", "data", FLAG)
    labels_per_class: int | str = option(
        5, "labelled images per class, or `all` (every training image labelled); 0 trains without labels "
        "(clustering)", "data", (lambda v: v == "all" or (_is_int(v) and v >= 0), "be an integer >= 0 or 'all'"),
        kind=_labels)
    method: str = option("catgan", "catgan; supervised: the same discriminator trained by cross-entropy on the "
                         "labelled images alone, for the same number of updates (the same-D baseline); or cnn: a "
                         "plain CNN trained on the labelled images alone as a practitioner would, its weight decay, "
                         "dropout and length chosen by cross-validation over them (the plain-CNN baseline)", "data",
                         choices=METHODS)
    clusters: int | None = option(None, "K, the number of clusters (default: the number of classes; any K >= 2 "
                                  "without labels)", "model", _or_none((lambda v: _is_int(v) and v >= 2,
                                                                        "be an integer >= 2")),
                                  kind=int, label="clusters (K)")
    lam: float = option(1.0, "weight of the supervised cross-entropy in the discriminator's loss", "model",
                        NON_NEGATIVE)
    marginal_weight: float = option(1.0, "weight of H[p_bar], the entropy of D's classes over a batch of real "
                                    "images, in D's loss (the paper: 1; above 1 keeps every cluster in use, as RIM "
                                    "and IMSAT weight it)", "model", POSITIVE)
    epochs: int | None = option(None, "passes over the unlabelled pool (default per dataset: " +
                                ", ".join(f"{name} {n}" for name, n in DEFAULT_EPOCHS.items()) + ")", "schedule",
                                _or_none(POSITIVE_INT), kind=int)
    batch_size: int = option(100, "unlabelled (and generated) images per step", "schedule",
                             (lambda v: _is_int(v) and v >= 2, "be an integer >= 2 (batch norm needs two images)"))
    lr: float = option(2e-4, "Adam learning rate of D (and of G unless `lr_g` is given)", "schedule", POSITIVE)
    lr_g: float | None = option(None, "Adam learning rate of G (default: `lr`)", "practices", _or_none(POSITIVE),
                                kind=float)
    lr_decay_start: float = option(1.0, "fraction of the schedule after which both learning rates fall linearly "
                                   "to 0 (1: constant)", "schedule",
                                   (lambda v: _is_number(v) and 0 <= v <= 1, "be in [0, 1]"))
    beta1: float = option(0.5, "Adam's first-moment decay", "schedule", SHARE)
    beta2: float = option(0.999, "Adam's second-moment decay", "schedule", SHARE)
    architecture: str = option("conv", "conv: convolutional networks; mlp: fully connected ones, which read each "
                               "image as a flat vector (the permutation-invariant variant)", "model",
                               choices=ARCHITECTURES)
    latent_dim: int = option(100, "size of the generator's latent vector", "model", POSITIVE_INT)
    latent_distribution: str = option("gaussian", "the generator's latent distribution: gaussian N(0, I) or "
                                      "uniform U(-1, 1) per coordinate", "model", choices=LATENT_DISTRIBUTIONS)
    d_width: int = option(32, "conv: channels of D's first two layers, doubling at each further halving of the "
                          "image", "model", POSITIVE_INT)
    g_width: int = option(32, "conv: channels of G's last hidden layer, doubling at each step towards its input",
                          "model", POSITIVE_INT)
    mlp_width: int = option(1000, "mlp: W; D's hidden layers have W, W/2, W/4, W/4 units, G's two W/2", "model",
                            POSITIVE_INT)
    feature_dim: int = option(128, "size of D's penultimate layer", "model", POSITIVE_INT)
    d_noise: float = option(0.3, "std of the Gaussian noise on D's hidden activations while training", "model",
                            NON_NEGATIVE)
    d_norm: str = option("batch", "how D's layers are normalised: batch (batch norm after every hidden layer) or "
                         "weight (each weight vector of norm g, learnt; biases; no batch statistics: the D of "
                         "Salimans et al. 2016)", "model", choices=D_NORMS)
    d_layout: str = option("strided", "conv: D's layers; strided: a 3x3 convolution, then 3x3 stride-2 ones down "
                           "to 4 pixels; paper: Springenberg 2016's MNIST D (5x5 conv, max-pools, 3x3 convs, a "
                           "1x1 conv to 10 maps), widths from d_width", "model", choices=D_LAYOUTS)
    instance_noise: float = option(0.0, "std of Gaussian noise added to every image D trains on, real and "
                                   "generated", "practices", NON_NEGATIVE)
    instance_noise_schedule: str = option("linear", "linear: the instance noise falls to 0 over the schedule; "
                                          "constant: it stays", "practices", choices=NOISE_SCHEDULES)
    label_smoothing: float = option(0.0, "eps: the supervised targets put 1 - eps on the label, eps spread over "
                                    "the K classes", "practices", SHARE)
    label_noise: float = option(0.0, "share of the labelled batch given a random class at each step", "practices",
                                SHARE)
    joint_batches: bool = option(False, "real and generated images through D in one batch, sharing batch "
                                 "statistics", "practices", FLAG)
    d_steps: int = option(1, "D updates per round of G updates", "practices", POSITIVE_INT)
    g_steps: int = option(1, "G updates per round", "practices", POSITIVE_INT)
    feature_matching: float = option(0.0, "weight of feature matching, ||E f(x) - E f(G(z))||^2 with f D's "
                                     "penultimate layer (Salimans et al. 2016), in G's loss", "practices",
                                     NON_NEGATIVE)
    vat_weight: float = option(0.0, "weight of virtual adversarial training in D's loss: KL(p(y|x) || p(y|x + r)) "
                               "on real images, r the small perturbation that changes D's prediction most "
                               "(Miyato et al. 2018); 0: off", "practices", NON_NEGATIVE)
    vat_epsilon: float = option(0.1, "size of that perturbation, as its root mean square per pixel value on the "
                                "[-1, 1] image scale (0: D's own noise is the only perturbation)", "practices",
                                NON_NEGATIVE)
    augment_weight: float = option(0.0, "weight of augmentation consistency in D's loss: KL(p(y|x) || p(y|T x)) on "
                                   "real images, T a random translation (IMSAT's self-augmented training, Hu et "
                                   "al. 2017, with translations); 0: off", "practices", NON_NEGATIVE)
    augment_shift: float = option(0.075, "largest translation of that term, as a share of the longer image side, at "
                                  "least one pixel (0.075: 2 pixels on MNIST, 1 on digits)", "practices",
                                  (lambda v: _is_number(v) and 0 < v < 0.5, "be in (0, 0.5)"))
    ema_decay: float = option(0.0, "evaluate with an exponential moving average of D's weights (0: off; e.g. "
                              "0.999)", "practices", SHARE)
    bn_recalibration: int = option(0, "before the final evaluation, re-estimate D's batch-norm statistics with its "
                                   "final weights over N / batch_size batches, each made as training makes D's "
                                   "batch of real images (unlabelled ones, and beside them labelled ones), D's "
                                   "noise off; one process only (0: keep the running averages of training)",
                                   "practices", COUNT)
    seed: int = option(0, "seed of the labelled subset, initialisation, batches and noise", "schedule", SEED)
    device: str = option("auto", "auto (CUDA when available), cpu, cuda or cuda:N", "schedule", DEVICE)
    precision: str = option("fp32", "fp32, or bf16: forward passes under bfloat16 autocast (faster on GPUs and on "
                            "CPUs with AMX; changes the numbers a run produces)", "speed", choices=PRECISIONS)
    compile: str = option("off", "torch.compile both networks in this mode (reduce-overhead also records CUDA "
                          "graphs)", "speed", choices=COMPILE_MODES,
                          label="compile mode", nargs="?", const="default")
    out_dir: str = option("runs", "parent folder of run directories", "output")
    name: str | None = option(None, "run directory name (default: dataset, labels, seed and time); an existing one "
                              "is refused", "output", (lambda v: v is None or (isinstance(v, str) and v not in (
                                  "", ".", "..") and "/" not in v), "be a plain folder name"), kind=str)
    eval_every: int = option(0, "also evaluate on the test split every N epochs, for the log only (0: at the end "
                             "only)", "output", COUNT)
    log_every: int = option(20, "log loss terms, gradient norms and D-scores every N steps", "output",
                            POSITIVE_INT)
    sample_every: int = option(0, "also save a grid of samples from fixed noise every N epochs, into RUN/samples/ "
                               "(0: at the end only)", "output", COUNT)
    tensorboard: bool = option(False, "also write the logged figures for TensorBoard into RUN/tensorboard/ "
                               "(needs: pip install tensorboard)", "output", FLAG)
    progress: bool = option(True, "show a progress bar", "output", FLAG)
    checkpoint_steps: int = option(0, "save a resumable checkpoint every N steps (0: by time only)", "long runs",
                                   COUNT)
    checkpoint_minutes: float = option(10.0, "and every M minutes of training (0: by steps only)", "long runs",
                                       NON_NEGATIVE)
    on_nan: str = option("stop", "when a loss or weight stops being finite: stop, keeping the last good "
                         "checkpoint, or restart from it with lower learning rates", "long runs", choices=ON_NAN)
    max_restarts: int = option(3, "with `on_nan` restart: restarts allowed before the run stops", "long runs",
                               COUNT)
    restart_lr_factor: float = option(0.5, "with `on_nan` restart: each restart multiplies both learning rates by "
                                      "this", "long runs", (lambda v: _is_number(v) and 0 < v <= 1, "be in (0, 1]"))

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field, getattr(self, field.name))
        if self.architecture == "mlp" and self.d_layout != "strided":
            raise CatGANError(f"d_layout {self.d_layout!r} lays out a convolutional D; the mlp architecture has none")
        if self.architecture == "mlp" and self.augment_weight > 0:
            raise CatGANError("augment_weight translates images, which the mlp architecture reads as flat vectors "
                              "(permutation-invariant, or feature rows); use vat_weight")
        if self.bn_recalibration and self.d_norm != "batch":
            raise CatGANError(f"bn_recalibration re-estimates D's batch-norm statistics; with d_norm {self.d_norm!r} "
                              "D has none: drop it")
        if self.bn_recalibration and self.joint_batches:
            raise CatGANError("bn_recalibration re-estimates D's statistics on real images, but joint_batches "
                              "trained them on real and generated images together: drop one")
        if self.method == "supervised":
            if self.labels_per_class == 0:
                raise CatGANError("the supervised method needs labels: labels_per_class must be at least 1")
            # no generator is trained, and no unlabelled image is seen: these switches would do nothing
            gan_only = {"d_steps": 1, "g_steps": 1, "lr_g": None, "feature_matching": 0.0, "joint_batches": False,
                        "vat_weight": 0.0, "augment_weight": 0.0}
            changed = [name for name, default in gan_only.items() if getattr(self, name) != default]
            if changed:
                raise CatGANError(f"the supervised method trains no generator and reads no unlabelled image; drop "
                                  f"{', '.join(changed)}")
        if self.method == "cnn":
            if self.labels_per_class in (0, 1):
                raise CatGANError("the cnn method cross-validates over the labelled images: `labels_per_class` must "
                                  "be at least 2")
            changed = [field.name for field in dataclasses.fields(self)
                       if field.name not in CNN_READS and getattr(self, field.name) != field.default]
            if changed:
                raise CatGANError(f"the cnn method chooses its own training by cross-validation over the labelled "
                                  f"images and reads none of {', '.join(f'`{name}`' for name in changed)}; drop them")

    @property
    def uses_labels(self) -> bool:
        """Whether labelled images enter training. D's outputs are then the classes; otherwise
        they are clusters, which evaluation matches to the classes."""
        return self.labels_per_class != 0 and (self.method in ("supervised", "cnn") or self.lam > 0)

    def resolved_epochs(self) -> int | None:
        """The number of epochs this run trains for (None for the cnn method: cross-validation
        chooses it)."""
        if self.epochs is not None or self.method == "cnn":
            return self.epochs
        return DEFAULT_EPOCHS[self.dataset]

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


def _check(field: dataclasses.Field, value: Any) -> None:
    """Refuse ``value`` for ``field`` in one line that says what is allowed."""
    meta = field.metadata
    label = meta["label"] or field.name
    if meta["choices"] is not None and value not in meta["choices"]:
        raise CatGANError(f"unknown {label} {value!r}; choose one of {', '.join(meta['choices'])}")
    if meta["rule"] is not None:
        _obey(meta["rule"], label, value)


def describe(names: list[str] | None = None, indent: str = "    ") -> str:
    """The fields ``names`` (default: all), one per line with their default and help, as
    documentation (the estimators' parameter lists)."""
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    lines = []
    for name in names or list(fields):
        field = fields[name]
        lines.append(f"{indent}{name}: {field.metadata['help']} (default: {field.default!r}).")
    return "\n".join(lines)
