import math

import pytest
import torch
from pyro.distributions.kl import kl_divergence

from pyro_vae.workflow.build import build_model
from pyro_vae.infer.evaluate import elbo_terms, kl_term, posterior_means

from ..helpers import linear_gaussian_conditional, tiny_config


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
    terms = elbo_terms(vae, q, tiny_data.images, batch_size=20)
    assert terms["kl_estimator"] == estimator
    assert terms["elbo"] == pytest.approx(terms["recon"] - terms["kl"])
    assert terms["loss"] == pytest.approx(-terms["elbo"])
    assert terms["convention"] == "log_likelihood"  # binary pixels


def test_analytic_kl_term_is_the_mean_kl_over_the_data(tiny_data):
    vae, guide = build_model(tiny_config(prior={"type": "correlated"}), len(tiny_data))
    terms = elbo_terms(vae, guide, tiny_data.images, batch_size=7)
    q = guide.posterior(tiny_data.images)
    expected = kl_divergence(q, vae.prior().expand(q.batch_shape)).mean()
    assert terms["kl"] == pytest.approx(expected.item(), rel=1e-5)


def test_recon_term_is_the_log_likelihood_at_a_posterior_sample(tiny_data):
    vae, guide = build_model(tiny_config(), len(tiny_data))
    torch.manual_seed(5)
    terms = elbo_terms(vae, guide, tiny_data.images, batch_size=len(tiny_data))
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
    means = posterior_means(guide, tiny_data.images, batch_size=10)
    assert means.shape == (64, 2)
    assert torch.allclose(means, guide.posterior(tiny_data.images).mean, atol=1e-6)


# --- ground truth: a linear-Gaussian VAE has an exact log p(x) ---------------------------
import pyro.distributions as dist  # noqa: E402

from pyro_vae.infer.evaluate import active_units, importance_log_likelihood, importance_log_likelihood_over_labels  # noqa: E402
from pyro_vae.models.guides import Guide  # noqa: E402

from ..helpers import linear_gaussian  # noqa: E402


class _GaussianProposal(Guide):
    """The exact posterior's mean with diagonal scales inflated by ``widen``: a good, imperfect q."""

    def __init__(self, W, b, s, widen):
        super().__init__(num_data=1)
        precision = torch.eye(W.shape[1]) + W.T @ W / s**2
        self.cov = torch.linalg.inv(precision)
        self.W, self.b, self.s, self.widen = W, b, s, widen

    def posterior(self, x, idx=None):
        loc = (x - self.b) @ self.W @ self.cov / self.s**2  # (B, z_dim); cov is symmetric
        scale = self.cov.diagonal().sqrt() * self.widen
        return dist.Normal(loc, scale.expand_as(loc)).to_event(1)


def _linear_gaussian(n=300, d=6, k=3, s=0.5, seed=0):
    vae, W, b, s, x, exact = linear_gaussian(n, d, k, s, orthogonal=False, seed=seed)
    return vae, W, b, s, x, exact


def test_importance_sampling_matches_the_exact_log_likelihood():
    vae, W, b, s, x, exact = _linear_gaussian()
    guide = _GaussianProposal(W, b, s, widen=1.3)
    estimate = importance_log_likelihood(vae, guide, x, num_samples=3000, chunk_size=700, batch_size=64)
    assert estimate["per_datapoint"].shape == exact.shape
    assert (estimate["per_datapoint"] - exact).abs().mean() < 0.05  # per datapoint, not only on average
    assert abs(estimate["log_likelihood"] - exact.mean().item()) < 0.05
    elbo = elbo_terms(vae, guide, x)["elbo"]
    assert elbo < exact.mean().item() - 0.05  # the ELBO is a strict lower bound here


def test_the_compiled_estimator_gives_the_eager_estimate(tiny_data):
    from pyro_vae.infer import compiled

    vae, guide = build_model(tiny_config(), len(tiny_data))
    estimates = {}
    for compile in (False, True):
        torch.manual_seed(3)  # the same draws: only log p(x | z) differs between the two
        estimates[compile] = importance_log_likelihood(vae, guide, tiny_data.images, num_samples=40,
                                                       compile=compile)["per_datapoint"]
    failure = compiled.KERNELS[type(vae).log_likelihood].failure
    if failure:
        pytest.skip(f"torch.compile does not work on this machine: {failure}")
    assert torch.allclose(estimates[True], estimates[False], rtol=0, atol=2e-4)
    assert not torch.allclose(estimates[False][1:], estimates[False][:-1], atol=1e-2)  # per image, not one value


