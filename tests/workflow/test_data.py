import gzip
import os
import zlib

import pytest
import torch

from pyro_vae.workflow import data as data_module
from pyro_vae.workflow.data import (DATA_ENV, DataError, ImageData, load_data, load_images, load_run_data,
                                    load_run_sets, load_run_split, load_run_validation, read_idx, resolve_data_dir)

from ..helpers import tiny_config


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert str(resolve_data_dir()) == "data"
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert str(resolve_data_dir("given")) == "given"


def test_missing_files_give_one_line_naming_files_and_folder(tmp_path, monkeypatch):
    tried = []
    monkeypatch.setattr(data_module, "_download", lambda *args: tried.append(args))  # no network
    with pytest.raises(DataError) as err:
        load_images("mnist", True, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "--data-dir" in message and DATA_ENV in message
    assert tried == [("mnist", tmp_path, True)]  # a download was tried first


def test_a_download_that_fails_leaves_no_empty_folders(tmp_path, monkeypatch):
    from torchvision import datasets

    def no_network(self):  # torchvision makes raw/ first, then finds no mirror
        os.makedirs(self.raw_folder, exist_ok=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(datasets.MNIST, "download", no_network)
    (tmp_path / "kept").mkdir()
    with pytest.raises(DataError, match="could not be downloaded"):
        load_images("mnist", True, tmp_path / "kept" / "data")
    assert list((tmp_path / "kept").iterdir()) == []  # data/MNIST/raw removed; the folder that was there kept


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError, match="could not be downloaded"):
        load_images("fashion_mnist", False, tmp_path, download=False)


def _idx_bytes(array: torch.Tensor) -> bytes:
    header = bytes([0, 0, 0x08, array.dim()]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.to(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_gives_the_header_shape_and_bytes(tmp_path, gz):
    array = torch.randint(0, 256, (3, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(_idx_bytes(array)) if gz else _idx_bytes(array))
    assert torch.equal(read_idx(path), array)


def _write_split(folder, images, labels, train=True):
    folder.mkdir(parents=True, exist_ok=True)
    image_name, label_name = data_module.SPLIT_FILES[train]
    (folder / image_name).write_bytes(images)
    (folder / label_name).write_bytes(labels)


def test_load_images_reads_grey_values_and_labels(tmp_path):
    images = torch.randint(0, 256, (5, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    labels = torch.tensor([3, 1, 4, 1, 5], dtype=torch.uint8)
    _write_split(tmp_path / "FashionMNIST" / "raw", _idx_bytes(images), _idx_bytes(labels), train=False)
    grey, read_labels = load_images("fashion_mnist", False, tmp_path, download=False)
    assert grey.shape == (5, 784) and grey.dtype == torch.float32
    assert torch.equal(grey, images.reshape(5, -1).float() / 255)
    assert read_labels.tolist() == [3, 1, 4, 1, 5] and read_labels.dtype == torch.int64
    first, first_labels = load_images("fashion_mnist", False, tmp_path, download=False, limit=2)
    assert torch.equal(first, grey[:2]) and first_labels.tolist() == [3, 1]  # the first rows only


@pytest.mark.parametrize("size, limit, expected", [(0, 0, 5), (4, 0, 4), (0, 2, 2), (4, 2, 2), (2, 4, 2)])
def test_one_split_of_a_run_is_its_configs_rows_cut_to_the_limit(tmp_path, size, limit, expected):
    images = torch.randint(0, 256, (5, 28, 28), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    _write_split(tmp_path / "MNIST" / "raw", _idx_bytes(images), _idx_bytes(torch.arange(5, dtype=torch.uint8)),
                 train=False)
    config = tiny_config(data={"test_size": size})
    split = load_run_split(config, False, tmp_path, limit)
    assert len(split) == expected and split.pixels == config.data.pixels
    assert torch.equal(split.images, images.reshape(5, -1)[:expected].float() / 255)


def test_the_validation_split_is_the_last_training_rows_and_never_trained_on(tmp_path):
    images = torch.randint(0, 256, (10, 28, 28), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    labels = torch.arange(10, dtype=torch.uint8)
    for train in (True, False):
        _write_split(tmp_path / "MNIST" / "raw", _idx_bytes(images), _idx_bytes(labels), train=train)
    config = tiny_config(data={"validation_size": 3})
    train_set, test_set = load_run_data(config, tmp_path)
    validation = load_run_validation(config, tmp_path)
    assert train_set.labels.tolist() == list(range(7)) and validation.labels.tolist() == [7, 8, 9]
    assert len(test_set) == 10 and validation.pixels == config.data.pixels
    assert torch.equal(validation.images, images.reshape(10, -1)[7:].float() / 255)
    assert load_run_split(config, True, tmp_path).labels.tolist() == list(range(7))  # what evaluate --split train reads
    assert load_run_split(config, True, tmp_path, limit=2).labels.tolist() == [0, 1]
    config.data.train_size = 5
    assert load_run_data(config, tmp_path)[0].labels.tolist() == list(range(5))
    assert load_run_validation(config, tmp_path).labels.tolist() == [7, 8, 9]
    assert load_run_validation(tiny_config(), tmp_path) is None
    for sizes in ((0, 3), (5, 3), (4, 0)):  # load_run_sets reads the file once and gives the same sets
        config.data.train_size, config.data.validation_size = sizes
        sets = load_run_sets(config, tmp_path)
        expected = (*load_run_data(config, tmp_path), load_run_validation(config, tmp_path))
        for got, want in zip(sets, expected):
            assert (got is None and want is None) or (torch.equal(got.images, want.images)
                                                      and torch.equal(got.labels, want.labels))
    config.data.validation_size = 3
    config.data.train_size = 8  # 8 + 3 > 10: the two would share images
    with pytest.raises(DataError, match=r"data.validation_size = 3 and data.train_size = 8 ask for more than the 10 "):
        load_run_data(config, tmp_path)


def test_binarized_mnist_validates_on_its_own_validation_file(tmp_path):
    folder = tmp_path / "BinarizedMNIST"
    folder.mkdir()
    for name, rows in (("train", 4), ("test", 2), ("valid", 3)):
        (folder / f"binarized_mnist_{name}.amat").write_text("".join("1 " * i + "0 " * (783 - i) + "0\n"
                                                                      for i in range(rows)))
    config = tiny_config(data={"dataset": "binarized_mnist", "validation_size": 2})
    assert len(load_run_data(config, tmp_path)[0]) == 4  # the training file whole
    validation = load_run_validation(config, tmp_path)
    assert validation.images.sum(dim=1).tolist() == [0.0, 1.0]  # the validation file's first rows
    config.data.validation_size = 4
    with pytest.raises(DataError, match="data.validation_size = 4 is more than the 3 images of binarized_mnist_valid"):
        load_run_validation(config, tmp_path)


@pytest.mark.parametrize("broken", ["truncated", "not idx", "wrong shape", "corrupt gz"])
def test_unreadable_files_give_one_line(tmp_path, broken):
    images = _idx_bytes(torch.zeros(4, 28, 28))
    labels = _idx_bytes(torch.zeros(4))
    if broken == "truncated":
        images = images[:-10]
    elif broken == "not idx":
        images = b"<html>mirror error page</html>"
    elif broken == "wrong shape":
        images = _idx_bytes(torch.zeros(4, 27, 29))
    folder = tmp_path / "MNIST" / "raw"
    _write_split(folder, images, labels)
    if broken == "corrupt gz":  # a gzip stream with damaged bytes: zlib's own error
        packed = bytearray(gzip.compress(_idx_bytes(torch.zeros(4, 28, 28)), mtime=0))
        packed[10] ^= 0xFF  # the deflate stream's first byte: zlib.error, not gzip's own BadGzipFile
        with pytest.raises(zlib.error):
            gzip.decompress(bytes(packed))
        (folder / "train-images-idx3-ubyte").unlink()
        (folder / "train-images-idx3-ubyte.gz").write_bytes(bytes(packed))
    with pytest.raises(DataError) as err:
        load_images("mnist", True, tmp_path, download=False)
    message = str(err.value)
    assert "\n" not in message
    if broken == "wrong shape":
        assert "hold images of shape (4, 27, 29)" in message
    else:
        assert "train-images-idx3-ubyte" in message and "could not be read as an IDX image/label file" in message


@pytest.mark.mnist
def test_read_idx_matches_torchvision(data_dir):
    from torchvision import datasets

    reference = datasets.MNIST(data_dir, train=False, download=False)
    images, labels = load_images("mnist", False, data_dir, download=False)
    assert torch.equal(images, reference.data.reshape(10000, -1).float() / 255)
    assert torch.equal(labels, reference.targets)


@pytest.mark.mnist
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_load_real_splits(data_dir, dataset):
    train, test = load_data(dataset, "grayscale", data_dir)
    assert train.images.shape == (60000, 784) and test.images.shape == (10000, 784)
    assert train.images.dtype == torch.float32
    assert 0.0 == train.images.min().item() and train.images.max().item() == 1.0
    assert set(test.labels.unique().tolist()) == set(range(10))


@pytest.mark.mnist
def test_subset_sizes(data_dir):
    train, test = load_data("mnist", "threshold", data_dir, train_size=100, test_size=50)
    assert (len(train), len(test)) == (100, 50)


def _grey(n=50, d=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.arange(n) % 10


def test_batches_cover_every_index_once_in_a_seeded_order():
    data = ImageData(*_grey(), pixels="grayscale")
    batches = list(data.batches(16, torch.Generator().manual_seed(3)))
    assert [len(idx) for idx, _ in batches] == [16, 16, 16, 2]
    order = torch.cat([idx for idx, _ in batches])
    assert sorted(order.tolist()) == list(range(50))
    assert not torch.equal(order, torch.arange(50))
    again = torch.cat([idx for idx, _ in data.batches(16, torch.Generator().manual_seed(3))])
    assert torch.equal(order, again)
    for idx, x in batches:
        assert torch.equal(x, data.images[idx])


def test_pixel_modes():
    images, labels = _grey(2000, 30, seed=123)  # not the binarization seeds below
    assert torch.equal(ImageData(images, labels, "grayscale").pixels_at(torch.arange(5)), images[:5])
    threshold = ImageData(images, labels, "threshold").pixels_at(torch.arange(2000))
    assert torch.equal(threshold, (images > 0.5).float())
    dynamic = ImageData(images, labels, "dynamic")
    first = dynamic.pixels_at(torch.arange(2000), torch.Generator().manual_seed(0))
    second = dynamic.pixels_at(torch.arange(2000), torch.Generator().manual_seed(1))
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(first, second)  # a fresh binarization every draw
    # E[x] = grey value: the mean over 2000 images of (x - grey) is near 0 for each pixel
    assert (first - images).mean(0).abs().max() < 0.05


def test_bad_pixel_mode_and_shapes():
    images, labels = _grey()
    with pytest.raises(DataError, match="unknown pixel mode 'binary'; valid modes: grayscale"):
        ImageData(images, labels, "binary")
    with pytest.raises(DataError, match="images must be"):
        ImageData(images, labels[:3])


@pytest.mark.parametrize("gz", [False, True])
def test_read_amat_gives_the_binary_pixels_line_by_line(tmp_path, gz):
    from pyro_vae.workflow.data import read_amat

    rows = torch.randint(0, 2, (3, 784), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    text = "".join(" ".join(str(int(v)) for v in row) + "\n" for row in rows).encode()
    path = tmp_path / ("a.amat.gz" if gz else "a.amat")

    def write(data):
        path.write_bytes(gzip.compress(data) if gz else data)

    write(text)
    assert torch.equal(read_amat(path), rows)
    write(text.replace(b"1", b"2", 1))
    with pytest.raises(ValueError, match="characters other than 0, 1"):
        read_amat(path)
    write(text[:-4] + b"\n")  # the last line one pixel short
    with pytest.raises(ValueError, match="not 784 a line"):
        read_amat(path)


def test_binarized_mnist_needs_its_files_and_has_no_labels(tmp_path):
    folder = tmp_path / "BinarizedMNIST"
    with pytest.raises(DataError, match=r"binarized_mnist_train.amat\(.gz\) not found in .*BinarizedMNIST"):
        load_images("binarized_mnist", True, tmp_path)
    folder.mkdir()
    (folder / "binarized_mnist_test.amat").write_text(("0 " * 783 + "1\n") * 2)
    images, labels = load_images("binarized_mnist", False, tmp_path)
    assert images.shape == (2, 784) and images[:, -1].tolist() == [1.0, 1.0] and images.sum() == 2
    assert labels.tolist() == [-1, -1]
    (folder / "binarized_mnist_train.amat").write_text("0 1\n")
    with pytest.raises(DataError, match="binarized_mnist_train.amat could not be read as .amat images"):
        load_images("binarized_mnist", True, tmp_path)


@pytest.mark.mnist
@pytest.mark.slow
def test_the_shared_binarized_mnist_splits(data_dir):
    if not (data_dir / "BinarizedMNIST").is_dir():
        pytest.skip("no BinarizedMNIST folder in the data directory")
    train, labels = load_images("binarized_mnist", True, data_dir)
    test, _ = load_images("binarized_mnist", False, data_dir, limit=100)
    assert train.shape == (50000, 784) and test.shape == (100, 784)
    assert set(train.unique().tolist()) == {0.0, 1.0} and (labels == -1).all()
    assert 0.12 < train.mean() < 0.14  # MNIST's mean ink


@pytest.mark.mnist
def test_held_out_digits_leave_every_split_and_are_the_anomalies_of_held_out_experiments(data_dir):
    from pyro_vae.workflow.anomaly import anomaly_sets
    from pyro_vae.workflow.config import load_config
    from pyro_vae.workflow.data import load_images, load_run_sets

    config = load_config(None, ["data.held_out_labels=[1, 7]", "data.train_size=2000", "data.test_size=500",
                                "data.validation_size=1000"])
    train, test, validation = load_run_sets(config, data_dir)
    for split in (train, test, validation):
        assert len(split) > 0 and not torch.isin(split.labels, torch.tensor([1, 7])).any()
    assert len(train) < 2000 and len(test) < 500  # taken out after the sizes
    grey, labels = load_images("mnist", False, data_dir)
    inliers, outliers = anomaly_sets(config, "held_out", 50, data_dir).values()
    held = (labels == 1) | (labels == 7)
    assert torch.equal(outliers, grey[held][:50]) and torch.equal(inliers, grey[~held][:50])


@pytest.mark.parametrize("value", ["[10]", "[-1]", "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "['a']"])
def test_held_out_labels_must_be_digits_that_leave_one_in(value):
    from pyro_vae.workflow.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.held_out_labels must be a list of digits 0-9"):
        load_config(None, [f"data.held_out_labels={value}"])


def test_noise_perturbs_the_training_batches_only_and_reproducibly():
    """data.noise = 0.25 on binary pixels: a quarter of the pixels are redrawn by a fair coin (so about 12.5%
    change), from the epoch's generator; what evaluation sees (observed, pixels_at) is untouched."""
    images = (torch.rand(400, 784, generator=torch.Generator().manual_seed(0)) < 0.2).float()
    labels = torch.zeros(400, dtype=torch.long)
    noisy, clean = ImageData(images, labels, "threshold", noise=0.25), ImageData(images, labels, "threshold")
    order = torch.arange(400)
    (idx, x), = noisy.batches_in(order, 400, torch.Generator().manual_seed(1))
    changed = (x != images).float().mean().item()
    assert 0.11 < changed < 0.14 and set(x.unique().tolist()) <= {0.0, 1.0}
    (_, again), = noisy.batches_in(order, 400, torch.Generator().manual_seed(1))
    assert torch.equal(x, again)  # the generator decides: a resumed epoch sees the same batches
    (_, plain), = clean.batches_in(order, 400, torch.Generator().manual_seed(1))
    assert torch.equal(plain, images)
    assert torch.equal(noisy.observed().images, images) and torch.equal(noisy.pixels_at(order), images)
    assert noisy.subset(10).noise == noisy.rows(order[:5]).noise == noisy.to("cpu").noise == 0.25
    grey = ImageData(torch.full((50, 784), 0.5), labels[:50], "grayscale", noise=1.0)
    (_, uniform), = grey.batches_in(torch.arange(50), 50, torch.Generator().manual_seed(2))
    assert 0.45 < uniform.mean().item() < 0.55 and uniform.std().item() > 0.25  # uniform grey values
