"""MNIST and Fashion-MNIST as in-memory tensors, with pixel modes and (index, x) minibatches.

Images are read once from their idx files (torchvision's folder layout; torchvision itself
only downloads missing files) into a float tensor of grey values in [0, 1], shape
``(N, 784)``. The pixel mode decides what the model sees:

- ``grayscale``: the grey values themselves (the reference experiments' convention;
  the Bernoulli "likelihood" is then binary cross-entropy, not a normalised density);
- ``dynamic``: a fresh binarization ``x ~ Bernoulli(grey)`` every time a batch is drawn;
- ``threshold``: the fixed binarization ``x = 1[grey > 0.5]``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import zlib
from pathlib import Path
from typing import Iterator

import torch

from ..models.nets import IMAGE_SHAPE, NUM_PIXELS, UNLABELLED
from .config import Config

DATA_ENV = "PYRO_VAE_DATA"
IDX_DATASETS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}  # folder names (and torchvision classes)
BINARIZED = "binarized_mnist"  # Larochelle's fixed binarization of MNIST: .amat text files, no labels
BINARIZED_FOLDER = "BinarizedMNIST"
AMAT_FILES = {True: "binarized_mnist_train.amat", False: "binarized_mnist_test.amat",
              "validation": "binarized_mnist_valid.amat"}  # 50,000, 10,000 and 10,000 images
DATASETS = (*IDX_DATASETS, BINARIZED)
TRAINING_IMAGES = {"mnist": 60000, "fashion_mnist": 60000, BINARIZED: 50000}  # the official files' sizes
BINARIZED_VALIDATION_IMAGES = 10000
PIXEL_MODES = ("grayscale", "dynamic", "threshold")


NUM_CLASSES = 10  # the labels of MNIST and Fashion-MNIST: 0..9


class DataError(RuntimeError):
    """Data that cannot be found or read; the message is one line naming files and folder."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else ``$PYRO_VAE_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_ENV) or "data")


