"""Image completion: the quadrant masks, the baseline's program and the CVAE's conditional prior and likelihood."""

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae.infer.evaluate import elbo_terms
from pyro_vae.models.completion import HIDDEN_FILL, hide, quadrant_mask
from pyro_vae.workflow.build import build_model

from ..helpers import tiny_config

QUADRANT = {"top_left": (slice(0, 14), slice(0, 14)), "top_right": (slice(0, 14), slice(14, 28)),
            "bottom_left": (slice(14, 28), slice(0, 14)), "bottom_right": (slice(14, 28), slice(14, 28))}


@pytest.mark.parametrize("given, quadrants", [(1, ["bottom_left"]), (2, ["top_left", "bottom_left"]),
                                              (3, ["top_left", "top_right", "bottom_left"])])
def test_the_given_quadrants_and_the_hidden_ones_partition_the_image(given, quadrants):
    mask = quadrant_mask(given).reshape(28, 28)
    for name, (rows, cols) in QUADRANT.items():  # each quadrant wholly given or wholly hidden
        given_here = name in quadrants
        assert bool(mask[rows, cols].all()) == given_here and bool(mask[rows, cols].any()) == given_here
    assert int(mask.sum()) == 196 * given and int((~mask).sum()) == 784 - 196 * given  # disjoint, and all pixels


def test_bad_quadrant_counts_are_refused():
    for given in (0, 4):
        with pytest.raises(ValueError, match="given quadrants must be one of"):
            quadrant_mask(given)


def _parts(given=2, z_dim=3):
    config = tiny_config(model={"completion": given, "z_dim": z_dim, "hidden": [16]},
                         data={"pixels": "grayscale", "validation_size": 10})
    return build_model(config, 50)


def test_the_baselines_elbo_with_its_empty_guide_is_the_hidden_pixels_bce():
    vae, _ = _parts()
    baseline = vae.baseline
    x = torch.rand(6, 784)
    logits = baseline.net(torch.where(baseline.given, x, torch.tensor(HIDDEN_FILL)))
    hidden = ~baseline.given
    bce = F.binary_cross_entropy_with_logits(logits[:, hidden], x[:, hidden], reduction="sum")
    assert Trace_ELBO().loss(baseline.model, baseline.guide, x) == pytest.approx(bce.item(), rel=1e-5)
    assert -baseline.log_likelihood(x).sum().item() == pytest.approx(bce.item(), rel=1e-5)


def test_the_prior_reads_only_the_given_pixels_and_the_likelihood_only_the_hidden_ones():
    vae, guide = _parts()
    x = torch.rand(4, 784)
    other_hidden = hide(x, vae.given, torch.rand(4, 784))  # same given pixels, other hidden ones
    other_given = hide(torch.rand(4, 784), vae.given, x)  # other given pixels, same hidden ones
    p, p_hidden = vae.prior_for(x), vae.prior_for(other_hidden)
    assert torch.equal(p.mean, p_hidden.mean) and torch.equal(p.stddev, p_hidden.stddev)
    assert not torch.allclose(vae.prior_for(other_given).mean, p.mean)
    z = torch.randn(5, 4, 3)
    assert torch.equal(vae.log_likelihood(z, x), vae.log_likelihood(z, other_given))
    assert not torch.allclose(vae.log_likelihood(z, x), vae.log_likelihood(z, other_hidden))
    assert vae.log_likelihood(z, x).shape == (5, 4)


def test_the_evaluations_elbo_is_the_training_objective_on_the_same_draw():
    """elbo_terms (analytic KL(q(z | x) || p(z | x_g))) and TraceMeanField_ELBO on the completion program agree
    when both draw the same z; Trace_ELBO's one-sample KL differs, and the baseline is never trained by it."""
    vae, guide = _parts()
    x = torch.rand(7, 784)
    pyro.set_rng_seed(3)
    terms = elbo_terms(vae, guide, x)
    pyro.set_rng_seed(3)
    loss = TraceMeanField_ELBO().loss(vae.model, guide, x)
    assert loss / 7 == pytest.approx(terms["loss"], rel=1e-5)
    with pyro.poutine.trace(param_only=True) as params:
        Trace_ELBO().differentiable_loss(vae.model, guide, x)
    names = set(params.trace.nodes)
    assert any(n.startswith("prior_net") for n in names) and any(n.startswith("decoder") for n in names)
    assert not any("baseline" in n for n in names)  # frozen: not a parameter of the CVAE's program


def test_the_prior_net_reads_the_given_pixels_filled_with_the_baselines_guess():
    vae, _ = _parts()
    x = torch.rand(4, 784)
    expected = vae.prior_net.posterior(vae.baseline.guess(x))
    assert torch.equal(vae.prior_for(x).mean, expected.mean)
    before = vae.prior_for(x).mean
    with torch.no_grad():
        vae.baseline.net[-1].bias += 1.0  # another baseline, another guess, another prior
    assert not torch.allclose(vae.prior_for(x).mean, before)


def test_cvae_training_leaves_the_baseline_and_its_likelihood_alone():
    """A learned likelihood scale is the baseline's own copy: SVI steps of the CVAE move the CVAE's scale only."""
    from pyro.infer import SVI

    from pyro_vae.infer.optim import adam

    config = tiny_config(model={"completion": 1, "z_dim": 3, "hidden": [16], "likelihood": "normal",
                                "learn_scale": True}, data={"pixels": "grayscale", "validation_size": 10})
    vae, guide = build_model(config, 50)
    frozen = {k: v.clone() for k, v in vae.baseline.state_dict().items()}
    scale = vae.likelihood.log_scale.detach().clone()
    svi = SVI(vae.model, guide, adam(1e-2), Trace_ELBO())
    for _ in range(5):
        svi.step(torch.rand(8, 784))
    assert all(torch.equal(frozen[k], v) for k, v in vae.baseline.state_dict().items())
    assert not torch.equal(vae.likelihood.log_scale, scale)  # the CVAE's own scale did train


def test_completions_keep_the_given_pixels():
    vae, _ = _parts(given=3)
    x = torch.rand(4, 784)
    completed = vae.complete(x, num_samples=2)
    assert completed.shape == (2, 4, 784)
    assert torch.equal(completed[:, :, vae.given], x[:, vae.given].expand(2, 4, -1))
    with pytest.raises(ValueError, match="no unconditional prior"):
        vae.sample_prior(3)
    z = torch.randn(4, 3)
    shown = vae.reconstruction(z, x)  # the figures' reconstructions keep the given pixels too
    assert torch.equal(shown[:, vae.given], x[:, vae.given])
    assert torch.equal(shown[:, ~vae.given], vae.decode_mean(z)[:, ~vae.given])
