"""Training speed: catgan's fast path beside a straightforward reference loop, in one run.

    python scripts/benchmark.py [--device auto] [--batch-sizes 50 100 200] [--precisions fp32 bf16]
                                [--compile MODE] [--mnist-dir DIR] [--cifar-dir DIR]
                                [--repeats 3] [--time-to-accuracy] [--tta-precision fp32 [bf16]]
                                [--out-dir results]

For the 28x28 (MNIST) and the 32x32 colour (CIFAR-10) networks at each batch size it measures D+G
iterations per second, images per second (unlabelled real images consumed, batch size x it/s) and
peak memory of:

- the reference loop: torchvision's dataset of PIL images with ToTensor and Normalize, a
  DataLoader for the unlabelled and one for the labelled images, the same networks in float32,
  and the losses read back with ``.item()`` at every step (catgan.losses' float-returning
  ``discriminator_loss`` / ``generator_loss``), the way public CatGAN code is written. Like
  that code (and pytorch/examples' DCGAN) it also runs D's step's generator pass with gradients
  recorded (then detached) and lets G's loss compute gradients for D as well, which catgan's
  steps skip; so its gap to catgan is not the data loading and ``.item()`` alone;
- catgan's own trainer (`catgan.training.Trainer`), in each ``--precisions`` and, with
  ``--compile``, compiled.

Every measurement runs in a fresh process (the fast path's allocator setting is process-wide),
after ``--warmup`` iterations, both loops with OpenMP's spinning as the ``catgan`` command sets it
(``GOMP_SPINCOUNT``; the user's value, if set), and catgan's with glibc's allocator tuned as the command tunes it. The loops take turns in ``--repeats`` rounds; each figure is the
median over the rounds, and a loop's speed-up is the median of its ratios to the reference of
the same round, so that a shared machine's drift between rounds cancels. The semi-supervised
step is measured: 10 labelled images per class, a labelled batch beside each unlabelled one.
With ``--time-to-accuracy``, it also trains ``mnist-100`` (seed 0, scripts/compare.py's settings)
with `catgan train`, evaluating every epoch, once in each ``--tta-precision``, and reports the
wall seconds until the test error first reaches 2% (the seconds include the evaluations) and the
final error.

Writes results/benchmark-<device>.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (scripts/compare.py: the protocols' settings)

from catgan.cli import OPENMP_SPINCOUNT  # noqa: E402
from catgan.config import TrainConfig  # noqa: E402
from catgan.data import ImageData, labelled_indices, load_dataset  # noqa: E402
from catgan.runs import git_commit  # noqa: E402

ARCHITECTURES = {"28x28": ("mnist", (1, 28, 28)), "32x32 colour": ("cifar10", (3, 32, 32))}
LABELS_PER_CLASS = 10
TARGET_ERROR = 2.0  # percent, for the time to accuracy


def training_images(arch: str, data_dir: str | None, count: int) -> tuple[ImageData, str]:
    """``count`` training images (uint8-valued, as float in [-1, 1]) of the architecture's
    dataset, read through catgan's loader when ``data_dir`` is given, else random pixels."""
    dataset, shape = ARCHITECTURES[arch]
    if data_dir:
        data = load_dataset(TrainConfig(dataset=dataset, data_dir=data_dir))
        x, y, classes, source = data.x_train[:count], data.y_train[:count], data.classes, data.source
    else:
        pixels = torch.randint(256, (count, *shape), generator=torch.Generator().manual_seed(0))
        x, y, classes, source = pixels / 127.5 - 1, torch.arange(count) % 10, [str(k) for k in range(10)], "random pixels"
    return ImageData(dataset, x, y, x[:0], y[:0], classes), source  # no test split: no final evaluation


def measure_fast(spec: dict) -> dict:
    """it/s of catgan's trainer: one epoch of warmup + steps batches, timed between its first and
    last log record (each log reads the loss terms back, so the device has caught up there)."""
    from catgan import performance
    from catgan.training import Trainer, resolve_device

    if resolve_device(spec["device"]).type == "cpu":
        performance.tune_cpu()  # as `catgan train` does on the CPU
    warmup, steps, batch = spec["warmup"], spec["steps"], spec["batch_size"]
    data, source = training_images(spec["arch"], spec["data_dir"], (warmup + steps) * batch)
    config = TrainConfig(dataset=data.name, batch_size=batch, labels_per_class=LABELS_PER_CLASS, epochs=1,
                         log_every=warmup, progress=False, device=spec["device"], precision=spec["precision"],
                         compile=spec["compile"], checkpoint_minutes=0)
    trainer = Trainer(config, data, report=lambda line: None)
    _reset_peak_memory(trainer.device)
    trainer.fit()
    first, last = trainer.records[0], trainer.records[-1]
    seconds = last["seconds"] - first["seconds"]
    return {"iterations": last["step"] - first["step"], "seconds": seconds, "source": source,
            "peak_memory_mb": _peak_memory_mb(trainer.device)}


