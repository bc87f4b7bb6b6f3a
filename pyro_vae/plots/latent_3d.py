"""Figures of a 3-D latent space: the test codes in 3-D, their pairwise projections, and
the decoded manifold sliced at fixed values of z[2]."""

from __future__ import annotations

from itertools import combinations

import torch
from matplotlib.figure import Figure
from mpl_toolkits import mplot3d  # noqa: F401  (registers the "3d" projection)

from ..models.vae import VAE
from .base import (DIGIT_COLOURS, UNLABELLED_COLOUR, decode_grid, digit_colorbar, has_labels, image_grid,
                   scatter_digits)


def plot_latent_3d(codes: torch.Tensor, labels: torch.Tensor) -> Figure:
    """Test-set posterior means E_q[z|x] in 3-D, coloured by digit."""
    codes, labels = codes.detach().cpu().numpy(), labels.detach().cpu().numpy()
    fig = Figure(figsize=(8, 7))
    ax = fig.add_subplot(projection="3d")
    colours = {"c": labels, **DIGIT_COLOURS} if has_labels(labels) else {"c": UNLABELLED_COLOUR}
    ax.scatter(codes[:, 0], codes[:, 1], codes[:, 2], s=2, alpha=0.6, **colours)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_zlabel("z[2]")
    ax.view_init(elev=20, azim=-60)
    digit_colorbar(fig, ax, labels, shrink=0.7)
    ax.set_title(f"Test-set posterior means{' by digit' if has_labels(labels) else ''} (3-D latent)")
    return fig


def plot_latent_projections(codes: torch.Tensor, labels: torch.Tensor) -> Figure:
    """The three pairwise projections (z0, z1), (z0, z2), (z1, z2) of the test posterior means."""
    codes, labels = codes.detach().cpu().numpy(), labels.detach().cpu().numpy()
    fig = Figure(figsize=(16, 5))
    axes = fig.subplots(1, 3)
    for ax, (i, j) in zip(axes, combinations(range(3), 2)):
        scatter_digits(ax, codes[:, i], codes[:, j], labels, size=2, alpha=0.6)
        ax.set_xlabel(f"z[{i}]")
        ax.set_ylabel(f"z[{j}]")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"z[{i}] vs z[{j}]")
    digit_colorbar(fig, axes, labels)
    fig.suptitle("Pairwise projections of the test posterior means")
    return fig


def plot_manifold_slices(vae: VAE, slices=(-1.0, 0.0, 1.0), n: int = 15, span: float = 3.0) -> Figure:
    """Decoded grids over (z[0], z[1]) in [-span, span]^2 with z[2] fixed at each value of ``slices``."""
    axis = torch.linspace(-span, span, n)
    z1, z0 = torch.meshgrid(axis.flip(0), axis, indexing="ij")
    fig = Figure(figsize=(6 * len(slices), 6.3))
    axes = fig.subplots(1, len(slices), squeeze=False)[0]
    for ax, level in zip(axes, slices):
        z = torch.stack([z0, z1, torch.full_like(z0, level)], -1)  # (n, n, 3)
        ax.imshow(image_grid(decode_grid(vae, z), n, n), cmap="gray", vmin=0, vmax=1,
                  extent=[-span, span, -span, span])
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
        ax.set_title(f"z[2] = {level:g}")
    fig.suptitle(f"Decoded manifold slices, {n}x{n} grid over [-{span:g}, {span:g}]^2")
    return fig
