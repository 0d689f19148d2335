"""CatGAN beside its baselines on one evaluation protocol of PROTOCOLS.md, over seeds.

    python scripts/compare.py PROTOCOL [--seeds N] [--data-dir DIR] [--device auto] [--jobs N] [--threads N]

Each run is its recorded `catgan train` command, in a process of its own (--jobs of them side by
side, the CPU's threads shared among them), and leaves its run directory under --runs-dir. A run
whose directory already holds a summary.json is not run again, so the script can be stopped and
resumed; one that did not finish goes on from its last checkpoint (`catgan train --resume`), or,
without one, is moved aside and run again. From all finished runs it writes
results/PROTOCOL.json (every run), results/PROTOCOL.md (mean and sample standard deviation per
method, beside the published anchors) and results/PROTOCOL.png, keeping the records that the earlier
results/PROTOCOL.json holds of runs whose directories are not here; for
semi-supervised MNIST and Fashion-MNIST protocols also the error against the number of labels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from catgan import TrainConfig, load_dataset
from catgan.baselines import kmeans_on_features, kmeans_on_pixels
from catgan.data import labelled_indices
from catgan.cli import EXIT_DIVERGED, train_config
from catgan.config import RESUME_MAY_CHANGE, CatGANError
from catgan.runs import git_commit, load_checkpoint, load_run, set_aside, write_json

REPO = Path(__file__).resolve().parent.parent

# Schedules fixed before any protocol run. MNIST-like widths and epochs: see the end of
# results/pilot-mnist.md (validation images carved from the training split, never the test split).
SETTINGS = {
    "digits": {},
    "mnist": dict(epochs=10, d_width=32, g_width=16),
    "fashion-mnist": dict(epochs=10, d_width=32, g_width=16),
}

# The permutation-invariant protocols' networks and schedule (fully connected D and G), chosen on
# 10,000 held-out training images (results/pilot-mnist.md, pi-* variants): Improved GAN's noise
# levels on D (the defaults' validation error rose to 16.22%; with the noise it plateaus near 7%),
# 40 epochs with the rates falling linearly over the second half (with VAT: still falling at epoch
# 20; the decay beat the constant rate at epoch 40), and D weight-normalised instead of batch-
# normalised (as Improved GAN's D; with VAT, 1.85 and 1.82% at epoch 40 on seeds 0 and 1, against
# 2.83%). The weights of feature matching and VAT below (1 each) are not chosen; VAT's is the one
# the pilot measured.
PI_SETTINGS = dict(architecture="mlp", epochs=40, lr_decay_start=0.5, instance_noise=0.3,
                   instance_noise_schedule="constant", d_noise=0.5, d_norm="weight")

# Clustering protocols name each cluster by the labelled images of their semi-supervised
# counterpart (digits-quick: 5 per class; mnist-100, fashion-100: 10), drawn with the run's seed.
NAMING_LABELS = {"digits": 5, "mnist": 10, "fashion-mnist": 10}
PROBE = 5000  # training images (read without labels) for D's label-free mutual information

# Published figures, as listed in ../shared/docs/PROTOCOLS.md: Springenberg 2016 (CatGAN, its
# supervised-only CNN), Salimans et al. 2016 (Improved-GAN), Li et al. 2017 (Triple-GAN),
# Dai et al. 2017 (Bad GAN), Xie et al. 2016 (DEC), Ji et al. 2019 (IIC), Mukherjee et al. 2019
# (ClusterGAN). Test error % unless the row says ACC.
ANCHORS = {
    "mnist-100": ["Conv-CatGAN 1.39 ± 0.28", "PI-CatGAN 1.91 ± 0.10", "supervised-only small CNN 6.43 ± 0.84",
                  "Improved-GAN 0.93 ± 0.07", "Triple-GAN 0.91 ± 0.58", "Bad GAN 0.80"],
    "mnist-1000": ["PI-CatGAN 1.73 ± 0.18"],
    "mnist-100-pi": ["PI-CatGAN 1.91 ± 0.10", "Improved-GAN (feature matching) 0.93 ± 0.07", "Bad GAN 0.795",
                     "Ladder 1.06 ± 0.37", "VAT 1.36"],
    "mnist-1000-pi": ["PI-CatGAN 1.73 ± 0.18"],
    "mnist-all": ["Conv-CatGAN 0.48", "small CNN 0.36"],
    "mnist-cluster": ["Conv-CatGAN 95.73 ACC (4.27 error)", "k-means on pixels 53-57 ACC", "DEC 84.3 ACC",
                      "IIC 99.2 ACC"],
    "mnist-cluster-paper": ["Conv-CatGAN 4.27 error (Table 2)", "PI-CatGAN 9.7 error (Table 1)"],
    "fashion-cluster": ["ClusterGAN 61.2 ACC"],
    "digits-cluster": ["k-means on pixels 77.8 ACC (issue 18's figure, measured here in the k-means row)"],
    "fashion-100": ["small CNN with all labels ~ 90-92 accuracy (8-10 error)"],
    "fashion-1000": ["small CNN with all labels ~ 90-92 accuracy (8-10 error)"],
}


@dataclasses.dataclass
class Method:
    label: str  # shown in tables
    slug: str  # run directory stem
    options: dict  # TrainConfig fields; {"kmeans": K} for the k-means baseline
    seeds: int | None = None  # None: the protocol's number of seeds


def with_vat(labels: int | str) -> Method:
    """CatGAN with virtual adversarial training on D (Miyato et al. 2018), weight 1."""
    return Method("CatGAN + VAT", "catgan-vat", dict(labels_per_class=labels, vat_weight=1.0))


def extensions(labels: int | str) -> list[Method]:
    """Issue 19's switches beyond the paper, alone and together: feature matching for G (Salimans et
    al. 2016) and virtual adversarial training on D, weight 1 each."""
    fm, vat = dict(feature_matching=1.0), with_vat(labels)
    return [Method("CatGAN + feature matching", "catgan-fm", dict(labels_per_class=labels, **fm)),
            vat,
            Method("CatGAN + feature matching + VAT", "catgan-fm-vat", {**vat.options, **fm})]


def semi_supervised(labels: int | str, plain_cnn: bool = True, with_extensions: bool = False) -> list[Method]:
    """CatGAN beside its baselines: the plain CNN (issue 19's; not on digits-quick, the protocol
    of the quick checks), the same D trained on the labels alone, and the same D with all labels;
    with ``with_extensions``, also CatGAN with the `extensions` and with augmentation consistency
    (D's prediction kept under translations; convolutional protocols only, as it reads the image's
    layout)."""
    cnn = [Method("plain CNN (labels only, cross-validated on them)", "cnn", dict(labels_per_class=labels, method="cnn"))]
    augment = Method("CatGAN + augmentation consistency", "catgan-augment",
                     dict(labels_per_class=labels, augment_weight=1.0))
    return [
        Method("CatGAN", "catgan", dict(labels_per_class=labels)),
        *(extensions(labels) + [augment] if with_extensions else []),
        *(cnn if plain_cnn else []),
        Method("supervised baseline (same D, labels only)", "supervised", dict(labels_per_class=labels, method="supervised")),
        Method("all labels (same D, supervised)", "all-labels", dict(labels_per_class="all", method="supervised")),
    ]


# Issue 18's fix for dead clusters, chosen on digits and, on MNIST, without test labels
# (results/clustering-diagnosis.md): a larger weight of the marginal entropy, and augmentation
# consistency on D (on digits, better on each of 5 seeds, by 0.2 to 8.7 points,
# results/clustering-sweep/digits-augment.md; on MNIST, one seed, D's own mutual information ranks it
# above the weight alone, results/clustering-sweep/mnist-augment.md).
FIX = dict(marginal_weight=2.0, augment_weight=1.0)
FIX_LABEL = "--marginal-weight 2 --augment-weight 1"


def clustering() -> list[Method]:
    """mnist-cluster and fashion-cluster: K = 10 and K = 20 (its runs also serve mnist-cluster-paper)."""
    return [
        Method("CatGAN, K = 10 (the paper's objective)", "catgan-k10", dict(labels_per_class=0, clusters=10)),
        Method(f"CatGAN, K = 10, {FIX_LABEL}", "catgan-k10-fix", dict(labels_per_class=0, clusters=10, **FIX)),
        Method("k-means on pixels, K = 10", "kmeans-k10", dict(kmeans=10)),
        *over_clustering(),
    ]


def over_clustering() -> list[Method]:
    """K = 20: mnist-cluster's many-to-one rows and mnist-cluster-paper's (clusters named by labelled images)."""
    return [
        Method("CatGAN, K = 20 (the paper's objective)", "catgan-k20", dict(labels_per_class=0, clusters=20)),
        Method(f"CatGAN, K = 20, {FIX_LABEL}", "catgan-k20-fix", dict(labels_per_class=0, clusters=20, **FIX)),
        Method("k-means on pixels, K = 20", "kmeans-k20", dict(kmeans=20)),
    ]


def digits_clustering() -> list[Method]:
    """digits-cluster: the paper's weight of the marginal entropy and two larger ones (issue 18's
    first lever, results/clustering-diagnosis.md), beside k-means on the same pixels."""
    return [
        Method("CatGAN, K = 10 (the paper's objective)", "catgan-k10", dict(labels_per_class=0, clusters=10)),
        Method("CatGAN, K = 10, --marginal-weight 2", "catgan-k10-w2", dict(labels_per_class=0, clusters=10,
                                                                             marginal_weight=2.0)),
        Method("CatGAN, K = 10, --marginal-weight 3", "catgan-k10-w3", dict(labels_per_class=0, clusters=10,
                                                                             marginal_weight=3.0)),
        Method("k-means on pixels, K = 10", "kmeans-k10", dict(kmeans=10)),
    ]


def permutation_invariant(labels: int, switches: list[Method]) -> list[Method]:
    """mnist-100-pi and mnist-1000-pi: the fully connected CatGAN, with each of ``switches`` (its
    variants beyond the paper), beside the same D on the labels alone."""
    return [Method("CatGAN (fully connected)", "catgan", dict(labels_per_class=labels)),
            *switches,
            Method("supervised baseline (same D, labels only)", "supervised",
                   dict(labels_per_class=labels, method="supervised"))]


PROTOCOLS = {
    "digits-quick": ("digits", 5, semi_supervised(5, plain_cnn=False)),
    "digits-cluster": ("digits", 5, digits_clustering()),
    "mnist-100": ("mnist", 5, semi_supervised(10, with_extensions=True)),
    "mnist-1000": ("mnist", 3, semi_supervised(100)),
    "mnist-100-pi": ("mnist", 5, permutation_invariant(10, extensions(10))),
    # with 1,000 labels only VAT, the switch that carried mnist-100-pi below the paper's figure
    "mnist-1000-pi": ("mnist", 3, permutation_invariant(100, [with_vat(100)])),
    "mnist-all": ("mnist", 3, [Method("CatGAN, all labels", "catgan", dict(labels_per_class="all")),
                               Method("same D, supervised", "supervised", dict(labels_per_class="all", method="supervised"))]),
    "mnist-cluster": ("mnist", 3, clustering()),
    "fashion-100": ("fashion-mnist", 3, semi_supervised(10)),
    "fashion-1000": ("fashion-mnist", 3, semi_supervised(100)),
    "fashion-cluster": ("fashion-mnist", 3, clustering()),
    "mnist-cluster-paper": ("mnist", 3, over_clustering()),
}
# Protocols that report runs of another: mnist-cluster-paper reads mnist-cluster's K = 20 runs.
RUNS_OF = {"mnist-cluster-paper": "mnist-cluster"}


def train_args(config: TrainConfig) -> list[str]:
    """The arguments of the `catgan train` command that reproduces ``config`` (its non-default fields)."""
    words = ["train"]
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value == field.default or field.name == "progress":
            continue
        flag = "--" + field.name.replace("_", "-")
        words += [flag] if value is True else [flag, str(value)]
    return words


def cli_command(config: TrainConfig) -> str:
    return "catgan " + shlex.join(train_args(config))


def plan(protocol: str, seeds: int | None, args) -> list[tuple[Method, int, Path, TrainConfig]]:
    """Every run of the protocol: its method, seed, run directory and configuration."""
    dataset, default_seeds, methods = PROTOCOLS[protocol]
    runs = []
    for method in methods:
        for seed in range(method.seeds or seeds or default_seeds):
            run_dir = Path(args.runs_dir) / RUNS_OF.get(protocol, protocol) / f"{method.slug}-seed{seed}"
            if "kmeans" in method.options:
                options = dict(labels_per_class=0, clusters=method.options["kmeans"])
            elif method.options.get("method") == "cnn":  # chooses its own training: no schedule applies
                options = method.options
            else:
                settings = PI_SETTINGS if protocol.endswith("-pi") else SETTINGS[dataset]
                options = {**settings, **method.options, **({"epochs": args.epochs} if args.epochs else {})}
            config = TrainConfig(dataset=dataset, data_dir=args.data_dir, seed=seed, device=args.device,
                                 out_dir=str(run_dir.parent), name=run_dir.name, **options)
            runs.append((method, seed, run_dir, config))
    return runs


def resumable(run_dir: Path, config: TrainConfig) -> bool:
    """Whether the unfinished run in ``run_dir`` has a checkpoint with training state to resume
    from and was started with the planned settings."""
    saved_path = run_dir / "config.json"
    if not (run_dir / "checkpoint.pt").is_file() or not saved_path.is_file():
        return False
    try:
        return not differing_settings(json.loads(saved_path.read_text()), config) and \
            "training" in load_checkpoint(run_dir)
    except (ValueError, TypeError, CatGANError):  # cut short, not a configuration, or not a checkpoint
        return False


def differing_settings(saved: dict, config: TrainConfig) -> list[str]:
    """The configuration fields (other than those a resume may change) in which ``saved`` differs
    from the planned ``config``; a field ``saved`` lacks (made before it existed) counts as its default."""
    planned = dataclasses.replace(config, epochs=config.resolved_epochs()).to_dict()
    defaults = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    return sorted(k for k in planned if k not in RESUME_MAY_CHANGE and planned[k] != saved.get(k, defaults[k]))


def check_finished_run_matches(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to count a finished run whose saved configuration is not the planned one. A field the
    saved configuration lacks (a run made before the field existed) counts as its default."""
    saved_path = run_dir / "config.json"
    if not (run_dir / "summary.json").is_file() or not saved_path.is_file():  # k-means runs save none
        return
    differing = differing_settings(json.loads(saved_path.read_text()), config)
    if differing:
        sys.exit(f"compare.py: {run_dir} was run with other settings ({', '.join(differing)}); "
                 f"move it away or use another --runs-dir")


