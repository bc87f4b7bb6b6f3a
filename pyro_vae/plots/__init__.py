"""Figures of VAEs, built on :class:`matplotlib.figure.Figure` (no pyplot, no backend switch).

Every ``plot_*`` function takes tensors (and a :class:`~pyro_vae.models.vae.VAE` where it
decodes) and returns a ``Figure``; callers write it with :func:`pyro_vae.plots.base.save_figure`.
This package imports :mod:`pyro_vae.models` only, never :mod:`pyro_vae.workflow` (which puts a
run's figures together in :mod:`pyro_vae.workflow.figures`), and nothing here is imported by
``import pyro_vae``.

- :mod:`~pyro_vae.plots.base`: image tiles, decoding a grid of codes, :func:`~pyro_vae.plots.base.save_figure`;
- :mod:`~pyro_vae.plots.images`: training curves, reconstructions, image grids, interpolation, previews;
- :mod:`~pyro_vae.plots.latent`: 2-D latents: posterior means over the prior, manifolds, principal axes;
- :mod:`~pyro_vae.plots.latent_3d`: 3-D latents: scatter, projections, manifold slices;
- :mod:`~pyro_vae.plots.over_training`: reconstructions and posterior frames over training, the GIF;
- :mod:`~pyro_vae.plots.study`: the amortization-gap bars and the sweep figure.
"""
