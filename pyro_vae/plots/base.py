"""What every figure module shares: tiling flat images, decoding a grid of codes, saving a figure.

Figures are plain :class:`matplotlib.figure.Figure` objects: no pyplot state to close and
no backend to switch; ``savefig`` picks the Agg canvas from the file's suffix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..models.nets import IMAGE_SHAPE, UNLABELLED
from ..models.vae import VAE

H, W = IMAGE_SHAPE
DIGIT_COLOURS = {"cmap": "tab10", "vmin": -0.5, "vmax": 9.5}  # one colour per class 0..9


def _digit_mappable() -> ScalarMappable:
    """Digit -> colour, as the colour bars show it."""
    return ScalarMappable(Normalize(DIGIT_COLOURS["vmin"], DIGIT_COLOURS["vmax"]), DIGIT_COLOURS["cmap"])


UNLABELLED_COLOUR = "0.45"  # grey: points of images without a label


def has_labels(labels: np.ndarray) -> bool:
    """Whether any point has a digit label (binarized MNIST has none: every label is ``UNLABELLED``)."""
    return bool((np.asarray(labels) != UNLABELLED).any())


def scatter_digits(ax, x: np.ndarray, y: np.ndarray, labels: np.ndarray, size: float, alpha: float) -> None:
    """Points coloured by digit (the :data:`DIGIT_COLOURS`; unlabelled ones grey), ``size`` in points^2
    as in ``Axes.scatter``.

    Drawn as one marker line per digit (digits in order 0..9): Agg stamps a marker it has rasterized
    once, faster than a scatter's per-point paths for the 10,000 test codes."""
    colour = _digit_mappable().to_rgba
    for digit in np.unique(labels):
        chosen = labels == digit
        ax.plot(x[chosen], y[chosen], linestyle="", marker="o", markersize=size ** 0.5, markeredgewidth=0,
                color=UNLABELLED_COLOUR if digit == UNLABELLED else colour(digit), alpha=alpha)


def digit_colorbar(fig: Figure, ax, labels: np.ndarray, **kwargs):
    """A colour bar of the ten digit colours, ticks 0..9; for points without labels, a note instead."""
    if not has_labels(labels):
        fig.text(0.99, 0.01, "no labels: points not coloured by digit", ha="right", va="bottom", fontsize=8,
                 color=UNLABELLED_COLOUR)
        return None
    return fig.colorbar(_digit_mappable(), ax=ax, ticks=range(10), label="digit", **kwargs)


def image_grid(images: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """Tile ``rows * cols`` flat images ``(n, 784)`` into one ``(rows*28, cols*28)`` array."""
    images = images.detach().cpu().reshape(rows, cols, H, W)
    return images.permute(0, 2, 1, 3).reshape(rows * H, cols * W).numpy()


def model_device(vae: VAE) -> torch.device:
    """The device of the prior's parameters or buffers (CPU for a prior without any)."""
    tensors = list(vae.prior.parameters()) + list(vae.prior.buffers())
    return tensors[0].device if tensors else torch.device("cpu")


@torch.no_grad()
def decode_grid(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """Decoder means for a ``(..., z_dim)`` array of codes, flat ``(n, 784)``."""
    return vae.decode_mean(z.reshape(-1, z.shape[-1]).to(model_device(vae))).cpu()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (parent folders made; 110 dpi, tight bounding box); returns the path.

    A PNG is compressed at zlib level 1 (faster to write than matplotlib's default level 6; a run's
    figures come out a few percent larger); other formats as matplotlib writes them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = {"pil_kwargs": {"compress_level": 1}} if path.suffix.lower() == ".png" else {}
    fig.savefig(path, dpi=110, bbox_inches="tight", **png)
    return path
