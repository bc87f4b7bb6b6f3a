import warnings

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.exc import Unsupported
from torch._dynamo.utils import counters

from pyro_vae import build_model, load_config
from pyro_vae.infer import compiled
from pyro_vae.models.likelihoods import blocked_log_sigmoid_sum, pixel_block


@pytest.fixture
def fresh_kernels(monkeypatch):
    """No kernel compiled or failed before the test, dynamo's caches empty, compiling allowed."""
    monkeypatch.delenv(compiled.ENVIRONMENT, raising=False)
    monkeypatch.setattr(compiled, "KERNELS", {})
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("d, block", [(784, 16), (588, 14), (196, 14), (13, 13), (17, 1), (1, 1)])
def test_pixel_block_is_the_largest_divisor_up_to_16(d, block):
    assert pixel_block(d) == block


@pytest.mark.parametrize("d", [784, 196, 17])
def test_blocked_log_sigmoid_sum_matches_float64(d):
    torch.manual_seed(0)
    s = torch.cat([torch.randn(3, 5, d) * 6, torch.full((1, 5, d), 90.0), torch.full((1, 5, d), -90.0)])
    s[0, 0, :3] = torch.tensor([0.0, 1e-8, -1e-8])[: min(3, d)]
    exact = F.logsigmoid(s.double()).sum(-1)
    got = blocked_log_sigmoid_sum(s)
    assert got.shape == s.shape[:-1]
    # a block's log within the docstring's 2e-6, the sum over pixels within float32's rounding (a few ulp of it);
    # a block left out or counted twice would be off by a nat or more
    assert ((got.double() - exact).abs() <= 2e-6 * d / pixel_block(d) + 1e-6 * exact.abs()).all()
    assert torch.allclose(blocked_log_sigmoid_sum(s.double()), exact, rtol=1e-12, atol=1e-9)


def _model(extra=()):
    torch.manual_seed(0)
    config = load_config(None, ["model.z_dim=8", "data.pixels=threshold", *extra])
    return build_model(config, 100)[0]


def _labels(vae, b):
    classes = getattr(vae, "num_classes", 0) or 10
    return F.one_hot(torch.arange(b) % classes, classes).float()


MODELS = {
    "VAE": [],
    "conditional VAE": ["model.labels='input'"],
    "M2": ["model.labels='latent'", "data.labelled=10"],
    "completion": ["model.completion=2"],
    "conv VAE": ["model.net='conv'"],
    "grey values, Normal": ["model.likelihood='normal'", "data.pixels='grayscale'"],
}


@pytest.mark.parametrize("name", list(MODELS))
def test_the_compiled_log_likelihood_equals_the_eager_one(fresh_kernels, name):
    vae = _model(MODELS[name])
    grey = "grayscale" in str(MODELS[name])
    z, x = torch.randn(7, 30, 8), torch.rand(30, 784)
    x = x if grey else (x < 0.3).float()
    y = _labels(vae, 30) if "labels" in str(MODELS[name]) else None
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        got = compiled.log_likelihood_for(vae, True)(z, x, y)
        eager = vae.log_likelihood(z, x, y)
        other = compiled.log_likelihood_for(vae, True)(z[:3, :11], x[:11], None if y is None else y[:11])
    kernel = compiled.KERNELS[type(vae).log_likelihood]
    if kernel.failure:
        pytest.skip(f"torch.compile does not work on this machine: {kernel.failure}")
    assert counters["stats"]["unique_graphs"] > graphs  # a graph was built: the values are not the eager ones again
    assert got.shape == (7, 30)
    tolerance = 2e-3 if grey else 2e-4  # a Normal's log-density is of order 1e3 per image here
    assert torch.allclose(got, eager, rtol=0, atol=tolerance)
    assert torch.allclose(other, eager[:3, :11], rtol=0, atol=tolerance)  # another chunk size: dynamic shapes


