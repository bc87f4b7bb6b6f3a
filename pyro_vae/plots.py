"""A run's figures, drawn with matplotlib (Agg, no screen needed), and the shared helpers.

:func:`draw_figures` writes the set into a run's ``figures/``: training curves, test
reconstructions, prior samples, an interpolation and, for a 2-D latent, the test-set
posterior means coloured by digit (with the prior's contours), the decoded manifold
over [-3, 3]^2 and, for a Gaussian prior with correlations, the "tilted" manifold
laid out along the prior's principal axes. 3-D latents: :mod:`pyro_vae.plots_3d`;
figures over training: :mod:`pyro_vae.plots_over_training`; studies and sweeps:
:mod:`pyro_vae.plots_study`.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .data import IMAGE_SHAPE, ImageData  # noqa: E402
from .vae import VAE  # noqa: E402

H, W = IMAGE_SHAPE


def image_grid(images: torch.Tensor, rows: int, cols: int) -> np.ndarray:
    """Tile ``rows * cols`` flat images ``(n, 784)`` into one ``(rows*28, cols*28)`` array."""
    images = images.detach().cpu().reshape(rows, cols, H, W)
    return images.permute(0, 2, 1, 3).reshape(rows * H, cols * W).numpy()


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(history: list[dict], path: Path) -> Path:
    """Per-image loss (train and test), test reconstruction term and test KL against epoch."""
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if all("test_loss" in r for r in history):
        axes[0].plot(epochs, [r["test_loss"] for r in history], "s-", label="test")
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
    return save_figure(fig, path)


def plot_reconstructions(originals: torch.Tensor, reconstructions: torch.Tensor, path: Path) -> Path:
    """Two rows: test images (top) and the decoder's mean at their posterior means (bottom)."""
    n = originals.shape[0]
    fig, axes = plt.subplots(2, 1, figsize=(n * 0.9, 2.2))
    for ax, images, title in zip(axes, (originals, reconstructions), ("test images", "reconstructions")):
        ax.imshow(image_grid(images, 1, n), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return save_figure(fig, path)


def plot_image_grid(images: torch.Tensor, rows: int, cols: int, title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(cols * 0.6, rows * 0.6 + 0.4))
    ax.imshow(image_grid(images, rows, cols), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
    return save_figure(fig, path)


def _prior_contours(ax, vae: VAE, xlim, ylim) -> None:
    """Contours of log p(z) over the axes' window (2-D latents only)."""
    u = torch.linspace(*xlim, 200)
    v = torch.linspace(*ylim, 200)
    uu, vv = torch.meshgrid(u, v, indexing="xy")
    z = torch.stack([uu, vv], -1)  # (200, 200, 2)
    with torch.no_grad():
        density = vae.prior().log_prob(z.to(_prior_device(vae))).exp().cpu()
    peak = density.max().item()
    levels = [peak * np.exp(-0.5 * r**2) for r in (3, 2, 1)]  # 1, 2, 3 "sigma" for a Gaussian
    ax.contour(uu.numpy(), vv.numpy(), density.numpy(), levels=levels, colors="k", linewidths=1)


def _prior_device(vae: VAE) -> torch.device:
    tensors = list(vae.prior.parameters()) + list(vae.prior.buffers())
    return tensors[0].device if tensors else torch.device("cpu")


def plot_latent_scatter(codes: torch.Tensor, labels: torch.Tensor, vae: VAE, path: Path) -> Path:
    """Test-set posterior means E_q[z|x] coloured by digit, over the prior's density contours."""
    codes, labels = codes.detach().cpu().numpy(), labels.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    points = ax.scatter(codes[:, 0], codes[:, 1], c=labels, cmap="tab10", s=3, alpha=0.7, vmin=-0.5, vmax=9.5)
    lo = np.minimum(codes.min(0), -3.5)
    hi = np.maximum(codes.max(0), 3.5)
    _prior_contours(ax, vae, (lo[0], hi[0]), (lo[1], hi[1]))
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title("Test-set posterior means by digit\n(black: prior density contours at 1, 2, 3 sd)")
    ax.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path)


@torch.no_grad()
def decode_grid(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """Decoder means for a ``(..., z_dim)`` array of codes, flat ``(n, 784)``."""
    return vae.decode_mean(z.reshape(-1, z.shape[-1]).to(_prior_device(vae))).cpu()


def plot_manifold(vae: VAE, path: Path, n: int = 20, span: float = 3.0) -> Path:
    """Decoded images over an ``n x n`` grid of z in [-span, span]^2 (z[1] grows upwards)."""
    axis = torch.linspace(-span, span, n)
    z1, z0 = torch.meshgrid(axis.flip(0), axis, indexing="ij")  # row 0 = top = largest z[1]
    images = decode_grid(vae, torch.stack([z0, z1], -1))
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(image_grid(images, n, n), cmap="gray", vmin=0, vmax=1,
              extent=[-span, span, -span, span])
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    ax.set_title(f"Decoded manifold, z on a {n}x{n} grid over [-{span:g}, {span:g}]^2")
    return save_figure(fig, path)


def principal_axes(vae: VAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(loc, axes, sds)`` of a Gaussian prior: Sigma = U diag(sd^2) U^T; None if not Gaussian."""
    prior = vae.prior()
    if not hasattr(prior, "covariance_matrix"):
        return None
    sigma = prior.covariance_matrix.detach().cpu().double()
    variances, axes = torch.linalg.eigh(sigma)  # ascending
    return prior.loc.detach().cpu().float(), axes.flip(-1).float(), variances.flip(-1).sqrt().float()


def plot_tilted_manifold(vae: VAE, path: Path, n: int = 20, span: float = 3.0) -> Path | None:
    """Decoded images along the prior's principal axes: z = loc + U diag(sd) u, u in [-span, span]^2."""
    found = principal_axes(vae)
    if found is None:
        return None
    loc, axes, sds = found
    grid = torch.linspace(-span, span, n)
    u1, u0 = torch.meshgrid(grid.flip(0), grid, indexing="ij")
    u = torch.stack([u0, u1], -1)  # (n, n, 2) standardized coordinates
    z = loc + (u * sds) @ axes.T  # (n, n, 2)
    images = decode_grid(vae, z)
    fig, (ax_grid, ax_lat) = plt.subplots(1, 2, figsize=(14, 7))
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
    _prior_contours(ax_lat, vae, (-lim, lim), (-lim, lim))
    ax_lat.set_xlabel("z[0]")
    ax_lat.set_ylabel("z[1]")
    ax_lat.set_aspect("equal")
    ax_lat.set_title("Where the tilted grid lies in z (with prior contours)")
    return save_figure(fig, path)


def first_index(labels: torch.Tensor, label: int) -> int | None:
    """The row of the first image labelled ``label`` (None if there is none)."""
    found = (labels.cpu() == label).nonzero()
    return int(found[0]) if len(found) else None


def example_indices(labels: torch.Tensor, n: int = 10) -> torch.Tensor:
    """Rows to show: the first image of each class 0, 1, ..., then the first others, ``n`` in all."""
    firsts = [i for i in (first_index(labels, c) for c in range(n)) if i is not None]
    rest = [i for i in range(len(labels)) if i not in set(firsts)][: max(0, n - len(firsts))]
    return torch.tensor((firsts + rest)[:n], dtype=torch.long)


def plot_interpolation(vae: VAE, x_a: torch.Tensor, x_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                       path: Path, steps: int = 10, title: str = "") -> Path:
    """Decoder means along z_t = (1 - t) z_a + t z_b, t in [0, 1] (``steps`` points), between two images."""
    t = torch.linspace(0, 1, steps).unsqueeze(-1)
    z = (1 - t) * z_a.cpu() + t * z_b.cpu()
    row = torch.cat([x_a.cpu().reshape(1, -1), decode_grid(vae, z), x_b.cpu().reshape(1, -1)])
    fig, ax = plt.subplots(figsize=((steps + 2) * 0.9, 1.6))
    ax.imshow(image_grid(row, 1, steps + 2), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title or f"Linear interpolation in z, {steps} steps (outer images: the two test digits)",
                 fontsize=10)
    ax.axis("off")
    return save_figure(fig, path)


def draw_interpolation(vae: VAE, test: ImageData, codes: torch.Tensor, path: Path,
                       digits: tuple[int, int] = (3, 8), steps: int = 10) -> Path | None:
    """Interpolate between the first test image of each of ``digits``; None if one is missing."""
    a, b = (first_index(test.labels, digit) for digit in digits)
    if a is None or b is None:
        return None
    title = f"From a test {digits[0]} to a test {digits[1]}: decoder means along a straight line in z ({steps} steps)"
    return plot_interpolation(vae, test.images[a], test.images[b], codes[a], codes[b], path, steps, title)


def draw_figures(
    fig_dir: Path, vae: VAE, test: ImageData, codes: torch.Tensor, history: list[dict], n_show: int = 10,
    snapshots: dict | None = None, snapshot_images: ImageData | None = None,
) -> list[Path]:
    """Write the figures of a run; ``codes`` are the test posterior means ``(N, z_dim)``.

    Every run: training curves, reconstructions of one test digit per class, 100 prior
    samples, an interpolation from a test 3 to a test 8. z = 2: latent scatter, manifold
    (and the tilted manifold under a correlated prior). z = 3: 3-D scatter, pairwise
    projections, manifold slices. With ``snapshots`` (see :func:`pyro_vae.train.take_snapshot`):
    reconstructions over training and, for z = 2, the posterior's frames and GIF, of
    ``snapshot_images`` (default ``test``).
    """
    from . import plots_3d, plots_over_training

    fig_dir = Path(fig_dir)
    written = [plot_training_curves(history, fig_dir / "training_curves.png")]
    shown = example_indices(test.labels, n_show)
    with torch.no_grad():
        written.append(plot_reconstructions(test.images[shown].cpu(), vae.decode_mean(codes[shown]).cpu(),
                                            fig_dir / "reconstructions.png"))
        samples = vae.decode_mean(vae.sample_prior(100)).cpu()
    written.append(plot_image_grid(samples, 10, 10, "100 samples from the prior, decoded (E[x|z])",
                                   fig_dir / "prior_samples.png"))
    written.append(draw_interpolation(vae, test, codes, fig_dir / "interpolation.png"))
    if vae.z_dim == 2:
        written.append(plot_latent_scatter(codes, test.labels, vae, fig_dir / "latent_scatter.png"))
        written.append(plot_manifold(vae, fig_dir / "manifold.png"))
        if has_tilt(vae):
            written.append(plot_tilted_manifold(vae, fig_dir / "manifold_tilted.png"))
    if vae.z_dim == 3:
        written.append(plots_3d.plot_latent_3d(codes, test.labels, fig_dir / "latent_scatter_3d.png"))
        written.append(plots_3d.plot_latent_projections(codes, test.labels, fig_dir / "latent_projections.png"))
        written.append(plots_3d.plot_manifold_slices(vae, fig_dir / "manifold_slices.png"))
    if snapshots:
        followed = test if snapshot_images is None else snapshot_images
        written += plots_over_training.draw_training_snapshots(fig_dir, followed, snapshots,
                                                               example_indices(followed.labels, n_show))
    return [path for path in written if path is not None]


def has_tilt(vae: VAE) -> bool:
    """Whether p(z) is a Gaussian whose principal axes differ in scale (so its grid is tilted)."""
    found = principal_axes(vae)
    return found is not None and not torch.allclose(found[2], found[2][0].expand_as(found[2]), rtol=1e-3)


def preview_png(path: str | Path, width: int = 800, colors: int = 128) -> bytes:
    """A figure file shrunk to at most ``width`` pixels and ``colors`` colours, as PNG bytes
    (for notebooks: a few times smaller to store, same content)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        image.quantize(colors=colors).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()
