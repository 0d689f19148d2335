"""The ``catgan`` command: ``train``, ``evaluate``, ``sample`` and ``plot``.

A thin layer over the library: each handler builds a `TrainConfig` or opens a run directory and
calls library functions. What belongs to an application is here: the progress bar, the process's
settings (glibc's allocator, OpenMP's spinning: see `catgan.performance`), signals and exit
codes. Bad input ends with one line on stderr and exit status 2; the library's messages name
configuration fields as `name`, shown here as --name. A run whose losses stop being finite keeps
its last good state and exits with 3; SIGINT (Ctrl-C) and SIGTERM save a checkpoint at the next
step boundary and exit with 130 and 143 (a second Ctrl-C aborts at once); ``catgan train
--resume RUN`` continues such a run exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from catgan.config import GROUPS, RESUME_MAY_CHANGE, CatGANError, TrainConfig, check_seed

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
# GNU OpenMP's idle workers (torch's CPU threads between operations) spin for milliseconds before
# they sleep (libgomp's default: 300,000 spins), taking the cores on which D's noise is drawn in
# parallel (catgan.kernels.NoiseStreams). OpenMP reads this once, when torch is first imported; a
# value the user set wins.
OPENMP_SPINCOUNT = "30000"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _add_train_options(train: argparse.ArgumentParser) -> None:
    """A flag for every configuration field, in `GROUPS`, from the one table in `catgan.config`.
    A flag left out leaves the configuration's default (its own default is None)."""
    groups = {key: train.add_argument_group(title) for key, title in GROUPS.items()}
    for field in dataclasses.fields(TrainConfig):
        meta, flag = field.metadata, _flag(field.name)
        help = _flags(meta["help"])
        if field.default is not None and not isinstance(field.default, bool):
            help += f" (default: {field.default})"
        if "const" in meta["command"]:
            help += f"; the flag alone: {meta['command']['const']}"
        group = groups[meta["group"]]
        if meta["kind"] is bool:  # a switch that turns the default around
            if field.default:
                help += " (on by default; this flag turns it off)"
            group.add_argument(flag, dest=field.name, action="store_const", const=not field.default, default=None,
                               help=help)
            continue
        kind = meta["kind"] if meta["kind"] in (int, float, str) else _parsed_by(meta["kind"])
        group.add_argument(flag, dest=field.name, default=None, help=help, choices=meta["choices"],
                           type=None if meta["choices"] else kind, **meta["command"])


def _flag(field: str) -> str:
    """The flag of configuration field ``field``: --name, or --no-name for a switch that is on by default."""
    return ("--no-" if _DEFAULTS[field] is True else "--") + field.replace("_", "-")


def _parsed_by(parse):
    """``parse`` for argparse: the message of its ValueError becomes a one-line usage error."""
    def parsed(text: str):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return parsed


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
    _add_train_options(train)
    train.add_argument("--resume", metavar="RUN", help="continue the stopped or killed run RUN from its checkpoint, "
                       "with its saved settings; of the options above only " +
                       ", ".join(map(_flag, RESUME_MAY_CHANGE)) + " may change")

    evaluate = _run_command(
        commands, "evaluate", _evaluate, "evaluate a finished run on its test split",
        "Rebuild a run's discriminator from its checkpoint and report its figures on the test split.",
    )
    evaluate.add_argument("--data-dir", help="where the data is now (default: as when trained)")
    evaluate.add_argument("--bn-recalibration", type=int, default=0, metavar="N",
                          help="report the figures with D's batch-norm statistics re-estimated for its final weights "
                               "over N training images, as `train --bn-recalibration N` would have; the run's files "
                               "are left as they are")
    sample = _run_command(
        commands, "sample", _sample, "draw images from a run's generator",
        "Draw images from a run's generator into a PNG grid.",
    )
    sample.add_argument("--num", type=int, default=100, help="number of images (default: 100)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent noise (default: 0)")
    sample.add_argument("--out", help="PNG file to write (default: RUN/samples-seed<SEED>.png)")
    predict = _run_command(
        commands, "predict", _predict, "predict the class (or cluster) of new images",
        "Read image files, folders of images (any depth) or .npz files (array x, else x_test), make them fit "
        "the run as its training images were (resized, grey or colour), and write one CSV row per image: its "
        "name and predicted class with each class's probability, or for a clustering run its cluster and D's "
        "confidence. A clustering run's clusters.png and cluster_sizes.csv are redrawn from these images.",
    )
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder of images, or .npz file")
    predict.add_argument("--out", default="predictions.csv", help="CSV file to write (default: predictions.csv)")
    predict.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    predict.add_argument("--skip-unreadable", action="store_true", help="skip image files that cannot be read, "
                         "and say how many (default: stop at the first, naming it)")
    predict.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    export = commands.add_parser(
        "export", help="write a run's discriminator to a file that loads without catgan",
        description="Write the discriminator with its preprocessing (resize, scaling to [-1, 1]) and class names "
        "as a torch.export program: torch.export.load(FILE).module() maps images (B, C, H, W) with values 0..255 "
        "to class probabilities. A FILE ending in .onnx is written as an ONNX model instead (needs: pip install "
        "'catgan[onnx]').",
    )
    export.set_defaults(handler=_export)
    export.add_argument("run", metavar="RUN", help="run directory")
    export.add_argument("--out", required=True, help="file to write (for example model.pt2)")
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
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
    from catgan import performance
    from catgan.distributed import ProcessGroup
    from catgan.progress import ProgressBar
    from catgan.runtime import resolve_device
    from catgan.training import Stop, resume, train

    options = {name: value for name, value in vars(args).items() if name in _DEFAULTS and value is not None}
    config = TrainConfig(**options)  # with --resume: the options given must be valid on their own
    if args.resume is not None:
        config = _saved_config(args.resume, options) or config
    if resolve_device(config.device).type == "cpu":
        performance.tune_cpu()
    group = ProcessGroup.from_environment()
    stop = Stop()
    with ProgressBar(f"train {config.dataset}", config.progress and (group is None or group.is_main)) as bar, \
            _StopOnSignals(stop) as signals:
        def on_step(step: int, total: int, record: dict | None) -> None:
            signals.armed = True  # training runs: a signal now stops it at a step boundary
            bar(step, total, record)

        hooks = {"on_step": on_step, "stop": stop, "report": lambda line: bar.write(_flags(line))}
        if args.resume is not None:
            result = resume(args.resume, options, **hooks)
        else:
            result = train(config, command=" ".join(["catgan", *map(shlex.quote, args.argv)]), **hooks)
    if result.run_dir is None:  # a process other than rank 0 of several: rank 0 reports
        return 0
    _print_figures(result.summary, len(result.data.x_test))
    files = ", ".join(sorted(p.name for p in result.run_dir.iterdir()))
    print(f"wrote {result.run_dir}: {files}")
    return 0