def test_the_compiled_path_refuses_pixels_other_than_0_and_1_and_any_other_compile_keeps_the_check(fresh_kernels):
    vae = _model()
    z, grey = torch.randn(2, 3, 8), torch.full((3, 784), 0.5)
    with torch.no_grad(), pytest.raises(ValueError, match="other than 0 and 1"):
        compiled.log_likelihood_for(vae, True)(z, grey)
    with torch.no_grad(), pytest.raises(ValueError, match="other than 0 and 1"):
        # compiled elsewhere, outside pixels_checked(): still checked (dynamo's tracing alone, no C compiler needed)
        torch.compile(vae.log_likelihood, backend="eager")(z, grey)


def test_a_wrong_shape_is_the_caller_s_error_not_a_compiler_failure(fresh_kernels):
    vae = _model()
    with torch.no_grad(), pytest.raises(RuntimeError):
        compiled.log_likelihood_for(vae, True)(torch.randn(2, 6, 8), torch.zeros(6, 700))
    kernel = compiled.KERNELS[type(vae).log_likelihood]
    assert kernel.failure is None  # compiling stays on for the next, correct call


def test_a_failed_compile_warns_once_and_runs_the_eager_function(fresh_kernels, monkeypatch):
    def failing_compile(function, **kwargs):
        def compiled_function(*args):
            raise Unsupported("no C compiler here")
        return compiled_function

    monkeypatch.setattr(torch, "compile", failing_compile)
    kernel = compiled.CompiledKernel(lambda t: t * 2)
    with pytest.warns(RuntimeWarning, match="failed .*no C compiler here.*eager form runs instead"):
        assert torch.equal(kernel(torch.ones(3)), torch.full((3,), 2.0))
    assert "no C compiler here" in kernel.failure
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would fail here
        assert torch.equal(kernel(torch.ones(2)), torch.full((2,), 2.0))


def test_the_function_s_own_errors_pass_through_uncaught(fresh_kernels, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)  # the "compiled" call is the function

    calls = []

    def bad(t):
        calls.append(t)
        raise ValueError("the function's own")

    kernel = compiled.CompiledKernel(bad)
    with pytest.raises(ValueError, match="the function's own"):
        kernel(torch.ones(1))
    assert kernel.failure is None
    assert len(calls) == 1  # not taken for a compiler's failure and run again eagerly


def test_chunks_with_a_dimension_of_1_run_eagerly(fresh_kernels, monkeypatch):
    vae = _model()
    calls = []
    monkeypatch.setattr(compiled.CompiledKernel, "__call__", lambda self, *args: calls.append(args) or 0)
    run = compiled.log_likelihood_for(vae, True)
    x = (torch.rand(5, 784) < 0.5).float()
    with torch.no_grad():
        assert run(torch.randn(1, 5, 8), x).shape == (1, 5)  # one sample (a point-mass q)
        assert run(torch.randn(4, 1, 8), x[:1]).shape == (4, 1)  # one image (a last batch)
        run(torch.randn(4, 5, 8), x)
    assert len(calls) == 1


@pytest.mark.parametrize("value, allowed", [("0", False), ("false", False), ("Off", False), ("no", False),
                                            ("1", True), ("", True)])
def test_the_environment_and_the_size_decide_whether_to_compile(monkeypatch, value, allowed):
    vae = _model()
    monkeypatch.setenv(compiled.ENVIRONMENT, value)
    assert compiled.worth_compiling(compiled.COMPILE_MIN_ROWS) == allowed
    assert not compiled.worth_compiling(compiled.COMPILE_MIN_ROWS - 1)
    assert (compiled.log_likelihood_for(vae, True) == vae.log_likelihood) != allowed  # the environment wins
    assert compiled.log_likelihood_for(vae, False) == vae.log_likelihood


