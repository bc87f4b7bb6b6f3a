import pytest
import torch
from pyro.distributions.kl import kl_divergence

from pyro_vae.build import build_model
from pyro_vae.evaluate import elbo_terms, kl_term, posterior_means

from .helpers import tiny_config


@pytest.mark.parametrize(
    "prior, guide, estimator",
    [
        ("standard", "amortized", "analytic"),
        ("correlated", "amortized", "analytic"),
        ("correlated", "amortized_full", "analytic"),
        ("learned", "amortized", "analytic"),
        ("mixture", "amortized", "monte_carlo"),
        ("mixture", "amortized_full", "monte_carlo"),
    ],
)
def test_terms_add_up_and_say_how_the_kl_was_computed(tiny_data, prior, guide, estimator):
    vae, q = build_model(tiny_config(prior={"type": prior}, guide={"type": guide}), len(tiny_data))
    terms = elbo_terms(vae, q, tiny_data, batch_size=20)
    assert terms["kl_estimator"] == estimator
    assert terms["elbo"] == pytest.approx(terms["recon"] - terms["kl"])
    assert terms["loss"] == pytest.approx(-terms["elbo"])
    assert terms["convention"] == "log_likelihood"  # binary pixels


def test_analytic_kl_term_is_the_mean_kl_over_the_data(tiny_data):
    vae, guide = build_model(tiny_config(prior={"type": "correlated"}), len(tiny_data))
    terms = elbo_terms(vae, guide, tiny_data, batch_size=7)
    q = guide.posterior(tiny_data.images)
    expected = kl_divergence(q, vae.prior().expand(q.batch_shape)).mean()
    assert terms["kl"] == pytest.approx(expected.item(), rel=1e-5)


def test_recon_term_is_the_log_likelihood_at_a_posterior_sample(tiny_data):
    vae, guide = build_model(tiny_config(), len(tiny_data))
    torch.manual_seed(5)
    terms = elbo_terms(vae, guide, tiny_data, batch_size=len(tiny_data))
    torch.manual_seed(5)
    with torch.no_grad():
        z = guide.posterior(tiny_data.images).rsample()
        recon = vae.likelihood(vae.decoder(z)).log_prob(tiny_data.images).mean()
    assert terms["recon"] == pytest.approx(recon.item(), rel=1e-5)


def test_monte_carlo_kl_fallback_is_unbiased():
    vae, guide = build_model(tiny_config(prior={"type": "mixture"}), 10)
    q = guide.posterior(torch.rand(3, 784).round())
    q_many = q.expand((20000, 3))
    z = q_many.sample()
    kl, analytic = kl_term(q_many, vae.prior(), z)
    assert not analytic and kl.shape == (20000, 3)
    # against a fresh, independent estimate
    z2 = q_many.sample()
    reference = (q_many.log_prob(z2) - vae.prior().log_prob(z2)).mean(0)
    se = (kl.var(0) / 20000).sqrt() * 2**0.5
    assert ((kl.mean(0) - reference).abs() < 4 * se).all()


def test_posterior_means(tiny_data):
    _, guide = build_model(tiny_config(), len(tiny_data))
    means = posterior_means(guide, tiny_data, batch_size=10)
    assert means.shape == (64, 2)
    assert torch.allclose(means, guide.posterior(tiny_data.images).mean, atol=1e-6)
