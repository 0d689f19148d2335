"""The scikit-learn estimators: scikit-learn's own estimator checks, y == -1, inputs, pipelines."""

import dataclasses
import inspect
import pickle
import warnings

import numpy as np
import pytest
from scipy.stats import entropy
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from catgan import CatGANClassifier, CatGANClusterer, TrainConfig, labelled_indices, train
from catgan.estimators import _ESTIMATOR_ONLY, _SET_BY_ESTIMATOR, expected_failed_checks, unlabelled_mask
from catgan.models import Discriminator, MLPDiscriminator
from catgan.runs import load_run

# Small networks and schedules: the checks fit many times on 10 to 300 samples. The clusterer
# needs more updates than the classifier to separate check_clustering's three blobs.
TINY = dict(mlp_width=16, feature_dim=8, latent_dim=4, device="cpu", random_state=0)
CHECKED = [CatGANClassifier(epochs=40, lr=5e-3, **TINY), CatGANClusterer(n_clusters=3, epochs=100, lr=3e-3, **TINY)]


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # training-health warnings of such tiny runs
        check(estimator)


@pytest.fixture(scope="module")
def digits_semi():
    """Digits as flat rows, 5 labels per class kept, the rest marked -1."""
    X, y = load_digits(return_X_y=True)
    rng = np.random.RandomState(0)
    y_semi = np.full_like(y, -1)
    for k in range(10):
        y_semi[rng.choice(np.flatnonzero(y == k), 5, replace=False)] = k
    return X, y, y_semi


def quick(**options):
    return CatGANClassifier(**{**dict(epochs=2, mlp_width=32, feature_dim=16, latent_dim=8, d_width=8, g_width=8,
                                      device="cpu", random_state=0), **options})


@pytest.mark.parametrize("estimator", [CatGANClassifier, CatGANClusterer])
def test_every_training_option_of_the_config_is_a_parameter_with_its_default(estimator):
    parameters = inspect.signature(estimator).parameters
    label_options = {"method", "lam", "label_smoothing", "label_noise"}
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    expected = set(fields) - _SET_BY_ESTIMATOR - (label_options if estimator is CatGANClusterer else set())
    assert set(parameters) - _ESTIMATOR_ONLY == expected
    for name in expected - {"epochs", "batch_size"}:  # those two have estimator-specific defaults
        assert parameters[name].default == fields[name], name


def test_y_minus_one_marks_unlabelled_and_only_the_labelled_samples_are_used(digits_semi):
    X, y, y_semi = digits_semi
    clf = quick().fit(X, y_semi)
    assert clf.summary_["labelled"] == 50
    assert list(clf.classes_) == list(range(10))
    assert clf.n_features_in_ == 64
    assert clf.predict(X[:7]).shape == (7,)
    proba = clf.predict_proba(X[:7])
    assert proba.shape == (7, 10) and np.allclose(proba.sum(axis=1), 1)
    assert clf.transform(X[:7]).shape == (7, 16)
    assert isinstance(clf.discriminator_, MLPDiscriminator)  # flat rows: fully connected networks
    assert clf.history_ and {"d", "g", "lr_d"} <= set(clf.history_[0])
    # score leaves out the -1 rows: the score on (X, y_semi) is the accuracy on the 50 labelled
    labelled = y_semi != -1
    assert clf.score(X, y_semi) == pytest.approx(np.mean(clf.predict(X[labelled]) == y[labelled]))


def test_no_unlabelled_sample_warns_and_no_labelled_sample_is_an_error(digits_semi):
    X, y, _ = digits_semi
    with pytest.warns(UserWarning, match="no sample is unlabelled"):
        quick(epochs=1).fit(X[:200], y[:200])
    with pytest.raises(ValueError, match="no sample is labelled"):
        quick().fit(X[:200], np.full(200, -1))
    with pytest.raises(ValueError, match="only 1 class"):
        quick().fit(X[:200], np.where(np.arange(200) < 20, 3, -1))


