"""Baselines that involve no GAN: k-means on pixels for clustering, and k-means on a trained
discriminator's penultimate features (how much of a clustering run's result is in its features).

(The supervised baseline, the same discriminator trained by cross-entropy on the labelled images
alone, is ``TrainConfig(method="supervised")``.)
"""

from __future__ import annotations

import time

import numpy as np
from torch import Tensor, nn

from catgan.data import ImageData
from catgan.metrics import cluster_names, clustering_report, named_cluster_error

__all__ = ["kmeans_on_features", "kmeans_on_pixels"]


def kmeans_on_pixels(data: ImageData, clusters: int, seed: int, n_init: int = 10,
                     naming: np.ndarray | None = None) -> dict[str, float]:
    """k-means (scikit-learn) on the raw pixels of the training images, evaluated on the test split.

    Returns the figures of `catgan.metrics.clustering_report` and ``wall_seconds``; with
    ``naming`` (indices of training images whose labels may be read), also ``named_error``: the
    test error % when each cluster takes the majority class of those images in it
    (`catgan.metrics.named_cluster_error`).
    """
    return _kmeans(data.x_train.flatten(1), data.x_test.flatten(1), data, clusters, seed, n_init, naming)


def kmeans_on_features(discriminator: nn.Module, data: ImageData, clusters: int, seed: int,
                       n_init: int = 10, naming: np.ndarray | None = None) -> dict[str, float]:
    """k-means on D's penultimate features (evaluation mode) of the training images, evaluated on
    the test split's features; the figures of `kmeans_on_pixels`."""
    from catgan.evaluation import predict_features

    return _kmeans(predict_features(discriminator, data.x_train), predict_features(discriminator, data.x_test),
                   data, clusters, seed, n_init, naming)


def _kmeans(train: Tensor, test: Tensor, data: ImageData, clusters: int, seed: int, n_init: int,
            naming: np.ndarray | None) -> dict[str, float]:
    from sklearn.cluster import KMeans

    start = time.perf_counter()
    kmeans = KMeans(n_clusters=clusters, n_init=n_init, random_state=seed).fit(train.numpy())
    assigned, y_test = kmeans.predict(test.numpy()), data.y_test.numpy()
    report = clustering_report(y_test, assigned, num_clusters=clusters)
    if naming is not None:
        names = cluster_names(kmeans.labels_[naming], data.y_train.numpy()[naming], clusters)
        report["named_error"] = 100.0 * named_cluster_error(y_test, assigned, names)
    return {**report, "wall_seconds": time.perf_counter() - start}
