"""Figures over training, from the snapshots a run records at ``train.snapshot_epochs``:
reconstructions of the same test digits after each of those epochs, and (z = 2) the
test-set posterior means as frames and an animated GIF, the classes separating out of
the prior's blob.

``snapshots`` maps an epoch (as text, ``"0"`` = before training) to a dict with
``reconstructions`` ``(n, 784)``, optionally ``codes`` ``(N, z_dim)`` and ``split``
(``"test"``, or ``"train"`` for a guide without an encoder).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .base import H, has_labels, image_grid, scatter_digits

GIF_SIZE, GIF_DPI = (5, 5), 80  # 400 x 400 pixels a frame


def _epochs(snapshots: dict) -> list[str]:
    return sorted(snapshots, key=int)


def _split(snapshots: dict) -> str:
    """Which images the snapshots follow: ``test``, or ``train`` for a guide without an encoder."""
    return next(iter(snapshots.values())).get("split", "test")


def has_2d_codes(snapshots: dict) -> bool:
    """Whether every snapshot holds 2-D posterior means (what the posterior frames and GIF draw)."""
    return bool(snapshots) and all("codes" in s and s["codes"].shape[-1] == 2 for s in snapshots.values())


def plot_reconstructions_over_epochs(originals: torch.Tensor, snapshots: dict) -> Figure:
    """Rows: the test digits, then their reconstructions (decoder mean at E_q[z|x]) after each epoch."""
    epochs = _epochs(snapshots)
    n = originals.shape[0]
    rows = [originals.cpu()] + [snapshots[e]["reconstructions"] for e in epochs]
    fig = Figure(figsize=(n * 0.8, len(rows) * 0.8 + 0.5))
    ax = fig.subplots()
    ax.imshow(image_grid(torch.cat(rows), len(rows), n), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(r + 0.5) * H for r in range(len(rows))])
    ax.set_yticklabels([_split(snapshots)] + [f"epoch {e}" for e in epochs])
    ax.set_xticks([])
    ax.set_title("Reconstructions over training")
    return fig


def _frame_limits(snapshots: dict) -> tuple[float, float]:
    codes = torch.cat([snapshots[e]["codes"] for e in snapshots])
    bound = float(max(3.5, codes.abs().quantile(0.999)))
    return -bound, bound


def _draw_frame(ax, codes: torch.Tensor, labels: np.ndarray, epoch: str, limits) -> None:
    ax.clear()
    scatter_digits(ax, codes[:, 0].numpy(), codes[:, 1].numpy(), labels, size=1.5, alpha=0.6)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title("before training" if epoch == "0" else f"after epoch {epoch}", fontsize=10)


def plot_posterior_frames(snapshots: dict, labels: torch.Tensor) -> Figure:
    """One panel per snapshot: the test posterior means, coloured by digit, on common axes."""
    epochs = _epochs(snapshots)
    labels = labels.cpu().numpy()
    limits = _frame_limits(snapshots)
    cols = min(len(epochs), 4)
    rows = -(-len(epochs) // cols)
    fig = Figure(figsize=(3.6 * cols, 3.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, epoch in zip(axes.flat, epochs):
        _draw_frame(ax, snapshots[epoch]["codes"], labels, epoch, limits)
    for ax in list(axes.flat)[len(epochs):]:
        ax.axis("off")
    if has_labels(labels):
        colours = matplotlib.colormaps["tab10"]
        handles = [Line2D([], [], marker="o", linestyle="", color=colours(d), label=str(d)) for d in range(10)]
        fig.legend(handles=handles, title="digit", loc="center right")
    what = "Test-set" if _split(snapshots) == "test" else "Training-image"
    fig.suptitle(f"{what} posterior means E_q[z|x] during training")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    return fig


def save_posterior_gif(snapshots: dict, labels: torch.Tensor, path: str | Path,
                       seconds_per_frame: float = 0.8) -> Path:
    """The frames of :func:`plot_posterior_frames`, one per snapshot in epoch order, as an animated
    GIF (400 x 400 pixels, looping): each frame drawn on an Agg canvas, the frames written by Pillow."""
    from PIL import Image

    epochs = _epochs(snapshots)
    labels = labels.cpu().numpy()
    limits = _frame_limits(snapshots)
    fig = Figure(figsize=GIF_SIZE, dpi=GIF_DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    frames = []
    for epoch in epochs:
        _draw_frame(ax, snapshots[epoch]["codes"], labels, epoch, limits)
        canvas.draw()
        frame = Image.fromarray(np.array(canvas.buffer_rgba()))  # a copy: the canvas reuses its buffer
        frames.append(frame if frame.getextrema()[3][0] < 255 else frame.convert("RGB"))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 * seconds_per_frame), loop=0)
    return path