def run_one(method: Method, seed: int, run_dir: Path, config: TrainConfig, protocol: str, threads: int) -> str:
    """Run one planned run to its end; returns an error line, or "" when it finished.

    An earlier attempt that was stopped or killed is resumed from its checkpoint when it was
    started with the planned settings; any other unfinished directory is set aside (NAME.incomplete)
    and the run starts again."""
    command = [*train_args(config), "--no-progress"]
    if run_dir.exists():
        if "kmeans" not in method.options and resumable(run_dir, config):
            command = ["train", "--resume", str(run_dir)]
        else:
            set_aside(run_dir)
    if "kmeans" not in method.options:  # the recorded command itself, in a process of its own
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        log = run_dir.with_name(run_dir.name + ".log")
        with open(log, "a" if command[1] == "--resume" else "w") as out:
            done = subprocess.run(
                [sys.executable, "-m", "catgan", *command], stdout=out,
                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
            )
        if done.returncode == EXIT_DIVERGED and (run_dir / "summary.json").is_file():
            return ""  # an outcome, not a failure: the tables name the runs that diverged
        if done.returncode != 0:
            lines = log.read_text().strip().splitlines()
            return f"{run_dir.name} failed ({done.returncode}): {lines[-1] if lines else 'no output'} (see {log})"
        if config.labels_per_class == 0:
            cluster_figures(run_dir, threads)  # here, side by side with the other runs, rather than in collect
        return ""
    k, data = config.clusters, load_dataset(config)
    with threadpool_limits(threads):  # in this process: keep to its share of the CPU
        report = kmeans_on_pixels(data, k, seed, naming=naming_indices(data, config))
    run_dir.mkdir(parents=True)
    write_json(run_dir / "summary.json", {
        **report, "clusters": k, "labelled": 0, "dataset": config.dataset, "device": "cpu (scikit-learn)",
        "torch_version": torch.__version__, "git_commit": git_commit(),
        "command": f"python scripts/compare.py {protocol}  # k-means, K = {k}, seed {seed}, n_init 10",
    })
    return ""