def test_the_diagonal_log_ratio_is_the_difference_of_the_two_log_densities():
    import pyro.distributions as dist

    torch.manual_seed(0)
    z, q_loc, q_scale = torch.randn(4, 6, 5), torch.randn(6, 5), torch.rand(6, 5) + 0.1
    p_loc, p_scale = torch.randn(5), torch.rand(5) + 0.5  # a learned diagonal prior, broadcast over the images
    prior, q = dist.Normal(p_loc, p_scale).to_event(1), dist.Normal(q_loc, q_scale).to_event(1)
    assert torch.allclose(compiled.diagonal_log_ratio(z, p_loc, p_scale, q_loc, q_scale),
                          prior.log_prob(z) - q.log_prob(z), atol=1e-5)
    assert compiled.diagonal_normal(q) == (q_loc, q_scale)
    assert compiled.diagonal_normal(dist.Normal(q_loc, q_scale)) is None  # not an event of the last dimension
    assert compiled.diagonal_normal(dist.Normal(q_loc, q_scale).to_event(2)) is None
    assert compiled.diagonal_normal(dist.MultivariateNormal(p_loc, scale_tril=torch.diag(p_scale))) is None


# diagonal q(z | x) and p(z) (completion's p(z | x_g) too): one graph; other families: the eager densities
FUSED = {**{name: (extra, True) for name, extra in MODELS.items()},
         "IAF guide": (["guide.type='iaf'"], False), "full-covariance prior": (["prior.type='learned'"], False)}


@pytest.mark.parametrize("name", list(FUSED))
def test_the_compiled_log_weight_equals_the_eager_one(fresh_kernels, name):
    """Diagonal q and p(z): log p(x | z) + log p(z) - log q(z | x) in one compiled graph; any other family: the
    compiled log p(x | z) plus the distributions' own log_prob."""
    from pyro_vae.infer.evaluate import log_weights

    extra, fused = FUSED[name]
    vae = _model(extra)
    guide = build_model(load_config(None, ["model.z_dim=8", "data.pixels=threshold", *extra]), 100)[1]
    grey = "grayscale" in str(extra)
    x = torch.rand(30, 784)
    x = x if grey else (x < 0.3).float()
    labels = {"y": _labels(vae, 30)} if "labels" in str(extra) else {}  # q(z | x, y)
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        q, prior = guide.posterior(x, None, **labels), vae.prior_for(x, **labels)
        torch.manual_seed(1)
        got = log_weights(vae, q, x, 7, prior, log_weight=compiled.log_weight_for(vae, True), **labels)
        torch.manual_seed(1)
        eager = log_weights(vae, q, x, 7, prior, **labels)  # the same draws
    kernel = compiled.KERNELS.get((type(vae).log_likelihood, "log_weight"))
    assert (kernel is not None and kernel.compiled is not None) == fused  # the fused graph ran, or was not asked
    failure = (kernel if fused else compiled.KERNELS[type(vae).log_likelihood]).failure
    if failure:
        pytest.skip(f"torch.compile does not work on this machine: {failure}")
    assert counters["stats"]["unique_graphs"] > graphs  # compiled: the values are not the eager ones again
    assert got.shape == (7, 30)
    assert torch.allclose(got, eager, rtol=0, atol=2e-3 if grey else 5e-4)  # log-weights of order 1e2-1e3


def test_the_log_weight_runs_eagerly_where_the_log_likelihood_does(fresh_kernels, monkeypatch):
    """Chunks with a dimension of 1 and ``PYRO_VAE_COMPILE=0`` take the eager log-weight."""
    torch.manual_seed(0)
    vae, guide = build_model(load_config(None, ["model.z_dim=8", "data.pixels=threshold"]), 100)
    calls = []
    monkeypatch.setattr(compiled.CompiledKernel, "__call__", lambda self, *args: calls.append(args) or 0)
    x = (torch.rand(5, 784) < 0.5).float()
    with torch.no_grad():
        (q, prior), (q1, prior1) = [(guide.posterior(xs), vae.prior_for(xs)) for xs in (x, x[:1])]
        weigh = compiled.log_weight_for(vae, True)
        assert weigh(q.sample((1,)), x, None, q, prior).shape == (1, 5)  # one sample (a point-mass q)
        assert weigh(q1.sample((4,)), x[:1], None, q1, prior1).shape == (4, 1)  # one image (a last batch)
        weigh(q.sample((4,)), x, None, q, prior)
        assert len(calls) == 1
        monkeypatch.setenv(compiled.ENVIRONMENT, "0")
        assert compiled.log_weight_for(vae, True)(q.sample((4,)), x, None, q, prior).shape == (4, 5)
    assert len(calls) == 1
