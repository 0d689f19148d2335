"""Accuracy, error and clustering metrics against hand-computed values."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from catgan.metrics import (
    accuracy,
    clustering_accuracy,
    clustering_report,
    clustering_scores,
    cluster_names,
    contingency,
    error_rate,
    many_to_one_accuracy,
    named_cluster_error,
)


def test_accuracy_and_error():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert error_rate([0, 1, 2, 2], [0, 1, 1, 2]) == 0.25
    with pytest.raises(ValueError):
        accuracy([0, 1], [0, 1, 2])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_clustering_accuracy_ignores_cluster_names():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, size=500)
    renamed = rng.permutation(10)[y] + 100  # a one-to-one renaming
    assert clustering_accuracy(y, renamed) == 1.0
    assert accuracy(y, renamed) == 0.0


def test_clustering_accuracy_hand_computed():
    y = [0, 0, 1, 1, 2, 2]
    clusters = [1, 1, 0, 0, 0, 2]
    # contingency rows = clusters 0, 1, 2; columns = classes 0, 1, 2
    assert contingency(y, clusters).tolist() == [[0, 2, 1], [2, 0, 0], [0, 0, 1]]
    assert clustering_accuracy(y, clusters) == pytest.approx(5 / 6)


def test_more_clusters_than_classes():
    y = [0, 0, 1, 1]
    clusters = [0, 1, 2, 3]
    assert clustering_accuracy(y, clusters) == 0.5  # two clusters stay unmatched
    assert many_to_one_accuracy(y, clusters) == 1.0
    scores = clustering_scores(y, clusters)
    assert scores["many_to_one_accuracy"] == 1.0 and scores["clustering_accuracy"] == 0.5


def test_many_to_one_is_reported_only_when_k_exceeds_the_classes():
    y = [0, 1, 0, 1]
    assert "many_to_one_accuracy" not in clustering_scores(y, [1, 0, 1, 0])
    assert "many_to_one_accuracy" in clustering_scores(y, [1, 0, 1, 0], num_clusters=20)


def test_nmi_and_ari_are_scikit_learns():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=300)
    clusters = np.where(rng.random(300) < 0.7, y, rng.integers(0, 5, size=300))
    scores = clustering_scores(y, clusters)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(y, clusters))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(y, clusters))
    assert 0.2 < scores["nmi"] < 1.0


def test_clustering_report_is_in_percent_with_the_clustering_error():
    report = clustering_report([0, 0, 1, 1], [5, 5, 5, 7], num_clusters=2)
    assert report["clustering_accuracy"] == 75.0 and report["test_error"] == 25.0
    assert 0 < report["nmi"] < 1 and "many_to_one_accuracy" not in report


def test_clusters_take_the_majority_class_of_their_labelled_images_and_empty_ones_count_as_wrong():
    # labelled images: cluster 0 holds classes 1, 1, 2; cluster 1 holds 0 and 2 (a tie: the smaller class);
    # cluster 2 holds none
    names = cluster_names([0, 0, 0, 1, 1], [1, 1, 2, 0, 2], num_clusters=3)
    assert names.tolist() == [1, 0, -1]
    # test images: two in cluster 0 (classes 1 and 2), one in cluster 1 (class 0), two in cluster 2
    assert named_cluster_error([1, 2, 0, 0, 1], [0, 0, 1, 2, 2], names) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="one cluster per labelled sample"):
        cluster_names([0, 1], [0], num_clusters=2)
