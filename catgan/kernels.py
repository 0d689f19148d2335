"""CPU kernels of the fast path, and the layers that use them in place of the networks' own.

The networks (`catgan.models`) say what they compute; `catgan.performance.prepare_networks`
swaps their layers for the ones here where a kernel is faster on the device at hand. A swapped
layer keeps its parameters, so checkpoints are the same either way:

- `StreamedGaussianNoise` replaces `catgan.models.GaussianNoise` on the CPU: it draws D's noise
  over the activation's memory in storage order (fast in channels-last too), in float32 for a
  bfloat16 activation, and from several `NoiseStreams` on as many threads;
- `MatrixProductUpsampling` replaces `catgan.models.Upsampling` from small inputs on CPUs in
  bfloat16: the transposed convolution as one matrix product and four shifted adds
  (`transposed_conv_by_matrix_product`), which AMX runs faster than oneDNN's own kernel.

A swap changes the layer's class in place (as ``torch.nn.utils.parametrize`` does), so the
module, its parameters and its place in the network stay the same objects.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from catgan.models import GaussianNoise, Upsampling

__all__ = [
    "MatrixProductUpsampling",
    "NoiseStreams",
    "StreamedGaussianNoise",
    "transposed_conv_by_matrix_product",
]


class NoiseStreams:
    """Independent random streams from which D's noise is drawn on several CPU threads at once.

    torch draws normal values on one thread, and D's noise is some 15 million values per training
    step of the 28x28 networks at batch 100: a quarter to a third of a CPU step, other cores idle.
    `StreamedGaussianNoise` on the CPU (not compiled) cuts its noise into
    contiguous parts of its memory, as many as there are streams but none smaller than
    ``min_part`` values, and draws part i from stream i, each on its own thread (a tensor of fewer
    than ``2 * min_part`` values comes whole from stream 0). The values depend on the streams'
    states, their number and ``min_part``, never on the threads' timing. Each stream is a torch
    CPU generator with a seed of its own; `get_state` and `set_state` save and restore them all.
    """

    def __init__(self, count: int, min_part: int = 1 << 16) -> None:
        if count < 1 or min_part < 1:
            raise ValueError(f"count and min_part must be >= 1, got {count} and {min_part}")
        self.generators = [torch.Generator() for _ in range(count)]
        self.min_part = min_part
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = -1  # the process that started the pool: a forked child starts its own

    def __getstate__(self) -> dict:
        return {"states": self.get_state(), "min_part": self.min_part}  # no thread pool

    def __setstate__(self, state: dict) -> None:
        self.__init__(len(state["states"]), state["min_part"])
        self.set_state(state["states"])

    def seed(self, seed: int) -> None:
        """Seed the streams with distinct 32-bit seeds (torch's CPU generator keeps 32 bits of a seed)
        derived from ``seed``."""
        seeds = np.random.SeedSequence(seed).generate_state(len(self.generators), np.uint32)
        for generator, value in zip(self.generators, seeds.tolist()):
            generator.manual_seed(value)

    def get_state(self) -> list[Tensor]:
        return [generator.get_state() for generator in self.generators]

    def set_state(self, states: list[Tensor]) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"{len(states)} stream states for {len(self.generators)} streams")
        for generator, state in zip(self.generators, states):
            generator.set_state(state)

    def normal_(self, values: Tensor) -> Tensor:
        """Fill the one-dimensional, contiguous ``values`` with standard normal draws, part i from stream i."""
        total = values.numel()
        count = min(len(self.generators), total // self.min_part)
        if count < 2:
            return values.normal_(generator=self.generators[0])
        if self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(len(self.generators) - 1, thread_name_prefix="catgan-noise")
            self._pool_pid = os.getpid()
        bounds = [total * part // count for part in range(count + 1)]
        pending = [self._pool.submit(values[start:end].normal_, generator=generator)
                   for start, end, generator in zip(bounds[1:-1], bounds[2:], self.generators[1:count])]
        values[:bounds[1]].normal_(generator=self.generators[0])
        for draw in pending:
            draw.result()
        return values


class StreamedGaussianNoise(GaussianNoise):
    """`GaussianNoise` drawn the fast way on the CPU, from ``streams`` (None: torch's default generator).

    On the CPU, torch's normal_ is fast only on contiguous memory, and draws bfloat16 twice as
    slowly as float32. So the noise is drawn over its memory in storage order (for a contiguous x
    these are the values of randn_like(x), for a channels-last x the same i.i.d. draws laid out
    channels-last), and in float32 for a bfloat16 x. std * noise + x is formed in place on the
    noise (two fewer activation-sized allocations); under bfloat16 autocast the sum stays
    bfloat16, as the next layer would cast it anyway. On other devices and in compiled code the
    layer is `GaussianNoise`.
    """

    streams: NoiseStreams | None

    @classmethod
    def swap(cls, layer: GaussianNoise, streams: NoiseStreams | None) -> None:
        """Make ``layer`` (in place) draw this way, from ``streams``."""
        layer.__class__ = cls
        layer.streams = streams

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.std > 0) or x.device.type != "cpu" or torch.compiler.is_compiling():
            return super().forward(x)
        dtype = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
        noise = torch.empty_like(x, dtype=dtype)  # dense: x's strides if x is dense, else contiguous
        values = torch.as_strided(noise, (noise.numel(),), (1,))
        if self.streams is None:
            values.normal_()
        else:
            self.streams.normal_(values)
        if dtype == x.dtype:
            return noise.mul_(self.std).add_(x)
        return torch.add(x, noise.to(x.dtype), alpha=self.std)


class _StrideTwoTransposedConv(torch.autograd.Function):
    """A 4x4, stride-2 transposed convolution (no bias) as one matrix product and four shifted adds.

    With a kernel twice the stride, every output pixel (2q + r) receives exactly two taps per
    dimension: kernel rows r and r + 2, from input rows q and q - 1. So the products of each input
    pixel with the 16 kernel taps (one matrix product, (B*h*w, C_in) @ (C_in, 16*C_out)) are added
    into the outputs at four shifts, one per tap pair (A, B) in {0, 1}^2, and the result is
    cropped by the padding. The backward pass gathers the output gradient at the same four shifts
    and takes the two matrix products of a linear layer.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, padding: tuple[int, int], size_out: tuple[int, int]) -> Tensor:
        batch, c_in, h, w = x.shape
        c_out = weight.shape[1]
        # kernel row 2A + r, column 2B + s -> matrix columns ordered (A, B, r, s, C_out); C_out stays
        # innermost, as in a channels-last weight
        w_mat = weight.permute(0, 2, 3, 1).reshape(c_in, 2, 2, 2, 2, c_out).transpose(2, 3).reshape(c_in, 16 * c_out)
        x_mat = x.permute(0, 2, 3, 1).reshape(batch * h * w, c_in)  # (B*h*w, C_in), a view if channels-last
        taps = (x_mat @ w_mat).view(batch, h, w, 2, 2, 2, 2, c_out)  # (B, h, w, A, B, r, s, C_out)
        full = taps.new_zeros(batch, h + 1, 2, w + 1, 2, c_out)  # (B, q, r, q', s, C_out): rows 2q + r
        for a in range(2):
            for b in range(2):  # input pixel (i, j) with taps (A, B) lands in block (i + A, j + B)
                full[:, a:a + h, :, b:b + w].add_(taps[:, :, :, a, b].permute(0, 1, 3, 2, 4, 5))
        ctx.save_for_backward(x_mat, w_mat)
        ctx.shapes = (batch, c_in, c_out, h, w, padding, size_out)
        (top, left), (height, width) = padding, size_out
        out = full.view(batch, 2 * h + 2, 2 * w + 2, c_out)[:, top:top + height, left:left + width]
        return out.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)  # (B, C_out, H, W)

    @staticmethod
    @torch.autograd.function.once_differentiable  # the saved matrices are copies: no double backward
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x_mat, w_mat = ctx.saved_tensors
        batch, c_in, c_out, h, w, (top, left), (height, width) = ctx.shapes
        grad_full = grad_out.new_zeros(batch, 2 * h + 2, 2 * w + 2, c_out)
        grad_full[:, top:top + height, left:left + width] = grad_out.permute(0, 2, 3, 1)
        grad_full = grad_full.view(batch, h + 1, 2, w + 1, 2, c_out)
        grad_taps = grad_out.new_empty(batch, h, w, 2, 2, 2, 2, c_out)
        for a in range(2):
            for b in range(2):
                grad_taps[:, :, :, a, b] = grad_full[:, a:a + h, :, b:b + w].permute(0, 1, 3, 2, 4, 5)
        grad_taps = grad_taps.view(batch * h * w, 16 * c_out)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_taps @ w_mat.t()).view(batch, h, w, c_in).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            # (C_in, A, B, r, s, C_out) -> (C_in, A, r, B, s, C_out) = (C_in, 4, 4, C_out): a channels-last weight
            grad_weight = (x_mat.t() @ grad_taps).view(c_in, 2, 2, 2, 2, c_out).transpose(2, 3)
            grad_weight = grad_weight.reshape(c_in, 4, 4, c_out).permute(0, 3, 1, 2)
        return grad_x, grad_weight, None, None