SPLIT_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # the same names for both datasets
IDX_DTYPES = {0x08: torch.uint8}  # the type byte of the idx files MNIST-like sets use


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """An idx file (LeCun's MNIST format, optionally gzipped) as a tensor of the shape in its header.

    Header: two zero bytes, a type byte (0x08: unsigned bytes), the number of dimensions
    ``n``, then ``n`` big-endian 32-bit sizes; the data follow.
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in IDX_DTYPES:
        raise ValueError("not an idx file of unsigned bytes")
    ndim = data[3]
    offset = 4 + 4 * ndim
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if len(data) != offset + math.prod(shape):
        raise ValueError(f"{len(data) - offset} data bytes for a shape {shape}")
    return torch.frombuffer(bytearray(data), dtype=IDX_DTYPES[data[2]], offset=offset).reshape(shape)


def read_amat(path: str | os.PathLike) -> torch.Tensor:
    """A ``.amat`` file of binary images (Larochelle's binarized MNIST, optionally gzipped) as a uint8
    tensor ``(N, 784)``: one image a line, its 784 pixels written as ``0`` or ``1`` separated by spaces."""
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    lines = data.strip().count(b"\n") + 1 if data.strip() else 0
    digits = data.translate(None, b" \t\r\n")
    if digits.strip(b"01"):
        raise ValueError("holds characters other than 0, 1 and white space")
    if len(digits) != lines * NUM_PIXELS:
        raise ValueError(f"{len(digits)} pixels on {lines} lines, not {NUM_PIXELS} a line")
    return (torch.frombuffer(bytearray(digits), dtype=torch.uint8) - ord("0")).reshape(lines, NUM_PIXELS)


def _load_binarized(train: bool | str, root: Path, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Larochelle's binarized MNIST split (``True``: train, ``False``: test, ``"validation"``) from
    ``<root>/BinarizedMNIST``; labels :data:`UNLABELLED`."""
    folder = root / BINARIZED_FOLDER
    path = _find(folder, AMAT_FILES[train])
    if path is None:
        raise DataError(
            f"{BINARIZED} file {AMAT_FILES[train]}(.gz) not found in {folder}; put "
            f"{', '.join(AMAT_FILES.values())} (or .gz) there, or point --data-dir or ${DATA_ENV} at a "
            f"folder holding {BINARIZED_FOLDER}/"
        )
    try:
        images = read_amat(path)
    except (OSError, ValueError, EOFError, zlib.error) as err:
        raise DataError(f"{BINARIZED} file {path} could not be read as .amat images ({err}); replace it with "
                        f"the official {path.name}") from None
    if limit > 0:
        images = images[:limit]
    return images.to(torch.float32), torch.full((len(images),), UNLABELLED, dtype=torch.int64)


def _find(raw_folder: Path, name: str) -> Path | None:
    """``name`` or ``name.gz`` in ``raw_folder``."""
    for path in (raw_folder / name, raw_folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _download(dataset: str, root: Path, train: bool) -> None:
    """Fetch a dataset through torchvision (imported only here); silent, and no error when it cannot.
    The folders it made are removed again when they stay empty (no network: nothing left behind)."""
    raw_folder = root / IDX_DATASETS[dataset] / "raw"
    new_folders = [folder for folder in (raw_folder, *raw_folder.parents) if not folder.exists()]
    try:  # torchvision prints progress and mirror failures to stdout
        from torchvision import datasets

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            getattr(datasets, IDX_DATASETS[dataset])(root, train=train, download=True)
    except Exception:  # no network, a mirror down, a read-only folder, ...
        pass
    for folder in new_folders:  # deepest first; rmdir leaves a folder that holds anything
        with contextlib.suppress(OSError):
            folder.rmdir()


def load_images(
    dataset: str, train: bool, data_dir: str | os.PathLike | None = None, download: bool = True, limit: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as ``(images, labels)``: float32 ``(N, 784)`` in [0, 1] and int64 ``(N,)``;
    only the first ``limit`` images when ``limit`` > 0.

    Reads the idx files in ``<data_dir>/<MNIST|FashionMNIST>/raw`` (torchvision's layout);
    when they are missing, downloads them through torchvision if a network exists, and
    otherwise raises :class:`DataError` naming the files needed and the folder searched.
    ``binarized_mnist`` is read from ``<data_dir>/BinarizedMNIST/*.amat(.gz)`` (train: its 50,000
    training images; its 10,000 validation images through :func:`load_run_validation`), with every
    label :data:`UNLABELLED`; it is never downloaded.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(DATASETS)}")
    root = resolve_data_dir(data_dir)
    if dataset == BINARIZED:
        return _load_binarized(train, root, limit)
    raw_folder = root / IDX_DATASETS[dataset] / "raw"
    needed = SPLIT_FILES[train]
    if download and not all(_find(raw_folder, name) for name in needed):
        _download(dataset, root, train)
    paths = [_find(raw_folder, name) for name in needed]
    if not all(paths):
        raise DataError(
            f"{dataset} files not found in {raw_folder} and could not be downloaded; "
            f"put {', '.join(SPLIT_FILES[True] + SPLIT_FILES[False])} there, or point --data-dir "
            f"or ${DATA_ENV} at a folder holding {IDX_DATASETS[dataset]}/raw/"
        )
    arrays = []
    for path in paths:
        try:
            arrays.append(read_idx(path))
        except (OSError, ValueError, EOFError, RuntimeError, zlib.error) as err:  # truncated, corrupt, foreign
            raise DataError(
                f"{dataset} file {path} could not be read as an IDX image/label file ({err}); "
                f"replace it with the official {path.name}"
            ) from None
    images, labels = arrays
    if images.dim() != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE or labels.shape != images.shape[:1]:
        raise DataError(
            f"{dataset} files in {raw_folder} hold images of shape {tuple(images.shape)} and "
            f"labels of shape {tuple(labels.shape)}; expected (N, 28, 28) images with N labels: replace them "
            "with the official files"
        )
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    return images.reshape(len(images), -1).to(torch.float32) / 255.0, labels.to(torch.int64)


class ImageData:
    """An in-memory image set: grey values ``(N, 784)``, labels ``(N,)`` and a pixel mode.

    :param images: grey values in [0, 1], shape ``(N, D)``.
    :param labels: integer class labels, shape ``(N,)`` (kept for plots).
    :param pixels: one of :data:`PIXEL_MODES`.
    :param noise: the probability with which each pixel of a *training* batch (:meth:`batches_in`) is replaced by
        a random one, a uniform grey value (a fair coin for binary pixels): the perturbed data of Ren et al.'s
        (2019) background model. Evaluation (:meth:`observed`, :meth:`pixels_at`) sees the images as they are.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pixels: str = "grayscale", noise: float = 0.0):
        if pixels not in PIXEL_MODES:
            raise DataError(f"unknown pixel mode {pixels!r}; valid modes: {', '.join(PIXEL_MODES)}")
        if images.dim() != 2 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"images must be (N, D) with N labels, got images {tuple(images.shape)} "
                f"and labels {tuple(labels.shape)}"
            )
        self.images = images  # (N, D) grey values
        self.labels = labels  # (N,)
        self.pixels = pixels
        self.noise = noise
        self._threshold = (images > 0.5).to(images.dtype) if pixels == "threshold" else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def steps(self, batch_size: int) -> int:
        """The minibatches of a pass over the images, the last one short where ``batch_size`` does not divide them."""
        return math.ceil(len(self) / batch_size)

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "ImageData":
        return ImageData(self.images.to(device), self.labels.to(device), self.pixels, self.noise)

    def subset(self, n: int) -> "ImageData":
        """The first ``n`` images (all of them when ``n`` is 0 or larger than the set)."""
        if n <= 0 or n >= len(self):
            return self
        return ImageData(self.images[:n], self.labels[:n], self.pixels, self.noise)

    def rows(self, idx: torch.Tensor) -> "ImageData":
        """The images at row indices ``idx``, in that order."""
        return ImageData(self.images[idx], self.labels[idx], self.pixels, self.noise)

    def pixels_at(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The observed pixels of rows ``idx`` under the pixel mode, shape ``(len(idx), D)``."""
        if self.pixels == "threshold":
            return self._threshold[idx]
        grey = self.images[idx]
        if self.pixels == "dynamic":
            return torch.bernoulli(grey, generator=generator)
        return grey

    def observed(self, generator: torch.Generator | None = None) -> "ImageData":
        """The pixels drawn once (one binarization in dynamic mode), so every estimate sees the same x."""
        x = self.pixels_at(torch.arange(len(self), device=self.device), generator)
        return ImageData(x, self.labels, "grayscale")  # "grayscale" hands the fixed pixels on as they are

    def order(self, generator: torch.Generator | None = None, shuffle: bool = True) -> torch.Tensor:
        """A random permutation of the rows drawn from ``generator`` (or ``0..N-1``)."""
        n = len(self)
        if not shuffle:
            return torch.arange(n, device=self.device)
        return torch.randperm(n, generator=generator, device=self.device)

    def batches_in(
        self, order: torch.Tensor, batch_size: int, generator: torch.Generator | None = None, start: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(idx, x)`` minibatches along ``order``, skipping the first ``start`` batches (the training
        batches: with ``noise``, perturbed)."""
        for begin in range(start * batch_size, len(order), batch_size):
            idx = order[begin : begin + batch_size]
            yield idx, self.perturbed(self.pixels_at(idx, generator), generator)

    def perturbed(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Pixels ``x`` with each replaced, with probability ``noise``, by a random one (uniform grey; a fair
        coin in the binary modes); ``x`` itself when ``noise`` is 0."""
        if not self.noise:
            return x
        replace = torch.rand(x.shape, generator=generator, device=x.device) < self.noise
        random = torch.rand(x.shape, generator=generator, device=x.device)
        if self.pixels != "grayscale":
            random = (random < 0.5).to(x.dtype)
        return torch.where(replace, random, x)

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(idx, x)`` minibatches covering every image once.

        The order is a permutation drawn from ``generator`` (the same generator then
        draws the dynamic binarizations), so a seeded generator gives a repeatable epoch.
        """
        yield from self.batches_in(self.order(generator, shuffle), batch_size, generator)


def load_data(
    dataset: str,
    pixels: str,
    data_dir: str | os.PathLike | None = None,
    train_size: int = 0,
    test_size: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[ImageData, ImageData]:
    """Load ``(train, test)`` :class:`ImageData` on ``device``; sizes 0 mean the whole split."""
    train = ImageData(*load_images(dataset, True, data_dir, limit=train_size), pixels)
    test = ImageData(*load_images(dataset, False, data_dir, limit=test_size), pixels)
    return train.to(device), test.to(device)


def load_run_data(config: Config, data_dir=None, device: torch.device | str = "cpu") -> tuple[ImageData, ImageData]:
    """``(train, test)`` images of ``config``'s [data] section on ``device``; the training images
    without those :func:`load_run_validation` holds out."""
    train, test = load_run_split(config, True, data_dir), load_run_split(config, False, data_dir)
    return train.to(device), test.to(device)


def load_run_sets(config: Config, data_dir=None) -> tuple[ImageData, ImageData, ImageData | None]:
    """``(train, test, validation)`` of ``config``'s [data] section (CPU), as :func:`load_run_data`
    and :func:`load_run_validation` give them, an idx dataset's training file read once."""
    d = config.data
    if d.validation_size == 0 or d.dataset == BINARIZED:
        return (*load_run_data(config, data_dir), load_run_validation(config, data_dir))
    kept, held = _held_out(config, data_dir)
    return (_image_data(config, *_first_rows(*kept, d.train_size)), load_run_split(config, False, data_dir),
            _image_data(config, *held))


def _image_data(config: Config, images: torch.Tensor, labels: torch.Tensor) -> ImageData:
    """A split of the run: its images under ``data.pixels``, without the digits ``data.held_out_labels``
    lists (taken out after the sizes are applied)."""
    held = config.data.held_out_labels
    if held:
        keep = ~torch.isin(labels, torch.tensor(held, dtype=labels.dtype))
        images, labels = images[keep], labels[keep]
    return ImageData(images, labels, config.data.pixels, config.data.noise)


def load_run_validation(config: Config, data_dir=None, device: torch.device | str = "cpu") -> ImageData | None:
    """The ``data.validation_size`` held-out images (None when it is 0): the last ones of the
    training split, never among :func:`load_run_data`'s training images; for ``binarized_mnist``
    the first ones of its own validation file."""
    d = config.data
    if d.validation_size == 0:
        return None
    if d.dataset == BINARIZED:
        images, labels = _load_binarized("validation", resolve_data_dir(data_dir), d.validation_size)
        if len(images) < d.validation_size:
            raise DataError(f"data.validation_size = {d.validation_size} is more than the {len(images):,} images "
                            f"of {AMAT_FILES['validation']}; lower data.validation_size")
    else:
        images, labels = _held_out(config, data_dir)[1]
    return _image_data(config, images, labels).to(device)


def _held_out(config: Config, data_dir) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The training file of an idx dataset split into ``((images, labels), (images, labels))``: the
    rows before the last ``data.validation_size`` and those last rows."""
    d = config.data
    images, labels = load_images(d.dataset, True, data_dir)
    kept = len(images) - d.validation_size
    if kept < 1 or d.train_size > kept:
        raise DataError(
            f"data.validation_size = {d.validation_size} and data.train_size = {d.train_size} ask for more than "
            f"the {len(images):,} training images of {d.dataset}; lower one of them"
        )
    return (images[:kept].clone(), labels[:kept].clone()), (images[kept:].clone(), labels[kept:].clone())


def load_run_split(config: Config, train: bool, data_dir=None, limit: int = 0) -> ImageData:
    """One split of ``config``'s [data] section (CPU), only its first ``limit`` images when ``limit`` > 0:
    the rows :func:`load_run_data` gives, without reading or converting the rest (the training
    split of an idx dataset with a validation split is read whole, then cut)."""
    d = config.data
    size = d.train_size if train else d.test_size
    first = min(n for n in (size, limit) if n > 0) if size > 0 or limit > 0 else 0
    if train and d.validation_size > 0 and d.dataset != BINARIZED:
        return _image_data(config, *_first_rows(*_held_out(config, data_dir)[0], first))
    return _image_data(config, *load_images(d.dataset, train, data_dir, limit=first))


def _first_rows(images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` rows (all when ``n`` is 0), copied: not a view that keeps the whole file alive."""
    return (images[:n].clone(), labels[:n].clone()) if n > 0 else (images, labels)


def first_index(labels: torch.Tensor, label: int) -> int | None:
    """The row of the first image labelled ``label`` (None if there is none)."""
    found = (labels.cpu() == label).nonzero()
    return int(found[0]) if len(found) else None


def example_indices(labels: torch.Tensor, n: int = 10) -> torch.Tensor:
    """Rows to show: the first image of each class 0, 1, ..., then the first others, ``n`` in all."""
    firsts = [i for i in (first_index(labels, c) for c in range(n)) if i is not None]
    rest = [i for i in range(len(labels)) if i not in set(firsts)][: max(0, n - len(firsts))]
    return torch.tensor((firsts + rest)[:n], dtype=torch.long)
