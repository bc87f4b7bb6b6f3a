import pytest
import torch

from pyro_vae.workflow.checkpoint import CheckpointError
from pyro_vae.workflow.config import ConfigError
from pyro_vae.infer.evaluate import elbo_terms
from pyro_vae.workflow.runs import load_run
from pyro_vae.workflow.training import train

from ..helpers import tiny_config


@pytest.mark.mnist
def test_load_run_gives_back_a_ready_model(tmp_path, data_dir):
    config = tiny_config(prior={"type": "learned"})
    config.data.train_size, config.data.test_size = 300, 100
    config.train.epochs = 1
    out = train(config, tmp_path / "r", data_dir, progress=False, log=lambda line: None)
    run = load_run(out)
    assert run.config == config and len(run.history) == 1
    assert run.metrics["epochs"] == 1
    assert run.vae.sample_prior(4).shape == (4, 2)
    assert run.vae.num_data == 300 and not run.vae.training
    # the learned prior's parameters came back, not the initial N(0, I)
    assert not torch.equal(run.vae.prior.loc, torch.zeros(2))

    from pyro_vae.workflow.data import load_data
    from pyro_vae.workflow.streams import seeded

    _, test = load_data("mnist", config.data.pixels, data_dir, 300, 100)
    with seeded(config.train.seed + 1):
        terms = elbo_terms(run.vae, run.guide, test.observed().images, config.train.eval_batch_size)
    assert terms["loss"] == pytest.approx(run.metrics["test_loss"], rel=1e-5)


def test_load_run_errors(tmp_path):
    with pytest.raises(ConfigError, match="is not a run directory"):
        load_run(tmp_path)
    tiny_config().save(tmp_path / "config.toml")
    with pytest.raises(CheckpointError, match="not found"):
        load_run(tmp_path)