def run_all(todo, protocol: str, jobs: int, threads: int | None = None) -> list[str]:
    """Run the planned runs ``todo``, ``jobs`` of them side by side with ``threads`` CPU threads each
    (default: the cores shared among them), with a progress bar; returns one error line per run
    that failed."""
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    failures = []
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(todo), desc=protocol, unit="run") as bar:
        futures = {pool.submit(run_one, *run, protocol, threads): run for run in todo}
        for future in as_completed(futures):
            method, seed, run_dir, _ = futures[future]
            error = future.result()
            failures += [error] if error else []
            bar.write(error or f"finished {method.label}, seed {seed} ({run_dir})")
            bar.update()
    return failures


def naming_indices(data, config: TrainConfig) -> np.ndarray:
    """The training images whose labels name the clusters (see NAMING_LABELS)."""
    return labelled_indices(data.y_train, NAMING_LABELS[config.dataset], config.seed)


def cluster_figures(run_dir: Path, threads: int) -> dict:
    """What a finished CatGAN clustering run's summary does not hold (kept in RUN/cluster_figures.json):
    - ``test_shares`` and ``dead_clusters``: the share of the test images in each cluster (D's argmax,
      evaluation mode), and how many clusters hold under 1% of them;
    - ``mutual_information``: D's estimate H[p_bar] - E H[p(y|x)], in nats, on the first PROBE
      training images, read without labels (the selection rule that reads no label);
    - ``marginal_entropy_probe`` and ``assignment_entropy_probe``: the entropy of D's mean soft
      prediction on those images, and of the histogram of its hard assignments (argmax);
    - ``named_error``: test error % when each cluster takes the majority class of the naming images
      (the paper's protocol; a cluster that holds none of them is wrong for every image in it);
    - ``kmeans_features_*``: k-means with one cluster per class on D's penultimate features."""
    from catgan.evaluation import predict_logits
    from catgan.losses import conditional_entropy, marginal_entropy
    from catgan.metrics import cluster_names, named_cluster_error

    path = run_dir / "cluster_figures.json"
    if path.is_file():
        return json.loads(path.read_text())
    config, model, _ = load_run(run_dir)
    data, k, discriminator = load_dataset(config), model.num_clusters, model.discriminator
    test = predict_logits(discriminator, data.x_test).argmax(dim=1)
    shares = (torch.bincount(test, minlength=k).float() / len(test)).tolist()
    probe = predict_logits(discriminator, data.x_train[:PROBE])
    naming = naming_indices(data, config)
    names = cluster_names(predict_logits(discriminator, data.x_train[naming]).argmax(dim=1).numpy(),
                          data.y_train[naming].numpy(), k)
    with threadpool_limits(threads):
        features = kmeans_on_features(discriminator, data, data.num_classes, config.seed)
    figures = {
        "test_shares": shares, "dead_clusters": sum(share < 0.01 for share in shares),
        "mutual_information": float(marginal_entropy(probe) - conditional_entropy(probe)),
        # the probe's marginal entropy from D's soft outputs, and from its hard assignments (argmax)
        "marginal_entropy_probe": float(marginal_entropy(probe)),
        "assignment_entropy_probe": float(entropy(torch.bincount(probe.argmax(dim=1), minlength=k).float())),
        "named_error": 100.0 * named_cluster_error(data.y_test.numpy(), test.numpy(), names),
        "kmeans_features_accuracy": features["clustering_accuracy"], "kmeans_features_nmi": features["nmi"],
    }
    write_json(path, figures)
    return figures


