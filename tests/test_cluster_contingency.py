"""scripts/cluster_contingency.py: a clustering run's clusters against the hidden classes."""

import subprocess
import sys
from pathlib import Path

from catgan.training import train

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "cluster_contingency.py"


def test_counts_every_image_once_per_cluster_and_refuses_labelled_runs(make_config, digits, tmp_path):
    clustering = train(make_config(labels_per_class=0, clusters=12, epochs=1), data=digits, log=lambda m: None)
    labelled = train(make_config(epochs=1), data=digits, log=lambda m: None)
    out = tmp_path / "table.md"
    plot, by_cluster = tmp_path / "table.png", tmp_path / "by-cluster.png"
    done = subprocess.run([sys.executable, str(SCRIPT), str(clustering.run_dir), "--images", "500", "--out", str(out),
                           "--plot", str(plot), "--by-cluster", str(by_cluster)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 12  # one per cluster, K = 12 over 10 classes
    counts = [[int(cell) for cell in row.strip("|").split("|")[1:11]] for row in rows]
    assert sum(map(sum, counts)) == 500
    assert all(sum(row) == int(line.split("|")[12]) for row, line in zip(counts, rows))
    from PIL import Image

    assert plot.stat().st_size > 1000
    # a row of 10 images per cluster: 8x8 digits enlarged to 32-pixel tiles, 2 pixels of border each
    width, height = Image.open(by_cluster).size
    assert ((width - 2) / 34, (height - 2) / 34) == (10, 12)
    refused = subprocess.run([sys.executable, str(SCRIPT), str(labelled.run_dir)], capture_output=True, text=True)
    assert refused.returncode == 1 and "trained with labels" in refused.stderr and "Traceback" not in refused.stderr
    assert "--classes" in refused.stderr
    # --classes: a semi-supervised run's classes against the true ones, its 50 labelled images left out
    done = subprocess.run([sys.executable, str(SCRIPT), str(labelled.run_dir), "--classes", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 10 and sum(int(line.split("|")[12]) for line in rows) == len(digits.y_train) - 50
    refused = subprocess.run([sys.executable, str(SCRIPT), str(clustering.run_dir), "--classes"], capture_output=True,
                             text=True)
    assert refused.returncode == 1 and "trained without labels" in refused.stderr
