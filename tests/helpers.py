"""Small builders shared by the tests."""

import torch

from pyro_vae.config import Config
from pyro_vae.data import ImageData


def make_tiny_data(n: int = 64, dim: int = 784, classes: int = 4, seed: int = 0) -> ImageData:
    """``n`` binary images: noisy copies of ``classes`` random prototypes (labels = prototype)."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(classes, dim, generator=g) < 0.3).float()
    labels = torch.arange(n) % classes
    flips = (torch.rand(n, dim, generator=g) < 0.05).float()
    images = (prototypes[labels] + flips) % 2
    return ImageData(images, labels, pixels="threshold")


def tiny_config(**sections) -> Config:
    """A small MLP config for fast tests; ``sections`` maps section -> {key: value}."""
    config = Config()
    config.model.hidden = [32]
    config.train.batch_size = 16
    config.data.pixels = "threshold"  # tiny data are binary
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    return config
