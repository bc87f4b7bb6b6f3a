"""Speed benchmarks: pyro_vae against hand-written PyTorch baselines, measured in the same run."""
