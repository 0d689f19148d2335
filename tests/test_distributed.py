"""Several processes (gloo on the CPU): 2 processes with batch B compute what 1 process with batch 2B
computes, and a 2-process `catgan train` writes one run directory."""

import datetime
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from catgan.config import TrainConfig
from catgan.distributed import DistributedCatGAN, ProcessGroup, convert_batch_norm, gather
from catgan.losses import marginal_entropy
from catgan.models import CatGAN
from catgan.training import Batch, TrainingStopped, _joined, discriminator_step, generator_step

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="this torch build has no gloo backend for several CPU processes")

WORLD = 2
B = 12  # per process
LABELLED = 10  # labelled images per step, over all processes
# float32 sums in another order (per process, then across processes), and batch norm from sums
# instead of torch's kernel: values agree to a relative 1e-4, and entries near zero to 1e-4 of
# the largest entry of their tensor (G's batch-norm gradients are sums whose terms nearly cancel:
# with one thread per process, OMP_NUM_THREADS=1, one of them differed by 1.5e-6 at a value of
# 3.6e-4). A process that computed its own batch's losses instead of the global batch's differs
# by far more (the last assertion of the test below).
RTOL, ATOL, ATOL_OF_LARGEST = 1e-4, 1e-6, 1e-4


def _close(actual, expected, what):
    atol = max(ATOL, ATOL_OF_LARGEST * float(expected.abs().max()))
    torch.testing.assert_close(actual.to(expected.dtype), expected, rtol=RTOL, atol=atol,
                               msg=lambda text: f"{what}: {text}")


def _inputs():
    """The global batch, the latents of the D and the G step, and the initial weights (seeded)."""
    generator = torch.Generator().manual_seed(1)
    x_unl = torch.rand(WORLD * B, 1, 8, 8, generator=generator) * 2 - 1
    x_lab = torch.rand(LABELLED, 1, 8, 8, generator=generator) * 2 - 1
    y_lab = torch.arange(LABELLED) % 10
    latents = torch.randn(2, WORLD * B, 8, generator=generator)
    return x_unl, x_lab, y_lab, latents


def _model():
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16, d_noise=0.0)  # no noise: exact
    model = CatGAN(config, (1, 8, 8), 10)
    with torch.no_grad():  # confident, unequal class shares, as after some training (init gives near-uniform ones)
        model.discriminator.classifier.weight.mul_(100)
    return model


def _train_two_steps(networks, model, batch, latents, gather_fn):
    """A D step then a G step with plain SGD (its update is linear in the gradient, so close
    gradients give close weights); returns both steps' terms and gradients."""
    queue = list(latents)
    networks.sample_latent = lambda n, generator=None: queue.pop(0)
    opt_d = torch.optim.SGD(model.discriminator.parameters(), lr=0.1)
    opt_g = torch.optim.SGD(model.generator.parameters(), lr=0.1)
    terms_d = discriminator_step(networks, opt_d, batch, 1.0, gather=gather_fn)
    grads_d = {name: p.grad.clone() for name, p in model.discriminator.named_parameters()}
    terms_g = generator_step(networks, opt_g, len(batch.x_unl), gather=gather_fn)
    grads_g = {name: p.grad.clone() for name, p in model.generator.named_parameters()}
    running = {name: b.clone() for name, b in model.discriminator.named_buffers()}
    return {"terms_d": terms_d, "terms_g": terms_g, "grads_d": grads_d, "grads_g": grads_g, "buffers_d": running}


def _worker(rank, store, out):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    with _joined(ProcessGroup(rank, WORLD, rank)):  # left as catgan.training leaves it
        x_unl, x_lab, y_lab, latents = _inputs()
        model = convert_batch_norm(_model())
        networks = DistributedCatGAN(model, torch.device("cpu"))
        lab = LABELLED // WORLD
        batch = Batch(x_lab[rank * lab : (rank + 1) * lab], y_lab[rank * lab : (rank + 1) * lab],
                      x_unl[rank * B : (rank + 1) * B])
        mine = [z[rank * B : (rank + 1) * B] for z in latents]
        torch.save(_train_two_steps(networks, model, batch, mine, gather), f"{out}/rank{rank}.pt")


