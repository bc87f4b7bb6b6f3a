"""Figures over training, from the snapshots a run records at ``train.snapshot_epochs``:
reconstructions of the same test digits after each of those epochs, and (z = 2) the
test-set posterior means as frames and an animated GIF, the classes separating out of
the prior's blob."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import animation

from .data import ImageData
from .plots import image_grid, plt, save_figure


def _epochs(snapshots: dict) -> list[str]:
    return sorted(snapshots, key=int)


def _split(snapshots: dict) -> str:
    """Which images the snapshots follow: ``test``, or ``train`` for a guide without an encoder."""
    return next(iter(snapshots.values())).get("split", "test")


def plot_reconstructions_over_epochs(originals: torch.Tensor, snapshots: dict, path: Path) -> Path:
    """Rows: the test digits, then their reconstructions (decoder mean at E_q[z|x]) after each epoch."""
    epochs = _epochs(snapshots)
    n = originals.shape[0]
    rows = [originals.cpu()] + [snapshots[e]["reconstructions"] for e in epochs]
    fig, ax = plt.subplots(figsize=(n * 0.8, len(rows) * 0.8 + 0.5))
    ax.imshow(image_grid(torch.cat(rows), len(rows), n), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([(r + 0.5) * 28 for r in range(len(rows))])
    ax.set_yticklabels([_split(snapshots)] + [f"epoch {e}" for e in epochs])
    ax.set_xticks([])
    ax.set_title("Reconstructions over training")
    return save_figure(fig, path)


def _frame_limits(snapshots: dict) -> tuple[float, float]:
    codes = torch.cat([snapshots[e]["codes"] for e in snapshots])
    bound = float(max(3.5, codes.abs().quantile(0.999)))
    return -bound, bound


def _draw_frame(ax, codes: torch.Tensor, labels: np.ndarray, epoch: str, limits) -> None:
    ax.clear()
    ax.scatter(codes[:, 0].numpy(), codes[:, 1].numpy(), c=labels, cmap="tab10", s=1.5, alpha=0.6,
               vmin=-0.5, vmax=9.5)
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    ax.set_title("before training" if epoch == "0" else f"after epoch {epoch}", fontsize=10)


def plot_posterior_frames(snapshots: dict, labels: torch.Tensor, path: Path) -> Path:
    """One panel per snapshot: the test posterior means, coloured by digit, on common axes."""
    epochs = _epochs(snapshots)
    labels = labels.cpu().numpy()
    limits = _frame_limits(snapshots)
    cols = min(len(epochs), 4)
    rows = -(-len(epochs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax, epoch in zip(axes.flat, epochs):
        _draw_frame(ax, snapshots[epoch]["codes"], labels, epoch, limits)
    for ax in list(axes.flat)[len(epochs):]:
        ax.axis("off")
    colours = plt.get_cmap("tab10")
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colours(d), label=str(d)) for d in range(10)]
    fig.legend(handles=handles, title="digit", loc="center right")
    what = "Test-set" if _split(snapshots) == "test" else "Training-image"
    fig.suptitle(f"{what} posterior means E_q[z|x] during training")
    fig.tight_layout(rect=(0, 0, 0.93, 1))
    return save_figure(fig, path)


def save_posterior_gif(snapshots: dict, labels: torch.Tensor, path: Path, seconds_per_frame: float = 0.8) -> Path:
    """The frames of :func:`plot_posterior_frames` as an animated GIF (Pillow writer)."""
    epochs = _epochs(snapshots)
    labels = labels.cpu().numpy()
    limits = _frame_limits(snapshots)
    fig, ax = plt.subplots(figsize=(5, 5))
    movie = animation.FuncAnimation(
        fig, lambda i: _draw_frame(ax, snapshots[epochs[i]]["codes"], labels, epochs[i], limits),
        frames=len(epochs),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    movie.save(path, writer=animation.PillowWriter(fps=1 / seconds_per_frame), dpi=80)
    plt.close(fig)
    return path


def draw_training_snapshots(fig_dir: Path, test: ImageData, snapshots: dict, shown: torch.Tensor) -> list[Path]:
    """The figures over training for one run; ``shown`` are the example digits' rows in ``test``."""
    written = [plot_reconstructions_over_epochs(test.images[shown], snapshots,
                                                fig_dir / "reconstructions_over_epochs.png")]
    if all("codes" in s and s["codes"].shape[-1] == 2 for s in snapshots.values()):
        written.append(plot_posterior_frames(snapshots, test.labels, fig_dir / "posterior_during_training.png"))
        written.append(save_posterior_gif(snapshots, test.labels, fig_dir / "posterior_during_training.gif"))
    return written
