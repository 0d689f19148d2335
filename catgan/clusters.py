"""What a clustering run's clusters hold, for a person to look at: a contact sheet of the images D
is most confident belong to each cluster, and a table of cluster sizes. Written into the run
directory at the end of training (on the training images) and again by ``catgan predict`` (on the
images it is given)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from catgan.runs import CLUSTER_SHEET, CLUSTER_SIZES, save_image_grid

__all__ = ["contact_sheet", "write_cluster_views"]


def contact_sheet(x: Tensor, probabilities: Tensor, per_cluster: int = 10, order=None) -> Tensor:
    """(K * per_cluster, C, H, W): for each cluster (in ``order``, default 0..K-1), the images of
    ``x`` assigned to it that D is most confident about, most confident first; grey (0) tiles fill
    the row of a cluster that holds fewer. ``probabilities`` (N, K) are D's, one row per image."""
    confidence, assigned = probabilities.max(dim=1)
    rows = []
    for k in range(probabilities.shape[1]) if order is None else order:
        members = torch.nonzero(assigned == k).flatten()
        best = members[torch.argsort(confidence[members], descending=True)][:per_cluster]
        rows += [x[best], torch.zeros((per_cluster - len(best), *x.shape[1:]), dtype=x.dtype)]
    return torch.cat(rows)


def write_cluster_views(run_dir: Path, x: Tensor, probabilities: Tensor, per_cluster: int = 10) -> None:
    """Write RUN/clusters.png (a row per cluster, `contact_sheet`) and RUN/cluster_sizes.csv
    (cluster, images, share %, D's mean confidence on them)."""
    save_image_grid(contact_sheet(x, probabilities, per_cluster), run_dir / CLUSTER_SHEET, nrow=per_cluster)
    confidence, assigned = probabilities.max(dim=1)
    counts = np.bincount(assigned.numpy(), minlength=probabilities.shape[1])
    with open(run_dir / CLUSTER_SIZES, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["cluster", "images", "share_percent", "mean_confidence"])
        for k, count in enumerate(counts):
            mean = float(confidence[assigned == k].mean()) if count else float("nan")
            out.writerow([k, int(count), f"{100 * count / len(assigned):.2f}", f"{mean:.4f}"])
