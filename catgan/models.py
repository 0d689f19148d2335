"""CatGAN networks: a K-way discriminator and a generator, convolutional or fully connected.

Both follow DCGAN practice (Radford et al., 2016): strided convolutions down in D, transposed
convolutions up in G, batch normalisation, LeakyReLU(0.2) in D, ReLU and a tanh output in G,
weights drawn from N(0, 0.02). D adds Gaussian noise to its hidden activations while training,
as CatGAN does (Springenberg, ICLR 2016, Sec. 3.4).

The convolutional D can also take the layout of the paper's MNIST discriminator (`_paper_convs`:
max-pools in place of strided convolutions).

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

With ``d_norm="weight"`` either D has no batch norm: its convolutions and linear layers have biases
and are weight-normalised (`weight_normalise`), as the discriminator of Salimans et al. (2016,
"Improved Techniques for Training GANs") is. D's output on an image then does not depend on the
other images of its batch, and training and evaluation compute the same function (up to D's noise).

`PlainCNN` is not part of a CatGAN: it is the classifier a practitioner would train on the labelled
images alone (``method="cnn"``, trained by `catgan.plain_cnn`), the baseline CatGAN must beat.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from catgan.config import D_LAYOUTS, CatGANError

if TYPE_CHECKING:
    from catgan.config import TrainConfig

__all__ = [
    "CatGAN",
    "Discriminator",
    "Generator",
    "GaussianNoise",
    "MLPDiscriminator",
    "MLPGenerator",
    "PlainCNN",
    "Upsampling",
    "evaluation_mode",
    "frozen_batchnorm_statistics",
    "weight_normalise",
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


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise to its input in training mode; the identity in evaluation mode.
    (`catgan.kernels.StreamedGaussianNoise` draws the same noise faster on the CPU.)"""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.std > 0):
            return x
        return torch.randn_like(x).mul_(self.std).add_(x)

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


@contextlib.contextmanager
def evaluation_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in evaluation mode inside the block, and back in the mode each was in after it."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