def measure_reference(spec: dict) -> dict:
    """it/s of the reference loop (see the module docstring)."""
    from torch.utils.data import DataLoader, Subset

    from catgan.losses import discriminator_loss, generator_loss
    from catgan.models import CatGAN, frozen_batchnorm_statistics
    from catgan.training import make_optimizers, resolve_device

    warmup, steps, batch = spec["warmup"], spec["steps"], spec["batch_size"]
    device = resolve_device(spec["device"])
    dataset, source = reference_dataset(spec["arch"], spec["data_dir"], (warmup + steps) * batch)
    labelled = labelled_indices(np.asarray(dataset.targets), LABELS_PER_CLASS, 0)
    unlabelled_loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
    labelled_loader = DataLoader(Subset(dataset, labelled), batch_size=min(batch, len(labelled)), shuffle=True,
                                 drop_last=True)
    config = TrainConfig(dataset=ARCHITECTURES[spec["arch"]][0], batch_size=batch)
    torch.manual_seed(0)
    model = CatGAN(config, ARCHITECTURES[spec["arch"]][1], 10).to(device)
    opt_d, opt_g = make_optimizers(model, config)
    labelled_batches = iter(labelled_loader)
    _reset_peak_memory(device)
    started = None
    for step, (x_unl, _) in enumerate(unlabelled_loader):
        if step == warmup:
            started = time.perf_counter()
        try:
            x_lab, y_lab = next(labelled_batches)
        except StopIteration:
            labelled_batches = iter(labelled_loader)
            x_lab, y_lab = next(labelled_batches)
        x_unl, x_lab, y_lab = x_unl.to(device), x_lab.to(device), y_lab.to(device)
        x_fake = model.generator(model.sample_latent(batch)).detach()
        logits_all_real = model.discriminator(torch.cat([x_unl, x_lab]))
        with frozen_batchnorm_statistics(model.discriminator):
            logits_fake = model.discriminator(x_fake)
        loss_d, terms_d = discriminator_loss(logits_all_real[:batch], logits_fake, logits_all_real[batch:], y_lab)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        with frozen_batchnorm_statistics(model.discriminator):
            loss_g, terms_g = generator_loss(model.discriminator(model.generator(model.sample_latent(batch))))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        print(f"step {step}: loss_d {loss_d.item():.4f} loss_g {loss_g.item():.4f}", file=_devnull)
    seconds = time.perf_counter() - started
    return {"iterations": steps, "seconds": seconds, "source": source, "peak_memory_mb": _peak_memory_mb(device)}


