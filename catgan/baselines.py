"""Baselines that involve no GAN: k-means on pixels for clustering.

(The supervised baseline, the same discriminator trained by cross-entropy on the labelled images
alone, is ``TrainConfig(method="supervised")``.)
"""

from __future__ import annotations

import time

from catgan.data import ImageData
from catgan.metrics import clustering_report

__all__ = ["kmeans_on_pixels"]


def kmeans_on_pixels(data: ImageData, clusters: int, seed: int, n_init: int = 10) -> dict[str, float]:
    """k-means (scikit-learn) on the raw pixels of the training images, evaluated on the test split.

    Returns the figures of `catgan.metrics.clustering_report` and ``wall_seconds``.
    """
    from sklearn.cluster import KMeans

    start = time.perf_counter()
    kmeans = KMeans(n_clusters=clusters, n_init=n_init, random_state=seed).fit(data.x_train.flatten(1).numpy())
    assigned = kmeans.predict(data.x_test.flatten(1).numpy())
    report = clustering_report(data.y_test.numpy(), assigned, num_clusters=clusters)
    return {**report, "wall_seconds": time.perf_counter() - start}
