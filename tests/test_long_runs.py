"""Long runs: exact resume after a kill, clean stops on signals, the NaN guard, safe checkpoints."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import catgan.steps
import catgan.training
from catgan import state
from catgan.cli import main
from catgan.runs import load_checkpoint

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--batch-size", "50", "--latent-dim", "8", "--d-width", "8", "--g-width", "8", "--feature-dim", "16",
         "--device", "cpu", "--no-progress"]


def _catgan(*argv: str) -> list[str]:
    return [sys.executable, "-m", "catgan", *argv]


def _env() -> dict[str, str]:
    """One thread, and this checkout's package first, so both processes compute alike."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _records(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock seconds."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (run / "metrics.jsonl").open()]


def _same(a, b) -> bool:
    """Equal nested dicts and lists of tensors and plain values, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _wait_for_records(run: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline:
        if metrics.is_file() and metrics.read_text().count("\n") >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before {count} records: {process.stderr.read()}")
        time.sleep(0.005)
    pytest.fail(f"no {count} records in {metrics} after {timeout} s")


def test_a_run_killed_at_a_random_moment_and_resumed_ends_as_an_uninterrupted_one(tmp_path):
    schedule = ["train", *SMALL, "--epochs", "8", "--log-every", "1", "--checkpoint-steps", "10", "--eval-every", "3",
                "--d-steps", "2", "--ema-decay", "0.9", "--out-dir", str(tmp_path)]
    whole = subprocess.run(_catgan(*schedule, "--name", "whole"), env=_env(), capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    killed = subprocess.Popen(_catgan(*schedule, "--name", "killed"), env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    seed = random.randrange(10**6)
    moment = random.Random(seed).randint(12, 170)  # of 184 steps, one record each; a failure names it
    print(f"killing after {moment} records (seed {seed})")
    _wait_for_records(tmp_path / "killed", moment, killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "the kill came too late to test anything"

    resumed = subprocess.run(_catgan("train", "--resume", str(tmp_path / "killed")), env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    first, second = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "killed"))
    assert second["test_error"] == first["test_error"]
    assert second["steps"] == first["steps"] == 184
    assert second["resumed_at_steps"] and second["resumed_at_steps"][0] % 10 == 0  # from a checkpoint
    assert second["command"] == first["command"].replace("whole", "killed")
    assert second["git_commit"] == first["git_commit"] and second["resumed_with_commits"] == [first["git_commit"]]
    assert _records(tmp_path / "killed") == _records(tmp_path / "whole")  # every logged term, once, in order
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "killed")
    for part in ("generator", "discriminator", "discriminator_average", "opt_d", "opt_g"):
        assert _same(a[part], b[part]), part


def test_sigterm_saves_a_checkpoint_and_exits_143_and_the_run_resumes(tmp_path):
    run = tmp_path / "stopped"
    process = subprocess.Popen(_catgan("train", *SMALL, "--epochs", "20", "--log-every", "1", "--out-dir",
                                       str(tmp_path), "--name", "stopped"),
                               env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_records(run, 5, process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert "stopped by SIGTERM at step" in line and f"catgan train --resume {run}" in line
    checkpoint = load_checkpoint(run)
    assert checkpoint["step"] >= 5 and not (run / "summary.json").exists()
    assert len(_records(run)) == checkpoint["step"]  # nothing logged past the checkpoint


def _send_on_call(monkeypatch, *signals_on_call: tuple[int, int], step: str = "generator_step") -> None:
    """Make the n-th call of ``step`` send the given signal to this process (as a user or a scheduler would)."""
    real_step, calls = getattr(catgan.steps, step), []

    def with_signals(*args, **kwargs):
        calls.append(1)
        for call, signum in signals_on_call:
            if len(calls) == call:
                os.kill(os.getpid(), signum)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(catgan.steps, step, with_signals)


@pytest.mark.parametrize(("stop_at", "d_norm"), [(23, "batch"), (31, "batch"), (46, "batch"), (31, "weight")],
                         ids=["epoch-end", "mid-epoch", "last-step", "mid-epoch-weight-normalised-d"])
def test_a_stopped_run_resumes_to_the_same_end_with_every_practice_on(tmp_path, monkeypatch, capsys, stop_at, d_norm):
    options = [*SMALL, "--epochs", "2", "--log-every", "3", "--eval-every", "1", "--sample-every", "1", "--d-steps",
               "2", "--instance-noise", "0.1", "--label-noise", "0.1", "--ema-decay", "0.9", "--d-norm", d_norm,
               "--out-dir", str(tmp_path)]
    assert main(["train", *options, "--name", "whole"]) == 0
    _send_on_call(monkeypatch, (stop_at, signal.SIGTERM), step="discriminator_step")  # one D update per step
    assert main(["train", *options, "--name", "cut"]) == 143
    assert load_checkpoint(tmp_path / "cut")["step"] == stop_at
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    capsys.readouterr()
    first, second = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "cut"))
    assert second["test_error"] == first["test_error"] and second["resumed_at_steps"] == [stop_at]
    assert _records(tmp_path / "cut") == _records(tmp_path / "whole")
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "cut")
    for part in ("generator", "discriminator", "discriminator_average", "opt_d", "opt_g"):
        assert _same(a[part], b[part]), part
    assert (tmp_path / "cut" / "samples.png").read_bytes() == (tmp_path / "whole" / "samples.png").read_bytes()


def test_ctrl_c_stops_at_the_step_boundary_saves_and_exits_130(tmp_path, monkeypatch, capsys):
    _send_on_call(monkeypatch, (5, signal.SIGINT))
    handler = signal.getsignal(signal.SIGINT)
    assert main(["train", *SMALL, "--epochs", "1", "--out-dir", str(tmp_path), "--name", "cut"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("catgan train: stopped by SIGINT at step 5; checkpoint saved in") and len(err.splitlines()) == 1
    assert load_checkpoint(tmp_path / "cut")["step"] == 5
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert signal.getsignal(signal.SIGINT) is handler  # put back afterwards


def test_a_second_ctrl_c_aborts_at_once_without_saving(tmp_path, monkeypatch, capsys):
    _send_on_call(monkeypatch, (5, signal.SIGINT), (5, signal.SIGINT))
    assert main(["train", *SMALL, "--epochs", "1", "--out-dir", str(tmp_path), "--name", "cut"]) == 130
    assert capsys.readouterr().err.strip().endswith("catgan train: interrupted")
    assert load_checkpoint(tmp_path / "cut")["step"] == 0  # the one saved at the start; nothing since


def test_an_interrupt_inside_a_step_keeps_the_last_consistent_state(tmp_path, monkeypatch, capsys):
    real_step, calls = catgan.steps.generator_step, []

    def raises_on_the_fifth_call(*args, **kwargs):  # as in a thread where no signal handler can be set
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(catgan.steps, "generator_step", raises_on_the_fifth_call)
    assert main(["train", *SMALL, "--epochs", "1", "--out-dir", str(tmp_path), "--name", "cut"]) == 130
    assert capsys.readouterr().err.strip().endswith("catgan train: interrupted")
    assert load_checkpoint(tmp_path / "cut")["step"] == 0  # D had moved in step 5, G not: not a state to resume


def _poison_d_on_call(monkeypatch, call: int) -> None:
    """On D's ``call``-th update, set one of its weights to NaN, as a blown-up update would."""
    real_step, calls = catgan.steps.discriminator_step, []

    def step(model, *args, **kwargs):
        calls.append(1)
        terms = real_step(model, *args, **kwargs)
        if len(calls) == call:
            with torch.no_grad():
                next(model.discriminator.parameters()).view(-1)[0] = float("nan")
        return terms

    monkeypatch.setattr(catgan.steps, "discriminator_step", step)


