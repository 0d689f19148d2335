"""The fast path: same numbers as the plain computation, parallel noise streams, bf16 autocast, compile,
and the CUDA settings."""

import contextlib
import copy
import math
import multiprocessing
import os
import pickle
import platform
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

from catgan import performance
from catgan.config import CatGANError, TrainConfig
from catgan import state
from catgan.kernels import MatrixProductUpsampling, NoiseStreams, StreamedGaussianNoise, transposed_conv_by_matrix_product
from catgan.models import CatGAN, GaussianNoise, Upsampling
from catgan.schedule import make_optimizers
from catgan.steps import Batch, discriminator_step, generator_step
from catgan.trainer import Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the CUDA fast path "
                                "(cuDNN autotuning, channels-last, bf16 autocast on the GPU) is not exercised")


def _fast_noise(std: float, streams: NoiseStreams | None = None) -> GaussianNoise:
    """A noise layer as the CPU fast path swaps it in."""
    layer = GaussianNoise(std)
    StreamedGaussianNoise.swap(layer, streams)
    return layer


def test_in_place_noise_gives_exactly_the_values_of_x_plus_std_times_noise():
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    noise = _fast_noise(0.3)
    torch.manual_seed(1)
    fast = noise(x)
    torch.manual_seed(1)
    plain = x + 0.3 * torch.randn_like(x)
    assert torch.equal(fast, plain)  # bit for bit: runs from before the fast path reproduce
    fast.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_noise_on_a_float64_activation_is_drawn_in_float64():
    x = torch.randn(4, 8, dtype=torch.float64)
    torch.manual_seed(1)
    out = _fast_noise(0.3)(x)
    torch.manual_seed(1)
    assert torch.equal(out, x + 0.3 * torch.randn_like(x))  # float32 only for bfloat16, where it is faster


def test_noise_on_a_channels_last_activation_is_drawn_in_storage_order():
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    out = _fast_noise(0.3)(x)
    torch.manual_seed(1)
    draws = torch.randn(4, 5, 5, 8).permute(0, 3, 1, 2)  # the same draws, in channels-last memory order
    assert torch.equal(out, x + 0.3 * draws)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_noise_on_a_bfloat16_activation_stays_bfloat16():
    x = torch.randn(4, 8, 5, 5).to(torch.bfloat16)
    torch.manual_seed(1)
    out = _fast_noise(0.3)(x)
    torch.manual_seed(1)
    expected = x.float() + 0.3 * torch.randn(4, 8, 5, 5)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), expected, rtol=2**-7, atol=2**-7)  # bfloat16 keeps 8 significant bits


