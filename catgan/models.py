"""CatGAN networks: a K-way discriminator and a generator, convolutional or fully connected.

Both follow DCGAN practice (Radford et al., 2016): strided convolutions down in D, transposed
convolutions up in G, batch normalisation, LeakyReLU(0.2) in D, ReLU and a tanh output in G,
weights drawn from N(0, 0.02). D adds Gaussian noise to its hidden activations while training,
as CatGAN does (Springenberg, ICLR 2016, Sec. 3.4).

Both networks are built from the image shape (C, H, W) and a width. The spatial sizes are halved
(rounding up) until they reach 4 or less: 8 -> 4 for scikit-learn's digits, 28 -> 14 -> 7 -> 4
for MNIST-like images, 32 -> 16 -> 8 -> 4 for colour images. The generator walks the same sizes
back up, so it produces exactly (C, H, W).

The fully connected pair (``architecture="mlp"``) is CatGAN's permutation-invariant variant: it
sees an input as a flat vector of C*H*W values, so it also serves data that are not images
(feature vectors held as (N, 1, 1, d)). D has hidden layers of W, W/2, W/4 and W/4 units and a
penultimate layer of ``feature_dim``; G has two hidden layers of W/2 units (W = ``mlp_width``).
Both use the same batch normalisation, activations, noise and initialisation as the convolutional
pair.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from catgan.config import TrainConfig

__all__ = [
    "CatGAN",
    "Discriminator",
    "Generator",
    "GaussianNoise",
    "MLPDiscriminator",
    "MLPGenerator",
    "NoiseStreams",
    "Upsampling",
    "drawing_noise_from",
    "frozen_batchnorm_statistics",
    "transposed_conv_by_matrix_product",
]


def num_stages(height: int, width: int, smallest: int = 4) -> int:
    """How many halvings (rounding up) bring the larger of ``height`` and ``width`` to <= ``smallest``."""
    size, stages = max(height, width), 0
    while size > smallest:
        size, stages = math.ceil(size / 2), stages + 1
    return stages


def halving_sizes(size: int, stages: int) -> list[int]:
    """``size`` followed by ``stages`` successive halvings, each rounded up.

    >>> halving_sizes(28, 3)
    [28, 14, 7, 4]
    """
    sizes = [size]
    for _ in range(stages):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv and linear weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class NoiseStreams:
    """Independent random streams from which D's noise is drawn on several CPU threads at once.

    torch draws normal values on one thread, and D's noise is some 15 million values per training
    step of the 28x28 networks at batch 100: a quarter to a third of a CPU step, other cores idle.
    Inside `drawing_noise_from`, `GaussianNoise` on the CPU (not compiled) cuts its noise into
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


_noise_streams: contextvars.ContextVar[NoiseStreams | None] = contextvars.ContextVar("noise_streams", default=None)