def train_config(command: str) -> TrainConfig:
    """The configuration a recorded ``catgan train ...`` command line trains with (as a run's
    summary records it); CatGANError when it is not one."""
    words = shlex.split(command)
    if words[:2] != ["catgan", "train"]:
        raise CatGANError(f"not a catgan train command: {command!r}")
    try:
        args = _build_parser().parse_args(words[1:])
    except SystemExit:
        raise CatGANError(f"not a valid catgan train command: {command!r}") from None
    return TrainConfig(**{name: value for name, value in vars(args).items() if name in _DEFAULTS and value is not None})


def _saved_config(run: str, options: dict[str, Any]) -> TrainConfig | None:
    """The configuration a resumed run will train with (its saved one, with the options a resume
    may change), for the progress bar and the process settings; None when it cannot be read (the
    resume itself then says why)."""
    try:
        saved = json.loads((Path(run).expanduser() / "config.json").read_text())
        changes = {name: value for name, value in options.items() if name in RESUME_MAY_CHANGE}
        return dataclasses.replace(TrainConfig.from_dict(saved), **changes)
    except (OSError, ValueError, TypeError):
        return None


class _StopOnSignals:
    """While active (in the main thread only), SIGINT and SIGTERM abort at once until training
    runs (``armed``); then they ask it to stop at the next step boundary (the `Stop`'s reason
    records which), and a second SIGINT aborts at once."""

    def __init__(self, stop) -> None:
        self.stop, self.armed = stop, False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if not self.armed or (self.stop.reason and signum == signal.SIGINT):
            raise KeyboardInterrupt
        self.stop.reason = signum

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _evaluate(args: argparse.Namespace) -> int:
    from catgan.data import load_dataset
    from catgan.evaluation import evaluate
    from catgan.runs import load_run
    from catgan.runtime import resolve_device

    config, model, classes = load_run(args.run, resolve_device(args.device))
    if args.data_dir is not None:
        config = dataclasses.replace(config, data_dir=args.data_dir, download=False)
    data = load_dataset(config)
    if data.image_shape != model.image_shape or data.classes != classes:
        raise CatGANError(
            f"{args.run} was trained on {len(classes)} classes of {model.image_shape} images, but the data "
            f"found for {config.dataset} holds {data.num_classes} classes of {data.image_shape} images"
        )
    if len(data.x_test) == 0:
        raise CatGANError(f"the data of {args.run} has no test split to evaluate on")
    if args.bn_recalibration:
        _recalibrate(args.run, config, model, data, args.bn_recalibration)
    _print_figures(evaluate(model, data.x_test, data.y_test, config.uses_labels), len(data.x_test))
    return 0


def _recalibrate(run: str, config: TrainConfig, model, data, images: int) -> None:
    """`catgan evaluate --bn-recalibration`: the run's D with its batch-norm statistics re-estimated
    in memory (`catgan.evaluation.reestimate_batchnorm`), refused where training could not have."""
    import numpy as np

    from catgan.evaluation import check_reestimable, reestimate_batchnorm
    from catgan.runs import read_labelled

    if images < 0:
        raise CatGANError(f"--bn-recalibration must be at least 0, got {images}")
    check_reestimable(run, config, images)
    labelled = np.array(read_labelled(run), dtype=np.int64) if config.uses_labels else None
    batches = reestimate_batchnorm(model.discriminator, data.x_train, config.method == "catgan", labelled, images,
                                   config.batch_size, config.seed)
    print(f"D's batch-norm statistics re-estimated over {batches} batches of training images (the run's files are "
          "unchanged)")


