"""Figures of a conditional VAE p(x | z, y): the same styles z under every label y ("draw a 5"), and
style transfer (a test digit's code z ~ q(z | x, y) decoded with each y)."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from ..models.conditional import one_hot
from ..models.vae import VAE
from .base import H, W, image_grid, model_device


def _labelled_grid(images: torch.Tensor, rows: list[str], cols: list[str], title: str, ylabel: str,
                   xlabel: str) -> Figure:
    """``len(rows) x len(cols)`` flat images as one grid, its rows and columns named."""
    fig = Figure(figsize=(len(cols) * 0.6 + 0.8, len(rows) * 0.6 + 0.9))
    ax = fig.subplots()
    ax.imshow(image_grid(images, len(rows), len(cols)), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([H * (i + 0.5) for i in range(len(rows))], rows)
    ax.set_xticks([W * (j + 0.5) for j in range(len(cols))], cols)
    ax.tick_params(length=0)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    return fig


@torch.no_grad()
def plot_samples_by_label(vae: VAE, columns: int = 10) -> Figure:
    """E[x | z_j, y] for ``columns`` draws z_j ~ p(z) (one per column, the same in every row) and each label y."""
    device = model_device(vae)
    z = vae.sample_prior(columns).to(device)  # (columns, z_dim)
    labels = one_hot(torch.arange(vae.num_classes, device=device), vae.num_classes)  # (C, C)
    images = vae.decode_mean(z.unsqueeze(0), labels.unsqueeze(1))  # (C, columns, D)
    return _labelled_grid(images.reshape(-1, images.shape[-1]), [str(y) for y in range(vae.num_classes)],
                          [str(j + 1) for j in range(columns)],
                          "Decoder means E[x | z, y]: one draw z ~ p(z) per column, the label y per row",
                          "label y", "draw of z")


@torch.no_grad()
def plot_style_transfer(vae: VAE, images: torch.Tensor, codes: torch.Tensor) -> Figure:
    """Each test image (first column) and its code z = E_q[z | x, y] decoded with every label y."""
    device = model_device(vae)
    labels = one_hot(torch.arange(vae.num_classes, device=device), vae.num_classes)  # (C, C)
    decoded = vae.decode_mean(codes.to(device).unsqueeze(1), labels.unsqueeze(0)).cpu()  # (N, C, D)
    rows = torch.cat([images.cpu().unsqueeze(1), decoded], 1)  # (N, 1 + C, D)
    return _labelled_grid(rows.reshape(-1, rows.shape[-1]), [""] * len(images),
                          ["x"] + [str(y) for y in range(vae.num_classes)],
                          "Style transfer: a test digit x, then its code z = E_q[z | x, y] decoded with each label y",
                          "test digit", "label y given to the decoder")
