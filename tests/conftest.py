"""Shared fixtures: a clean Pyro state per test, tiny synthetic data, and the MNIST folder."""

import os
from pathlib import Path

import pyro
import pytest
import torch

from pyro_vae.workflow.data import ImageData

from .helpers import make_tiny_data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def pyro_state():
    """Clear the param store, turn validation on and seed every test; restore torch's thread count
    after it (a test that changes it would change the rounding of every later in-process run); fail a
    test that leaves subnormal floats flushed on the calling thread (every later test in the worker would
    run in that mode, and hypothesis refuses to draw floats in it)."""
    threads = torch.get_num_threads()
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
    torch.set_num_threads(threads)
    if _flushing_here():
        torch.set_flush_denormal(False)
        pytest.fail("the test left subnormal floats flushed to zero: enter "
                    "pyro_vae.workflow.streams.flushed_subnormals instead of calling torch.set_flush_denormal",
                    pytrace=False)


def _flushing_here() -> bool:
    return (torch.tensor([2e-38]) / 100).item() == 0.0


def mnist_dir() -> Path | None:
    for candidate in (os.environ.get("PYRO_VAE_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
            return Path(candidate).resolve()  # absolute: notebooks run in notebooks/
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = mnist_dir()
    if found is None:
        pytest.skip("MNIST not found: set PYRO_VAE_DATA to a folder holding MNIST/raw")
    return found


@pytest.fixture
def tiny_data() -> ImageData:
    return make_tiny_data()
