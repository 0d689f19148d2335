"""The ``catgan`` command: ``train``, ``evaluate``, ``sample`` and ``plot``.

A thin layer over the library: each handler builds a `TrainConfig` or opens a run directory and
calls library functions. Bad input ends with one line on stderr and exit status 2; a run whose
losses stop being finite keeps its last good state and exits with 3; SIGINT (Ctrl-C) and SIGTERM
save a checkpoint at the next step boundary and exit with 130 and 143 (a second Ctrl-C aborts at
once); ``catgan train --resume RUN`` continues such a run exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from catgan.config import (
    ARCHITECTURES,
    COMPILE_MODES,
    DATASETS,
    DEFAULT_EPOCHS,
    LATENT_DISTRIBUTIONS,
    METHODS,
    NOISE_SCHEDULES,
    ON_NAN,
    PRECISIONS,
    RESUME_MAY_CHANGE,
    CatGANError,
    TrainConfig,
    check_seed,
)
from catgan.diagnostics import TrainingDiverged
from catgan.distributed import ProcessGroup
from catgan.training import TrainingStopped

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _add(parser: argparse.ArgumentParser, field: str, help: str, **kwargs) -> None:
    """A ``--flag`` for config field ``field``; its default (None) leaves the config's own."""
    default = _DEFAULTS[field]
    shown = "" if default is None or isinstance(default, bool) else f" (default: {default})"
    parser.add_argument(f"--{field.replace('_', '-')}", dest=field, default=None, help=help + shown, **kwargs)


