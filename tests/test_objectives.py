import math
import warnings

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.build import build_model
from pyro_vae.config import ConfigError
from pyro_vae.guides import GUIDES
from pyro_vae.objectives import OBJECTIVES, build_objective
from pyro_vae.optim import adam
from pyro_vae.priors import PRIORS

from .helpers import tiny_config


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("guide_kind", GUIDES)
@pytest.mark.parametrize("prior_kind", PRIORS)
def test_every_prior_guide_objective_trains(tiny_data, prior_kind, guide_kind, objective):
    config = tiny_config(prior={"type": prior_kind}, guide={"type": guide_kind})
    vae, guide = build_model(config, len(tiny_data))
    svi = SVI(vae.model, guide, adam(1e-2), build_objective(objective))
    generator = torch.Generator().manual_seed(0)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pyro warnings (shape, plate or mean-field misuse)
        while len(losses) < 100:
            for idx, x in tiny_data.batches(16, generator):
                losses.append(svi.step(x, idx) / len(tiny_data))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 20
    idx = torch.arange(4)
    trace = poutine.trace(guide).get_trace(tiny_data.pixels_at(idx), idx)
    assert trace.nodes["z"]["value"].shape == (4, 2)


def test_unknown_objective():
    with pytest.raises(ConfigError, match="valid objectives: trace, trace_mean_field"):
        build_objective("iwae")


def _loss_draws(objective, vae, guide, x, draws):
    return torch.tensor([objective.loss(vae.model, guide, x) for _ in range(draws)])


@pytest.mark.parametrize("guide_kind", ["amortized", "amortized_full"])
def test_analytic_kl_and_monte_carlo_elbos_agree(tiny_data, guide_kind):
    """TraceMeanField_ELBO (analytic KL) and Trace_ELBO estimate the same ELBO."""
    config = tiny_config(prior={"type": "correlated"}, guide={"type": guide_kind})
    vae, guide = build_model(config, len(tiny_data))
    with torch.no_grad():  # a guide far from the prior, so the KL term matters
        guide.loc_head.bias.fill_(1.5)
    x = tiny_data.images[:4]
    pyro.set_rng_seed(0)
    mc = _loss_draws(Trace_ELBO(), vae, guide, x, 600)
    analytic = _loss_draws(TraceMeanField_ELBO(), vae, guide, x, 600)
    se = (mc.var() / len(mc) + analytic.var() / len(analytic)).sqrt()
    assert abs(mc.mean() - analytic.mean()) < 4 * se
    assert analytic.std() < mc.std()  # the analytic KL removes that term's variance
