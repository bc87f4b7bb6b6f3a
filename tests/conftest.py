"""Shared fixtures: a clean Pyro state per test, tiny synthetic data, and the MNIST folder."""

import os
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae.config import Config
from pyro_vae.data import ImageData

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def pyro_state():
    """Clear the param store, turn validation on and seed every test."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def mnist_dir() -> Path | None:
    for candidate in (os.environ.get("PYRO_VAE_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = mnist_dir()
    if found is None:
        pytest.skip("MNIST not found: set PYRO_VAE_DATA to a folder holding MNIST/raw")
    return found


def make_tiny_data(n: int = 64, dim: int = 784, classes: int = 4, seed: int = 0) -> ImageData:
    """``n`` binary images: noisy copies of ``classes`` random prototypes (labels = prototype)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(classes, dim, generator=g) < 0.3).float()
    labels = torch.arange(n) % classes
    flips = (torch.rand(n, dim, generator=g) < 0.05).float()
    images = (prototypes[labels] + flips) % 2
    return ImageData(images, labels, pixels="threshold")


@pytest.fixture
def tiny_data() -> ImageData:
    return make_tiny_data()


def tiny_config(**sections) -> Config:
    """A small MLP config for fast tests; ``sections`` maps section -> {key: value}."""
    config = Config()
    config.model.hidden = [32]
    config.train.batch_size = 16
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    return config