def test_an_estimate_compiles_only_when_it_decodes_enough_codes(tiny_data, monkeypatch):
    import pyro_vae.infer.evaluate as evaluate
    from pyro_vae.infer import compiled

    vae, guide = build_model(tiny_config(), len(tiny_data))
    n, asked = len(tiny_data), []
    monkeypatch.setattr(evaluate, "log_weight_for",
                        lambda model, compile: asked.append(compile) or compiled.log_weight_for(model, False))
    monkeypatch.delenv(compiled.ENVIRONMENT, raising=False)
    monkeypatch.setattr(compiled, "COMPILE_MIN_ROWS", 20 * n)
    for k, compile in ((19, None), (20, None), (20, False), (1, True)):
        importance_log_likelihood(vae, guide, tiny_data.images, num_samples=k, compile=compile)
    assert asked == [False, True, False, True]
    m2, m2_guide = build_model(tiny_config(model={"labels": "latent"}, data={"labelled": 10}), n)  # C x K x N decide
    asked.clear()
    importance_log_likelihood_over_labels(m2, m2_guide, tiny_data.images, num_samples=2)
    importance_log_likelihood_over_labels(m2, m2_guide, tiny_data.images, num_samples=1)
    assert asked == [True] * 10 + [False] * 10


def test_iwae_bounds_rise_towards_log_likelihood_with_k():
    vae, W, b, s, x, exact = _linear_gaussian(seed=1)
    guide = _GaussianProposal(W, b, s, widen=1.6)
    bounds = [importance_log_likelihood(vae, guide, x, num_samples=k)["log_likelihood"] for k in (1, 10, 100, 2000)]
    gaps = [exact.mean().item() - bound for bound in bounds]
    # K = 100 is within about 0.015 nat of log p(x) here, of the order of the estimates' own noise (about 0.01
    # over these 300 points; a draw gave -0.009 at K = 100 against 0.003 at K = 2,000): K = 2,000 is held to
    # the exact value, not ordered against K = 100
    assert gaps[0] > gaps[1] > gaps[2] > -0.05 and gaps[1] > gaps[3]
    assert gaps[0] > 0.2 and abs(gaps[3]) < 0.05


class _ExactPosterior(_GaussianProposal):
    def posterior(self, x, idx=None):
        loc = (x - self.b) @ self.W @ self.cov / self.s**2
        return dist.MultivariateNormal(loc, covariance_matrix=self.cov)


@pytest.mark.parametrize("num_samples, chunk_size, batch_size", [(1, 250, 100), (600, 37, 9), (5, 2, 7)])
def test_with_the_exact_posterior_any_chunking_is_exact(num_samples, chunk_size, batch_size):
    """Every log-weight is then log p(x): the chunked logsumexp must give it back exactly."""
    vae, W, b, s, x, exact = _linear_gaussian(n=50, seed=2)
    estimate = importance_log_likelihood(vae, _ExactPosterior(W, b, s, 1.0), x, num_samples=num_samples,
                                         chunk_size=chunk_size, batch_size=batch_size)
    assert torch.allclose(estimate["per_datapoint"], exact, atol=1e-3)


def test_active_units_counts_used_dimensions():
    class Half(Guide):
        def posterior(self, x, idx=None):
            loc = torch.stack([x[:, 0], x[:, 1], torch.zeros_like(x[:, 0])], -1)
            return dist.Normal(loc, torch.ones_like(loc)).to_event(1)

    result = active_units(Half(500), torch.randn(500, 4))
    assert result["active_units"] == 2 and len(result["activity"]) == 3


