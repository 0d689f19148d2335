"""The configuration: defaults, validation messages and the saved form."""

import dataclasses

import pytest

from catgan.config import DEFAULT_EPOCHS, CatGANError, TrainConfig


def test_defaults_are_the_main_job():
    config = TrainConfig()
    assert (config.dataset, config.labels_per_class, config.lam, config.method) == ("digits", 5, 1.0, "catgan")
    assert (config.lr, config.beta1, config.beta2, config.batch_size) == (2e-4, 0.5, 0.999, 100)
    assert config.resolved_epochs() == DEFAULT_EPOCHS["digits"]
    assert config.uses_labels


def test_uses_labels():
    assert not TrainConfig(labels_per_class=0).uses_labels
    assert not TrainConfig(lam=0.0).uses_labels  # labels drawn but unused: D's outputs are clusters
    assert TrainConfig(lam=0.0, method="supervised").uses_labels


def test_all_labels():
    config = TrainConfig(labels_per_class="all", method="supervised")
    assert config.uses_labels
    with pytest.raises(CatGANError, match="or 'all'"):
        TrainConfig(labels_per_class="most")


def test_round_trip_through_a_dict():
    config = TrainConfig(dataset="mnist", labels_per_class=10, epochs=3, name="x")
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_unknown_saved_fields_are_named():
    with pytest.raises(CatGANError, match="unknown configuration fields: colour, size"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "size": 1, "colour": 2})


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("dataset", "imagenet", "unknown dataset 'imagenet'"),
        ("method", "ladder", "unknown method 'ladder'"),
        ("architecture", "resnet", "unknown architecture 'resnet'; choose one of conv, mlp"),
        ("mlp_width", 0, "mlp_width must be a positive integer, got 0"),
        ("batch_size", 1, "batch_size must be an integer >= 2 (batch norm needs two images), got 1"),
        ("batch_size", True, "batch_size must be an integer >= 2"),
        ("latent_dim", 0, "latent_dim must be a positive integer, got 0"),
        ("epochs", 2.5, "epochs must be a positive integer, got 2.5"),
        ("clusters", 1, "clusters (K) must be an integer >= 2, got 1"),
        ("lam", float("inf"), "lam must be a number >= 0, got inf"),
        ("beta1", 1.0, "beta1 must be in [0, 1), got 1.0"),
        ("d_noise", -0.1, "d_noise must be a number >= 0, got -0.1"),
        ("seed", -1, "seed must be an integer in [0, 2**63), got -1"),
        ("seed", 2**63, "seed must be an integer in [0, 2**63)"),
        ("device", "gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("device", "cuda:", "device must be auto, cpu, cuda or cuda:N, got 'cuda:'"),
        ("name", "..", "name must be a plain folder name"),
        ("sample_every", -1, "sample_every must be an integer >= 0, got -1"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(field, value, message):
    with pytest.raises(CatGANError) as error:
        dataclasses.replace(TrainConfig(), **{field: value})
    assert message in str(error.value)


def test_every_field_is_one_flag_whose_help_is_the_fields_help():
    from catgan.cli import _build_parser

    parser = _build_parser()
    train = next(action for action in parser._subparsers._group_actions[0].choices.values()
                 if action.prog.endswith("train"))
    flags = {action.dest: action for action in train._actions}
    for field in dataclasses.fields(TrainConfig):
        action = flags[field.name]
        assert action.default is None  # a flag left out keeps the configuration's default
        assert action.help.startswith(field.metadata["help"].split("`")[0]), field.name
        if field.metadata["choices"]:
            assert tuple(action.choices) == field.metadata["choices"], field.name


def test_the_estimators_document_their_configuration_parameters_from_the_same_table():
    from catgan import CatGANClassifier, CatGANClusterer

    for estimator in (CatGANClassifier, CatGANClusterer):
        for field in dataclasses.fields(TrainConfig):
            if field.name in estimator().get_params() and field.name not in ("epochs", "batch_size", "device"):
                assert f"{field.name}: {field.metadata['help']}" in estimator.__doc__, (estimator, field.name)


def test_a_rule_names_the_field_and_what_it_must_be():
    with pytest.raises(CatGANError, match=r"^restart_lr_factor must be in \(0, 1\], got 0$"):
        TrainConfig(restart_lr_factor=0)
    with pytest.raises(CatGANError, match=r"^unknown compile mode 'fast'; choose one of off, default"):
        TrainConfig(compile="fast")