def reference_dataset(arch: str, data_dir: str | None, count: int):
    """The reference loop's dataset: torchvision's MNIST for the 28x28 networks (its raw files
    copied from ``data_dir``), an array dataset that hands out PIL images as torchvision's CIFAR10
    does for the colour ones; random pixels without ``data_dir``. First ``count`` images."""
    from PIL import Image
    from torch.utils.data import Dataset, Subset
    from torchvision import datasets, transforms

    channels = ARCHITECTURES[arch][1][0]
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * channels, [0.5] * channels)])
    if arch == "28x28" and data_dir:
        root = Path(tempfile.mkdtemp(prefix="catgan-benchmark-"))
        (root / "MNIST" / "raw").mkdir(parents=True)
        for path in Path(data_dir).glob("*-ubyte.gz"):
            shutil.copy(path, root / "MNIST" / "raw" / path.name)
        mnist = datasets.MNIST(str(root), train=True, download=True, transform=transform)
        subset = Subset(mnist, range(count))
        subset.targets = mnist.targets[:count]
        return subset, f"torchvision.datasets.MNIST ({data_dir})"

    class ArrayImages(Dataset):
        """uint8 images (N, H, W, C) handed out as PIL images through ``transform``, like torchvision's CIFAR10."""

        def __init__(self, images: np.ndarray, targets: np.ndarray) -> None:
            self.images, self.targets = images, targets

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, index: int):
            image = self.images[index]
            image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            return transform(image), int(self.targets[index])

    if data_dir:
        arrays = np.load(Path(data_dir) / "cifar10.npz")
        return ArrayImages(arrays["x_train"][:count], arrays["y_train"][:count].astype(np.int64)), \
            f"cifar10.npz as PIL images ({data_dir})"
    shape = ARCHITECTURES[arch][1]
    pixels = np.random.default_rng(0).integers(0, 256, (count, shape[1], shape[2], shape[0]), dtype=np.uint8)
    return ArrayImages(pixels, np.arange(count) % 10), "random pixels as PIL images"


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mb(device: torch.device) -> float:
    """CUDA: the peak of memory allocated by tensors; CPU: the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _DevNull:
    def write(self, text: str) -> int:
        return len(text)


_devnull = _DevNull()  # the reference loop formats its log line at every step, and drops it


def run_measurement(spec: dict) -> dict:
    """One measurement in a fresh process (this script with --measure)."""
    command = [sys.executable, __file__, "--measure", json.dumps(spec)]
    # OpenMP's spinning as `catgan train` sets it, for both loops
    env = {**os.environ, "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"benchmark.py: the {spec['loop']} measurement {spec['arch']} batch {spec['batch_size']} "
                 f"failed: {tail}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    it_s = result["iterations"] / result["seconds"]
    return {**spec, **result, "iterations_per_second": it_s, "images_per_second": it_s * spec["batch_size"]}


def summarise(samples: list[dict], references: list[dict]) -> dict:
    """One loop's figures from its measurements, one per round: the median it/s, and the median
    over the rounds of its ratio to the reference measured in the same round (so that the
    machine's drift between rounds cancels)."""
    speeds = [sample["iterations_per_second"] for sample in samples]
    ratios = [sample["iterations_per_second"] / reference["iterations_per_second"]
              for sample, reference in zip(samples, references)]
    it_s = statistics.median(speeds)
    return {**samples[0], "iterations_per_second": it_s, "images_per_second": it_s * samples[0]["batch_size"],
            "x_reference": statistics.median(ratios), "rounds_iterations_per_second": speeds,
            "seconds": [sample["seconds"] for sample in samples],
            "peak_memory_mb": max(sample["peak_memory_mb"] for sample in samples)}


def time_to_accuracy(args, device_name: str, precision: str) -> dict:
    """Train mnist-100 as scripts/compare.py does (seed 0) in ``precision``, evaluating every
    epoch; the wall seconds until the test error first reaches TARGET_ERROR, and the final error."""
    settings = {**compare.SETTINGS["mnist"], **({"epochs": args.tta_epochs} if args.tta_epochs else {})}
    options = ["--dataset", "mnist", "--data-dir", args.mnist_dir, "--labels-per-class", "10", "--eval-every", "1",
               "--device", device_name, "--precision", precision]
    for name, value in settings.items():
        options += ["--" + name.replace("_", "-"), str(value)]
    out = Path(tempfile.mkdtemp(prefix="catgan-tta-"))
    print("time to accuracy: catgan train", " ".join(options), flush=True)
    subprocess.run([sys.executable, "-m", "catgan", "train", *options, "--out-dir", str(out), "--name", "mnist-100",
                    "--no-progress"], check=True)
    run_dir = out / "mnist-100"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in records if r.get("split") == "test"]
    reached = next((r for r in tests if r["test_error"] <= TARGET_ERROR), None)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"command": "catgan train " + " ".join(options), "precision": precision, "epochs": summary["epochs"],
            "evaluations": [{key: r[key] for key in ("epoch", "seconds", "test_error")} for r in tests],
            "seconds_to_target": reached["seconds"] if reached else None, "target_error": TARGET_ERROR,
            "final_test_error": summary["test_error"], "wall_seconds": summary["wall_seconds"]}