def test_elbo_terms_hand_back_the_posterior_means_of_its_pass(tiny_data):
    vae, guide = build_model(tiny_config(), len(tiny_data))
    means = []
    elbo_terms(vae, guide, tiny_data.images, batch_size=7, means=means)
    assert len(means) == -(-len(tiny_data) // 7)
    assert torch.equal(torch.cat(means), posterior_means(guide, tiny_data.images, batch_size=7))


def _exact_m2():
    """M2 on the linear-Gaussian conditional model, q(z | x, y) exact and q(y | x) = p(y | x) exactly:
    log p(y | x) = x^T S^-1 b_y - b_y^T S^-1 b_y / 2 + const, S = W W^T + s^2 I (a linear classifier)."""
    from torch import nn

    from pyro_vae.models.semisupervised import SemiSupervisedGuide, SemiSupervisedVAE, SetSizes

    sets = SetSizes(4, 4)
    classifier = nn.Linear(6, 3)
    vae, guide, x, y, exact, (w, b, s) = linear_gaussian_conditional(
        lambda *parts: SemiSupervisedVAE(*parts, sets.num_labelled, sets.num_unlabelled, 3),
        lambda encoder, z_dim: SemiSupervisedGuide(encoder, classifier, z_dim, sets))
    precision = torch.linalg.inv(w @ w.T + s**2 * torch.eye(6))
    classifier.weight.data = (precision @ b).T
    classifier.bias.data = -0.5 * torch.einsum("dc,de,ec->c", b, precision, b)
    classes = torch.eye(3)
    marginal = torch.stack([torch.distributions.MultivariateNormal(
        b @ classes[c], covariance_matrix=w @ w.T + s**2 * torch.eye(6)).log_prob(x) for c in range(3)])  # (C, N)
    log_px = torch.logsumexp(marginal - math.log(3), 0)
    return vae, guide, x, y, log_px, marginal


def test_m2_log_likelihood_sums_the_label_out_exactly():
    from pyro_vae.infer.evaluate import importance_log_likelihood_over_labels

    vae, guide, x, _, log_px, _ = _exact_m2()
    got = importance_log_likelihood_over_labels(vae, guide, x, num_samples=5)
    assert torch.allclose(got["per_datapoint"], log_px, atol=1e-4)  # exact z posterior per class: no variance


def test_label_inference_recovers_the_exact_label_posterior_and_its_kl():
    """On the exact M2, log_joint's softmax is p(y | x); q(y | x) = p(y | x) gives KL 0, a uniform q gives
    KL(uniform || p(y | x)) = sum_y (log 1/C - log p(y | x)) / C by hand."""
    from pyro_vae.infer.evaluate import importance_log_likelihood_over_labels, label_inference, stderr

    vae, guide, x, _, _, marginal = _exact_m2()
    exact = torch.log_softmax(marginal.T, -1)  # (N, C): the priors are uniform
    got = importance_log_likelihood_over_labels(vae, guide, x, num_samples=5)
    assert torch.allclose(got["log_joint"].logsumexp(-1), got["per_datapoint"])
    assert torch.allclose(got["log_joint"] - got["log_joint"].logsumexp(-1, keepdim=True), exact, atol=1e-4)
    labels = exact.argmax(-1)
    matched = label_inference(guide, x, labels, got["log_joint"], batch_size=3)
    assert matched["model_accuracy"] == 1.0 and matched["agreement"] == 1.0
    assert matched["kl"] == pytest.approx(0.0, abs=1e-4)
    guide.classifier.weight.data.zero_()
    guide.classifier.bias.data.zero_()
    uniform = label_inference(guide, x, (labels + 1) % 3, got["log_joint"])
    by_hand = (-math.log(3) - exact).mean(-1)
    assert uniform["kl"] == pytest.approx(by_hand.mean().item(), abs=1e-4) and uniform["kl"] > 0.1
    assert uniform["kl_stderr"] == pytest.approx(stderr(by_hand), abs=1e-4)
    assert uniform["model_accuracy"] == 0.0  # the model's guesses, scored against labels all shifted by one
    assert uniform["agreement"] == pytest.approx((exact.argmax(-1) == 0).float().mean().item())  # q's ties: class 0
    assert matched["confusion"] == torch.diag(torch.bincount(labels, minlength=3)).tolist()  # every guess right
    shifted = torch.zeros(3, 3, dtype=torch.long)
    for label in (labels + 1) % 3:
        shifted[label, 0] += 1  # the uniform q guesses class 0 (its ties), whatever the label
    assert uniform["confusion"] == shifted.tolist()


def test_label_inferences_confusion_counts_each_true_label_against_qs_guess():
    from pyro_vae.infer.evaluate import label_inference

    class Fixed:  # a q(y | x) whose guesses are given: logits with the guess's entry highest
        def __init__(self, guesses):
            self.guesses = guesses

        def q_y(self, x):
            logits = torch.nn.functional.one_hot(self.guesses[x[:, 0].long()], 3).float() * 5
            return torch.distributions.OneHotCategorical(logits=logits)

    labels, guesses = torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2])
    x = torch.arange(6.0).unsqueeze(-1)  # each image's index, which Fixed reads
    got = label_inference(Fixed(guesses), x, labels, torch.zeros(6, 3), batch_size=4)
    assert got["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]  # [true label][guess]
    missing_corner = label_inference(Fixed(torch.tensor([0, 1, 0])), x[:3], torch.tensor([0, 1, 2]), torch.zeros(3, 3))
    assert missing_corner["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]  # no (2, 2) pair: still 3 x 3
    with pytest.raises(ValueError, match="labels in 0..2"):
        label_inference(Fixed(guesses), x, torch.tensor([0, 0, 1, 2, 2, -1]), torch.zeros(6, 3))


def test_m2_bound_with_the_exact_posteriors_is_log_p_x_and_the_accuracy_is_counted():
    """With q(y | x) = p(y | x) and q(z | x, y) exact, U(x) = log p(x); one z per image and class, so the
    mean over 500 copies of each image is within a few hundredths of it."""
    from pyro_vae.infer.evaluate import semi_supervised_terms

    vae, guide, x, y, log_px, marginal = _exact_m2()
    copies = x.repeat(500, 1)
    labels = marginal.argmax(0)  # the exact posterior's guess: accuracy 1 against it
    torch.manual_seed(0)
    terms = semi_supervised_terms(vae, guide, copies, labels.repeat(500), batch_size=1000)
    assert terms["elbo"] == pytest.approx(log_px.mean().item(), abs=0.05)
    assert terms["elbo"] == pytest.approx(terms["recon"] - terms["kl"])
    assert terms["accuracy"] == 1.0 and terms["kl_estimator"] == "analytic"
    wrong = semi_supervised_terms(vae, guide, copies, (labels.repeat(500) + 1) % 3)
    assert wrong["accuracy"] == 0.0
    guide.classifier.weight.data.zero_()  # q(y | x) uniform: the bound drops by KL(q(y|x) || p(y|x)) > 0
    assert semi_supervised_terms(vae, guide, copies, labels.repeat(500))["elbo"] < terms["elbo"] - 0.1


def test_perplexity_counts_equally_used_codes():
    from pyro_vae.infer.evaluate import perplexity

    assert perplexity(torch.tensor([2.0, 2.0, 0.0, 0.0])).item() == pytest.approx(2.0)
    assert perplexity(torch.tensor([5.0, 0.0, 0.0])).item() == pytest.approx(1.0)
    assert perplexity(torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])).tolist() == pytest.approx([3.0, 1.0])


