"""Each GAN practice switched on against CatGAN's defaults, over seeds, on one protocol.

    python scripts/ablation.py [PROTOCOL] [--seeds 3] [--jobs 2] [--variant NAME ...] [--data-dir DIR]

PROTOCOL is digits-quick (default) or mnist-100. Every variant changes one setting of the
protocol's CatGAN run (scripts/compare.py's schedule) and runs through the same machinery as
compare.py: its recorded `catgan train` command in a process of its own, finished runs skipped on
a rerun. Writes results/ablation-PROTOCOL.md (mean ± sample std of the test error per variant,
its difference from the defaults, the warnings that fired), .json (every run) and .png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (scripts/compare.py: planning, running and collecting runs)

from catgan import TrainConfig  # noqa: E402

# One setting changed per variant; "defaults" is the protocol's CatGAN run as it is.
VARIANTS = {
    "defaults": {},
    "uniform latent": dict(latent_distribution="uniform"),
    "latent size 32": dict(latent_dim=32),
    "label smoothing 0.1": dict(label_smoothing=0.1),
    "label noise 0.1": dict(label_noise=0.1),
    "instance noise 0.2, annealed": dict(instance_noise=0.2),
    "no D noise": dict(d_noise=0.0),
    "D noise 0.5": dict(d_noise=0.5),
    "joint real+fake batches": dict(joint_batches=True),
    "D:G 2:1": dict(d_steps=2),
    "D:G 1:2": dict(g_steps=2),
    "G lr 2x (4e-4)": dict(lr_g=4e-4),
    "feature matching 1.0": dict(feature_matching=1.0),
    "weight average of D (0.999)": dict(ema_decay=0.999),
}
PROTOCOLS = {"digits-quick": ("digits", 5), "mnist-100": ("mnist", 10)}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def plan(args) -> list[tuple[compare.Method, int, Path, TrainConfig]]:
    dataset, labels = PROTOCOLS[args.protocol]
    runs = []
    for name in args.variant or VARIANTS:
        method = compare.Method(name, slug(name), VARIANTS[name])
        for seed in range(args.seeds):
            run_dir = Path(args.runs_dir) / f"ablation-{args.protocol}" / f"{method.slug}-seed{seed}"
            options = {**compare.SETTINGS[dataset], **VARIANTS[name], **({"epochs": args.epochs} if args.epochs else {})}
            config = TrainConfig(dataset=dataset, data_dir=args.data_dir, labels_per_class=labels, seed=seed,
                                 device=args.device, out_dir=str(run_dir.parent), name=run_dir.name, **options)
            runs.append((method, seed, run_dir, config))
    return runs


def verdict(values: list[float], base: list[float]) -> str:
    """``better`` or ``worse`` when the means of ``values`` and ``base`` differ by more than their two
    sample standard deviations together (the rule that decides a default), else ``within noise``;
    ``-`` with fewer than 2 values on either side."""
    if len(values) < 2 or len(base) < 2:
        return "-"
    gap = statistics.fmean(values) - statistics.fmean(base)
    bar = statistics.stdev(values) + statistics.stdev(base)
    return "better" if gap < -bar else "worse" if gap > bar else "within noise"


def write_results(args, records: list[dict]) -> None:
    name = f"ablation-{args.protocol}"
    command = f"python scripts/ablation.py {args.protocol}" + (f" --epochs {args.epochs}" if args.epochs else "")
    overrides = " (--epochs overrides the protocol's schedule)" if args.epochs else ""
    by_variant = {v: [r for r in records if r["method"] == v] for v in VARIANTS}
    finished = {v: [r["test_error"] for r in rows if "test_error" in r] for v, rows in by_variant.items()}
    base = statistics.fmean(finished["defaults"]) if finished.get("defaults") else None
    lines = [f"# Ablation on {args.protocol}", "",
             f"Made by `{command}`{overrides}; every run's command, commit, device and",
             f"wall time are in `{name}.json`. Each variant changes one setting of the defaults. Test error %: mean ±",
             "sample standard deviation over seeds; the difference is from the defaults' mean (negative: better).",
             "The verdict calls a variant better (worse) when its mean is lower (higher) than the defaults' by more",
             "than the two standard deviations together; a default changes only for a better variant.", "",
             "| variant | setting | seeds | test error % | difference | verdict | warnings fired (runs) |",
             "|---|---|---|---|---|---|---|"]
    for variant, values in finished.items():
        if not by_variant[variant]:
            continue
        setting = " ".join(f"`--{k.replace('_', '-')}{'' if v is True else f' {v}'}`"
                           for k, v in VARIANTS[variant].items()) or "-"
        fired: dict[str, int] = {}
        for record in by_variant[variant]:
            for warning in {w["name"] for w in record.get("warnings", [])}:
                fired[warning] = fired.get(warning, 0) + 1
        warnings = ", ".join(f"{w} ({n})" for w, n in sorted(fired.items())) or "none"
        error = compare.fmt(values) if values else "-"
        difference = f"{statistics.fmean(values) - base:+.2f}" if values and base is not None else "-"
        judged = verdict(values, finished["defaults"]) if variant != "defaults" else "-"
        lines.append(f"| {variant} | {setting} | {len(values)} | {error} | {difference} | {judged} | {warnings} |")
    lines += compare.diverged_lines(records)
    devices = sorted({r["device"] for r in records})
    lines += ["", f"Devices: {', '.join(devices)}; torch {', '.join(sorted({r['torch_version'] for r in records}))}."]
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text("\n".join(lines) + "\n")
    (results / f"{name}.json").write_text(json.dumps({"protocol": args.protocol, "runs": records}, indent=2) + "\n")
    methods = [compare.Method(v, slug(v), VARIANTS[v]) for v in VARIANTS if by_variant[v]]
    compare.plot_protocol(name, records, methods, False, results / f"{name}.png")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("protocol", nargs="?", default="digits-quick", choices=sorted(PROTOCOLS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variant", nargs="*", choices=sorted(VARIANTS), help="only these variants (default: all)")
    compare.add_run_options(parser, runs_dir=Path("runs"))  # relative, so recorded commands rerun anywhere
    args = parser.parse_args()
    compare.check_run_options(args, "ablation.py")
    runs = plan(args)
    for _, _, run_dir, config in runs:
        compare.check_finished_run_matches(run_dir, config)
    todo = [run for run in runs if not (run[2] / "summary.json").is_file()]
    print(f"ablation on {args.protocol}: {len(runs)} runs, {len(runs) - len(todo)} already finished", flush=True)
    failures = compare.run_all(todo, f"ablation-{args.protocol}", args.jobs, args.threads)
    records = compare.collect(runs)
    if records:
        write_results(args, records)
    for error in failures:
        print(f"ablation.py: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
