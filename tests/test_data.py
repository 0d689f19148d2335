"""Datasets: scaling, layouts, the labelled subset, and every loading path that works offline."""

import gzip

import numpy as np
import pytest
import torch

from catgan.config import CatGANError, TrainConfig
from catgan.data import ImageData, labelled_indices, load_dataset, read_idx


def test_digits_split_shapes_and_range(digits):
    assert digits.x_train.shape == (1198, 1, 8, 8) and digits.x_test.shape == (599, 1, 8, 8)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert digits.x_train.min().item() == -1.0 and digits.x_train.max().item() == 1.0
    assert digits.num_classes == 10 and digits.classes == [str(k) for k in range(10)]
    per_class = torch.bincount(digits.y_train) + torch.bincount(digits.y_test)
    assert (torch.bincount(digits.y_test) - per_class / 3).abs().max() <= 1  # stratified thirds
    again = load_dataset(TrainConfig())
    assert torch.equal(again.x_test, digits.x_test)  # the split does not depend on any run seed


def test_labelled_subset_is_balanced_seeded_and_sorted(digits):
    first = labelled_indices(digits.y_train, 5, seed=0)
    assert len(first) == 50 and np.all(np.diff(first) > 0)
    assert np.bincount(digits.y_train[first].numpy(), minlength=10).tolist() == [5] * 10
    assert np.array_equal(first, labelled_indices(digits.y_train, 5, seed=0))
    assert not np.array_equal(first, labelled_indices(digits.y_train, 5, seed=1))
    assert len(labelled_indices(digits.y_train, 0, seed=0)) == 0
    assert labelled_indices(digits.y_train, "all", seed=3).tolist() == list(range(len(digits.y_train)))


def test_labelled_subset_refuses_more_than_a_class_holds(digits):
    smallest = int(torch.bincount(digits.y_train).min())
    assert len(labelled_indices(digits.y_train, smallest, seed=0)) == 10 * smallest
    with pytest.raises(CatGANError, match="`labels_per_class` "):
        labelled_indices(digits.y_train, smallest + 1, seed=0)


@pytest.mark.parametrize(
    "layout, shape",
    [("NHW", (6, 5, 7)), ("NCHW", (6, 1, 5, 7)), ("NHWC", (6, 5, 7, 3)), ("NCHW3", (6, 3, 5, 7))],
)
def test_arrays_in_every_layout_become_nchw_in_minus_one_to_one(layout, shape):
    x = np.zeros(shape, dtype=np.uint8)
    x[0] = 255
    data = ImageData.from_arrays(x, np.arange(6) % 2, x[:2], np.array([0, 1]))
    channels = 3 if layout in ("NHWC", "NCHW3") else 1
    assert data.image_shape == (channels, 5, 7)
    assert data.x_train[0].unique().tolist() == [1.0]
    assert data.x_train[1].unique().tolist() == [-1.0]


def test_float_arrays_and_string_labels():
    x = np.linspace(0, 1, 4 * 9, dtype=np.float32).reshape(4, 3, 3)
    data = ImageData.from_arrays(x, np.array(["cat", "dog", "cat", "dog"]), x[:2], np.array(["dog", "cat"]))
    assert data.classes == ["cat", "dog"]
    assert data.y_train.tolist() == [0, 1, 0, 1] and data.y_test.tolist() == [1, 0]
    assert data.x_train.min().item() == -1.0 and data.x_train.max().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(x_train=np.full((4, 3, 3), 2.0)), r"\[0, 1\]"),
        (dict(y_train=np.array([0, 1, 0])), "4 train images but 3"),
        (dict(y_test=np.array([0, 7])), "do not occur"),
        (dict(y_train=np.zeros(4)), "one class"),
        (dict(x_test=np.zeros((2, 4, 4), np.uint8)), "test images"),
        (dict(x_train=np.zeros((4, 3), np.uint8)), "dimensions"),
        (dict(x_train=np.zeros((4, 3, 3), np.int32)), "uint8"),
    ],
)
def test_bad_arrays_are_refused(change, message):
    arrays = dict(
        x_train=np.zeros((4, 3, 3), np.uint8), y_train=np.array([0, 1, 0, 1]),
        x_test=np.zeros((2, 3, 3), np.uint8), y_test=np.array([0, 1]),
    )
    arrays.update(change)
    with pytest.raises(CatGANError, match=message):
        ImageData.from_arrays(**arrays)


def _write_npz(path, n_train=20, n_test=10, shape=(32, 32, 3)):
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8), y_train=np.arange(n_train) % 10,
        x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8), y_test=np.arange(n_test) % 10,
    )


def test_cifar10_from_an_npz_in_the_data_dir(tmp_path):
    _write_npz(tmp_path / "cifar10.npz")
    data = load_dataset(TrainConfig(dataset="cifar10", data_dir=str(tmp_path)))
    assert data.image_shape == (3, 32, 32) and len(data.x_train) == 20 and data.num_classes == 10