def entropy(counts: torch.Tensor) -> float:
    """The entropy in nats of the distribution proportional to ``counts``."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def collect(runs, threads: int = 1) -> list[dict]:
    records = []
    for method, seed, run_dir, config in runs:
        summary_path = run_dir / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if config.labels_per_class == 0 and "kmeans" not in method.options and summary.get("status") != "diverged":
                summary.update(cluster_figures(run_dir, threads))
            records.append({"method": method.label, "slug": method.slug, "seed": seed,
                            "labels_per_class": config.labels_per_class, **summary})
    return records


def earlier_records(protocol: str, runs, results_dir: Path) -> list[dict]:
    """The records that results/PROTOCOL.json holds of planned runs whose directories are not here
    (runs made on another machine, or removed since), so that a table keeps them; each marked with
    ``from`` (that file). A record counts only when its recorded command trained the planned
    configuration (where the data, the runs and the device were aside); k-means records, which
    have no such command, count by method and seed."""
    path = results_dir / f"{protocol}.json"
    if not path.is_file():
        return []
    missing = {(method.slug, seed): (method, config) for method, seed, run_dir, config in runs if not run_dir.exists()}
    kept = []
    for record in json.loads(path.read_text())["runs"]:
        method, config = missing.get((record["slug"], record["seed"]), (None, None))
        if method is None:
            continue
        if "kmeans" not in method.options:
            try:
                recorded = train_config(record.get("command") or "")
            except CatGANError:
                continue
            aside = {"out_dir", "name", "device"}
            if [name for name in differing_settings(recorded.to_dict(), config) if name not in aside]:
                continue
        kept.append({**record, "from": f"results/{path.name}"})
    return kept


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else float("nan"))


def fmt(values: list[float], digits: int = 2) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def write_results(protocol: str, records: list[dict], args, results_dir: Path) -> None:
    dataset, _, methods = PROTOCOLS[protocol]
    clustering = any(r.get("clustering_accuracy") is not None for r in records)
    overrides = f" (overridden: --epochs {args.epochs}; not the protocol's schedule)" if args.epochs else ""
    lines = [f"# {protocol}", "",
             f"Made by `python scripts/compare.py {protocol}`{overrides}; each run's exact command, commit, device,",
             f"torch version and wall time are in `{protocol}.json`. Mean ± sample standard deviation over seeds.", ""]
    if clustering:
        lines += ["| method | seeds | clustering ACC % (one-to-one) | NMI | ARI | many-to-one ACC % | minutes per run |",
                  "|---|---|---|---|---|---|---|"]
    else:
        lines += ["| method | seeds | test error % | minutes per run | device |", "|---|---|---|---|---|"]
    for method in methods:
        rows = [r for r in records if r["slug"] == method.slug and r.get("status") != "diverged"]
        if not rows:
            continue
        minutes = fmt([r["wall_seconds"] / 60 for r in rows], 1)
        if clustering:
            many = [r["many_to_one_accuracy"] for r in rows if "many_to_one_accuracy" in r]
            lines.append(f"| {method.label} | {len(rows)} | {fmt([r['clustering_accuracy'] for r in rows])} | "
                         f"{fmt([r['nmi'] for r in rows], 3)} | {fmt([r['ari'] for r in rows], 3)} | "
                         f"{fmt(many) if many else '-'} | {minutes} |")
        else:
            devices = ", ".join(sorted({r["device"] for r in rows}))
            lines.append(f"| {method.label} | {len(rows)} | {fmt([r['test_error'] for r in rows])} | {minutes} | "
                         f"{devices} |")
    if clustering:
        lines += cluster_lines(methods, records, NAMING_LABELS[dataset])
    lines += diverged_lines(records)
    earlier = sorted({f"{r['method']}" for r in records if "from" in r})
    if earlier:
        lines += ["", f"Rows whose run directories were not on the machine that wrote this table, read from the "
                      f"records an earlier run of this script left in {protocol}.json: {'; '.join(earlier)}."]
    devices = sorted({r["device"] for r in records})
    threads = sorted({r["cpu_threads"] for r in records if "cpu_threads" in r})
    lines += ["", f"Devices: {', '.join(devices)}; CPU threads per run: {', '.join(map(str, threads)) or '-'} "
              f"(runs may have run side by side). torch {', '.join(sorted({r['torch_version'] for r in records}))}."]
    if protocol in ANCHORS:
        lines += ["", "Published anchors (PROTOCOLS.md): " + "; ".join(ANCHORS[protocol]) + "."]
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{protocol}.md").write_text("\n".join(lines) + "\n")
    (results_dir / f"{protocol}.json").write_text(json.dumps({"protocol": protocol, "runs": records}, indent=2) + "\n")
    plot_protocol(protocol, records, methods, clustering, results_dir / f"{protocol}.png")
    if not clustering and protocol.split("-")[0] in ("mnist", "fashion"):
        plot_label_sweep(protocol.split("-")[0], results_dir)
    print("\n".join(lines))


def cluster_lines(methods: list[Method], records: list[dict], per_class: int) -> list[str]:
    """The table of `cluster_figures` (and the k-means rows' named error), per method."""
    lines = ["", f"Beyond accuracy: clusters holding under 1% of the test images; D's mutual information between "
             f"image and cluster on {PROBE} training images, read without labels (the selection rule); the test "
             f"error when each cluster takes the majority class of the {per_class} labelled training images per "
             f"class that it holds (the paper's protocol); k-means with one cluster per class on D's penultimate "
             f"features.", "",
             "| method | dead clusters | MI (nats, no labels) | error %, clusters named by labelled images | "
             "k-means on D's features: ACC % |", "|---|---|---|---|---|"]
    for method in methods:
        rows = [r for r in records if r["slug"] == method.slug and "named_error" in r]
        if not rows:
            continue
        cells = [fmt([r[key] for r in rows], digits) if all(key in r for r in rows) else "-"
                 for key, digits in (("dead_clusters", 1), ("mutual_information", 3), ("named_error", 2),
                                     ("kmeans_features_accuracy", 2))]
        lines.append(f"| {method.label} | " + " | ".join(cells) + " |")
    return lines


def diverged_lines(records: list[dict]) -> list[str]:
    """Lines naming the runs that stopped at a non-finite loss (left out of the means)."""
    diverged = [f"{r['method']} seed {r['seed']} (step {r['diverged_at_step']})" for r in records
                if r.get("status") == "diverged"]
    return ["", f"Diverged (non-finite loss; left out of the means): {'; '.join(diverged)}."] if diverged else []


def plot_protocol(protocol, records, methods, clustering, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "clustering_accuracy" if clustering else "test_error"
    shown = [(m.label, [r[key] for r in records if r["slug"] == m.slug and key in r]) for m in methods]
    shown = [(label, values) for label, values in shown if values]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.7 * len(shown)))
    means = [statistics.fmean(v) for _, v in shown]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in shown]
    ax.barh(range(len(shown)), means, xerr=stds, capsize=4, color="tab:blue")
    for i, (_, values) in enumerate(shown):
        ax.plot(values, [i] * len(values), "k.", alpha=0.6)
    ax.set_yticks(range(len(shown)), [f"{label} (n={len(v)})" for label, v in shown])
    ax.invert_yaxis()
    ax.set_xlabel("clustering accuracy % (one-to-one)" if clustering else "test error %")
    ax.set_title(f"{protocol}: mean ± sample std over seeds\n(dots: single seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_label_sweep(prefix: str, results_dir: Path) -> None:
    """Test error against labels per class, per method, over the protocols of ``prefix`` that have results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, dict[int, tuple[float, float]]] = {}  # method -> labels per class -> (mean, std)
    for name in (f"{prefix}-100", f"{prefix}-1000", f"{prefix}-all"):
        path = results_dir / f"{name}.json"
        if not path.is_file():
            continue
        by_method: dict[str, list[dict]] = {}
        for record in json.loads(path.read_text())["runs"]:
            if "test_error" in record:  # not the diverged ones
                by_method.setdefault(record["method"], []).append(record)
        for method, rows in by_method.items():
            labels = rows[0]["labels_per_class"]
            mean, std = mean_std([r["test_error"] for r in rows])
            points.setdefault(method, {}).setdefault(6000 if labels == "all" else labels, (mean, 0.0 if math.isnan(std) else std))
    if sum(len(p) for p in points.values()) < 2:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, by_labels in sorted(points.items()):
        xs = sorted(by_labels)
        ax.errorbar(xs, [by_labels[x][0] for x in xs], yerr=[by_labels[x][1] for x in xs], marker="o", capsize=3,
                    label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("labelled images per class (6000: all)")
    ax.set_ylabel("test error %")
    ax.set_title(f"{prefix}: test error against labels (mean ± sample std)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results_dir / f"{prefix}-labels.png", dpi=120)
    plt.close(fig)


def add_run_options(parser: argparse.ArgumentParser, runs_dir: Path) -> None:
    """The options of every script that runs planned runs through `run_all` (this one, ablation.py)."""
    parser.add_argument("--data-dir", help="passed to catgan train (MNIST: a folder of the four IDX files)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="runs side by side, the CPU's threads shared among them")
    parser.add_argument("--threads", type=int, help="CPU threads per run (default: the CPU's cores / --jobs); "
                        "keep jobs x threads at or below the cores, counting other such processes")
    parser.add_argument("--runs-dir", default=str(runs_dir))
    parser.add_argument("--results-dir", default=str(REPO / "results"))
    parser.add_argument("--epochs", type=int, help="override the schedule (smoke tests only; marked in the table)")


def check_run_options(args: argparse.Namespace, script: str) -> None:
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        sys.exit(f"{script}: --jobs and --threads must be at least 1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", choices=sorted(PROTOCOLS))
    parser.add_argument("--seeds", type=int, help="seeds per method (default: the protocol's)")
    add_run_options(parser, runs_dir=Path("runs") / "compare")  # relative, so recorded commands rerun anywhere
    parser.add_argument("--only", nargs="+", metavar="METHOD", help="run only these methods (run directory stems, "
                        "e.g. supervised all-labels); the tables still cover every finished run")
    parser.add_argument("--only-seeds", nargs="+", type=int, metavar="SEED", help="run only these seeds")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and their commands, run nothing")
    parser.add_argument("--report-only", action="store_true", help="run nothing; write the tables from the finished runs")
    args = parser.parse_args()
    check_run_options(args, "compare.py")
    runs = plan(args.protocol, args.seeds, args)
    for method, seed, run_dir, config in runs:
        check_finished_run_matches(run_dir, config)
    slugs = {method.slug for method, *_ in runs}
    unknown = sorted(set(args.only or []) - slugs)
    if unknown:
        sys.exit(f"compare.py: --only {' '.join(unknown)}: {args.protocol} has the methods {', '.join(sorted(slugs))}")
    todo = [run for run in runs if not (run[2] / "summary.json").is_file() and (not args.only or run[0].slug in args.only)
            and (args.only_seeds is None or run[1] in args.only_seeds)]
    finished = sum((run_dir / "summary.json").is_file() for _, _, run_dir, _ in runs)
    only = f", {len(todo)} of the others to run now (--only)" if args.only or args.only_seeds is not None else ""
    print(f"{args.protocol}: {len(runs)} runs, {finished} already finished{only}", flush=True)
    if args.report_only:
        todo = []
    if args.dry_run:
        for method, seed, run_dir, config in todo:
            print(f"{run_dir}: {'k-means' if 'kmeans' in method.options else cli_command(config)}")
        return 0
    failures = run_all(todo, args.protocol, args.jobs, args.threads)
    records = collect(runs, args.threads or max(1, (os.cpu_count() or 1) // args.jobs))
    records += earlier_records(args.protocol, runs, Path(args.results_dir))
    if records:
        write_results(args.protocol, records, args, Path(args.results_dir))
    for error in failures:
        print(f"compare.py: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