def test_an_injected_nan_stops_the_run_naming_the_step_and_term(tmp_path, monkeypatch, capsys):
    _poison_d_on_call(monkeypatch, 30)
    argv = ["train", *SMALL, "--epochs", "3", "--log-every", "5", "--out-dir", str(tmp_path), "--name", "nan"]
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training diverged at step 30" in err and "loss_g=nan" in err  # G stepped on the poisoned D
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["last_good_step"] == 23  # the end of epoch 1
    checkpoint = load_checkpoint(tmp_path / "nan")
    assert checkpoint["step"] == 23
    assert all(torch.isfinite(w).all() for w in checkpoint["discriminator"].values() if w.is_floating_point())


def test_on_nan_restart_goes_back_with_lower_learning_rates_and_recovers(tmp_path, monkeypatch, capsys):
    _poison_d_on_call(monkeypatch, 30)
    argv = ["train", *SMALL, "--epochs", "3", "--log-every", "5", "--eval-every", "1", "--on-nan", "restart",
            "--out-dir", str(tmp_path), "--name", "nan"]
    assert main(argv) == 0
    assert "restart 1 of at most 3" in capsys.readouterr().err
    summary = json.loads((tmp_path / "nan" / "summary.json").read_text())
    assert "status" not in summary and summary["steps"] == 69
    assert [(r["at_step"], r["back_to_step"], r["lr_scale"]) for r in summary["restarts"]] == [(30, 23, 0.5)]
    steps = [record["step"] for record in _records(tmp_path / "nan") if "d" in record]
    assert steps == sorted(set(steps))  # the records past the restart point were dropped, not repeated
    assert [r["step"] for r in _records(tmp_path / "nan") if r.get("split") == "test"] == [23, 46, 69]
    lrs = {record["step"]: record["lr_d"] for record in _records(tmp_path / "nan") if "d" in record}
    assert lrs[20] == pytest.approx(2e-4) and lrs[25] == pytest.approx(1e-4)


def test_restarts_are_bounded(tmp_path, monkeypatch, capsys):
    real_step = catgan.steps.discriminator_step

    def always_nan(model, *args, **kwargs):
        terms = real_step(model, *args, **kwargs)
        with torch.no_grad():
            next(model.discriminator.parameters()).view(-1)[0] = float("nan")
        return terms

    monkeypatch.setattr(catgan.steps, "discriminator_step", always_nan)
    argv = ["train", *SMALL, "--epochs", "1", "--log-every", "5", "--on-nan", "restart", "--max-restarts", "2",
            "--out-dir", str(tmp_path), "--name", "nan"]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "restart 2 of at most 2" in err and "after 2 restarts" in err.strip().splitlines()[-1]


