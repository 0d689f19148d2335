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


def test_naming_takes_the_papers_error_apart_and_adds_up_to_it(make_config, digits, tmp_path):
    import re

    import numpy as np

    from catgan.data import labelled_indices
    from catgan.metrics import cluster_names, named_cluster_error
    from catgan.runs import load_run
    from catgan.training import predict_logits

    run = train(make_config(labels_per_class=0, clusters=12, epochs=1), data=digits, log=lambda m: None).run_dir
    out = tmp_path / "naming.md"
    done = subprocess.run([sys.executable, str(SCRIPT), str(run), "--images", "100", "--naming", "2",
                           "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    part = out.read_text().split("labelled training images per class")[1]
    rows = [line.strip("|").split("|") for line in part.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 12 and sum(int(row[1]) for row in rows) == len(digits.y_test)
    errors = sum(int(row[5]) for row in rows)
    figures = map(float, re.findall(r"(\d+\.\d\d)", part.splitlines()[-1]))
    total, minority, unnamed, misnamed, many_to_one, purity = figures
    assert abs(purity + many_to_one - 100) < 0.011
    assert total == round(100 * errors / len(digits.y_test), 2)
    assert abs(minority + unnamed + misnamed - total) < 0.02
    assert minority - 0.01 <= many_to_one <= minority + unnamed + 0.01  # unnamed clusters lose their minority too
    # the same figure computed here from the run itself, as compare.py's mnist-cluster-paper does
    config, model, _ = load_run(run)
    chosen = labelled_indices(digits.y_train, 2, config.seed)
    names = cluster_names(predict_logits(model.discriminator, digits.x_train[chosen]).argmax(dim=1).numpy(),
                          digits.y_train[chosen].numpy(), 12)
    test = predict_logits(model.discriminator, digits.x_test).argmax(dim=1).numpy()
    assert total == round(100 * named_cluster_error(digits.y_test.numpy(), test, names), 2)
    assert np.sum(names < 0) == sum(row[4].strip() == "none" for row in rows)
    counts = np.zeros((12, 10), dtype=int)
    np.add.at(counts, (test, digits.y_test.numpy()), 1)
    assert many_to_one == round(100 * (1 - counts.max(axis=1).sum() / len(test)), 2)
    for c, row in enumerate(rows):  # each cluster's errors: its test images not of its name's class
        right = counts[c, names[c]] if names[c] >= 0 else 0
        assert int(row[1]) == counts[c].sum() and int(row[5]) == counts[c].sum() - right
    refused = subprocess.run([sys.executable, str(SCRIPT), str(run), "--classes", "--naming", "2"],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "drop --classes" in refused.stderr and "Traceback" not in refused.stderr
    refused = subprocess.run([sys.executable, str(SCRIPT), str(run), "--naming", "1000"], capture_output=True, text=True)
    assert refused.returncode == 1 and "--naming 1000" in refused.stderr and "Traceback" not in refused.stderr