@contextlib.contextmanager
def drawing_noise_from(streams: NoiseStreams | None) -> Iterator[None]:
    """Inside the block, `GaussianNoise` on the CPU draws from ``streams`` (None: from torch's
    default generator, as outside any block)."""
    token = _noise_streams.set(streams)
    try:
        yield
    finally:
        _noise_streams.reset(token)


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise to its input in training mode; the identity in evaluation mode.

    The noise comes from torch's default generator, or on the CPU (not compiled) inside
    `drawing_noise_from` from the given `NoiseStreams`.
    """

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.std > 0):
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return torch.randn_like(x).mul_(self.std).add_(x)
        # On the CPU, torch's normal_ is fast only on contiguous memory, and draws bfloat16 twice as
        # slowly as float32. So the noise is drawn over its memory in storage order (for a
        # contiguous x these are the values of randn_like(x), for a channels-last x the same i.i.d.
        # draws laid out channels-last), and in float32 for a bfloat16 x. std * noise + x is formed
        # in place on the noise (two fewer activation-sized allocations); under bfloat16 autocast
        # the sum stays bfloat16, as the next layer would cast it anyway.
        dtype = torch.float32 if x.dtype == torch.bfloat16 else x.dtype
        noise = torch.empty_like(x, dtype=dtype)  # dense: x's strides if x is dense, else contiguous
        values = torch.as_strided(noise, (noise.numel(),), (1,))
        streams = _noise_streams.get()
        if streams is None:
            values.normal_()
        else:
            streams.normal_(values)
        if dtype == x.dtype:
            return noise.mul_(self.std).add_(x)
        return torch.add(x, noise.to(x.dtype), alpha=self.std)

    def extra_repr(self) -> str:
        return f"std={self.std}"


@contextlib.contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Leave the running statistics of every batch-norm layer in ``module`` untouched.

    Inside the block, batch norm in training mode still normalises with the batch's own
    statistics, but neither the running averages used at evaluation nor the batch counter are
    updated. The discriminator's running statistics should describe real data only, so generated
    batches pass through it inside this block.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    tracking = [norm.track_running_stats for norm in norms]
    for norm in norms:
        norm.track_running_stats = False  # training mode: batch statistics, no running update
    try:
        yield
    finally:
        for norm, track in zip(norms, tracking):
            norm.track_running_stats = track


def _dense_layer(n_in: int, n_out: int, noise_std: float) -> list[nn.Module]:
    """A fully connected layer of D: linear (no bias, batch norm follows), batch norm,
    LeakyReLU(0.2) and Gaussian noise; (B, n_in) -> (B, n_out)."""
    return [
        nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.LeakyReLU(0.2, inplace=True),
        GaussianNoise(noise_std),
    ]


class Discriminator(nn.Module):
    """A K-way convolutional classifier: images (B, C, H, W) -> logits (B, K).

    Args:
        image_shape: (C, H, W) of the input images, scaled to [-1, 1].
        num_classes: K, the number of classes or clusters.
        width: channels of the first layer and of the first halving of the spatial size; each
            further halving doubles them.
        feature_dim: size of the penultimate (feature) layer.
        noise_std: standard deviation of the Gaussian noise added to every hidden activation
            while training (0 turns it off).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 32,
        feature_dim: int = 128,
        noise_std: float = 0.3,
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        stages = num_stages(height, width_px)
        final_h, final_w = halving_sizes(height, stages)[-1], halving_sizes(width_px, stages)[-1]
        layers: list[nn.Module] = [
            nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False),  # (B, w, H, W)
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            GaussianNoise(noise_std),
        ]
        c_in = width
        for stage in range(stages):
            c_out = width * 2**stage
            layers += [
                # 3x3, stride 2, padding 1 halves the size, rounding up: (B, c_out, ceil(H/2), ...)
                nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.LeakyReLU(0.2, inplace=True),
                GaussianNoise(noise_std),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*layers)  # (B, c_in, final_h, final_w)
        self.features = nn.Sequential(
            nn.Flatten(),  # (B, c_in * final_h * final_w)
            *_dense_layer(c_in * final_h * final_w, feature_dim, noise_std),  # (B, F)
        )
        self.classifier = nn.Linear(feature_dim, num_classes)  # (B, K)
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.apply(init_weights)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, K); with ``return_features``, also the penultimate features (B, F)."""
        features = self.features(self.convs(x))
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


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


class Upsampling(nn.ConvTranspose2d):
    """G's 4x4, stride-2 transposed convolution (no bias) from ``size_in`` to ``size_out``.

    Each output size is 2n (padding 1) or 2n - 1 (padding 2, output padding 1), n the input size.
    With ``by_matrix_product`` set (the trainer sets it on inputs of fewer than 64 pixels on CPUs
    in bfloat16, see `catgan.performance.prepare_networks`), the layer computes the convolution
    under autocast as one matrix product and four shifted adds
    (`transposed_conv_by_matrix_product`), which a CPU with AMX runs faster than oneDNN's own
    transposed convolution from small inputs. The product and the adds are then in the autocast
    type (an output is rounded at each of its adds, where oneDNN's kernel rounds once). Outside
    autocast (G's samples and evaluations in float32), on float64 inputs, with ``output_size``
    and in compiled code, the layer is torch's. The parameters, and so checkpoints, are those of
    `torch.nn.ConvTranspose2d`.
    """

    def __init__(self, c_in: int, c_out: int, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
        padding, output_padding = [], []
        for n_in, n_out in zip(size_in, size_out):
            if n_out == 2 * n_in:
                padding.append(1), output_padding.append(0)
            elif n_out == 2 * n_in - 1:
                padding.append(2), output_padding.append(1)
            else:
                raise ValueError(f"a stride-2 layer cannot map size {n_in} to {n_out}")
        super().__init__(c_in, c_out, 4, stride=2, padding=tuple(padding), output_padding=tuple(output_padding),
                         bias=False)
        self.size_in = tuple(size_in)
        self.by_matrix_product = False

    def forward(self, x: Tensor, output_size: list[int] | None = None) -> Tensor:
        device = x.device.type
        if (not self.by_matrix_product or output_size is not None or torch.compiler.is_compiling()
                or not torch.is_autocast_enabled(device) or x.dtype == torch.float64):
            return super().forward(x, output_size)
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return transposed_conv_by_matrix_product(x.to(dtype), self.weight.to(dtype), self.padding,
                                                     self.output_padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", by_matrix_product=True" if self.by_matrix_product else "")


class Generator(nn.Module):
    """Maps latent vectors z (B, Z) to images (B, C, H, W) in [-1, 1].

    Args:
        image_shape: (C, H, W) of the images to generate.
        latent_dim: Z, the size of the latent vector.
        width: channels of the last hidden layer; each halving of the spatial size on the way
            down doubles them, so the first layer has the most.
    """

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int = 100, width: int = 32) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        stages = num_stages(height, width_px)
        heights, widths = halving_sizes(height, stages), halving_sizes(width_px, stages)
        c0 = width * 2**stages
        self.start_shape = (c0, heights[-1], widths[-1])
        self.project = nn.Sequential(
            nn.Linear(latent_dim, c0 * heights[-1] * widths[-1], bias=False),  # (B, c0 * h0 * w0)
            nn.BatchNorm1d(c0 * heights[-1] * widths[-1]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        c_in = c0
        for stage in reversed(range(stages)):
            c_out = width * 2**stage
            size_in = (heights[stage + 1], widths[stage + 1])
            size_out = (heights[stage], widths[stage])
            layers += [
                Upsampling(c_in, c_out, size_in, size_out),  # (B, c_out, *size_out)
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        layers += [
            nn.Conv2d(c_in, channels, 3, stride=1, padding=1),  # (B, C, H, W)
            nn.Tanh(),
        ]
        self.convs = nn.Sequential(*layers)
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        self.apply(init_weights)

    def forward(self, z: Tensor) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] from latent vectors z (B, Z)."""
        return self.convs(self.project(z).view(z.shape[0], *self.start_shape))


def _mlp_units(width: int) -> tuple[int, int, int]:
    """W, W/2 and W/4 (each at least 1): the hidden sizes of the fully connected networks."""
    return width, max(1, width // 2), max(1, width // 4)


class MLPDiscriminator(nn.Module):
    """A K-way fully connected classifier: inputs (B, C, H, W) read as flat vectors -> logits (B, K).

    Args:
        input_shape: (C, H, W) of the inputs; (1, 1, d) for feature vectors of length d.
        num_classes: K, the number of classes or clusters.
        width: W, the units of the first hidden layer; the next have W/2, W/4 and W/4.
        feature_dim: size of the penultimate (feature) layer.
        noise_std: standard deviation of the Gaussian noise added to every hidden activation
            while training (0 turns it off).
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 1000,
        feature_dim: int = 128,
        noise_std: float = 0.3,
    ) -> None:
        super().__init__()
        w, half, quarter = _mlp_units(width)
        sizes = [math.prod(input_shape), w, half, quarter, quarter]
        layers: list[nn.Module] = [nn.Flatten()]  # (B, C*H*W)
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += _dense_layer(n_in, n_out, noise_std)  # (B, n_out)
        self.hidden = nn.Sequential(*layers)
        self.features = nn.Sequential(*_dense_layer(sizes[-1], feature_dim, noise_std))  # (B, F)
        self.classifier = nn.Linear(feature_dim, num_classes)  # (B, K)
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.apply(init_weights)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, K); with ``return_features``, also the penultimate features (B, F)."""
        features = self.features(self.hidden(x))
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


class MLPGenerator(nn.Module):
    """Maps latent vectors z (B, Z) through two fully connected hidden layers to inputs
    (B, C, H, W) in [-1, 1].

    Args:
        output_shape: (C, H, W) of the inputs to generate; (1, 1, d) for feature vectors.
        latent_dim: Z, the size of the latent vector.
        width: W; both hidden layers have W/2 units.
    """

    def __init__(self, output_shape: tuple[int, int, int], latent_dim: int = 100, width: int = 1000) -> None:
        super().__init__()
        _, half, _ = _mlp_units(width)
        self.layers = nn.Sequential(
            nn.Linear(latent_dim, half, bias=False),  # (B, W/2)
            nn.BatchNorm1d(half),
            nn.ReLU(inplace=True),
            nn.Linear(half, half, bias=False),  # (B, W/2)
            nn.BatchNorm1d(half),
            nn.ReLU(inplace=True),
            nn.Linear(half, math.prod(output_shape)),  # (B, C*H*W)
            nn.Tanh(),
        )
        self.image_shape = tuple(output_shape)
        self.latent_dim = latent_dim
        self.apply(init_weights)

    def forward(self, z: Tensor) -> Tensor:
        """Inputs (B, C, H, W) in [-1, 1] from latent vectors z (B, Z)."""
        return self.layers(z).view(z.shape[0], *self.image_shape)


class CatGAN(nn.Module):
    """The generator and discriminator of one run, built from its configuration.

    Args:
        config: the run's `TrainConfig` (architecture, widths, latent size, noise level).
        image_shape: (C, H, W) of the data.
        num_clusters: K, the discriminator's number of outputs.
    """

    def __init__(self, config: "TrainConfig", image_shape: tuple[int, int, int], num_clusters: int) -> None:
        super().__init__()
        self.config = config
        self.latent_distribution = config.latent_distribution
        if config.architecture == "mlp":
            self.generator = MLPGenerator(image_shape, config.latent_dim, config.mlp_width)
            self.discriminator = MLPDiscriminator(
                image_shape, num_clusters, config.mlp_width, config.feature_dim, config.d_noise
            )
        else:
            self.generator = Generator(image_shape, config.latent_dim, config.g_width)
            self.discriminator = Discriminator(
                image_shape, num_clusters, config.d_width, config.feature_dim, config.d_noise
            )

    @property
    def num_clusters(self) -> int:
        return self.discriminator.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.discriminator.image_shape

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n latent vectors (n, Z) on the models' device: N(0, I), or U(-1, 1) per coordinate.

        With a ``generator`` (a CPU `torch.Generator`) the draw is made on the CPU and moved, so
        fixed noise is the same on every device.
        """
        device = next(self.generator.parameters()).device
        shape = (n, self.generator.latent_dim)
        where = "cpu" if generator is not None else device
        if self.latent_distribution == "uniform":
            z = torch.rand(shape, device=where, generator=generator) * 2 - 1
        else:
            z = torch.randn(shape, device=where, generator=generator)
        return z.to(device)
