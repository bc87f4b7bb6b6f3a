"""A run's figures: which plots a run gets, from which tensors, under which file names.

:func:`draw_figures` writes the set into a run's ``figures/``: training curves, test
reconstructions, prior samples, an interpolation and, for a 2-D latent, the test-set
posterior means coloured by digit (with the prior's contours), the decoded manifold
over [-3, 3]^2 and, for a Gaussian prior with correlations, the "tilted" manifold laid
out along the prior's principal axes; for a 3-D latent the 3-D scatter, its projections
and manifold slices; with snapshots the figures over training. The figures themselves are
built in :mod:`pyro_vae.plots`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.conditional import one_hot
from ..models.vae import VAE
from ..plots import conditional as conditional_plots
from ..plots.completion import plot_completions
from ..plots import images as image_plots
from ..plots import latent, latent_3d, over_training
from ..plots.base import save_figure
from .config import Config
from .data import ImageData, example_indices, first_index, load_run_data
from .evaluation import evaluate_test_set, is_discrete, snapshot_data
from .runs import RunDir, best_epoch, load_run
from .streams import seeded


def draw_interpolation(vae: VAE, test_images: torch.Tensor, test_labels: torch.Tensor, codes: torch.Tensor,
                       path: Path, digits: tuple[int, int] = (3, 8), steps: int = 10) -> Path | None:
    """Interpolate between the first test image of each of ``digits``; None if one is missing."""
    a, b = (first_index(test_labels, digit) for digit in digits)
    if a is None or b is None:
        return None
    title = f"From a test {digits[0]} to a test {digits[1]}: decoder means along a straight line in z ({steps} steps)"
    fig = image_plots.plot_interpolation(vae, test_images[a], test_images[b], codes[a], codes[b], steps, title)
    return save_figure(fig, path)


def draw_training_snapshots(fig_dir: Path, images: torch.Tensor, labels: torch.Tensor, snapshots: dict,
                            shown: torch.Tensor) -> list[Path]:
    """The figures over training for one run, of the images the snapshots follow (``images``,
    ``labels``); ``shown`` are the example digits' rows."""
    fig_dir = Path(fig_dir)
    fig = over_training.plot_reconstructions_over_epochs(images[shown], snapshots)
    written = [save_figure(fig, fig_dir / "reconstructions_over_epochs.png")]
    if over_training.has_2d_codes(snapshots):
        fig = over_training.plot_posterior_frames(snapshots, labels)
        written.append(save_figure(fig, fig_dir / "posterior_during_training.png"))
        written.append(over_training.save_posterior_gif(snapshots, labels, fig_dir / "posterior_during_training.gif"))
    return written


