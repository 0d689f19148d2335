"""Classification and clustering metrics.

Accuracies here are fractions in [0, 1]; run summaries report them in percent.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

__all__ = [
    "accuracy",
    "error_rate",
    "contingency",
    "clustering_accuracy",
    "many_to_one_accuracy",
    "clustering_scores",
    "clustering_report",
    "cluster_names",
    "named_cluster_error",
]


def _labels(y) -> np.ndarray:
    return np.asarray(y).reshape(-1)


def accuracy(y_true, y_pred) -> float:
    """Fraction of predictions equal to the true label."""
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"need two non-empty label arrays of one length, got {y_true.shape} and {y_pred.shape}")
    return float(np.mean(y_true == y_pred))


def error_rate(y_true, y_pred) -> float:
    """Fraction of predictions different from the true label (1 - accuracy)."""
    return 1.0 - accuracy(y_true, y_pred)


def contingency(y_true, clusters) -> np.ndarray:
    """Counts (n_clusters, n_classes): how many samples of each class fall in each cluster.

    Classes and clusters are taken in sorted order of their distinct values.
    """
    y_true, clusters = _labels(y_true), _labels(clusters)
    _, class_idx = np.unique(y_true, return_inverse=True)
    _, cluster_idx = np.unique(clusters, return_inverse=True)
    table = np.zeros((cluster_idx.max() + 1, class_idx.max() + 1), dtype=np.int64)
    np.add.at(table, (cluster_idx, class_idx), 1)
    return table


def clustering_accuracy(y_true, clusters) -> float:
    """One-to-one clustering accuracy: the best accuracy over one-to-one cluster-to-class maps.

    The map is found by Hungarian matching (scipy's ``linear_sum_assignment``) on the contingency
    table. With more clusters than classes, each class gets one cluster and the samples of the
    remaining clusters count as errors.
    """
    accuracy(y_true, clusters)  # validates the shapes
    table = contingency(y_true, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def many_to_one_accuracy(y_true, clusters) -> float:
    """Many-to-one clustering accuracy: each cluster is mapped to its majority class.

    Several clusters may map to the same class, so this never falls below the one-to-one
    accuracy and reaches 1 when every sample has its own cluster; quote it only beside K.
    """
    accuracy(y_true, clusters)
    table = contingency(y_true, clusters)
    return float(table.max(axis=1).sum() / table.sum())


def clustering_scores(y_true, clusters, num_clusters: int | None = None) -> dict[str, float]:
    """Clustering accuracy (one-to-one), NMI and ARI (scikit-learn), as fractions.

    When the model has more clusters than there are classes (``num_clusters``, by default the
    number of distinct clusters found), ``many_to_one_accuracy`` is added.
    """
    scores = {
        "clustering_accuracy": clustering_accuracy(y_true, clusters),
        "nmi": float(normalized_mutual_info_score(_labels(y_true), _labels(clusters))),
        "ari": float(adjusted_rand_score(_labels(y_true), _labels(clusters))),
    }
    if num_clusters is None:
        num_clusters = len(np.unique(clusters))
    if num_clusters > len(np.unique(y_true)):
        scores["many_to_one_accuracy"] = many_to_one_accuracy(y_true, clusters)
    return scores


def clustering_report(y_true, clusters, num_clusters: int | None = None) -> dict[str, float]:
    """`clustering_scores` as a run reports them: accuracies in percent, ``test_error`` = 100 -
    the one-to-one accuracy (the paper's clustering error), NMI and ARI in [0, 1]."""
    scores = clustering_scores(y_true, clusters, num_clusters)
    report = {
        "test_error": 100.0 * (1.0 - scores["clustering_accuracy"]),
        "clustering_accuracy": 100.0 * scores["clustering_accuracy"],
        "nmi": scores["nmi"],
        "ari": scores["ari"],
    }
    if "many_to_one_accuracy" in scores:
        report["many_to_one_accuracy"] = 100.0 * scores["many_to_one_accuracy"]
    return report


def cluster_names(clusters, y, num_clusters: int) -> np.ndarray:
    """The class each of ``num_clusters`` clusters is named by: the majority class of the labelled
    samples (``clusters`` their clusters, ``y`` their classes) that fall in it; ties go to the
    smaller class, and a cluster that holds none of them is named -1."""
    clusters, y = _labels(clusters), _labels(y)
    if clusters.shape != y.shape:
        raise ValueError(f"need one cluster per labelled sample, got {clusters.shape} and {y.shape}")
    names = np.full(num_clusters, -1, dtype=np.int64)
    for k in range(num_clusters):
        held = y[clusters == k]
        if held.size:
            values, counts = np.unique(held, return_counts=True)
            names[k] = values[counts.argmax()]
    return names


def named_cluster_error(y_true, clusters, names: np.ndarray) -> float:
    """Fraction of samples whose cluster's name (`cluster_names`) is not their class; a sample in a
    cluster named -1 counts as wrong. The paper's protocol for its unsupervised error (Springenberg
    2016, Sec. 5.1, read with K = 20 and the 100 labelled MNIST images naming the clusters)."""
    y_true, clusters = _labels(y_true), _labels(clusters)
    return error_rate(y_true, np.asarray(names)[clusters])