def test_arrays_dataset_from_a_file_or_a_folder(tmp_path):
    _write_npz(tmp_path / "mine.npz", shape=(6, 6))
    by_file = load_dataset(TrainConfig(dataset="arrays", data_dir=str(tmp_path / "mine.npz")))
    by_folder = load_dataset(TrainConfig(dataset="arrays", data_dir=str(tmp_path)))
    assert by_file.image_shape == (1, 6, 6)
    assert torch.equal(by_file.x_train, by_folder.x_train)


def test_npz_missing_keys_or_file(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 3, 3)))
    with pytest.raises(CatGANError, match="lacks the arrays y_train, x_test, y_test"):
        load_dataset(TrainConfig(dataset="arrays", data_dir=str(tmp_path / "bad.npz")))
    with pytest.raises(CatGANError, match="no such file"):
        load_dataset(TrainConfig(dataset="arrays", data_dir=str(tmp_path / "absent.npz")))
    with pytest.raises(CatGANError, match="needs `data_dir`"):
        load_dataset(TrainConfig(dataset="arrays"))


def _write_images(folder, classes, per_class, mode="RGB", size=(10, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            channels = (*size[::-1], 3) if mode == "RGB" else size[::-1]
            Image.fromarray(rng.integers(0, 256, channels, dtype=np.uint8), mode).save(folder / name / f"{i}.png")


def test_image_folder_with_train_and_test(tmp_path):
    _write_images(tmp_path / "train", ["ant", "bee"], 4)
    _write_images(tmp_path / "test", ["ant", "bee"], 2)
    data = load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path), image_size=16))
    assert data.image_shape == (3, 16, 16) and len(data.x_train) == 8 and len(data.x_test) == 4
    assert data.classes == ["ant", "bee"]


def test_image_folder_without_split_holds_out_a_stratified_fifth(tmp_path):
    _write_images(tmp_path, ["a", "b", "c"], 10, mode="L")
    data = load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path), image_size=8))
    assert data.image_shape == (1, 8, 8) and len(data.x_test) == 6
    assert torch.bincount(data.y_test).tolist() == [2, 2, 2]


def test_image_folder_problems_are_named(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(CatGANError, match="no images"):
        load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "empty")))
    _write_images(tmp_path / "one", ["only"], 3)
    with pytest.raises(CatGANError, match="only one class"):
        load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "one")))
    from PIL import Image

    _write_images(tmp_path / "deep", ["a"], 1)
    (tmp_path / "deep" / "b").mkdir()
    Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16)).save(tmp_path / "deep" / "b" / "x.png")
    with pytest.raises(CatGANError, match="more than 8 bits"):
        load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "deep")))
    (tmp_path / "broken" / "a").mkdir(parents=True)
    _write_images(tmp_path / "broken", ["b"], 2)
    (tmp_path / "broken" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(CatGANError, match="x.png"):
        load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "broken")))


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_idx_reader_plain_and_gzip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a-idx3-ubyte").write_bytes(_idx_bytes(array))
    with gzip.open(tmp_path / "a-idx3-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), array)


def test_idx_reader_refuses_bad_files(tmp_path):
    good = _idx_bytes(np.zeros((2, 3), np.uint8))
    (tmp_path / "magic").write_bytes(b"\x00\x00\x09\x02" + good[4:])
    (tmp_path / "short").write_bytes(good[:-1])
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(CatGANError, match="magic"):
        read_idx(tmp_path / "magic")
    with pytest.raises(CatGANError, match="header announces"):
        read_idx(tmp_path / "short")
    with pytest.raises(CatGANError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


def test_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(CatGANError, match="set `download` to fetch it"):
        load_dataset(TrainConfig(dataset="mnist", data_dir=str(tmp_path)))


def test_mnist_through_torchvision_matches_the_raw_idx_files(mnist_dir, mnist_torchvision_root):
    # download=True with the verified archives in ROOT/MNIST/raw: torchvision checks their md5
    # and extracts them, without the network; the path users who are online take.
    through_torchvision = load_dataset(TrainConfig(dataset="mnist", data_dir=str(mnist_torchvision_root), download=True))
    assert "torchvision" in through_torchvision.source
    assert through_torchvision.x_train.shape == (60000, 1, 28, 28) and through_torchvision.x_test.shape == (10000, 1, 28, 28)
    assert through_torchvision.x_train.min().item() == -1.0 and through_torchvision.x_train.max().item() == 1.0
    assert torch.bincount(through_torchvision.y_train).tolist()[:3] == [5923, 6742, 5958]
    # Offline from the folder of .gz files itself, read by catgan's IDX reader: the same arrays.
    from_idx = load_dataset(TrainConfig(dataset="mnist", data_dir=str(mnist_dir)))
    assert "IDX" in from_idx.source
    assert torch.equal(from_idx.x_train, through_torchvision.x_train)
    assert torch.equal(from_idx.y_test, through_torchvision.y_test)


def test_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    from catgan.data import FASHION_MNIST_DEBIAN_DIR

    if not FASHION_MNIST_DEBIAN_DIR.is_dir():
        pytest.skip(f"{FASHION_MNIST_DEBIAN_DIR} is absent: apt-get install dataset-fashion-mnist (.ci/run does)")
    monkeypatch.chdir(tmp_path)  # no ./data here
    data = load_dataset(TrainConfig(dataset="fashion-mnist"))  # no data_dir: Debian's folder is looked in
    assert str(FASHION_MNIST_DEBIAN_DIR) in data.source
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.y_train).tolist() == [6000] * 10
    assert torch.bincount(data.y_test).tolist() == [1000] * 10


def _write_unlabelled(folder, count, mode="L", size=(9, 7)):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(count):
        nested = folder / "batch" / str(i % 2)  # any depth
        nested.mkdir(parents=True, exist_ok=True)
        channels = (*size[::-1], 3) if mode == "RGB" else size[::-1]
        Image.fromarray(rng.integers(0, 256, channels, dtype=np.uint8), mode).save(nested / f"u{i}.png")


def test_a_folder_of_labelled_unlabelled_and_test_images_uses_every_given_label(tmp_path):
    _write_images(tmp_path / "labelled", ["cat", "dog"], 3, mode="L")
    _write_unlabelled(tmp_path / "unlabelled", 5)
    _write_images(tmp_path / "test", ["cat", "dog"], 2, mode="L")
    data = load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path), image_size=16))
    assert data.classes == ["cat", "dog"]  # not the folder names labelled, unlabelled and test
    assert data.image_shape == (1, 16, 16) and len(data.x_train) == 11 and len(data.x_test) == 4
    assert data.labelled.tolist() == list(range(6))
    assert data.y_train.tolist() == [0, 0, 0, 1, 1, 1] + [-1] * 5
    assert "6 labelled, 5 unlabelled, 4 test" in data.describe()