def draw_figures(
    fig_dir: Path, vae: VAE, test_images: torch.Tensor, test_labels: torch.Tensor, codes: torch.Tensor,
    history: list[dict], n_show: int = 10, snapshots: dict | None = None,
    snapshot_images: torch.Tensor | None = None, snapshot_labels: torch.Tensor | None = None,
) -> list[Path]:
    """Write the figures of a run; ``codes`` are the test posterior means ``(N, z_dim)``.

    Every run: training curves, reconstructions of one test digit per class, 100 prior
    samples, an interpolation from a test 3 to a test 8. z = 2: latent scatter, manifold
    (and the tilted manifold under a correlated prior). z = 3: 3-D scatter, pairwise
    projections, manifold slices. A conditional VAE (its decoder needs a label) draws, in place of
    the prior samples, interpolation and manifolds, the samples by label (rows y, columns z ~ p(z))
    and the style transfer of the example digits; an image-completion CVAE its completions of them
    (:func:`pyro_vae.plots.completion.plot_completions`) in place of the prior samples, interpolation and
    manifolds; discrete codes (a categorical prior) no interpolation, scatter or manifold. With ``snapshots`` (see
    :func:`pyro_vae.workflow.training.take_snapshot`): reconstructions over training and, for z = 2, the
    posterior's frames and GIF, of ``snapshot_images`` / ``snapshot_labels`` (default: the test images and labels).
    """
    fig_dir = Path(fig_dir)

    def save(fig, name: str) -> Path | None:
        return None if fig is None else save_figure(fig, fig_dir / name)

    written = [save(image_plots.plot_training_curves(history, best_epoch(history)), "training_curves.png")]
    shown = example_indices(test_labels, n_show)
    given = (one_hot(test_labels[shown], vae.num_classes).to(codes.device),) if vae.conditional else ()
    with torch.no_grad():
        reconstructions = vae.reconstruction(codes[shown], test_images[shown].to(codes.device), *given).cpu()
    written.append(save(image_plots.plot_reconstructions(test_images[shown].cpu(), reconstructions),
                        "reconstructions.png"))
    completion = vae.task == "completion"  # p(z | x_g): no prior of its own to sample, contour or lay out
    discrete = is_discrete(vae)  # codes, not points of a plane or a space: no scatter, manifold or interpolation
    if completion:
        written.append(save(plot_completions(vae, test_images[shown]), "completions.png"))
    elif vae.conditional:
        written.append(save(conditional_plots.plot_samples_by_label(vae), "samples_by_label.png"))
        written.append(save(conditional_plots.plot_style_transfer(vae, test_images[shown], codes[shown]),
                            "style_transfer.png"))
    else:
        with torch.no_grad():
            samples = vae.decode_mean(vae.sample_prior(100)).cpu()
        written.append(save(image_plots.plot_image_grid(samples, 10, 10,
                                                        "100 samples from the prior, decoded (E[x|z])"),
                            "prior_samples.png"))
        if not discrete:  # a straight line between two codes leaves the set of codes
            written.append(draw_interpolation(vae, test_images, test_labels, codes, fig_dir / "interpolation.png"))
    if vae.z_dim == 2 and not (completion or discrete):
        written.append(save(latent.plot_latent_scatter(codes, test_labels, vae), "latent_scatter.png"))
        if not vae.conditional:
            written.append(save(latent.plot_manifold(vae), "manifold.png"))
            if latent.has_tilt(vae):
                written.append(save(latent.plot_tilted_manifold(vae), "manifold_tilted.png"))
    if vae.z_dim == 3 and not (completion or discrete):
        written.append(save(latent_3d.plot_latent_3d(codes, test_labels), "latent_scatter_3d.png"))
        written.append(save(latent_3d.plot_latent_projections(codes, test_labels), "latent_projections.png"))
        if not vae.conditional:
            written.append(save(latent_3d.plot_manifold_slices(vae), "manifold_slices.png"))
    if snapshots:
        followed_images = test_images if snapshot_images is None else snapshot_images
        followed_labels = test_labels if snapshot_labels is None else snapshot_labels
        written += draw_training_snapshots(fig_dir, followed_images, followed_labels, snapshots,
                                           example_indices(followed_labels, n_show))
    return [path for path in written if path is not None]


def draw_run_figures(run_dir: RunDir, vae: VAE, codes: torch.Tensor, test: ImageData, history: list[dict],
                     config: Config, device, snapshots: dict | None = None,
                     snapshot_images: ImageData | None = None) -> list[Path]:
    """A run's figures in its ``figures/``, from the test posterior means; prior samples on a seeded stream.

    :param codes: the test images' posterior means (:attr:`~pyro_vae.workflow.evaluation.EvaluatedSet.codes`;
        for a mean-field run, of its fitted test Gaussians).
    :param snapshot_images: the images the snapshots follow (:func:`~pyro_vae.workflow.evaluation.snapshot_data`).
    """
    followed = test if snapshot_images is None else snapshot_images
    with seeded(config.train.seed + 2, device):
        return draw_figures(RunDir(run_dir).figures, vae, test.images, test.labels, codes, history,
                            snapshots=snapshots, snapshot_images=followed.images, snapshot_labels=followed.labels)


def redraw_figures(run_dir, data_dir=None) -> list[Path]:
    """Draw a run's figures again from its directory (the data are reloaded, the test fit read from its cache)."""
    run = load_run(run_dir)
    train, test = load_run_data(run.config, data_dir)
    codes = evaluate_test_set(run.vae, run.guide, test, run.config, "cpu", cache=run.dir.local_fit).codes
    return draw_run_figures(run.dir, run.vae, codes, test, run.history, run.config, "cpu", run.snapshots,
                            snapshot_data(run.guide, train, test))
