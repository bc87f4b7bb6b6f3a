import torch
import pytest

from pyro_vae.workflow.rules import DISCRETE_GUIDES, DISCRETE_PRIORS
from pyro_vae.workflow.build import (FLOWS, GUIDES, LIKELIHOODS, NAMES, PRIORS, build_model, check_config, check_names,
                                     proper_density)
from pyro_vae.workflow.config import ConfigError, load_config


@pytest.mark.parametrize("key", NAMES)
def test_an_unknown_name_is_refused_with_the_valid_ones(key):
    config = load_config(None, [f"{key}='nosuch'"])
    valid, what = NAMES[key]
    with pytest.raises(ConfigError, match=rf"^unknown {key} 'nosuch'; valid {what}: {', '.join(valid)}$"):
        check_names(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["prior.covariance=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]"],
         r"^prior.covariance = .* is 3 x 3 but model.z_dim = 2; give a 2 x 2 matrix or change model.z_dim$"),
        (["prior.covariance=[[1.0, 2.0], [2.0, 1.0]]"], r"^prior.covariance = .* is not positive-definite"),
        (["prior.loc=[0.0, 1.0, 2.0]"], r"^prior.loc has 3 entries but the prior.covariance is 2 x 2"),
        (["prior.loc=[1e39, 0.0]"], r"^prior.loc = \[1e\+39, 0.0\] with prior.covariance = .* lies so far"),
    ],
)
def test_a_part_s_own_errors_come_back_naming_config_keys(overrides, message):
    """The prior raises ValueError about its arguments (covariance, loc, z_dim); the config layer names the keys."""
    config = load_config(None, ["prior.type='correlated'", *overrides])
    with pytest.raises(ConfigError, match=message):
        check_config(config)
    with pytest.raises(ConfigError, match=message):
        build_model(config, 10)


def test_registries_build_every_part():
    assert set(DISCRETE_PRIORS) <= set(PRIORS) and set(DISCRETE_GUIDES) <= set(GUIDES)  # the rules' names
    for kind in PRIORS:
        discrete = kind in DISCRETE_PRIORS  # over z_dim = 2 codes of 64 classes, one-hot (the relaxed guide's)
        guide = ["guide.type='relaxed_categorical'"] if discrete else []
        vae, _ = build_model(load_config(None, [f"prior.type='{kind}'", *guide]), 10)
        assert vae.prior().event_shape == ((128,) if discrete else (2,))
    for kind in GUIDES:
        discrete = kind in DISCRETE_GUIDES  # 2 codes: 8-dimensional vectors (vq), 64-class one-hots
        prior = ["prior.type='categorical'"] if discrete else []
        _, guide = build_model(load_config(None, [f"guide.type='{kind}'", *prior]), 10)
        families = (None,) if discrete else ("diagonal", "full") if kind not in FLOWS else ("flow",)
        assert guide.family in families  # q* keeps the flows; no local fit of discrete codes
        width = {"vq": 16, "relaxed_categorical": 128}.get(kind, 2)
        assert guide.posterior(torch.zeros(3, 784), torch.arange(3)).event_shape == (width,)
    assert set(LIKELIHOODS) == {"bernoulli", "continuous_bernoulli", "normal"}


@pytest.mark.parametrize(
    "overrides, proper",
    [([], False), (["data.pixels='dynamic'"], True), (["data.pixels='threshold'"], True),
     (["model.likelihood='continuous_bernoulli'"], True)],
)
def test_proper_density_is_the_likelihood_s_own_convention(overrides, proper):
    config = load_config(None, overrides)
    assert proper_density(config) is proper
    vae, _ = build_model(config, 10)
    assert (vae.likelihood.convention == "log_likelihood") is proper


def test_the_vamp_prior_shares_the_guides_encoder_which_one_step_moves_once():
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    from pyro_vae.infer.optim import adam

    pyro.clear_param_store()
    config = load_config(None, ["prior.type='vamp'", "prior.components=4", "model.hidden=[16]"])
    vae, guide = build_model(config, 8)
    assert not any(name.startswith("prior.") and "encoder" in name for name in vae.state_dict())  # saved once
    x = torch.bernoulli(torch.full((8, 784), 0.3))
    encoder_weight = guide.encoder.net[0].weight
    z = torch.randn(5, 2)
    (grad,) = torch.autograd.grad(vae.prior().log_prob(z).sum(), encoder_weight)
    assert grad.abs().sum() > 0  # the prior term reaches the encoder
    before = encoder_weight.detach().clone()
    SVI(vae.model, guide, adam(1e-3), Trace_ELBO()).step(x)
    names = [name for name, value in pyro.get_param_store().named_parameters() if value is encoder_weight]
    assert len(names) == 1  # registered by the guide only
    moved = (encoder_weight.detach() - before).abs()
    assert 0 < moved.max() <= 1e-3 * 1.001  # Adam's first step moves a parameter by at most lr: stepped once