def transposed_conv_by_matrix_product(x: Tensor, weight: Tensor, padding: tuple[int, int],
                                      output_padding: tuple[int, int]) -> Tensor:
    """``F.conv_transpose2d(x, weight, stride=2, padding=padding, output_padding=output_padding)``
    for a 4x4 ``weight`` (C_in, C_out, 4, 4), no bias, each output padding at most its padding,
    computed by `_StrideTwoTransposedConv`; the result is channels-last."""
    size_out = tuple(2 * n + 2 - 2 * p + extra for n, p, extra in zip(x.shape[-2:], padding, output_padding))
    return _StrideTwoTransposedConv.apply(x, weight, tuple(padding), size_out)


class MatrixProductUpsampling(Upsampling):
    """`Upsampling` computed under autocast as one matrix product and four shifted adds
    (`transposed_conv_by_matrix_product`), which a CPU with AMX runs faster than oneDNN's own
    transposed convolution from small inputs. The product and the adds are then in the autocast
    type (an output is rounded at each of its adds, where oneDNN's kernel rounds once). Outside
    autocast (G's samples and evaluations in float32), on float64 inputs, with ``output_size``
    and in compiled code, the layer is torch's.
    """

    @classmethod
    def swap(cls, layer: Upsampling) -> None:
        """Make ``layer`` (in place) compute this way."""
        layer.__class__ = cls

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        device = x.device.type
        if (output_size is not None or torch.compiler.is_compiling() or not torch.is_autocast_enabled(device)
                or x.dtype == torch.float64):
            return super().forward(x, output_size)
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return transposed_conv_by_matrix_product(x.to(dtype), self.weight.to(dtype), self.padding,
                                                     self.output_padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", by_matrix_product=True"
