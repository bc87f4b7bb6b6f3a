"""Image completion figures: the given quadrants, the truth, the baseline's guess and CVAE samples."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from ..models.completion import CompletionCVAE, hide
from .base import image_grid

GIVEN_SHADE = 0.35  # the grey that marks the pixels a network is not given


@torch.no_grad()
def plot_completions(vae: CompletionCVAE, x: torch.Tensor, num_samples: int = 5) -> Figure:
    """Rows for images ``x`` ``(n, D)`` (one column each): the given quadrants (the hidden ones grey), the
    truth, the baseline's guess, then ``num_samples`` CVAE completions with z ~ p(z | x_g) (hidden pixels:
    the decoder's mean)."""
    x = x.to(vae.given.device)
    rows = {
        "given": hide(x, vae.given, GIVEN_SHADE),
        "truth": x,
        "baseline": vae.baseline.guess(x),
        **{f"CVAE {s + 1}": sample for s, sample in enumerate(vae.complete(x, num_samples))},
    }
    n = x.shape[0]
    fig = Figure(figsize=(n * 0.7 + 1.2, len(rows) * 0.75 + 0.5))
    axes = fig.subplots(len(rows), 1)
    for ax, (name, images) in zip(axes, rows.items()):
        ax.imshow(image_grid(images.cpu(), 1, n), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    quadrants = int(vae.given.sum().item() * 4 // vae.given.numel())
    fig.suptitle(f"Completion from {quadrants} given quadrant{'s' if quadrants > 1 else ''}: CVAE rows draw "
                 "z ~ p(z | x_g)", fontsize=10)
    return fig
