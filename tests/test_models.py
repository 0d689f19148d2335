"""The networks: shapes for every supported image size, initialisation, noise and batch norm."""

import pytest
import torch
from torch import nn

from catgan.config import CatGANError, TrainConfig
from catgan.models import (
    CatGAN,
    Discriminator,
    GaussianNoise,
    Generator,
    MLPDiscriminator,
    MLPGenerator,
    evaluation_mode,
    frozen_batchnorm_statistics,
    halving_sizes,
    num_stages,
)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 8, 28), (3, 5, 3)]


def test_halving_chains():
    assert num_stages(8, 8) == 1 and halving_sizes(8, 1) == [8, 4]
    assert num_stages(28, 28) == 3 and halving_sizes(28, 3) == [28, 14, 7, 4]
    assert num_stages(32, 32) == 3 and halving_sizes(32, 3) == [32, 16, 8, 4]
    assert num_stages(4, 3) == 0


@pytest.mark.parametrize("shape", SHAPES)
def test_generator_makes_images_of_the_data_shape_in_range(shape):
    torch.manual_seed(0)
    generator = Generator(shape, latent_dim=16, width=8)
    images = generator(torch.randn(6, 16))
    assert images.shape == (6, *shape)
    assert images.min() >= -1 and images.max() <= 1
    assert isinstance(generator.convs[-1], nn.Tanh)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [2, 10, 20])
def test_discriminator_returns_k_logits_and_features(shape, k):
    discriminator = Discriminator(shape, k, width=8, feature_dim=24)
    x = torch.rand(5, *shape) * 2 - 1
    logits = discriminator(x)
    assert logits.shape == (5, k)
    logits_again, features = discriminator(x, return_features=True)
    assert features.shape == (5, 24)
    assert logits_again.shape == (5, k)


def test_dcgan_building_blocks():
    discriminator = Discriminator((1, 28, 28), 10, width=16)
    strided = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 3
    assert all(m.negative_slope == 0.2 for m in discriminator.modules() if isinstance(m, nn.LeakyReLU))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in discriminator.modules()) == 4  # every conv layer
    assert sum(isinstance(m, GaussianNoise) for m in discriminator.modules()) == 5  # every hidden layer
    generator = Generator((1, 28, 28), width=16)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in generator.modules()) == 3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", ["batch", "weight"])