def test_code_usage_pools_a_shared_codebook_and_counts_categoricals_per_position():
    """Four images, two positions of four codes: position 0 takes codes 0, 0, 1, 1, position 1 always 1.
    A shared codebook (VQ) pools them: codes 0 and 1 used 2 and 6 times, 2 and 3 dead. Categoricals whose classes
    differ by position (relaxed) are counted per position: exp(H) 2 and 1, and 5 of the 8 (position, class)
    pairs unused."""
    from pyro_vae.infer.evaluate import code_usage
    from pyro_vae.models.discrete import Codebook, NearestCode, OneHotCodes

    chosen = torch.tensor([[0, 1], [0, 1], [1, 1], [1, 1]])
    codebook = Codebook(4, 1)
    with torch.no_grad():
        codebook.weight.copy_(torch.tensor([[0.0], [10.0], [20.0], [30.0]]))

    class Fixed(Guide):
        def __init__(self, shared):
            super().__init__(4)
            self.shared = shared

        def posterior(self, x, idx=None):
            if self.shared:
                return NearestCode(10 * chosen[idx].unsqueeze(-1).float(), codebook)
            return OneHotCodes(10 * torch.nn.functional.one_hot(chosen[idx], 4).float())

    shared = code_usage(Fixed(True), torch.zeros(4, 3), batch_size=3)
    pooled = torch.tensor([2.0, 6.0]) / 8
    assert shared["perplexity"] == pytest.approx(math.exp(-(pooled * pooled.log()).sum().item()))
    assert shared["dead_codes"] == 2 and shared["codes"] == 4 and shared["position_perplexity"] == pytest.approx(1.5)
    per_position = code_usage(Fixed(False), torch.zeros(4, 3), batch_size=3)
    assert per_position["perplexity"] == pytest.approx(1.5) and per_position["dead_codes"] == 5
    assert not per_position["shared"] and per_position["positions"] == 2


def test_accuracy_over_draws_takes_the_argmax_of_the_mean_classifier_over_the_draws():
    from pyro_vae.infer.evaluate import accuracy_over_draws

    class Classifier:  # q(y | x) = softmax(4 x): a two-pixel image votes for the class of its lit pixel
        def q_y(self, x):
            return dist.OneHotCategorical(logits=4 * x)

    labels = torch.tensor([0, 0, 1])
    left, right = torch.tensor([[1.0, 0.0]]).expand(3, 2), torch.tensor([[0.0, 1.0]]).expand(3, 2)
    assert accuracy_over_draws(Classifier(), [right], labels) == pytest.approx(1 / 3)  # one draw: its argmax
    assert accuracy_over_draws(Classifier(), [left, right, left], labels, batch_size=2) == pytest.approx(2 / 3)
    # q averaged, not votes counted: one confident draw outweighs two nearly even ones
    even = torch.tensor([[0.5, 0.45]]).expand(3, 2)
    assert accuracy_over_draws(Classifier(), [even, even, right], labels) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least one draw"):
        accuracy_over_draws(Classifier(), [], labels)
