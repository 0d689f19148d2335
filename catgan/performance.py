"""The fast path: the kernels that replace network layers (`catgan.kernels`), memory allocation and
threads on the CPU, cuDNN autotuning on CUDA, the channels-last layout, bfloat16 autocast, and
``torch.compile``. The trainer switches on the fast path for the device and precision at hand
(`prepare_networks`, the noise streams, cuDNN's autotuning; in float32 on the CPU none of it
changes a result); the process-wide settings (`tune_cpu`, OpenMP's spinning) are the
application's to make: the ``catgan`` command makes them, a library user may.

The training loop itself is already the fast part: the images live in memory as one tensor (on
the training device when it fits), each batch is gathered by index on that device, and the loss
terms stay on the device until the logging cadence. What is here tunes what runs around it:

- CPU: glibc's allocator gives large freed blocks back to the kernel at once, so every training
  step pays for fresh pages of memory (page faults) for its activations; `tune_cpu` asks it to keep
  them (the ``catgan`` command does; the library never does so by itself). The thread count stays
  torch's (one per physical core; ``OMP_NUM_THREADS`` overrides it; torchrun sets it to 1 per
  process). With more than one thread, the trainer draws D's noise on all of them, from as many
  random streams (`catgan.kernels.NoiseStreams`); the ``catgan`` command also shortens how long
  OpenMP's idle threads spin, so that they leave those cores free (``GOMP_SPINCOUNT``, see
  `catgan.cli.main`).
- CUDA: cuDNN autotunes its convolution algorithms for the fixed batch shapes.
- Convolutional networks use the channels-last layout, on every device: tensor cores read it
  fastest, and oneDNN's CPU convolutions (forward and backward) run faster in it too. D's noise
  is drawn in storage order, so it costs no more there (see `catgan.kernels.StreamedGaussianNoise`).
- ``precision="bf16"``: forward passes run under bfloat16 autocast (convolutions and matrix
  products in bfloat16, weights and optimiser state in float32); the losses are computed in
  float32 from the logits. It pays on GPUs and on CPUs with AMX or AVX-512 bfloat16 units; it
  changes the numbers a run produces, so it is never switched on for the user. On the CPU, G's
  transposed convolutions from inputs of fewer than 64 pixels then run as one matrix product each
  (`catgan.kernels.MatrixProductUpsampling`), which AMX computes faster than oneDNN's transposed convolution.
- ``compile``: ``torch.compile`` each network in place (parameter names, and so checkpoints, are
  unchanged); the mode ``reduce-overhead`` also records CUDA graphs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
from collections.abc import Callable
from typing import ContextManager

import torch
from torch import nn

from catgan.kernels import MatrixProductUpsampling, NoiseStreams, StreamedGaussianNoise
from catgan.models import GaussianNoise, Upsampling

__all__ = ["autocast_for", "noise_streams", "prepare_networks", "tune_cpu", "tune_cuda"]

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_cpu_tuned: bool | None = None


def tune_cpu() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it to the kernel.

    By default glibc serves blocks above a few megabytes with mmap and unmaps them when freed, so
    every step's activations fault in fresh, zeroed pages. Afterwards blocks up to 32 MiB come
    from the heap, and up to 1 GiB of freed heap stays with the process (a notebook that trains
    keeps it). Process-wide, done once; returns whether it took effect (False where the C library
    is not glibc).
    """
    global _cpu_tuned
    if _cpu_tuned is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):
            _cpu_tuned = False
        else:
            settings = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20))
            _cpu_tuned = all(mallopt(parameter, value) == 1 for parameter, value in settings)
    return _cpu_tuned


def tune_cuda() -> None:
    """Let cuDNN benchmark its convolution algorithms for each new input shape and keep the fastest."""
    torch.backends.cudnn.benchmark = True


def autocast_for(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    """A factory of the context the forward passes run in: bfloat16 autocast on ``device`` for
    ``precision="bf16"``, nothing for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}")


# G's transposed convolutions from inputs of fewer than 64 pixels run as a matrix product on CPUs in
# bfloat16. Measured ad hoc on a 2-core Xeon with AMX (torch 2.15, batch 100, one layer's two
# forward passes and one backward pass as in a training step, median of 25 alternating pairs):
# from 4x4 inputs 2.2-2.5x faster than oneDNN's transposed convolution, from 7x7 1.3-1.4x faster,
# from 8x8 1.6x slower, from 14x14 and 16x16 2.4x to 2.9x slower; in float32 slower from every size.
MATRIX_PRODUCT_MAX_PIXELS = 63


def noise_streams(device: torch.device, compile_mode: str) -> NoiseStreams | None:
    """Streams to draw D's noise from on every CPU thread torch computes with (None on other
    devices, with one thread, or for compiled networks, which draw their own)."""
    threads = torch.get_num_threads()
    return NoiseStreams(threads) if device.type == "cpu" and threads > 1 and compile_mode == "off" else None


def prepare_networks(networks: list[nn.Module], convolutional: bool, compile_mode: str,
                     device: torch.device = torch.device("cpu"), precision: str = "fp32",
                     noise: NoiseStreams | None = None) -> None:
    """Apply the fast path to ``networks`` in place, without changing their parameters:

    - convolutional networks take the channels-last layout;
    - on the CPU, uncompiled, D's noise layers draw the fast way, from ``noise`` when given
      (`catgan.kernels.StreamedGaussianNoise`);
    - on the CPU in bfloat16, uncompiled, G's transposed convolutions from inputs of fewer than 64
      pixels run as matrix products (`catgan.kernels.MatrixProductUpsampling`);
    - with ``compile_mode`` other than ``"off"``, each network is compiled in place.
    """
    if convolutional:
        for network in networks:
            network.to(memory_format=torch.channels_last)
    if device.type == "cpu" and compile_mode == "off":
        for network in networks:
            for layer in network.modules():
                if isinstance(layer, GaussianNoise):
                    StreamedGaussianNoise.swap(layer, noise)
                elif (precision == "bf16" and isinstance(layer, Upsampling)
                      and math.prod(layer.size_in) <= MATRIX_PRODUCT_MAX_PIXELS):
                    MatrixProductUpsampling.swap(layer)
    if compile_mode != "off":
        for network in networks:
            network.compile(mode=None if compile_mode == "default" else compile_mode)