def _draws(states: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    """Standard normal draws of the given sizes, each from a generator in the given state, one after another."""
    parts = []
    for rng_state, size in zip(states, sizes):
        generator = torch.Generator()
        generator.set_state(rng_state)
        parts.append(torch.empty(size).normal_(generator=generator))
    return torch.cat(parts)


def test_noise_streams_draw_part_i_of_a_tensor_from_stream_i():
    streams = NoiseStreams(3, min_part=4)
    streams.seed(5)
    before = streams.get_state()
    values = streams.normal_(torch.empty(31))
    assert torch.equal(values, _draws(before, [10, 10, 11]))  # parts 31 * i // 3 to 31 * (i + 1) // 3
    assert len({tuple(part[:5].tolist()) for part in values.split([10, 10, 11])}) == 3  # three distinct streams
    middle = streams.get_state()
    fewer = streams.normal_(torch.empty(11))  # parts of at least 4 values: only 2 of them
    assert torch.equal(fewer, _draws(middle[:2], [5, 6]))
    middle = streams.get_state()
    small = streams.normal_(torch.empty(7))  # too few for two parts: stream 0 draws them all
    assert torch.equal(small, _draws(middle[:1], [7]))


def test_noise_streams_are_seeded_apart_and_restored_from_their_state():
    streams, again, other = NoiseStreams(2), NoiseStreams(2), NoiseStreams(2)
    streams.seed(1), again.seed(1), other.seed(2)
    assert streams.generators[0].initial_seed() != streams.generators[1].initial_seed()
    first, second = (s.normal_(torch.empty(300_000)) for s in (streams, again))
    assert torch.equal(first, second)  # the same seed, the same draws
    assert not torch.equal(first, other.normal_(torch.empty(300_000)))
    saved = streams.get_state()
    after = streams.normal_(torch.empty(300_000))
    streams.set_state(saved)
    assert torch.equal(streams.normal_(torch.empty(300_000)), after)
    with pytest.raises(ValueError, match="1 stream states for 2 streams"):
        streams.set_state(saved[:1])
    with pytest.raises(ValueError, match="count and min_part must be >= 1, got 0 and 65536"):
        NoiseStreams(0)
    with pytest.raises(ValueError, match="got 2 and 0"):
        NoiseStreams(2, min_part=0)


def test_noise_streams_survive_pickling_and_a_fork():
    streams = NoiseStreams(2, min_part=8)
    streams.seed(4)
    streams.normal_(torch.empty(100))  # starts the thread pool
    copy = pickle.loads(pickle.dumps(streams))  # the states travel, the pool does not
    assert torch.equal(copy.normal_(torch.empty(100)), streams.normal_(torch.empty(100)))
    child = multiprocessing.get_context("fork").Process(target=streams.normal_, args=(torch.empty(100),))
    child.start()
    child.join(timeout=60)
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0  # the forked child starts its own pool instead of waiting on the parent's


def test_the_swapped_noise_layer_draws_from_its_streams_and_the_plain_one_from_torchs_generator():
    streams = NoiseStreams(2, min_part=8)
    streams.seed(3)
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    before = streams.get_state()
    out = _fast_noise(0.3, streams)(x)
    draws = _draws(before, [400, 400]).view(4, 5, 5, 8).permute(0, 3, 1, 2)  # storage order, as without streams
    assert torch.equal(out, x + 0.3 * draws)
    torch.manual_seed(1)
    plain = GaussianNoise(0.3)(x.contiguous())  # the network's own layer: the default generator
    torch.manual_seed(1)
    assert torch.equal(plain, x + 0.3 * torch.randn_like(x.contiguous()))
    assert list(GaussianNoise(0.3).state_dict()) == list(_fast_noise(0.3, streams).state_dict())  # same checkpoints


@contextlib.contextmanager
def _threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _use_streams(trainer: Trainer, streams: NoiseStreams | None) -> Trainer:
    """The trainer drawing D's noise from ``streams`` (as if made with another thread count)."""
    trainer.runtime.noise = streams
    for layer in trainer.model.discriminator.modules():
        if isinstance(layer, GaussianNoise):
            StreamedGaussianNoise.swap(layer, streams)
    return trainer


def _small_parts(trainer: Trainer, seed: int) -> Trainer:
    """The trainer with 2 noise streams that split even the small networks' activations."""
    _use_streams(trainer, NoiseStreams(2, min_part=16))
    trainer.runtime.noise.seed(seed)
    return trainer


def test_the_trainer_draws_the_noise_on_every_cpu_thread_and_checkpoints_the_streams(make_config, digits):
    config = make_config(epochs=1)
    with _threads(1):
        assert Trainer(config, digits, report=lambda line: None).runtime.noise is None  # one thread: torch's generator
    with _threads(2):
        trainer = Trainer(config, digits, report=lambda line: None)
        assert Trainer(make_config(compile="default"), digits, report=lambda line: None).runtime.noise is None
    assert len(trainer.runtime.noise.generators) == 2
    _small_parts(trainer, 0).fit()
    fresh = NoiseStreams(2, min_part=16)
    fresh.seed(config.seed)
    assert not _same_states(fresh.get_state(), trainer.runtime.noise.get_state())  # training drew from the streams
    saved = copy.deepcopy(state.checkpoint_state(trainer))  # not the live weights
    steps = []
    for other in (trainer, _small_parts(Trainer(config, digits, report=lambda line: None), 99)):
        state.load_training_state(other, saved)  # the trainer itself goes back to where it was; the fresh one too
        other.schedule.total = 100  # one step more than the finished schedule, as if it were longer
        other._train_step()  # the same batch: the batch order is restored too
        steps.append(other.model.discriminator.convs[0].weight.detach().clone())
    assert torch.equal(*steps)  # streams seeded otherwise, restored from the checkpoint: the same next step
    unrestored = _small_parts(Trainer(config, digits, report=lambda line: None), 99)
    saved["training"]["rng"]["noise"] = trainer.runtime.noise.get_state()[:1]
    state.load_training_state(unrestored, saved)
    unrestored.schedule.total = 100
    unrestored._train_step()
    assert not torch.equal(unrestored.model.discriminator.convs[0].weight, steps[0])  # the streams matter


def test_a_checkpoint_without_matching_noise_streams_resumes_with_a_note(make_config, digits):
    config = make_config(epochs=1)
    trainer = _use_streams(Trainer(config, digits, report=lambda line: None), NoiseStreams(2))
    trainer.fit()
    saved = state.checkpoint_state(trainer)
    notes, seeded = [], []
    for seed in (1, 2):
        resumed = _use_streams(Trainer(config, digits, report=notes.append), NoiseStreams(3))  # another thread count
        resumed.runtime.noise.seed(seed)
        state.load_training_state(resumed, saved)
        seeded.append(resumed.runtime.noise.get_state())
    assert "(3 streams against 2 streams: another thread count" in notes[0] and len(notes) == 2
    assert _same_states(*seeded)  # reseeded from the checkpoint's random state: still reproducible
    one_thread = _use_streams(Trainer(config, digits, report=notes.append), None)
    state.load_training_state(one_thread, saved)
    assert "(torch's generator against 2 streams" in notes[-1]


def _same_states(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_catgan_command_shortens_openmp_spinning_unless_the_user_set_it_and_importing_changes_nothing():
    command = "import os, catgan.cli; catgan.cli.main([]); print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    run = lambda code, env: subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                           check=True).stdout.strip().splitlines()[-1]
    assert run(command, env) == "30000"
    assert run(command, {**env, "GOMP_SPINCOUNT": "5"}) == "5"
    assert run("import torch; " + command, env) == "None"  # too late: OpenMP has read it
    imported = "import os, catgan; catgan.TrainConfig; catgan.CatGANClassifier; print(os.environ.get('GOMP_SPINCOUNT'))"
    assert run(imported, env) == "None"  # the library sets no environment variable


def test_convolutional_networks_train_channels_last_with_the_numbers_of_the_contiguous_layout(make_config, digits):
    config = make_config(d_noise=0.0)  # noise is drawn in memory order, so it differs between the layouts
    trainer = Trainer(config, digits, report=lambda line: None)
    assert trainer.model.discriminator.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.model.generator.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    mlp = Trainer(make_config(architecture="mlp", mlp_width=64), digits, report=lambda line: None)
    assert all(p.is_contiguous() for p in mlp.model.parameters())  # no convolution: the layout is left alone
    results = []
    for layout in (torch.channels_last, torch.contiguous_format):
        torch.manual_seed(0)
        model = CatGAN(config, digits.image_shape, 10).to(memory_format=layout)
        # learning rate 0: G's step sees the D that D's step saw, and each .grad holds its step's gradients
        opt_d, opt_g = (torch.optim.SGD(network.parameters(), lr=0.0) for network in (model.discriminator, model.generator))
        torch.manual_seed(1)
        batch = Batch(digits.x_train[:20], digits.y_train[:20], digits.x_train[20:70])
        terms = {**discriminator_step(model, opt_d, batch, 1.0), **generator_step(model, opt_g, 50)}
        results.append((model, terms))
    (fast, fast_terms), (plain, plain_terms) = results
    for name in ("loss_d", "marginal_entropy_real", "loss_g"):
        assert torch.allclose(fast_terms[name], plain_terms[name], rtol=1e-5, atol=1e-6), name
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-5 * b.grad.abs().max().item()), name


def test_in_place_activations_leave_the_gradients_of_the_plain_ones():
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16, d_noise=0.0)
    fast = CatGAN(config, (1, 8, 8), 10)
    plain = CatGAN(config, (1, 8, 8), 10)
    plain.load_state_dict(fast.state_dict())
    for module in plain.modules():
        if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            module.inplace = False
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    z = torch.randn(6, 8)
    for model in (fast, plain):
        model.discriminator(torch.cat([x, model.generator(z)])).logsumexp(dim=1).mean().backward()
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        assert torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("size_in, size_out", [((4, 4), (7, 7)), ((4, 4), (8, 8)), ((7, 7), (14, 14)),
                                               ((4, 7), (7, 14)), ((5, 3), (9, 6))])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_transposed_convolution_by_matrix_product_gives_torchs_values_and_gradients(size_in, size_out, layout):
    torch.manual_seed(0)
    layer = Upsampling(6, 5, size_in, size_out).double().to(memory_format=layout)
    x = torch.randn(3, 6, *size_in, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    grad_out = torch.randn(3, 5, *size_out, dtype=torch.float64)
    plain = layer(x)
    fast = transposed_conv_by_matrix_product(x, layer.weight, layer.padding, layer.output_padding)
    assert type(fast.grad_fn).__name__ == "_StrideTwoTransposedConvBackward"
    plain_grads = torch.autograd.grad(plain, [x, layer.weight], grad_out)
    for a, b in zip((fast, *torch.autograd.grad(fast, [x, layer.weight], grad_out)), (plain, *plain_grads)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    # the input's gradient alone, as G's step asks of D's layers, and the weight's alone
    weight = layer.weight.detach()
    grad_x, = torch.autograd.grad(transposed_conv_by_matrix_product(x, weight, layer.padding, layer.output_padding),
                                  x, grad_out)
    assert torch.allclose(grad_x, plain_grads[0], rtol=1e-12, atol=1e-12)
    grad_w, = torch.autograd.grad(transposed_conv_by_matrix_product(x.detach(), layer.weight, layer.padding,
                                                                    layer.output_padding), layer.weight, grad_out)
    assert torch.allclose(grad_w, plain_grads[1], rtol=1e-12, atol=1e-12)


def test_upsampling_by_matrix_product_only_under_autocast_and_refuses_double_backward():
    layer = Upsampling(4, 3, (4, 4), (7, 7))
    MatrixProductUpsampling.swap(layer)
    x = torch.randn(2, 4, 4, 4, requires_grad=True)
    assert type(layer(x).grad_fn).__name__ != "_StrideTwoTransposedConvBackward"  # float32, no autocast: torch's
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert type(out.grad_fn).__name__ == "_StrideTwoTransposedConvBackward"
    grad_x, = torch.autograd.grad(out.float().square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward|once_differentiable|twice"):
        grad_x.sum().backward()


def test_transposed_convolution_by_matrix_product_under_bf16_autocast():
    torch.manual_seed(0)
    layer = Upsampling(32, 16, (4, 4), (7, 7))
    x = torch.randn(8, 32, 4, 4, requires_grad=True)
    grad_out = torch.randn(8, 16, 7, 7)
    exact = layer.double()(x.double())
    exact_grads = torch.autograd.grad(exact, [x, layer.weight], grad_out.double())
    MatrixProductUpsampling.swap(layer.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    grads = torch.autograd.grad(out, [x, layer.weight], grad_out.to(out.dtype))
    assert type(out.grad_fn).__name__ == "_StrideTwoTransposedConvBackward"
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert [g.dtype for g in grads] == [torch.float32, torch.float32]  # each input's own type
    for fast, plain in zip((out, *grads), (exact, *exact_grads)):
        error = (fast.double() - plain).abs().max() / plain.abs().max()
        assert 1e-5 < error < 2e-2  # bfloat16's rounding (2^-8 relative), not float32's, and no more


def test_the_fast_path_computes_small_transposed_convolutions_by_matrix_product_on_the_cpu_in_bf16_only():
    config = TrainConfig(dataset="mnist")
    for device, precision, compile_mode, expected in [("cpu", "bf16", "off", [True, True, False]),
                                                      ("cpu", "fp32", "off", [False] * 3),
                                                      ("cpu", "bf16", "default", [False] * 3),
                                                      ("cuda", "bf16", "off", [False] * 3)]:
        model = CatGAN(config, (1, 28, 28), 10)  # G from 4x4 to 7x7, 14x14 and 28x28
        # (compiling is lazy: nothing is compiled before a forward pass)
        performance.prepare_networks([model.generator, model.discriminator], True, compile_mode, torch.device(device),
                                     precision)
        layers = [m for m in model.generator.modules() if isinstance(m, Upsampling)]
        assert [layer.size_in for layer in layers] == [(4, 4), (7, 7), (14, 14)]
        assert [isinstance(layer, MatrixProductUpsampling) for layer in layers] == expected, (device, precision,
                                                                                             compile_mode)
        noise = [isinstance(m, StreamedGaussianNoise) for m in model.discriminator.modules() if isinstance(m, GaussianNoise)]
        assert noise and all(fast == (device == "cpu" and compile_mode == "off") for fast in noise)


def test_tune_cpu_takes_effect_with_glibc():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator settings are glibc's; this C library is not glibc")
    assert performance.tune_cpu() is True
    assert performance.tune_cpu() is True  # a second call is harmless


def test_bf16_autocast_runs_the_networks_in_bfloat16_and_the_losses_in_float32():
    torch.manual_seed(0)
    config = TrainConfig(latent_dim=8, d_width=8, g_width=8, feature_dim=16)
    model = CatGAN(config, (1, 8, 8), 10)
    opt_d, opt_g = make_optimizers(model, config)
    batch = Batch(torch.rand(10, 1, 8, 8) * 2 - 1, torch.arange(10), torch.rand(20, 1, 8, 8) * 2 - 1)
    autocast = performance.autocast_for(torch.device("cpu"), "bf16")
    with autocast():
        assert model.discriminator(batch.x_unl).dtype == torch.bfloat16
    terms_d = discriminator_step(model, opt_d, batch, 1.0, autocast=autocast)
    terms_g = generator_step(model, opt_g, 20, autocast=autocast)
    for terms in (terms_d, terms_g):
        assert all(value.dtype == torch.float32 for value in terms.values())
        assert all(torch.isfinite(value).all() for value in terms.values())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights and Adam state stay float32
    assert performance.autocast_for(torch.device("cpu"), "fp32")().__enter__() is None  # fp32: no autocast


def test_a_bf16_run_trains_and_records_its_precision(make_config, digits):
    trainer = Trainer(make_config(precision="bf16", epochs=3), digits, report=lambda line: None)
    # digits: G's one transposed convolution, from 4x4 to 8x8, runs as a matrix product
    assert [isinstance(layer, MatrixProductUpsampling) for layer in trainer.model.generator.modules()
            if isinstance(layer, Upsampling)] == [True]
    summary = trainer.fit()
    assert math.isfinite(summary["test_error"])
    assert summary["test_error"] < 80  # 10 classes: chance is 90%


def test_precision_and_compile_are_checked():
    with pytest.raises(CatGANError, match="unknown precision 'fp16'; choose one of fp32, bf16"):
        TrainConfig(precision="fp16")
    with pytest.raises(CatGANError, match="unknown compile mode 'fast'"):
        TrainConfig(compile="fast")


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler, and none is installed")
def test_compiled_networks_train_and_keep_their_parameter_names(make_config, digits):
    trainer = Trainer(make_config(compile="default", epochs=1, d_noise=0.0), digits, report=lambda line: None)
    names = [name for name, _ in trainer.model.named_parameters()]
    assert not any("_orig_mod" in name for name in names)  # checkpoints load into uncompiled networks
    summary = trainer.fit()
    assert math.isfinite(summary["test_error"])


@needs_cuda
def test_cuda_fast_path_settings(make_config, digits):
    trainer = Trainer(make_config(device="cuda", precision="bf16"), digits, report=lambda line: None)
    assert torch.backends.cudnn.benchmark
    weight = trainer.model.discriminator.convs[0].weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.x_train.device.type == "cuda"  # the images live on the GPU; batches are gathered there
    summary = trainer.fit()
    assert math.isfinite(summary["test_error"]) and summary["test_error"] < 80


def test_cli_speed_flags_map_onto_the_config():
    from catgan.cli import _build_parser

    parser = _build_parser()
    assert parser.parse_args(["train", "--compile"]).compile == "default"
    assert parser.parse_args(["train", "--compile", "reduce-overhead"]).compile == "reduce-overhead"
    assert parser.parse_args(["train", "--precision", "bf16"]).precision == "bf16"
    assert parser.parse_args(["train"]).compile is None  # the config's default (off) applies