def test_two_processes_with_batch_b_equal_one_process_with_batch_2b(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    x_unl, x_lab, y_lab, latents = _inputs()
    model = _model()
    single = _train_two_steps(model, model, Batch(x_lab, y_lab, x_unl), list(latents), None)
    for rank in range(WORLD):
        ranked = torch.load(tmp_path / f"rank{rank}.pt")
        # the losses (marginal entropies included) of the global batch, the averaged gradients,
        # D's running statistics
        for what in ("terms_d", "terms_g", "grads_d", "grads_g", "buffers_d"):
            for name, value in single[what].items():
                _close(ranked[what][name], value, f"rank {rank} {what} {name}")
    # the comparison above could fail: the marginal entropy of the global batch is not the mean
    # of the per-process ones (what each process would compute without the gather)
    model = _model()
    logits = model.discriminator(torch.cat([x_unl, x_lab]))[: WORLD * B].detach()
    per_process = torch.stack([marginal_entropy(part) for part in logits.chunk(WORLD)]).mean()
    assert abs(marginal_entropy(logits) - per_process) > 100 * (ATOL + RTOL * per_process)


def _leaver(rank, store, out):
    """Rank 0 fails inside the group and leaves without the barrier; rank 1 ends normally."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        with _joined(ProcessGroup(rank, WORLD, rank)):
            if rank == 0:
                raise ValueError("rank 0 failed")
    except ValueError:
        pass
    with open(f"{out}/rank{rank}.done", "w") as done:
        done.write(str(dist.is_initialized()))


def test_a_process_whose_peer_left_without_the_barrier_still_ends_cleanly(tmp_path):
    mp.start_processes(_leaver, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, start_method="spawn")
    assert [(tmp_path / f"rank{rank}.done").read_text() for rank in range(WORLD)] == ["False", "False"]


@pytest.mark.parametrize("ending, barriers", [(None, 1), (TrainingStopped(15, 7, None), 1), (ValueError("failed"), 0)])
def test_the_group_is_left_after_a_barrier_unless_training_failed(tmp_path, monkeypatch, ending, barriers):
    """A normal end and a stop (shared by every process) wait for the peers; an error does not (a
    failed peer would never arrive). The group is left however training ends."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    calls = []
    monkeypatch.setattr(dist, "barrier", lambda *args, **kwargs: calls.append(1))
    raised = None
    try:
        with _joined(ProcessGroup(0, 1, 0)):
            if ending is not None:
                raise ending
    except (TrainingStopped, ValueError) as error:  # compared below: the ending itself, or nothing
        raised = error
    finally:
        left = not dist.is_initialized()
        if not left:  # so that a failure here leaves no group behind for the tests after it
            dist.destroy_process_group()
    assert (raised, len(calls), left) == (ending, barriers, True)


def test_seeds_of_the_processes_differ_and_repeat():
    first, second = ProcessGroup(0, 2, 0), ProcessGroup(1, 2, 1)
    assert first.seed(5) != second.seed(5)
    assert first.seed(5) == ProcessGroup(0, 2, 0).seed(5)
    assert 0 <= second.seed(2**63 - 1) < 2**63


def test_two_process_catgan_train_writes_one_run_directory(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "catgan", "train", "--device", "cpu", "--epochs", "2", "--batch-size", "25",
               "--d-width", "8", "--g-width", "8", "--latent-dim", "16", "--out-dir", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    run_dirs = list(out.iterdir())
    assert len(run_dirs) == 1  # only rank 0 writes
    summary = json.loads((run_dirs[0] / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["global_batch_size"] == 50
    assert summary["steps"] == 2 * (1198 // 50)  # an epoch is a pass of the global batch
    assert done.stdout.count("test error:") == 1  # one report, from rank 0
    records = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "split" not in r] == sorted({r["step"] for r in records if "split" not in r})


def test_torchrun_environment_is_read_and_checked(monkeypatch):
    from catgan.config import CatGANError

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ProcessGroup.from_environment() is None
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(CatGANError, match="RANK or LOCAL_RANK is missing"):
        ProcessGroup.from_environment()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ProcessGroup.from_environment() == ProcessGroup(1, 2, 1)
    with pytest.raises(CatGANError, match="names one GPU, but 2 processes"):
        ProcessGroup(1, 2, 1).device(torch.device("cuda", 0))


def test_a_run_resumes_only_with_as_many_processes(make_config, monkeypatch):
    from catgan.config import CatGANError
    from catgan.training import resume, train

    config = make_config(epochs=1, checkpoint_steps=5)
    result = train(config, log=lambda line: None)
    (result.run_dir / "summary.json").unlink()  # as if killed before the end
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(CatGANError, match="trained by 1 process; resume it with as many"):
        resume(result.run_dir, log=lambda line: None)


def test_options_several_processes_cannot_take_are_refused_before_joining(make_config, digits, monkeypatch, tmp_path):
    from catgan.config import CatGANError
    from catgan.training import Trainer, train

    second = ProcessGroup(1, 2, 1)
    with pytest.raises(CatGANError, match="only the process of rank 0 writes the run directory"):
        Trainer(make_config(), digits, run_dir=tmp_path / "run", group=second)
    with pytest.raises(CatGANError, match="`compile` with several processes is untested"):
        Trainer(make_config(compile="default"), digits, group=second)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(CatGANError, match="`download` with several processes"):
        train(make_config(download=True), data=digits, log=lambda line: None)
    assert not dist.is_initialized()  # refused before joining any process group