def test_string_labels_with_minus_one_strings_unlabelled(digits_semi):
    X, y, y_semi = digits_semi
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"], dtype=object)
    y_text = np.where(y_semi == -1, "-1", names[y]).astype(object)
    assert unlabelled_mask(y_text).sum() == (y_semi == -1).sum()
    clf = quick(epochs=1).fit(X, y_text)
    assert sorted(clf.classes_) == sorted(names)
    assert set(clf.predict(X[:20])) <= set(names)
    assert clf.summary_["labelled"] == 50


def test_images_train_the_convolutional_networks_and_image_shape_reshapes_rows(digits_semi):
    X, _, y_semi = digits_semi
    as_images = quick(epochs=1).fit(X.reshape(-1, 8, 8), y_semi)
    assert isinstance(as_images.discriminator_, Discriminator)
    assert as_images.discriminator_.image_shape == (1, 8, 8)
    rows = quick(epochs=1, image_shape=(8, 8)).fit(X, y_semi)
    assert isinstance(rows.discriminator_, Discriminator)
    assert np.array_equal(rows.predict_proba(X[:30]), as_images.predict_proba(X[:30].reshape(-1, 8, 8)))
    channels = quick(epochs=1).fit(X.reshape(-1, 1, 8, 8), y_semi)
    assert channels.discriminator_.image_shape == (1, 8, 8)
    assert (as_images.architecture_, rows.architecture_, quick(epochs=1).fit(X, y_semi).architecture_) == ("conv", "conv", "mlp")
    with pytest.raises(ValueError, match=r"fit saw \(1, 8, 8\)"):
        channels.predict(X[:5].reshape(-1, 1, 1, 64))  # as many features on axis 1, other images
    with pytest.raises(ValueError, match="image_shape"):
        quick(image_shape=(7, 7)).fit(X, y_semi)
    with pytest.raises(ValueError, match="only for flat"):
        quick(image_shape=(8, 8)).fit(X.reshape(-1, 8, 8), y_semi)


def test_inputs_are_scaled_to_the_generator_range_with_the_fitted_minimum_and_maximum(digits_semi):
    X, _, y_semi = digits_semi
    clf = quick(epochs=1).fit(X * 10 + 3, y_semi)
    images = clf._images(X * 10 + 3, reset=False)
    assert images.min() == pytest.approx(-1) and images.max() == pytest.approx(1)
    assert clf.data_min_.shape == (1, 1, 1, 64)  # per feature for flat rows


def test_random_state_reproduces_the_fit_and_leaves_the_global_torch_generator_alone(digits_semi):
    X, _, y_semi = digits_semi
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    first = quick(random_state=7).fit(X, y_semi).predict_proba(X[:40])
    assert torch.equal(torch.rand(3), expected_draw)
    assert np.array_equal(quick(random_state=7).fit(X, y_semi).predict_proba(X[:40]), first)
    assert not np.array_equal(quick(random_state=8).fit(X, y_semi).predict_proba(X[:40]), first)


def test_clone_and_pickle_round_trip(digits_semi):
    X, _, y_semi = digits_semi
    clf = quick(epochs=1, lam=0.5)
    assert clone(clf).get_params() == clf.get_params()
    clf.fit(X, y_semi)
    restored = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(restored.predict_proba(X[:25]), clf.predict_proba(X[:25]))
    assert np.array_equal(restored.transform(X[:25]), clf.transform(X[:25]))


def test_pipeline_grid_search_and_cross_validation(digits_semi):
    X, y, _ = digits_semi
    X, y = X[:600], y[:600]
    first_ten = np.concatenate([np.flatnonzero(y == k)[:10] for k in range(10)])
    y_semi = np.full(600, -1)
    y_semi[first_ten] = y[first_ten]  # 10 labelled samples per class
    pipeline = make_pipeline(StandardScaler(), quick(epochs=1)).fit(X, y_semi)
    fitted = pipeline[-1]
    assert np.allclose(fitted.data_min_.ravel(), StandardScaler().fit_transform(X).min(axis=0))  # it saw scaled rows
    assert np.array_equal(pipeline.predict(X[:5]), fitted.predict(pipeline[0].transform(X[:5])))
    folds = list(StratifiedKFold(3).split(X, y_semi))
    scores = cross_val_score(quick(epochs=1), X, y_semi, cv=folds)
    by_hand = [quick(epochs=1).fit(X[train], y_semi[train]).score(X[test], y_semi[test]) for train, test in folds]
    assert np.allclose(scores, by_hand)  # each fold's score: accuracy on its labelled samples only
    search = GridSearchCV(quick(epochs=1), {"lam": [0.5, 1.0]}, cv=StratifiedKFold(2)).fit(X, y_semi)
    assert search.best_estimator_.lam == search.best_params_["lam"] and search.best_estimator_.n_iter_ > 0
    assert len(search.cv_results_["mean_test_score"]) == 2 and np.all(np.isfinite(search.cv_results_["mean_test_score"]))