def test_the_paper_layout_pools_twice_and_ends_in_ten_maps(shape, norm):
    discriminator = Discriminator(shape, 20, width=8, feature_dim=24, norm=norm, layout="paper")
    logits, features = discriminator(torch.rand(5, *shape) * 2 - 1, return_features=True)
    assert logits.shape == (5, 20) and features.shape == (5, 24)
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.kernel_size[0], m.out_channels) for m in convs] == [(5, 8), (3, 16), (3, 16), (3, 32), (1, 10)]
    assert all(m.stride == (1, 1) for m in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in discriminator.modules()) == 2
    assert sum(isinstance(m, GaussianNoise) for m in discriminator.modules()) == 6  # every hidden layer
    height, width = (((size + 1) // 2 + 1) // 2 for size in shape[1:])
    assert discriminator.features[1].in_features == 10 * height * width


def test_the_paper_layout_is_a_conv_option_only():
    assert isinstance(CatGAN(TrainConfig(d_layout="paper", d_width=8), (1, 8, 8), 10).discriminator.convs[4],
                      nn.MaxPool2d)
    with pytest.raises(CatGANError, match="d_layout 'paper' lays out a convolutional D"):
        TrainConfig(architecture="mlp", d_layout="paper")


def test_weights_are_drawn_from_n_0_002():
    torch.manual_seed(0)
    generator = Generator((1, 28, 28), latent_dim=100, width=32)
    weight = generator.project[0].weight
    assert weight.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert weight.std().item() == pytest.approx(0.02, rel=0.02)
    norm = generator.project[1]
    assert norm.weight.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert norm.bias.abs().max().item() == 0.0


def test_noise_only_while_training():
    torch.manual_seed(0)
    discriminator = Discriminator((1, 8, 8), 10, width=8, noise_std=0.5)
    x = torch.randn(16, 1, 8, 8)
    discriminator.train()
    assert not torch.equal(discriminator(x), discriminator(x))
    discriminator.eval()
    assert torch.equal(discriminator(x), discriminator(x))
    quiet = Discriminator((1, 8, 8), 10, width=8, noise_std=0.0).train()
    assert torch.equal(quiet(x), quiet(x))


def test_gaussian_noise_has_the_asked_std():
    torch.manual_seed(0)
    noise = GaussianNoise(0.3).train()
    x = torch.zeros(200_000)
    assert noise(x).std().item() == pytest.approx(0.3, rel=0.01)


def test_frozen_batchnorm_statistics_keep_running_averages():
    discriminator = Discriminator((1, 8, 8), 10, width=8).train()
    norm = discriminator.convs[1]
    before = norm.running_mean.clone()
    with frozen_batchnorm_statistics(discriminator):
        discriminator(torch.randn(16, 1, 8, 8) + 3)
    assert torch.equal(norm.running_mean, before)
    assert norm.momentum == 0.1  # restored
    discriminator(torch.randn(16, 1, 8, 8) + 3)
    assert not torch.equal(norm.running_mean, before)


def test_catgan_container_builds_both_networks_from_the_config():
    config = TrainConfig(latent_dim=12, d_width=8, g_width=8, feature_dim=16, d_noise=0.1)
    model = CatGAN(config, (1, 8, 8), num_clusters=7)
    assert model.num_clusters == 7 and model.image_shape == (1, 8, 8)
    z = model.sample_latent(5)
    assert z.shape == (5, 12)
    assert model.discriminator(model.generator(z)).shape == (5, 7)


@pytest.mark.parametrize("shape", [(1, 1, 64), (1, 28, 28), (3, 32, 32)])
def test_fully_connected_networks_read_inputs_as_flat_vectors(shape):
    torch.manual_seed(0)
    generator = MLPGenerator(shape, latent_dim=16, width=40)
    x = generator(torch.randn(6, 16))
    assert x.shape == (6, *shape) and x.min() >= -1 and x.max() <= 1
    discriminator = MLPDiscriminator(shape, 7, width=40, feature_dim=12)
    logits, features = discriminator(x, return_features=True)
    assert logits.shape == (6, 7) and features.shape == (6, 12)
    linear = [m for m in discriminator.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linear] == [40, 20, 10, 10, 12, 7]  # W, W/2, W/4, W/4, F, K
    assert linear[0].in_features == shape[0] * shape[1] * shape[2]
    assert sum(isinstance(m, GaussianNoise) for m in discriminator.modules()) == 5  # every hidden layer
    assert [m.out_features for m in generator.modules() if isinstance(m, nn.Linear)] == [20, 20, shape[0] * shape[1] * shape[2]]


def test_catgan_container_builds_the_fully_connected_pair_for_architecture_mlp():
    model = CatGAN(TrainConfig(architecture="mlp", mlp_width=24, latent_dim=6, feature_dim=10), (1, 8, 8), num_clusters=3)
    assert isinstance(model.discriminator, MLPDiscriminator) and isinstance(model.generator, MLPGenerator)
    assert model.discriminator(model.generator(model.sample_latent(4))).shape == (4, 3)


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_a_weight_normalised_d_has_no_batch_norm_and_reads_each_image_alone(architecture):
    torch.manual_seed(0)
    config = TrainConfig(architecture=architecture, d_norm="weight", d_width=8, mlp_width=40, feature_dim=12,
                         d_noise=0.0)
    discriminator = CatGAN(config, (1, 8, 8), num_clusters=5).discriminator
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules())
    layers = [m for m in discriminator.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) >= 4
    for layer in layers:  # w = g v / ||v||, g learnt, starting at 1; a bias in place of batch norm's shift
        assert nn.utils.parametrize.is_parametrized(layer, "weight") and layer.bias is not None
        torch.testing.assert_close(layer.weight.flatten(1).norm(dim=1), torch.ones(layer.weight.shape[0]))
    x = torch.randn(6, 1, 8, 8)
    alone = torch.cat([discriminator(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(discriminator(x), alone)  # no batch statistics, in training mode too
    with evaluation_mode(discriminator):
        torch.testing.assert_close(discriminator(x), alone)
    batch_normed = CatGAN(TrainConfig(architecture=architecture, d_width=8, mlp_width=40, feature_dim=12,
                                      d_noise=0.0), (1, 8, 8), num_clusters=5).discriminator
    assert not torch.allclose(batch_normed(x)[:1], batch_normed(x[:1].repeat(2, 1, 1, 1))[:1])  # the contrast


def test_a_weight_normalised_d_learns_its_scales():
    torch.manual_seed(0)
    discriminator = MLPDiscriminator((1, 8, 8), 3, width=16, feature_dim=8, norm="weight")
    scales = [p for name, p in discriminator.named_parameters() if name.endswith("original0")]
    assert len(scales) == 6  # one g per layer: four hidden, the features, the classifier
    nn.functional.cross_entropy(discriminator(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scales)