def _predict(args: argparse.Namespace) -> int:
    import time

    from tqdm.auto import tqdm

    from catgan.clusters import write_cluster_views
    from catgan.data import Usable
    from catgan.predict import predict_probabilities, read_inputs, write_predictions
    from catgan.runs import load_run
    from catgan.runtime import resolve_device

    out = _output_file(args.out, args.overwrite)
    config, model, classes = load_run(args.run, resolve_device(args.device))
    usable = Usable(args.skip_unreadable)
    names, sources = read_inputs(args.inputs, model.image_shape, usable)
    if usable.skipped:
        print(f"skipped {usable.skipped} unreadable image files")
    if not names:
        raise CatGANError("no readable image among the inputs")
    start = time.perf_counter()
    with tqdm(total=len(names), desc="predict", unit="image", disable=not args.progress, dynamic_ncols=True) as bar:
        probabilities, images = predict_probabilities(model.discriminator, sources, model.image_shape, bar.update)
    seconds = time.perf_counter() - start
    write_predictions(out, names, probabilities, classes if config.uses_labels else None)
    print(f"wrote {out}: {len(names)} images in {seconds:.2f} s ({1000 * seconds / len(names):.2f} s per 1,000)")
    if not config.uses_labels and images is None:
        print(f"{Path(args.run) / 'clusters.png'} is left as it was: it is drawn from at most 10,000 images")
    elif not config.uses_labels:
        write_cluster_views(Path(args.run).expanduser(), images, probabilities)
        print(f"redrew {Path(args.run) / 'clusters.png'} and cluster_sizes.csv from these images")
    return 0


def _output_file(path: str, overwrite: bool) -> Path:
    """``path`` as a file the command may write: refused when it exists (unless ``overwrite``) or
    its folder does not."""
    out = Path(path).expanduser()
    if out.exists() and not overwrite:
        raise CatGANError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise CatGANError(f"no such folder for {out}: {out.parent}")
    return out


def _export(args: argparse.Namespace) -> int:
    from catgan.export import export_run

    metadata = export_run(args.run, _output_file(args.out, args.overwrite), overwrite=True)
    named = ", ".join(metadata["classes"]) if metadata["classes"] else f"{metadata['clusters']} clusters"
    print(f"wrote {args.out}: images (B, {metadata['image_shape'][0]}, H, W) of 0..255 -> probabilities of {named}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import torch

    from catgan.runs import RUN_FILES, load_run, save_image_grid
    from catgan.runtime import resolve_device

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
    if test_images == 0:
        print("no test split, so no test figures (a folder's test/<class>/ images, or x_test and y_test, give them)")
    elif "clustering_accuracy" in figures:
        line = (f"clustering accuracy (one-to-one): {figures['clustering_accuracy']:.2f}%  "
                f"NMI {figures['nmi']:.3f}  ARI {figures['ari']:.3f}")
        if "many_to_one_accuracy" in figures:
            line += f"  many-to-one accuracy: {figures['many_to_one_accuracy']:.2f}%"
        print(f"{line}  ({test_images} test images)")
    else:
        print(f"test error: {figures['test_error']:.2f}% ({test_images} test images)")


def main(argv: list[str] | None = None) -> int:
    """Run the ``catgan`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    if "torch" not in sys.modules:
        os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    from catgan.diagnostics import TrainingDiverged
    from catgan.training import TrainingStopped

    try:
        return args.handler(args)
    except TrainingDiverged as err:
        _say(f"catgan {args.command}: stopped: {_flags(str(err))}")
        return EXIT_DIVERGED
    except TrainingStopped as err:
        resume = f"; continue with: catgan train --resume {err.run_dir}" if err.run_dir is not None else ""
        _say(f"catgan {args.command}: stopped by {signal.Signals(err.reason).name} {err}{resume}")
        return 128 + err.reason
    except CatGANError as err:
        _say(f"catgan {args.command}: error: {_flags(str(err))}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _say(f"catgan {args.command}: interrupted")
        return EXIT_INTERRUPTED


def _flags(text: str) -> str:
    """The library's message with each configuration field it names (as `name`) shown as its flag."""
    return re.sub(r"`([a-z0-9_]+)`", lambda m: _flag(m[1]) if m[1] in _DEFAULTS else m[0], text)


def _say(line: str) -> None:
    """A closing line on stderr; of several processes started by torchrun, rank 0 alone says it."""
    from catgan.distributed import ProcessGroup

    try:
        group = ProcessGroup.from_environment()
    except CatGANError:
        group = None
    if group is None or group.is_main:
        print(line, file=sys.stderr)
