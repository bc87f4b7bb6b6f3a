"""Figures of a 2-D latent space: the test-set posterior means over the prior's contours, the
decoded manifold over [-3, 3]^2 and, for a Gaussian prior with correlations, the "tilted"
manifold laid out along the prior's principal axes."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from ..models.vae import VAE
from .base import decode_grid, digit_colorbar, has_labels, image_grid, model_device, scatter_digits


def prior_contours(ax, vae: VAE, xlim, ylim) -> None:
    """Contours of log p(z) over the axes' window (2-D latents only)."""
    u = torch.linspace(*xlim, 200)
    v = torch.linspace(*ylim, 200)
    uu, vv = torch.meshgrid(u, v, indexing="xy")
    z = torch.stack([uu, vv], -1)  # (200, 200, 2)
    with torch.no_grad():
        density = vae.prior().log_prob(z.to(model_device(vae))).exp().cpu()
    peak = density.max().item()
    levels = [peak * np.exp(-0.5 * r**2) for r in (3, 2, 1)]  # 1, 2, 3 "sigma" for a Gaussian
    ax.contour(uu.numpy(), vv.numpy(), density.numpy(), levels=levels, colors="k", linewidths=1)


def plot_latent_scatter(codes: torch.Tensor, labels: torch.Tensor, vae: VAE) -> Figure:
    """Test-set posterior means E_q[z|x] coloured by digit, over the prior's density contours."""
    codes, labels = codes.detach().cpu().numpy(), labels.detach().cpu().numpy()
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    scatter_digits(ax, codes[:, 0], codes[:, 1], labels, size=3, alpha=0.7)
    lo = np.minimum(codes.min(0), -3.5)
    hi = np.maximum(codes.max(0), 3.5)
    prior_contours(ax, vae, (lo[0], hi[0]), (lo[1], hi[1]))
    digit_colorbar(fig, ax, labels)
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    by = " by digit" if has_labels(labels) else ""
    ax.set_title(f"Test-set posterior means{by}\n(black: prior density contours at 1, 2, 3 sd)")
    ax.set_aspect("equal", adjustable="datalim")
    return fig


def plot_manifold(vae: VAE, n: int = 20, span: float = 3.0) -> Figure:
    """Decoded images over an ``n x n`` grid of z in [-span, span]^2 (z[1] grows upwards)."""
    axis = torch.linspace(-span, span, n)
    z1, z0 = torch.meshgrid(axis.flip(0), axis, indexing="ij")  # row 0 = top = largest z[1]
    images = decode_grid(vae, torch.stack([z0, z1], -1))
    fig = Figure(figsize=(8, 8))
    ax = fig.subplots()
    ax.imshow(image_grid(images, n, n), cmap="gray", vmin=0, vmax=1,
              extent=[-span, span, -span, span])
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(f"Decoded manifold, z on a {n}x{n} grid over [-{span:g}, {span:g}]^2")
    return fig


def principal_axes(vae: VAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(loc, axes, sds)`` of a Gaussian prior: Sigma = U diag(sd^2) U^T; None if not Gaussian."""
    prior = vae.prior()
    if not hasattr(prior, "covariance_matrix"):
        return None
    sigma = prior.covariance_matrix.detach().cpu().double()
    variances, axes = torch.linalg.eigh(sigma)  # ascending
    return prior.loc.detach().cpu().float(), axes.flip(-1).float(), variances.flip(-1).sqrt().float()


def has_tilt(vae: VAE) -> bool:
    """Whether p(z) is a Gaussian whose principal axes differ in scale (so its grid is tilted)."""
    found = principal_axes(vae)
    return found is not None and not torch.allclose(found[2], found[2][0].expand_as(found[2]), rtol=1e-3)


def plot_tilted_manifold(vae: VAE, n: int = 20, span: float = 3.0) -> Figure | None:
    """Decoded images along the prior's principal axes: z = loc + U diag(sd) u, u in [-span, span]^2;
    None for a prior that is not Gaussian."""
    found = principal_axes(vae)
    if found is None:
        return None
    loc, axes, sds = found
    grid = torch.linspace(-span, span, n)
    u1, u0 = torch.meshgrid(grid.flip(0), grid, indexing="ij")
    u = torch.stack([u0, u1], -1)  # (n, n, 2) standardized coordinates
    z = loc + (u * sds) @ axes.T  # (n, n, 2)
    images = decode_grid(vae, z)
    fig = Figure(figsize=(14, 7))
    ax_grid, ax_lat = fig.subplots(1, 2)
    ax_grid.imshow(image_grid(images, n, n), cmap="gray", vmin=0, vmax=1, extent=[-span, span, -span, span])
    ax_grid.set_xlabel(f"u[0]: first principal axis (sd {sds[0]:.2f})")
    ax_grid.set_ylabel(f"u[1]: second principal axis (sd {sds[1]:.2f})")
    ax_grid.set_title("Manifold along the prior's principal axes")
    flat = z.reshape(-1, 2).numpy()
    ax_lat.scatter(flat[:, 0], flat[:, 1], s=4, c="C0")
    for k in range(2):
        end = (axes[:, k] * sds[k] * span).numpy()
        ax_lat.plot([loc[0] - end[0], loc[0] + end[0]], [loc[1] - end[1], loc[1] + end[1]], "k-", lw=1)
    lim = float(np.abs(flat).max()) + 0.5
    prior_contours(ax_lat, vae, (-lim, lim), (-lim, lim))
    ax_lat.set_xlabel("z[0]")
    ax_lat.set_ylabel("z[1]")
    ax_lat.set_aspect("equal")
    ax_lat.set_title("Where the tilted grid lies in z (with prior contours)")
    return fig
