"""CatGAN as scikit-learn estimators: `CatGANClassifier` and `CatGANClusterer`.

The classifier learns from labelled and unlabelled samples together, marked the way
scikit-learn's semi-supervised estimators mark them: ``y == -1`` is an unlabelled sample. The
clusterer learns from unlabelled samples only. Both train the networks of `catgan.models`
through the same `Trainer` as ``catgan train``:

- flat rows ``(n, d)`` train the fully connected (permutation-invariant) networks, so any
  feature vectors will do;
- images ``(n, H, W)`` or ``(n, C, H, W)`` train the convolutional ones, and so do flat rows with
  an ``image_shape`` that turns each row into an image.

Inputs are scaled to [-1, 1] (the range of the generator's tanh output) with the minimum and
maximum seen by `fit`: per feature for flat rows, over all pixels for images.

    >>> clf = CatGANClassifier(epochs=20, random_state=0).fit(X, y)   # y == -1: unlabelled
    >>> clf.predict(X_new), clf.predict_proba(X_new), clf.transform(X_new)
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, ClusterMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, column_or_1d, validate_data

from catgan.config import TrainConfig, describe
from catgan.data import ImageData
from catgan.losses import conditional_entropy, marginal_entropy
from catgan.evaluation import predict_features, predict_logits
from catgan.progress import ProgressBar
from catgan.trainer import Trainer

__all__ = ["CatGANClassifier", "CatGANClusterer", "CatGANTrainingWarning", "UNLABELLED", "expected_failed_checks"]

UNLABELLED = -1  # the target of an unlabelled sample (scikit-learn's convention); "-1" in string targets
DEFAULT_STEPS = 3000  # epochs=None trains for at least this many updates (digits-quick's schedule has 3,300)
_INPUT_RANGE = "estimator_input_range"  # summary.json of an estimator saved as a run: the inputs mapped to -1 and 1
DEFAULT_BATCH_SIZE = 100  # batch_size=None: this many samples per step, or all of them if fewer

# TrainConfig fields that an estimator sets itself; every other field is one of its parameters.
_SET_BY_ESTIMATOR = {
    "dataset", "data_dir", "download", "image_size", "skip_unreadable", "labels_per_class", "clusters", "architecture", "seed",
    "out_dir", "name", "eval_every", "sample_every", "tensorboard", "progress", "checkpoint_steps",
    "checkpoint_minutes",
}
_ESTIMATOR_ONLY = {"image_shape", "random_state", "verbose", "n_clusters"}


class CatGANTrainingWarning(UserWarning):
    """A known failure mode seen during training (generator collapse, an overpowering
    discriminator, a stuck run); the message says what to try."""


class _CatGANEstimator(TransformerMixin, BaseEstimator):
    """What the classifier and the clusterer share: input checks, scaling, training, prediction."""

    def _config_options(self) -> dict[str, Any]:
        """The estimator's parameters that are TrainConfig fields."""
        return {name: value for name, value in self.get_params(deep=False).items() if name not in _ESTIMATOR_ONLY}

    def _images(self, X, reset: bool) -> np.ndarray:
        """``X`` checked and shaped (n, C, H, W), float32, scaled with the minimum and maximum of `fit`."""
        X = validate_data(self, X, reset=reset, allow_nd=True, dtype=[np.float64, np.float32],
                          ensure_min_samples=2 if reset else 1)
        if X.ndim > 4:
            raise ValueError(f"X must be (n, d), (n, H, W) or (n, C, H, W), got {X.ndim} dimensions")
        shape = X.shape[1:]
        if X.ndim == 4 and X.shape[3] in (1, 3, 4) and X.shape[1] not in (1, 3, 4):
            raise ValueError(f"X looks channels-last, {X.shape[1:]}: pass images as (n, C, H, W)")
        if X.ndim == 2 and self.image_shape is not None:
            image_shape = tuple(self.image_shape) if isinstance(self.image_shape, (tuple, list)) else ()
            if len(image_shape) not in (2, 3) or not all(isinstance(n, numbers.Integral) and n > 0 for n in image_shape):
                raise ValueError(f"image_shape must be (H, W) or (C, H, W) of positive integers, got {self.image_shape!r}")
            if math.prod(image_shape) != X.shape[1]:
                raise ValueError(f"image_shape {image_shape} holds {math.prod(image_shape)} values, "
                                 f"but X has {X.shape[1]} features")
            shape = image_shape
        elif X.ndim > 2 and self.image_shape is not None:
            raise ValueError("image_shape is only for flat (n, d) rows; X already holds images")
        flat = X.ndim == 2 and self.image_shape is None
        if flat:
            images = X.reshape(len(X), 1, 1, X.shape[1])  # feature vectors, for the fully connected networks
        else:
            images = X.reshape(len(X), *((1, *shape) if len(shape) == 2 else shape))
        if reset:
            self.architecture_ = "mlp" if flat else "conv"
            self.input_shape_ = images.shape[1:]
            axes = (0,) if flat else None  # per feature, or over all pixels
            self.data_min_ = images.min(axis=axes, keepdims=axes is not None)
            self.data_max_ = images.max(axis=axes, keepdims=axes is not None)
        elif images.shape[1:] != self.input_shape_:
            raise ValueError(f"X holds samples of shape {X.shape[1:]}, read as {images.shape[1:]}, but fit saw "
                             f"{self.input_shape_}")
        spread = np.where(self.data_max_ > self.data_min_, self.data_max_ - self.data_min_, 1.0)
        return (2 * (images - self.data_min_) / spread - 1).astype(np.float32)

    def _fit_networks(self, images: np.ndarray, codes: np.ndarray, labelled: np.ndarray, classes: list[str],
                      clusters: int | None) -> None:
        """Train on ``images`` (their ``labelled`` rows carry the class ``codes``) and keep the networks."""
        n = len(images)
        options = self._config_options()
        if options["batch_size"] is None:
            options["batch_size"] = min(DEFAULT_BATCH_SIZE, n)
        if options["epochs"] is None and isinstance(options["batch_size"], numbers.Integral) and options["batch_size"] >= 1:
            options["epochs"] = max(1, math.ceil(DEFAULT_STEPS / max(1, n // options["batch_size"])))
        if isinstance(self.random_state, numbers.Integral):
            seed = int(self.random_state)  # as `catgan train --seed`: the same seed trains the same networks
        else:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        config = TrainConfig(
            dataset="arrays", labels_per_class="all" if clusters is None else 0, clusters=clusters,
            architecture=self.architecture_, seed=seed, progress=bool(self.verbose), checkpoint_minutes=0,
            **{name: _plain(value) for name, value in options.items()},
        )
        x = torch.from_numpy(images)
        y = torch.from_numpy(codes.astype(np.int64))
        data = ImageData("arrays", x, y, x[:0], y[:0], classes, source="fit(X, y)")
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=cuda), ProgressBar("fit", config.progress) as bar:
            # Trainer seeds torch's generators: fork_rng gives the caller's back
            trainer = Trainer(config, data, report=_warn, labelled=labelled, on_step=bar)
            self.summary_ = trainer.fit()
        self.config_ = trainer.config
        self.generator_ = trainer.model.generator.eval().cpu()
        self.discriminator_ = trainer.evaluated_discriminator.eval().cpu()  # on the CPU: unpickles anywhere
        self.history_ = trainer.records
        self.n_iter_ = trainer.step

    def predict_proba(self, X) -> np.ndarray:
        """(n, K): the discriminator's class (or cluster) probabilities."""
        return torch.softmax(self._logits(X), dim=1).numpy()

    def transform(self, X) -> np.ndarray:
        """(n, feature_dim): the discriminator's penultimate features, for use by other estimators."""
        check_is_fitted(self, "discriminator_")
        return predict_features(*self._in_double(self._images(X, reset=False))).numpy()

    def _logits(self, X=None, images: np.ndarray | None = None) -> torch.Tensor:
        """(n, K) float64 logits of D on X, or on ``images`` already checked and scaled by `_images`."""
        check_is_fitted(self, "discriminator_")
        return predict_logits(*self._in_double(self._images(X, reset=False) if images is None else images))

    def _in_double(self, images: np.ndarray) -> tuple[torch.nn.Module, torch.Tensor]:
        """A float64 copy of the discriminator and the scaled ``images`` in float64. Predictions are
        made on the CPU in float64, where the rounding of batched matrix products no longer shows: a
        sample's prediction does not depend (to 1e-7) on which other samples share its call."""
        return copy.deepcopy(self.discriminator_).double(), torch.from_numpy(images).double()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # images (n, H, W); (n, C, H, W) too
        return tags

    @classmethod
    def from_run(cls, run_dir) -> "_CatGANEstimator":
        """A fitted estimator from a ``catgan train`` run directory: its discriminator (the weight
        average when the run kept one), generator, configuration and records. It reads images X
        (n, C, H, W) of the run's size with values 0..255, as the run read its image files or
        uint8 arrays (a run on floats in [0, 1] took them times 255; a run an estimator saved keeps
        that estimator's input range). ``classes_`` are the run's class names, as strings. The
        classifier needs a run trained with labels, the clusterer one trained without."""
        import json
        from pathlib import Path

        from catgan.runs import METRICS, SUMMARY, load_checkpoint
        from catgan.state import load_networks

        checkpoint = load_checkpoint(run_dir)
        config, model, classes = load_networks(checkpoint, str(run_dir))
        if config.method == "cnn":
            raise ValueError(f"{run_dir} is a plain CNN's run (method cnn), not a CatGAN's; read it with catgan "
                             f"predict or catgan export")
        if config.uses_labels != (cls is CatGANClassifier):
            wanted = "CatGANClassifier" if config.uses_labels else "CatGANClusterer"
            raise ValueError(f"{run_dir} was trained {'with' if config.uses_labels else 'without'} labels: "
                             f"use {wanted}.from_run")
        names = set(inspect.signature(cls.__init__).parameters) - _ESTIMATOR_ONLY - {"self"}
        estimator = cls(**{name: getattr(config, name) for name in names}, random_state=config.seed,
                        **({"n_clusters": model.num_clusters} if cls is CatGANClusterer else {}))
        estimator.architecture_ = config.architecture
        estimator.input_shape_ = tuple(model.image_shape)
        estimator.n_features_in_ = model.image_shape[0]  # X.shape[1] of images (n, C, H, W)
        estimator.discriminator_, estimator.generator_ = model.discriminator.eval(), model.generator.eval()
        estimator.config_, estimator.n_iter_ = config, int(checkpoint["step"])
        folder = Path(run_dir).expanduser()
        summary = folder / SUMMARY
        estimator.summary_ = json.loads(summary.read_text()) if summary.is_file() else {}
        low, high = estimator.summary_.get(_INPUT_RANGE, (0.0, 255.0))  # an estimator's run keeps its own
        estimator.data_min_, estimator.data_max_ = np.float32(low), np.float32(high)
        metrics = folder / METRICS
        estimator.history_ = ([json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
                              if metrics.is_file() else [])
        if cls is CatGANClassifier:
            estimator.classes_ = np.array(classes)
        return estimator

    def save_run(self, run_dir) -> None:
        """Write this fitted estimator as a new run directory (checkpoint.pt, config.json,
        summary.json) that ``catgan predict``, ``catgan export`` and `from_run` read. Only an
        estimator fit on images: ``catgan predict`` reads image files as values 0..255, which is
        what this estimator saw if X held 8-bit images (its input range, ``data_min_`` to
        ``data_max_``, is recorded, and `from_run` restores it)."""
        from pathlib import Path

        from catgan.runs import CHECKPOINT, CONFIG, SUMMARY, create_run_dir, save_checkpoint, write_json
        from catgan.state import networks_state

        check_is_fitted(self, "discriminator_")
        if self.architecture_ == "mlp" and self.input_shape_[:2] == (1, 1) or np.ndim(self.data_min_) > 0:
            raise ValueError("this estimator was fit on feature vectors, not images; a run directory holds an "
                             "image model")
        folder = Path(run_dir).expanduser()
        create_run_dir(folder)
        classes = [str(c) for c in self.classes_] if hasattr(self, "classes_") else []
        k = len(classes) or int(self.n_clusters)
        save_checkpoint(folder / CHECKPOINT, networks_state(self.config_, self.input_shape_, k, classes, self.generator_,
                                                            self.discriminator_, self.n_iter_))
        write_json(folder / CONFIG, self.config_.to_dict())
        write_json(folder / SUMMARY, {**self.summary_, _INPUT_RANGE: [float(self.data_min_), float(self.data_max_)],
                                      "saved_by": f"{type(self).__name__}.save_run"})


class CatGANClassifier(ClassifierMixin, _CatGANEstimator):
    """A semi-supervised CatGAN classifier (Springenberg, ICLR 2016): ``fit(X, y)`` with
    ``y == -1`` for the unlabelled samples.

    The discriminator learns the K classes from the labelled samples while, on the unlabelled and
    generated ones, it is certain about the first and uncertain about the second; the generator
    learns to make samples the discriminator is certain about. Flat rows train fully connected
    networks, images (or rows with ``image_shape``) convolutional ones.

    Parameters not listed here are the `catgan.TrainConfig` fields of the same name, with the
    same meaning and defaults (``catgan train --help`` describes them), except:

    Args:
        epochs: passes over X; None: as many as make at least 3,000 updates.
        batch_size: samples per step; None: 100, or all of them when X has fewer.
        image_shape: (H, W) or (C, H, W): read each flat row of X as such an image.
        device: auto (CUDA when available), cpu, cuda or cuda:N.
        random_state: an int, the training seed (as ``catgan train --seed``); None or a
            `numpy.random.RandomState`: a seed drawn from it.
        verbose: show a progress bar.

    Fitted attributes: ``classes_``, ``n_features_in_``, ``discriminator_`` (the one evaluated:
    the weight average with ``ema_decay``), ``generator_``, ``history_`` (the logged records:
    loss terms, entropies, gradient norms, D-scores), ``n_iter_`` (updates), ``config_``,
    ``summary_`` (training time, warnings), ``architecture_`` ("mlp" for flat rows, else "conv"),
    ``input_shape_`` (one sample as the networks see it), ``data_min_`` / ``data_max_`` (the input scaling).
    """

    def __init__(
        self,
        *,
        method: str = "catgan",
        lam: float = 1.0,
        marginal_weight: float = 1.0,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float = 2e-4,
        lr_g: float | None = None,
        lr_decay_start: float = 1.0,
        beta1: float = 0.5,
        beta2: float = 0.999,
        latent_dim: int = 100,
        latent_distribution: str = "gaussian",
        d_width: int = 32,
        g_width: int = 32,
        mlp_width: int = 1000,
        feature_dim: int = 128,
        d_noise: float = 0.3,
        d_norm: str = "batch",
        d_layout: str = "strided",
        instance_noise: float = 0.0,
        instance_noise_schedule: str = "linear",
        label_smoothing: float = 0.0,
        label_noise: float = 0.0,
        joint_batches: bool = False,
        d_steps: int = 1,
        g_steps: int = 1,
        feature_matching: float = 0.0,
        vat_weight: float = 0.0,
        vat_epsilon: float = 0.1,
        augment_weight: float = 0.0,
        augment_shift: float = 0.075,
        ema_decay: float = 0.0,
        bn_recalibration: int = 0,
        log_every: int = 20,
        on_nan: str = "stop",
        max_restarts: int = 3,
        restart_lr_factor: float = 0.5,
        image_shape: tuple[int, ...] | None = None,
        device: str = "auto",
        precision: str = "fp32",
        compile: str = "off",
        random_state=None,
        verbose: bool = False,
    ) -> None:
        _store_parameters(self, locals())

    def fit(self, X, y) -> "CatGANClassifier":
        """Train on X; ``y == -1`` (or ``"-1"`` for string targets) marks an unlabelled sample.

        Warns when no sample is unlabelled (the CatGAN terms then only see labelled samples);
        raises ValueError when none is labelled.
        """
        if self.method == "cnn":
            raise ValueError("method='cnn' (the plain-CNN baseline) is trained by `catgan train --method cnn`; the "
                             "estimator trains method='catgan' or 'supervised'")
        if self.method == "catgan" and isinstance(self.lam, numbers.Real) and self.lam == 0:
            raise ValueError("lam=0 would train without the labels (a clusterer); use lam > 0, or CatGANClusterer")
        images = self._images(X, reset=True)
        y = _column(y, len(images))
        unlabelled = unlabelled_mask(y)
        if unlabelled.all():
            raise ValueError("no sample is labelled (every target is -1); use CatGANClusterer to learn without labels")
        known = y[~unlabelled]
        check_classification_targets(known)
        self.classes_, codes = np.unique(known, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"the labelled samples hold only 1 class ({self.classes_[0]!r}); CatGAN needs at least 2")
        if not unlabelled.any() and self.method == "catgan":
            warnings.warn("no sample is unlabelled (y == -1): CatGAN's unsupervised terms will see the labelled "
                          "samples only", UserWarning, stacklevel=2)
        all_codes = np.zeros(len(y), dtype=np.int64)  # unlabelled samples' codes are never read
        all_codes[~unlabelled] = codes
        self._fit_networks(images, all_codes, np.flatnonzero(~unlabelled), [str(c) for c in self.classes_], None)
        return self

    def predict(self, X) -> np.ndarray:
        """(n,): the most probable class of each sample, as one of ``classes_``."""
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the labelled samples of (X, y); those with ``y == -1`` are left out."""
        check_is_fitted(self, "discriminator_")
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=[np.float64, np.float32])
        y = _column(y, len(X))
        keep = ~unlabelled_mask(y)
        if not keep.any():
            raise ValueError("score needs labelled samples; every target is -1")
        weights = None if sample_weight is None else _check_sample_weight(sample_weight, X)[keep]
        return float(np.average(self.predict(X[keep]) == y[keep], weights=weights))


class CatGANClusterer(ClusterMixin, _CatGANEstimator):
    """A CatGAN clusterer (Springenberg, ICLR 2016): the discriminator learns to put each sample
    in one of ``n_clusters`` clusters with certainty while using every cluster equally often,
    and to be uncertain about the generator's samples. ``fit(X)`` uses no labels.

    Parameters are as for `CatGANClassifier`, without the label options (``method``, ``lam``,
    ``label_smoothing``, ``label_noise``), plus:

    Args:
        n_clusters: K, the number of clusters (at least 2).

    Fitted attributes: as for the classifier (no ``classes_``), plus ``labels_``, the cluster of
    each training sample.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        *,
        marginal_weight: float = 1.0,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float = 2e-4,
        lr_g: float | None = None,
        lr_decay_start: float = 1.0,
        beta1: float = 0.5,
        beta2: float = 0.999,
        latent_dim: int = 100,
        latent_distribution: str = "gaussian",
        d_width: int = 32,
        g_width: int = 32,
        mlp_width: int = 1000,
        feature_dim: int = 128,
        d_noise: float = 0.3,
        d_norm: str = "batch",
        d_layout: str = "strided",
        instance_noise: float = 0.0,
        instance_noise_schedule: str = "linear",
        joint_batches: bool = False,
        d_steps: int = 1,
        g_steps: int = 1,
        feature_matching: float = 0.0,
        vat_weight: float = 0.0,
        vat_epsilon: float = 0.1,
        augment_weight: float = 0.0,
        augment_shift: float = 0.075,
        ema_decay: float = 0.0,
        bn_recalibration: int = 0,
        log_every: int = 20,
        on_nan: str = "stop",
        max_restarts: int = 3,
        restart_lr_factor: float = 0.5,
        image_shape: tuple[int, ...] | None = None,
        device: str = "auto",
        precision: str = "fp32",
        compile: str = "off",
        random_state=None,
        verbose: bool = False,
    ) -> None:
        _store_parameters(self, locals())

    def fit(self, X, y=None) -> "CatGANClusterer":
        """Train on X without labels (``y`` is ignored) and set ``labels_``."""
        images = self._images(X, reset=True)
        if not (isinstance(self.n_clusters, numbers.Integral) and self.n_clusters >= 2):
            raise ValueError(f"n_clusters must be an integer >= 2, got {self.n_clusters!r}")
        clusters = int(self.n_clusters)
        codes = np.zeros(len(images), dtype=np.int64)
        self._fit_networks(images, codes, np.zeros(0, dtype=np.int64), [str(k) for k in range(clusters)], clusters)
        self.labels_ = self._logits(images=images).argmax(dim=1).numpy()  # X as fit scaled it
        return self

    def predict(self, X) -> np.ndarray:
        """(n,): the cluster of each sample, in 0..n_clusters-1."""
        return self.predict_proba(X).argmax(axis=1)

    def score(self, X, y=None) -> float:
        """The discriminator's estimate of the mutual information between a sample and its cluster
        on X, in nats: H[mean p(k|x)] - mean H[p(k|x)], between 0 and log K; higher is better
        (CatGAN's own objective on real data, with the entropies of `catgan.losses`)."""
        logits = self._logits(X)
        return float(marginal_entropy(logits) - conditional_entropy(logits))


def _store_parameters(estimator: BaseEstimator, arguments: dict[str, Any]) -> None:
    """Keep each argument of ``__init__`` as the attribute of its name, unchanged (scikit-learn's contract)."""
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def _document_parameters(estimator: type, documented: set[str]) -> None:
    """Append to ``estimator``'s docstring its parameters that are `TrainConfig` fields, described
    from the configuration's one table (those in ``documented`` have their own entry)."""
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    names = [name for name in inspect.signature(estimator.__init__).parameters
             if name in fields and name not in documented]
    estimator.__doc__ = ((estimator.__doc__ or "") + "\n    The `TrainConfig` fields among the parameters:\n\n"
                         + describe(names, "        ") + "\n")  # (python -OO strips the docstring itself)


_document_parameters(CatGANClassifier, {"epochs", "batch_size", "device"})
_document_parameters(CatGANClusterer, {"epochs", "batch_size", "device"})


def expected_failed_checks(estimator: BaseEstimator) -> dict[str, str]:
    """The scikit-learn estimator checks that cannot apply to ``estimator``, each with the reason,
    for `sklearn.utils.estimator_checks.check_estimator` and ``parametrize_with_checks`` (since
    scikit-learn 1.6 this is where such checks are declared; the estimator tags no longer hold them)."""
    if isinstance(estimator, CatGANClassifier):
        return {
            "check_classifiers_classes": "it also fits binary targets -1 and 1, but -1 marks an unlabelled sample "
            "here, as in scikit-learn's semi-supervised estimators (which the check exempts by name)",
        }
    if isinstance(estimator, CatGANClusterer):
        one_cluster = ("it sets n_clusters=1, which CatGANClusterer refuses: with one cluster every term of "
                       "CatGAN's objective is 0; the classifier runs this check on the same input and prediction code")
        return {name: one_cluster for name in ("check_dont_overwrite_parameters", "check_methods_subset_invariance",
                                               "check_fit2d_1feature", "check_fit2d_predict1d")}
    return {}


def unlabelled_mask(y) -> np.ndarray:
    """Which targets mark an unlabelled sample: -1 in numeric targets, -1 or "-1" in others."""
    y = np.asarray(y)
    if y.dtype.kind in "iuf":
        return y == UNLABELLED
    return np.array([value == UNLABELLED or value == str(UNLABELLED) for value in y.tolist()], dtype=bool)


def _column(y, n: int) -> np.ndarray:
    """``y`` as a 1-d array of ``n`` targets (a column vector is accepted with a warning, as in scikit-learn)."""
    y = column_or_1d(y, warn=True)
    if len(y) != n:
        raise ValueError(f"X has {n} samples but y has {len(y)} targets")
    return y


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (TrainConfig checks types strictly)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def _warn(line: str) -> None:
    warnings.warn(line, CatGANTrainingWarning, stacklevel=2)