def test_a_folder_without_test_or_without_labels_loads_and_colour_wins_over_grey(tmp_path):
    _write_images(tmp_path / "a" / "labelled", ["x", "y"], 2, mode="L")
    _write_unlabelled(tmp_path / "a" / "unlabelled", 3, mode="RGB")
    data = load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "a"), image_size=8))
    assert data.image_shape == (3, 8, 8) and len(data.x_test) == 0
    _write_unlabelled(tmp_path / "b" / "unlabelled", 4)
    unlabelled = load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "b"), image_size=8))
    assert unlabelled.classes == [] and unlabelled.labelled.tolist() == []
    _write_images(tmp_path / "c" / "labelled", ["x", "y"], 2, mode="L")
    labelled_only = load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "c"), image_size=8))
    assert labelled_only.labelled.tolist() == [0, 1, 2, 3]  # every given label, not a per-class draw


def test_a_partly_labelled_folder_refuses_what_it_would_not_read(tmp_path):
    _write_images(tmp_path / "labelled", ["x", "y"], 2, mode="L")
    _write_images(tmp_path / "train", ["x", "y"], 2, mode="L")
    with pytest.raises(CatGANError, match=r"other folders would not be read \(train\)"):
        load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path), image_size=8))
    (tmp_path / "empty" / "unlabelled").mkdir(parents=True)
    with pytest.raises(CatGANError, match="no images in labelled/<class>/ or unlabelled/"):
        load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "empty"), image_size=8))
    _write_images(tmp_path / "unseen" / "labelled", ["x", "y"], 2, mode="L")
    _write_images(tmp_path / "unseen" / "test", ["x", "z"], 1, mode="L")
    with pytest.raises(CatGANError, match="do not occur in the training labels"):
        load_dataset(TrainConfig(dataset="folder", data_dir=str(tmp_path / "unseen"), image_size=8))


def test_arrays_mark_unlabelled_rows_with_minus_one(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 6, 6), dtype=np.uint8)
    y = np.array([3, 7, -1, -1, 3, 7, -1, -1, -1, -1, -1, -1])
    np.savez(tmp_path / "part.npz", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    data = load_dataset(TrainConfig(dataset="arrays", data_dir=str(tmp_path / "part.npz")))
    assert data.classes == ["3", "7"] and data.labelled.tolist() == [0, 1, 4, 5] and len(data.x_test) == 0
    assert data.y_train[:2].tolist() == [0, 1] and (data.y_train[data.y_train < 0] == -1).all()
    scored = ImageData.from_arrays(x, np.full(12, -1), x[:2], np.array([3, 7]))  # clustering, with a test split
    assert scored.classes == ["3", "7"] and scored.labelled.tolist() == [] and scored.y_test.tolist() == [0, 1]
    full = ImageData.from_arrays(x, np.arange(12) % 2, x[:2], np.array([0, 1]))
    assert full.labelled is None  # benchmark data: labels_per_class draws from it