def _labels_per_class(text: str) -> int | str:
    """``all`` or an integer, for --labels-per-class."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from None


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="catgan",
        description="Categorical GANs (Springenberg, ICLR 2016) for semi-supervised classification and clustering.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = commands.add_parser(
        "train",
        help="train a CatGAN and report its test error",
        description="Train a CatGAN on a fixed schedule, then report its error on the test split. "
        "With no options: scikit-learn's digits with 5 labels per class.",
    )
    train.set_defaults(handler=_train)
    data = train.add_argument_group("data")
    _add(data, "dataset", "dataset to train on", choices=DATASETS)
    _add(data, "data_dir", "folder holding the data (default: ./data, and for fashion-mnist also Debian's "
         "/usr/share/datasets/fashion-mnist); for `arrays`, an .npz file with x_train, y_train, x_test, y_test")
    data.add_argument("--download", action="store_const", const=True, default=None,
                      help="let torchvision download the dataset into --data-dir")
    _add(data, "image_size", "`folder` only: resize images to this many pixels square", type=int)
    _add(data, "labels_per_class", "labelled images per class, or `all` (every training image labelled); "
         "0 trains without labels (clustering)", type=_labels_per_class)
    _add(data, "method", "catgan, or supervised: the same discriminator trained by cross-entropy on the labelled "
         "images alone, for the same number of updates (the baseline)", choices=METHODS)
    model = train.add_argument_group("objective and networks")
    _add(model, "clusters", "K, the number of clusters (default: the number of classes; any K >= 2 without labels)", type=int)
    _add(model, "lam", "weight of the supervised cross-entropy in the discriminator's loss", type=float)
    _add(model, "latent_dim", "size of the generator's latent vector", type=int)
    _add(model, "latent_distribution", "the generator's latent distribution: gaussian N(0, I) or uniform U(-1, 1)",
         choices=LATENT_DISTRIBUTIONS)
    _add(model, "architecture", "conv: convolutional networks; mlp: fully connected ones, which read each image as "
         "a flat vector (the permutation-invariant variant)", choices=ARCHITECTURES)
    _add(model, "d_width", "conv: channels of the discriminator's first layer", type=int)
    _add(model, "g_width", "conv: channels of the generator's last hidden layer", type=int)
    _add(model, "mlp_width", "mlp: W; the discriminator's hidden layers have W, W/2, W/4, W/4 units, the "
         "generator's two W/2", type=int)
    _add(model, "feature_dim", "size of the discriminator's penultimate layer", type=int)
    _add(model, "d_noise", "std of the Gaussian noise on the discriminator's hidden activations", type=float)
    practices = train.add_argument_group(
        "GAN practices (off by default; scripts/ablation.py measures each against the defaults)")
    _add(practices, "instance_noise", "std of Gaussian noise added to every image D trains on, real and generated",
         type=float)
    _add(practices, "instance_noise_schedule", "linear: the instance noise falls to 0 over the schedule; constant: "
         "it stays", choices=NOISE_SCHEDULES)
    _add(practices, "label_smoothing", "eps: the supervised targets put 1 - eps on the label, eps over all classes",
         type=float)
    _add(practices, "label_noise", "share of the labelled batch given a random class at each step", type=float)
    practices.add_argument("--joint-batches", action="store_const", const=True, default=None,
                           help="real and generated images through D in one batch (default: separate batches)")
    _add(practices, "d_steps", "D updates per round of G updates", type=int)
    _add(practices, "g_steps", "G updates per round", type=int)
    _add(practices, "lr_g", "G's Adam learning rate (default: --lr)", type=float)
    _add(practices, "feature_matching", "weight of feature matching (Salimans et al. 2016) in G's loss", type=float)
    _add(practices, "ema_decay", "evaluate with an exponential moving average of D's weights (e.g. 0.999)",
         type=float)
    schedule = train.add_argument_group("schedule")
    epochs = ", ".join(f"{name} {n}" for name, n in DEFAULT_EPOCHS.items())
    _add(schedule, "epochs", f"passes over the training images (default per dataset: {epochs})", type=int)
    _add(schedule, "batch_size", "unlabelled and generated images per step", type=int)
    _add(schedule, "lr", "Adam learning rate", type=float)
    _add(schedule, "lr_decay_start", "fraction of the schedule after which the learning rates fall linearly to 0 "
         "(1: constant)", type=float)
    _add(schedule, "beta1", "Adam beta1", type=float)
    _add(schedule, "beta2", "Adam beta2", type=float)
    _add(schedule, "seed", "seed of the labelled subset, initialisation and batches", type=int)
    _add(schedule, "device", "auto, cpu, cuda or cuda:N")
    speed = train.add_argument_group("speed (see the README's \"Speed\" section)")
    _add(speed, "precision", "fp32, or bf16: forward passes under bfloat16 autocast (faster on GPUs and on CPUs "
         "with AMX; changes the numbers a run produces)", choices=PRECISIONS)
    speed.add_argument("--compile", nargs="?", const="default", default=None, choices=COMPILE_MODES,
                       help="torch.compile both networks, in this mode (alone: default; reduce-overhead also "
                       "records CUDA graphs)")
    output = train.add_argument_group("output")
    _add(output, "out_dir", "parent folder of run directories")
    _add(output, "name", "run directory name (default: dataset, labels, seed and time); an existing one is refused")
    _add(output, "eval_every", "also evaluate on the test split every N epochs, for the log only", type=int)
    _add(output, "log_every", "log loss terms, gradient norms and D-scores every N steps", type=int)
    _add(output, "sample_every", "also save a grid of samples from fixed noise every N epochs, into RUN/samples/",
         type=int)
    output.add_argument("--tensorboard", action="store_const", const=True, default=None,
                        help="also write the logged figures for TensorBoard into RUN/tensorboard/ "
                        "(needs: pip install tensorboard)")
    output.add_argument("--no-progress", dest="progress", action="store_const", const=False, default=None,
                        help="hide the progress bar")
    long_runs = train.add_argument_group("long runs")
    long_runs.add_argument("--resume", metavar="RUN", help="continue the stopped or killed run RUN from its checkpoint, "
                           "with its saved settings; of the options above only " +
                           ", ".join("--" + name.replace("_", "-") for name in RESUME_MAY_CHANGE) + " may change")
    _add(long_runs, "checkpoint_steps", "save a resumable checkpoint every N steps (0: by time only)", type=int)
    _add(long_runs, "checkpoint_minutes", "and every M minutes (0: by steps only)", type=float)
    _add(long_runs, "on_nan", "when a loss or weight stops being finite: stop, keeping the last good checkpoint, "
         "or restart from it with lower learning rates", choices=ON_NAN)
    _add(long_runs, "max_restarts", "with --on-nan restart: restarts allowed before the run stops", type=int)
    _add(long_runs, "restart_lr_factor", "with --on-nan restart: each restart multiplies the learning rates by this",
         type=float)

    evaluate = _run_command(
        commands, "evaluate", _evaluate, "evaluate a finished run on its test split",
        "Rebuild a run's discriminator from its checkpoint and report its figures on the test split.",
    )
    evaluate.add_argument("--data-dir", help="where the data is now (default: as when trained)")
    sample = _run_command(
        commands, "sample", _sample, "draw images from a run's generator",
        "Draw images from a run's generator into a PNG grid.",
    )
    sample.add_argument("--num", type=int, default=100, help="number of images (default: 100)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent noise (default: 0)")
    sample.add_argument("--out", help="PNG file to write (default: RUN/samples-seed<SEED>.png)")
    plot = commands.add_parser(
        "plot", help="draw a run's training curves into PNG files",
        description="Draw a run's logged loss terms, entropies, gradient norms, D-scores, the classes D gives "
        "generated images, and its test figures, one PNG file each.",
    )
    plot.set_defaults(handler=_plot)
    plot.add_argument("run", metavar="RUN", help="run directory (finished or still training)")
    plot.add_argument("--out", help="folder to write into (default: RUN/plots)")
    return parser


def _run_command(commands, name: str, handler, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that opens a finished run: RUN and --device."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.set_defaults(handler=handler)
    parser.add_argument("run", metavar="RUN", help="run directory")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return parser


def _train(args: argparse.Namespace) -> int:
    from catgan.training import resume, train

    options = {name: value for name, value in vars(args).items() if name in _DEFAULTS and value is not None}
    if args.resume is not None:
        TrainConfig(**options)  # the options given must be valid on their own
        result = resume(args.resume, options)
    else:
        config = TrainConfig(**options)
        result = train(config, command=" ".join(["catgan", *map(shlex.quote, args.argv)]))
    if result.run_dir is None:  # a process other than rank 0 of several: rank 0 reports
        return 0
    _print_figures(result.summary, len(result.data.x_test))
    files = ", ".join(sorted(p.name for p in result.run_dir.iterdir()))
    print(f"wrote {result.run_dir}: {files}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from catgan.runs import load_run
    from catgan.data import load_dataset
    from catgan.training import evaluate, resolve_device

    config, model, classes = load_run(args.run, resolve_device(args.device))
    if args.data_dir is not None:
        config = dataclasses.replace(config, data_dir=args.data_dir, download=False)
    data = load_dataset(config)
    if data.image_shape != model.image_shape or data.classes != classes:
        raise CatGANError(
            f"{args.run} was trained on {len(classes)} classes of {model.image_shape} images, but the data "
            f"found for {config.dataset} holds {data.num_classes} classes of {data.image_shape} images"
        )
    _print_figures(evaluate(model, data.x_test, data.y_test, config.uses_labels), len(data.x_test))
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from catgan.runs import RUN_FILES, load_run, save_image_grid
    from catgan.training import resolve_device

    if args.num < 1:
        raise CatGANError(f"--num must be at least 1, got {args.num}")
    check_seed(args.seed)
    config, model, _ = load_run(args.run, resolve_device(args.device))
    out = Path(args.out) if args.out else Path(args.run) / f"samples-seed{args.seed}.png"
    if out.resolve().parent == Path(args.run).resolve() and out.name in RUN_FILES:
        raise CatGANError(f"{out} is one of the run's own files; choose another --out")
    z = model.sample_latent(args.num, generator=torch.Generator().manual_seed(args.seed))
    model.eval()
    with torch.no_grad():
        images = model.generator(z)
    try:
        save_image_grid(images, out)
    except (OSError, ValueError) as err:
        raise CatGANError(f"cannot write {out}: {err}") from None
    print(f"wrote {args.num} samples to {out}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from catgan.plots import plot_run

    written = plot_run(args.run, args.out)
    print(f"wrote {len(written)} plots to {written[0].parent}: {', '.join(p.name for p in written)}")
    return 0


def _print_figures(figures: dict, test_images: int) -> None:
    if "clustering_accuracy" in figures:
        line = (f"clustering accuracy (one-to-one): {figures['clustering_accuracy']:.2f}%  "
                f"NMI {figures['nmi']:.3f}  ARI {figures['ari']:.3f}")
        if "many_to_one_accuracy" in figures:
            line += f"  many-to-one accuracy: {figures['many_to_one_accuracy']:.2f}%"
        print(f"{line}  ({test_images} test images)")
    else:
        print(f"test error: {figures['test_error']:.2f}% ({test_images} test images)")


def main(argv: list[str] | None = None) -> int:
    """Run the ``catgan`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.handler(args)
    except TrainingDiverged as err:
        _say(f"catgan {args.command}: stopped: {err}")
        return EXIT_DIVERGED
    except TrainingStopped as err:
        _say(f"catgan {args.command}: {err}")
        return err.exit_status
    except CatGANError as err:
        _say(f"catgan {args.command}: error: {err}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _say(f"catgan {args.command}: interrupted")
        return EXIT_INTERRUPTED


def _say(line: str) -> None:
    """A closing line on stderr; of several processes started by torchrun, rank 0 alone says it."""
    try:
        group = ProcessGroup.from_environment()
    except CatGANError:
        group = None
    if group is None or group.is_main:
        print(line, file=sys.stderr)