def test_lam_zero_and_the_supervised_method(digits_semi):
    X, _, y_semi = digits_semi
    with pytest.raises(ValueError, match="lam=0 would train without the labels"):
        quick(lam=0.0).fit(X, y_semi)
    supervised = quick(method="supervised", image_shape=(8, 8)).fit(X, y_semi)
    assert supervised.summary_["labelled"] == 50
    assert supervised.n_iter_ == 2 * (len(X) // 100)  # as many updates as CatGAN: passes over all of X
    assert not any("loss_g" in record.get("g", {}) for record in supervised.history_)  # no generator trained


def test_bad_inputs_are_one_line_value_errors(digits_semi):
    X, _, y_semi = digits_semi
    clf = quick(epochs=1).fit(X[:200], y_semi[:200])
    cases = [
        (lambda: quick(image_shape=64).fit(X, y_semi), "image_shape must be"),
        (lambda: quick().fit(np.zeros((30, 8, 8, 3)), np.arange(30) % 2), "channels-last"),
        (lambda: clf.score(X[:20], y_semi[:20] * 0 + 1, sample_weight=np.ones(3)), "sample_weight"),
        (lambda: quick().fit(X, y_semi[:-1]), "inconsistent numbers of samples|1797 samples but y has 1796"),
        (lambda: quick(batch_size=1).fit(X, y_semi), "batch_size must be an integer >= 2"),
        (lambda: quick(lr=-1.0).fit(X, y_semi), "lr must be a number > 0"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_clusterer_labels_fit_predict_score_and_images(digits_semi):
    X, _, _ = digits_semi
    clusterer = CatGANClusterer(n_clusters=4, epochs=2, mlp_width=32, feature_dim=16, latent_dim=8, device="cpu",
                                random_state=0)
    labels = clusterer.fit_predict(X[:400])
    assert labels.shape == (400,) and labels.dtype.kind == "i" and set(labels) <= set(range(4))
    assert np.array_equal(labels, clusterer.labels_)
    assert np.array_equal(clusterer.predict(X[:400]), labels)
    p = clusterer.predict_proba(X[:400])
    mutual_information = entropy(p.mean(axis=0)) - np.mean([entropy(row) for row in p])  # scipy's entropy
    assert clusterer.score(X[:400]) == pytest.approx(mutual_information)
    assert clusterer.summary_["labelled"] == 0 and clusterer.transform(X[:3]).shape == (3, 16)
    restored = pickle.loads(pickle.dumps(clone(clusterer).fit(X[:400])))
    assert np.array_equal(restored.labels_, labels)  # clone + the same random_state: the same clusters
    images = CatGANClusterer(n_clusters=3, epochs=1, d_width=8, g_width=8, feature_dim=8, latent_dim=4, device="cpu",
                             random_state=0).fit(X[:300].reshape(-1, 8, 8))
    assert isinstance(images.discriminator_, Discriminator) and images.labels_.shape == (300,)
    with pytest.raises(ValueError, match="n_clusters"):
        CatGANClusterer(n_clusters=1, **TINY).fit(X[:100])


def test_explicit_batch_size_larger_than_the_data_is_an_error_not_a_silent_change(digits_semi):
    X, _, y_semi = digits_semi
    with pytest.raises(ValueError, match="batch_size 500 exceeds"):
        quick(batch_size=500).fit(X[:300], y_semi[:300])
    default = quick(epochs=1).fit(X[:60], np.where(np.arange(60) < 20, np.arange(60) % 2, -1))
    assert default.config_.batch_size == 60  # None: 100, or all the samples when fewer
    assert default.n_iter_ == 1


def test_an_int_random_state_trains_what_catgan_train_trains_with_that_seed(digits, make_config):
    """The estimator on digits' training images, with the labels of the subset `catgan train`
    draws for --seed 3 and -1 elsewhere, trains bit-identical networks to that run."""
    config = make_config(seed=3, labels_per_class=5)
    run = train(config, data=digits, log=lambda line: None)
    expected = load_run(run.run_dir)[1].discriminator.state_dict()
    y = np.full(len(digits.y_train), -1)
    chosen = labelled_indices(digits.y_train, 5, 3)
    y[chosen] = digits.y_train.numpy()[chosen]
    options = {name: getattr(config, name) for name in ("epochs", "batch_size", "latent_dim", "d_width", "g_width",
                                                         "feature_dim", "log_every", "device")}
    clf = CatGANClassifier(random_state=3, **options).fit(digits.x_train.numpy(), y)
    got = clf.discriminator_.state_dict()
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_from_run_gives_a_fitted_estimator_that_predicts_as_the_run(make_config, digits):
    from catgan.estimators import CatGANClassifier, CatGANClusterer
    from catgan.evaluation import predict_logits
    from catgan.runs import load_run
    from catgan.training import train

    classifier_run = train(make_config(), data=digits, log=lambda m: None).run_dir
    clustering_run = train(make_config(labels_per_class=0, clusters=4), data=digits, log=lambda m: None).run_dir
    images = ((digits.x_test.numpy() + 1) * 127.5).astype(np.float32)  # the run's images as 0..255
    classifier = CatGANClassifier.from_run(classifier_run)
    _, model, classes = load_run(classifier_run)
    expected = predict_logits(model.discriminator, digits.x_test).argmax(dim=1).numpy()
    assert classifier.classes_.tolist() == classes
    assert (classifier.predict(images) == classifier.classes_[expected]).mean() > 0.99  # float64 against float32
    assert classifier.history_ and classifier.n_iter_ > 0 and classifier.summary_["test_error"] >= 0
    assert classifier.score(images, digits.y_test.numpy().astype(str)) == pytest.approx(
        1 - classifier.summary_["test_error"] / 100, abs=0.01)
    clusterer = CatGANClusterer.from_run(clustering_run)
    assert clusterer.n_clusters == 4 and clusterer.predict(images[:10]).shape == (10,)
    with pytest.raises(ValueError, match="use CatGANClusterer.from_run"):
        CatGANClassifier.from_run(clustering_run)


def test_a_fitted_estimator_saved_as_a_run_is_read_back_and_predicted_by_the_command(tmp_path):
    from sklearn.datasets import load_digits

    from catgan.cli import main
    from catgan.estimators import CatGANClassifier

    X, y = load_digits(return_X_y=True)
    images = X.reshape(-1, 8, 8)  # values 0..16
    y_semi = np.where(np.arange(len(y)) % 10 == 0, y, -1)
    classifier = CatGANClassifier(epochs=2, d_width=8, g_width=8, latent_dim=8, feature_dim=8, device="cpu",
                                  random_state=0).fit(images[:600], y_semi[:600])
    classifier.save_run(tmp_path / "saved")
    again = CatGANClassifier.from_run(tmp_path / "saved")
    # images (n, C, H, W), as from_run documents, scaled with the estimator's own input range
    assert (again.predict(images[600:700, None]) == classifier.predict(images[600:700]).astype(str)).all()
    np.savez(tmp_path / "x.npz", x=(images[600:700] / 16).astype(np.float32))  # [0, 1], as the command reads arrays
    assert main(["predict", str(tmp_path / "saved"), str(tmp_path / "x.npz"), "--out", str(tmp_path / "p.csv"),
                 "--no-progress", "--device", "cpu"]) == 0
    predicted = [line.split(",")[1] for line in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    assert np.mean(np.array(predicted) == classifier.predict(images[600:700]).astype(str)) > 0.98
    with pytest.raises(ValueError, match="exists"):
        classifier.save_run(tmp_path / "saved")
    flat = CatGANClassifier(epochs=1, mlp_width=16, latent_dim=4, feature_dim=8, device="cpu", random_state=0)
    with pytest.raises(ValueError, match="fit on feature vectors"):
        flat.fit(X[:200], y_semi[:200]).save_run(tmp_path / "flat")
