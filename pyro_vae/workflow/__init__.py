"""The workflow around the models: config, data, run directories, the training loop and its hooks,
evaluation, experiments, the report. Figures are drawn by :mod:`pyro_vae.workflow.figures`,
imported only when drawing (it brings matplotlib)."""