def device_slug(device: torch.device) -> tuple[str, str]:
    """A file-name slug and a description of the device."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower().replace("nvidia", "")).strip("-")
        return slug, name
    cores = len(os.sched_getaffinity(0))
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16_units = ", ".join(sorted(flags & {"amx_bf16", "avx512_bf16"})) or "no bfloat16 units"
    return "cpu", f"{model}, {cores} cores, {torch.get_num_threads()} threads ({bf16_units})"


def write_tables(results: list[dict], ttas: list[dict], meta: dict, path: Path) -> None:
    lines = [f"# Training speed on {meta['device']}", "",
             f"Made by `{meta['command']}` at commit {meta['commit']} (torch {meta['torch']}). "
             f"Iterations are D+G updates (semi-supervised: {LABELS_PER_CLASS} labelled images per class); images/s "
             "counts the unlabelled real images, batch size x it/s. Each figure is one fresh process, timed over "
             f"{meta['steps']} iterations after {meta['warmup']} of warmup; the loops take turns, in "
             f"{meta['repeats']} rounds. it/s is the median over the rounds (range beside it); x reference is "
             "the median over the rounds of the ratio to the reference measured in the same round. Peak memory: "
             + ("the peak allocated by CUDA tensors." if meta["cuda"] else
                "the measuring process's peak resident set, data included."), "",
             "| networks | batch | loop | it/s | range | images/s | x reference | peak memory (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for result in results:
        spread = "–".join(f"{speed:.2f}" for speed in (min(result["rounds_iterations_per_second"]),
                                                          max(result["rounds_iterations_per_second"])))
        lines.append(f"| {result['arch']} | {result['batch_size']} | {result['label']} | "
                     f"{result['iterations_per_second']:.2f} | {spread} | {result['images_per_second']:.0f} | "
                     f"{result['x_reference']:.2f} | {result['peak_memory_mb']:.0f} |")
    sources = sorted({f"{r['arch']}: {r['source']}" for r in results})
    lines += ["", "Data: " + "; ".join(sources) + "."]
    for tta in ttas:
        reached = (f"{tta['seconds_to_target']:.0f} s" if tta["seconds_to_target"] is not None
                   else f"not reached in {tta['epochs']} epochs")
        lines += ["", f"## Time to accuracy (mnist-100, {tta['precision']})", "",
                  f"`{tta['command']}`: test error first at or below {tta['target_error']}%: {reached}; "
                  f"final test error {tta['final_test_error']:.2f}% after {tta['wall_seconds']:.0f} s "
                  f"({tta['epochs']} epochs).", "",
                  "| epoch | seconds | test error % |", "|---|---|---|"]
        lines += [f"| {e['epoch']} | {e['seconds']:.0f} | {e['test_error']:.2f} |" for e in tta["evaluations"]]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", default="off", help="also measure the fast path compiled in this mode")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=list(ARCHITECTURES))
    parser.add_argument("--warmup", type=int, default=5, help="iterations before timing (default: 5)")
    parser.add_argument("--steps", type=int, default=30, help="timed iterations; a multiple of --warmup (default: 30)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds: each loop is measured once per round, the loops taking turns (default: 3)")
    parser.add_argument("--mnist-dir", help="folder holding MNIST's four .gz files (default: random pixels)")
    parser.add_argument("--cifar-dir", help="folder holding cifar10.npz (default: random pixels)")
    parser.add_argument("--time-to-accuracy", action="store_true", help="also train mnist-100 (needs --mnist-dir)")
    parser.add_argument("--tta-epochs", type=int, help="epochs of that run (default: mnist-100's, 10)")
    parser.add_argument("--tta-precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="one time-to-accuracy run in each (default: fp32)")
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        spec = json.loads(args.measure)
        result = measure_reference(spec) if spec["loop"] == "reference" else measure_fast(spec)
        print(json.dumps(result))
        return
    if (args.warmup < 1 or args.steps < args.warmup or args.steps % args.warmup or min(args.batch_sizes) < 2
            or args.repeats < 1):
        sys.exit("benchmark.py: need --warmup >= 1, --steps a multiple of --warmup, batch sizes >= 2, --repeats >= 1")
    if args.time_to_accuracy and not args.mnist_dir:
        sys.exit("benchmark.py: --time-to-accuracy needs --mnist-dir")
    from catgan.training import resolve_device

    device = resolve_device(args.device)
    slug, description = device_slug(device)
    loops = [("reference", "reference (DataLoader, .item() per step)", "fp32", "off")]
    loops += [("fast", f"catgan {precision}", precision, "off") for precision in args.precisions]
    if args.compile != "off":
        loops += [("fast", f"catgan {precision}, compiled ({args.compile})", precision, args.compile)
                  for precision in args.precisions]
    results = []
    for arch in args.architectures:
        data_dir = args.mnist_dir if arch == "28x28" else args.cifar_dir
        for batch in args.batch_sizes:
            rounds = []  # each round measures every loop once, in turn
            for _ in range(args.repeats):
                rounds.append([run_measurement({
                    "loop": loop, "label": label, "arch": arch, "batch_size": batch, "precision": precision,
                    "compile": compile_mode, "device": str(device), "data_dir": data_dir, "warmup": args.warmup,
                    "steps": args.steps}) for loop, label, precision, compile_mode in loops])
            for position in range(len(loops)):
                result = summarise([measured[position] for measured in rounds], [measured[0] for measured in rounds])
                results.append(result)
                print(f"{arch:13s} batch {batch:4d}  {result['label']:42s} {result['iterations_per_second']:7.2f} it/s "
                      f"{result['images_per_second']:8.0f} images/s  x{result['x_reference']:.2f}  "
                      f"peak {result['peak_memory_mb']:.0f} MiB", flush=True)
    ttas = [time_to_accuracy(args, str(device), precision) for precision in args.tta_precision] \
        if args.time_to_accuracy else []
    command = "python scripts/benchmark.py " + " ".join(sys.argv[1:])
    meta = {"device": description, "cuda": device.type == "cuda", "command": command, "commit": git_commit(),
            "torch": torch.__version__, "warmup": args.warmup, "steps": args.steps, "repeats": args.repeats}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"benchmark-{slug}.json").write_text(json.dumps({**meta, "results": results, "time_to_accuracy": ttas},
                                                                indent=1) + "\n")
    write_tables(results, ttas, meta, out_dir / f"benchmark-{slug}.md")
    print(f"wrote {out_dir / f'benchmark-{slug}.md'} and .json")


if __name__ == "__main__":
    main()
