"""Figures of images: training curves, reconstructions, a grid of images, an interpolation row,
and :func:`preview_png` (a figure file shrunk for a notebook)."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from matplotlib.figure import Figure

from ..models.vae import VAE
from .base import decode_grid, image_grid


def plot_training_curves(history: list[dict], best_epoch: int | None = None) -> Figure:
    """Per-image loss (train, test and, with a validation split, validation, ``best_epoch`` marked),
    test reconstruction term and test KL against epoch."""
    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(13, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if all("test_loss" in r for r in history):
        axes[0].plot(epochs, [r["test_loss"] for r in history], "s-", label="test")
    if history and all("valid_loss" in r for r in history):
        axes[0].plot(epochs, [r["valid_loss"] for r in history], "^-", label="validation")
    if best_epoch is not None:
        axes[0].axvline(best_epoch, color="0.5", linestyle=":", label=f"best epoch ({best_epoch})")
    if all("test_loss" in r for r in history):
        axes[1].plot(epochs, [-r["test_recon"] for r in history], "s-", color="C1")
        axes[2].plot(epochs, [r["test_kl"] for r in history], "s-", color="C2")
    else:
        for ax in axes[1:]:
            ax.text(0.5, 0.5, "test terms are computed\nat the end for this guide",
                    ha="center", va="center", transform=ax.transAxes)
    titles = ["total loss (-ELBO)", "reconstruction  -E_q log p(x|z)", "KL(q(z|x) || p(z))"]
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Training curves")
    fig.tight_layout()
    return fig


def plot_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor) -> Figure:
    """Two rows: test images (top) and the decoder's mean at their posterior means (bottom)."""
    n = originals.shape[0]
    fig = Figure(figsize=(n * 0.9, 2.2))
    axes = fig.subplots(2, 1)
    for ax, images, title in zip(axes, (originals, reconstructions), ("test images", "reconstructions")):
        ax.imshow(image_grid(images, 1, n), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return fig


def plot_image_grid(images: torch.Tensor, rows: int, cols: int, title: str) -> Figure:
    """``rows * cols`` flat images as one grid under ``title``."""
    fig = Figure(figsize=(cols * 0.6, rows * 0.6 + 0.4))
    ax = fig.subplots()
    ax.imshow(image_grid(images, rows, cols), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    return fig


def plot_interpolation(vae: VAE, x_a: torch.Tensor, x_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                       steps: int = 10, title: str = "") -> Figure:
    """Decoder means along z_t = (1 - t) z_a + t z_b, t in [0, 1] (``steps`` points), between two images."""
    t = torch.linspace(0, 1, steps).unsqueeze(-1)
    z = (1 - t) * z_a.cpu() + t * z_b.cpu()
    row = torch.cat([x_a.cpu().reshape(1, -1), decode_grid(vae, z), x_b.cpu().reshape(1, -1)])
    fig = Figure(figsize=((steps + 2) * 0.9, 1.6))
    ax = fig.subplots()
    ax.imshow(image_grid(row, 1, steps + 2), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title or f"Linear interpolation in z, {steps} steps (outer images: the two test digits)",
                 fontsize=10)
    ax.axis("off")
    return fig


def preview_png(path: str | Path, width: int = 800, colors: int = 256) -> bytes:
    """A figure file shrunk to at most ``width`` pixels and ``colors`` colours, as PNG bytes
    (for notebooks: a few times smaller to store, same content). The palette is an octree's, which keeps
    every distinct colour of a small area (the ten digit colours of a scatter plot; a median cut merges
    them into a few shades)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        image.quantize(colors=colors, method=Image.Quantize.FASTOCTREE).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