def weight_normalise(module: nn.Module) -> None:
    """Reparametrise every convolution and linear layer in ``module`` as w = g v / ||v||, one g per
    output unit (Salimans and Kingma, 2016), starting from g = 1: each unit's weight vector keeps
    the direction it was initialised with and starts at norm 1, so that, without batch norm, the
    scale of the activations does not shrink layer by layer. Call it after initialising the weights."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer in layers:
        nn.utils.parametrizations.weight_norm(layer, dim=0)
        with torch.no_grad():
            layer.parametrizations.weight.original0.fill_(1.0)


def _normalisation(channels: int, norm: str, spatial: bool) -> list[nn.Module]:
    """Batch norm over ``channels`` (2d when ``spatial``) for ``norm="batch"``; nothing for ``"weight"``
    (the layer before it is weight-normalised and has a bias instead)."""
    if norm == "weight":
        return []
    return [nn.BatchNorm2d(channels) if spatial else nn.BatchNorm1d(channels)]


def _dense_layer(n_in: int, n_out: int, noise_std: float, norm: str = "batch") -> list[nn.Module]:
    """A fully connected layer of D: linear (a bias only without batch norm), batch norm (with
    ``norm="batch"``), LeakyReLU(0.2) and Gaussian noise; (B, n_in) -> (B, n_out)."""
    return [
        nn.Linear(n_in, n_out, bias=norm != "batch"), *_normalisation(n_out, norm, spatial=False),
        nn.LeakyReLU(0.2, inplace=True), GaussianNoise(noise_std),
    ]


def _conv_layer(c_in: int, c_out: int, kernel: int, stride: int, noise_std: float, norm: str) -> list[nn.Module]:
    """A convolutional layer of D, padded to keep the size at stride 1 (to halve it, rounding up, at
    stride 2): convolution (a bias only without batch norm), batch norm (with ``norm="batch"``),
    LeakyReLU(0.2) and Gaussian noise."""
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=norm != "batch"),
        *_normalisation(c_out, norm, spatial=True),
        nn.LeakyReLU(0.2, inplace=True),
        GaussianNoise(noise_std),
    ]


PAPER_MAPS = 10  # channels of the paper's last (1x1) convolution


def _paper_convs(channels: int, width: int, noise_std: float, norm: str) -> tuple[list[nn.Module], int]:
    """The convolutions of Springenberg (2016)'s MNIST discriminator, widths in units of ``width``
    (32 gives the paper's): 5x5 conv w, 3x3 max-pool stride 2, 3x3 conv 2w, 3x3 conv 2w, 3x3 max-pool
    stride 2, 3x3 conv 4w, 1x1 conv 10; each convolution with our normalisation, LeakyReLU and
    noise. The pools halve the size, rounding up. The paper's table was not at hand when this was
    written: the layout is the one three public reimplementations agree on, and the dense layer
    that follows is D's usual feature layer (128 units by default, as theirs). Returns the layers,
    (B, C, H, W) -> (B, 10, ceil(ceil(H/2)/2), ...), and their output channels."""
    layers = [
        *_conv_layer(channels, width, 5, 1, noise_std, norm), nn.MaxPool2d(3, stride=2, padding=1),  # (B, w, H/2, W/2)
        *_conv_layer(width, 2 * width, 3, 1, noise_std, norm),
        *_conv_layer(2 * width, 2 * width, 3, 1, noise_std, norm), nn.MaxPool2d(3, stride=2, padding=1),
        *_conv_layer(2 * width, 4 * width, 3, 1, noise_std, norm),  # (B, 4w, H/4, W/4)
        *_conv_layer(4 * width, PAPER_MAPS, 1, 1, noise_std, norm),  # (B, 10, H/4, W/4)
    ]
    return layers, PAPER_MAPS


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
        norm: ``"batch"`` (batch norm after every hidden layer) or ``"weight"`` (weight-normalised
            layers with biases, no batch norm).
        layout: ``"strided"``: a 3x3 convolution, then 3x3 stride-2 convolutions halving the
            image down to 4 pixels or fewer (the DCGAN way); ``"paper"``: the layout of Springenberg
            (2016)'s MNIST discriminator, see `_paper_convs`.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 32,
        feature_dim: int = 128,
        noise_std: float = 0.3,
        norm: str = "batch",
        layout: str = "strided",
    ) -> None:
        super().__init__()
        channels, height, width_px = image_shape
        if layout not in D_LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose {' or '.join(D_LAYOUTS)}")
        if layout == "paper":
            layers, c_in = _paper_convs(channels, width, noise_std, norm)
            final_h, final_w = (halving_sizes(size, 2)[-1] for size in (height, width_px))
        else:
            stages = num_stages(height, width_px)
            final_h, final_w = halving_sizes(height, stages)[-1], halving_sizes(width_px, stages)[-1]
            layers = _conv_layer(channels, width, 3, 1, noise_std, norm)  # (B, w, H, W)
            c_in = width
            for stage in range(stages):
                c_out = width * 2**stage
                # 3x3, stride 2, padding 1 halves the size, rounding up: (B, c_out, ceil(H/2), ...)
                layers += _conv_layer(c_in, c_out, 3, 2, noise_std, norm)
                c_in = c_out
        self.convs = nn.Sequential(*layers)  # (B, c_in, final_h, final_w)
        self.features = nn.Sequential(
            nn.Flatten(),  # (B, c_in * final_h * final_w)
            *_dense_layer(c_in * final_h * final_w, feature_dim, noise_std, norm),  # (B, F)
        )
        self.classifier = nn.Linear(feature_dim, num_classes)  # (B, K)
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.apply(init_weights)
        if norm == "weight":
            weight_normalise(self)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, K); with ``return_features``, also the penultimate features (B, F)."""
        features = self.features(self.convs(x))
        logits = self.classifier(features)
        return (logits, features) if return_features else logits


class Upsampling(nn.ConvTranspose2d):
    """G's 4x4, stride-2 transposed convolution (no bias) from ``size_in`` to ``size_out``.

    Each output size is 2n (padding 1) or 2n - 1 (padding 2, output padding 1), n the input size.
    (`catgan.kernels.MatrixProductUpsampling` computes the same layer faster on some CPUs.)
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
        norm: ``"batch"`` or ``"weight"``, as for `Discriminator`.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 1000,
        feature_dim: int = 128,
        noise_std: float = 0.3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        w, half, quarter = _mlp_units(width)
        sizes = [math.prod(input_shape), w, half, quarter, quarter]
        layers: list[nn.Module] = [nn.Flatten()]  # (B, C*H*W)
        for n_in, n_out in zip(sizes, sizes[1:]):
            layers += _dense_layer(n_in, n_out, noise_std, norm)  # (B, n_out)
        self.hidden = nn.Sequential(*layers)
        self.features = nn.Sequential(*_dense_layer(sizes[-1], feature_dim, noise_std, norm))  # (B, F)
        self.classifier = nn.Linear(feature_dim, num_classes)  # (B, K)
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.apply(init_weights)
        if norm == "weight":
            weight_normalise(self)

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


class PlainCNN(nn.Module):
    """A standard small CNN classifier: images (B, C, H, W) -> logits (B, K).

    Two blocks of two 3x3 convolutions with batch norm and ReLU, each followed by 2x2 max pooling,
    a third block of one convolution, global average pooling and dropout before the linear
    classifier (the shape of the "Conv-Small" supervised baselines of Rasmus et al. 2015). Global
    pooling lets it take any image of at least 4x4 pixels. No GAN practice: no noise, PyTorch's
    default initialisation.

    Args:
        image_shape: (C, H, W) of the input images, scaled to [-1, 1].
        num_classes: K.
        width: channels of the first block; the second has 2x, the third 4x.
        dropout: the dropout probability on the pooled features while training.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, width: int = 32,
                 dropout: float = 0.5) -> None:
        super().__init__()
        channels = image_shape[0]

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.convs = nn.Sequential(
            *block(channels, width), *block(width, width), nn.MaxPool2d(2),  # (B, w, H/2, W/2)
            *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),  # (B, 2w, H/4, W/4)
            *block(2 * width, 4 * width),  # (B, 4w, H/4, W/4)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4w)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(4 * width, num_classes)  # (B, K)
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (B, K); with ``return_features``, also the pooled features (B, 4w)."""
        features = self.convs(x)
        logits = self.classifier(self.dropout(features))
        return (logits, features) if return_features else logits


class CatGAN(nn.Module):
    """The generator and discriminator of one run, built from its configuration. A plain CNN's run
    (``method="cnn"``) holds its classifier as the discriminator and no generator (None).

    Args:
        config: the run's `TrainConfig` (architecture, widths, latent size, noise level).
        image_shape: (C, H, W) of the data.
        num_clusters: K, the discriminator's number of outputs.
    """

    def __init__(self, config: "TrainConfig", image_shape: tuple[int, int, int], num_clusters: int) -> None:
        super().__init__()
        self.config = config
        self.latent_distribution = config.latent_distribution
        if config.method == "cnn":  # a plain CNN's run: a classifier and no generator
            self.generator = None
            self.discriminator = PlainCNN(image_shape, num_clusters)
        elif config.architecture == "mlp":
            self.generator = MLPGenerator(image_shape, config.latent_dim, config.mlp_width)
            self.discriminator = MLPDiscriminator(
                image_shape, num_clusters, config.mlp_width, config.feature_dim, config.d_noise, config.d_norm
            )
        else:
            self.generator = Generator(image_shape, config.latent_dim, config.g_width)
            self.discriminator = Discriminator(
                image_shape, num_clusters, config.d_width, config.feature_dim, config.d_noise, config.d_norm,
                config.d_layout,
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
        if self.generator is None:
            raise CatGANError("a plain CNN's run (method cnn) has no generator to draw images from")
        device = next(self.generator.parameters()).device
        shape = (n, self.generator.latent_dim)
        where = "cpu" if generator is not None else device
        if self.latent_distribution == "uniform":
            z = torch.rand(shape, device=where, generator=generator) * 2 - 1
        else:
            z = torch.randn(shape, device=where, generator=generator)
        return z.to(device)