def test_resume_refuses_other_settings_a_finished_run_and_a_missing_one(tmp_path, monkeypatch, capsys):
    _send_on_call(monkeypatch, (3, signal.SIGTERM))
    run = tmp_path / "cut"
    assert main(["train", *SMALL, "--epochs", "1", "--out-dir", str(tmp_path), "--name", "cut"]) == 143
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    capsys.readouterr()
    cases = [
        (["--resume", str(run), "--epochs", "2", "--lr", "0.001"],
         "was trained with other settings: epochs (saved 1, asked 2), lr (saved 0.0002, asked 0.001)"),
        (["--resume", str(run), "--name", "elsewhere"], "name (saved 'cut', asked 'elsewhere')"),
        (["--resume", str(tmp_path / "nowhere")], "no such run directory"),
        (["--resume", str(run), "--checkpoint-steps", "-1"], "checkpoint_steps must be an integer >= 0"),
    ]
    for extra, message in cases:
        assert main(["train", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # the refusals touched nothing
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--checkpoint-steps", "7"]) == 0  # a cadence may change
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 2
    assert "has finished" in capsys.readouterr().err


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class WritesAFile:
        def __reduce__(self):
            return (Path.write_text, (marker, "ran"))

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"config": {}, "generator": {}, "payload": WritesAFile()}, run / "checkpoint.pt")
    for argv in (["evaluate", str(run)], ["sample", str(run)], ["train", "--resume", str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "refusing to load" in err and "holds more than weights" in err and len(err.splitlines()) == 1
    assert not marker.exists()


def test_checkpoints_are_written_atomically(tmp_path, make_config, digits, monkeypatch):
    from catgan import runs

    trainer = catgan.training.Trainer(make_config(), digits, run_dir=tmp_path)
    state.save_checkpoint(trainer)
    good = (tmp_path / "checkpoint.pt").read_bytes()

    def killed_mid_write(state, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(runs.torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        state.save_checkpoint(trainer)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_resume_refuses_data_that_does_not_match_the_checkpoint(tmp_path, monkeypatch, capsys):
    import numpy as np

    for classes in (3, 4):
        rng = np.random.default_rng(0)
        y = np.arange(60) % classes
        np.savez(tmp_path / f"{classes}.npz", x_train=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y_train=y,
                 x_test=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y_test=y[:30])
    _send_on_call(monkeypatch, (2, signal.SIGTERM))
    argv = ["train", *SMALL, "--batch-size", "20", "--labels-per-class", "2", "--dataset", "arrays", "--data-dir",
            str(tmp_path / "3.npz"), "--out-dir", str(tmp_path), "--name", "three"]
    assert main(argv) == 143
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "three"), "--data-dir", str(tmp_path / "4.npz")]) == 2
    assert "was trained on other data (60 training and 30 test images" in capsys.readouterr().err
    rng = np.random.default_rng(1)  # the same sizes and classes, other images
    y = np.arange(60) % 3
    np.savez(tmp_path / "other.npz", x_train=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), y_train=y,
             x_test=rng.integers(0, 256, (30, 8, 8), dtype=np.uint8), y_test=y[:30])
    assert main(["train", "--resume", str(tmp_path / "three"), "--data-dir", str(tmp_path / "other.npz")]) == 2
    assert "was trained on other data" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "three"), "--data-dir", str(tmp_path / "3.npz")]) == 0


def test_an_interrupt_outside_the_command_keeps_a_newer_checkpoint(tmp_path, make_config, digits, monkeypatch):
    real_step, calls = catgan.steps.generator_step, []

    def interrupted_on_the_twentieth_call(*args, **kwargs):  # a notebook's stop button: no signal handler
        calls.append(1)
        if len(calls) == 20:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(catgan.steps, "generator_step", interrupted_on_the_twentieth_call)
    config = make_config(epochs=2, checkpoint_steps=10, out_dir=str(tmp_path), name="cut")
    with pytest.raises(KeyboardInterrupt):
        catgan.training.train(config, data=digits, log=lambda line: None)
    assert load_checkpoint(tmp_path / "cut")["step"] == 10  # not taken back to step 0, the last epoch end


def test_a_signal_before_training_runs_aborts_at_once():
    from catgan.cli import _StopOnSignals
    from catgan.training import Stop

    signals = _StopOnSignals(Stop())
    with pytest.raises(KeyboardInterrupt):  # loading data, say: nothing to stop at a step boundary yet
        signals._handle(signal.SIGTERM, None)
    signals.armed = True
    signals._handle(signal.SIGTERM, None)
    assert signals.stop.reason == signal.SIGTERM


def test_the_package_gives_its_submodules_and_names_without_importing_torch_first():
    code = ("import sys, catgan; assert 'torch' not in sys.modules; "
            "print(catgan.losses.marginal_entropy.__name__, catgan.TrainConfig.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["marginal_entropy", "TrainConfig"]
