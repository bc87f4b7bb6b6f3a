import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.exc import Unsupported

from pyro_vae import build_model, load_config
from pyro_vae.models import fused
from pyro_vae.models.likelihoods import blocked_log_sigmoid_sum, pixel_block


@pytest.mark.parametrize("d, block", [(784, 16), (588, 14), (196, 14), (13, 13), (17, 1), (1, 1)])
def test_pixel_block_is_the_largest_divisor_up_to_16(d, block):
    assert pixel_block(d) == block


@pytest.mark.parametrize("d", [784, 196, 17])
def test_blocked_log_sigmoid_sum_matches_float64_within_its_error_bound(d):
    torch.manual_seed(0)
    s = torch.cat([torch.randn(3, 5, d) * 6, torch.full((1, 5, d), 90.0), torch.full((1, 5, d), -90.0)])
    s[0, 0, :3] = torch.tensor([0.0, 1e-8, -1e-8])[: min(3, d)]
    exact = F.logsigmoid(s.double()).sum(-1)
    got = blocked_log_sigmoid_sum(s)
    assert got.shape == s.shape[:-1]
    bound = 5e-5 * d / 784 + 1e-6 * exact.abs()  # the docstring's bound, and float32's rounding of the sum
    assert ((got.double() - exact).abs() <= bound).all()


def _model(z_dim=8, extra=()):
    torch.manual_seed(0)
    config = load_config(None, [f"model.z_dim={z_dim}", "data.pixels=threshold", *extra])
    return build_model(config, 100)


def _log_likelihoods(vae, z, x, compiled):
    with torch.no_grad():
        return fused.log_likelihood_for(vae, compiled)(z, x)


def test_the_compiled_log_likelihood_equals_the_eager_one():
    vae, _ = _model()
    z, x = torch.randn(7, 30, 8), (torch.rand(30, 784) < 0.3).float()
    compiled = _log_likelihoods(vae, z, x, True)
    kernel = fused.KERNELS[type(vae)]
    if kernel.failure:
        pytest.skip(f"torch.compile does not work on this machine: {kernel.failure}")
    eager = _log_likelihoods(vae, z, x, False)
    assert compiled.shape == (7, 30)
    assert torch.allclose(compiled, eager, rtol=0, atol=2e-4)
    other = _log_likelihoods(vae, z[:3, :11], x[:11], True)  # another chunk size: the same graph (dynamic)
    assert torch.allclose(other, eager[:3, :11], rtol=0, atol=2e-4)


def test_the_compiled_path_still_refuses_pixels_other_than_0_and_1():
    vae, _ = _model()
    with pytest.raises(ValueError, match="other than 0 and 1"):
        _log_likelihoods(vae, torch.randn(2, 3, 8), torch.full((3, 784), 0.5), True)


def test_a_failed_compile_warns_once_and_runs_the_eager_function(monkeypatch):
    def failing_compile(function, **kwargs):
        def compiled(*args):
            raise Unsupported("no C compiler here")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    kernel = fused.CompiledKernel(lambda t: t * 2)
    with pytest.warns(RuntimeWarning, match="failed .*no C compiler here.*eager form runs instead"):
        assert torch.equal(kernel(torch.ones(3)), torch.full((3,), 2.0))
    assert "no C compiler here" in kernel.failure
    assert torch.equal(kernel(torch.ones(2)), torch.full((2,), 2.0))  # no second warning (pytest errors on one)


def test_the_function_s_own_errors_pass_through_uncaught(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda function, **kwargs: function)  # the "compiled" call is the function

    def bad(t):
        raise ValueError("the function's own")

    kernel = fused.CompiledKernel(bad)
    with pytest.raises(ValueError, match="the function's own"):
        kernel(torch.ones(1))
    assert kernel.failure is None


def test_the_environment_and_the_size_decide_whether_to_compile(monkeypatch):
    vae, _ = _model()
    monkeypatch.delenv(fused.ENVIRONMENT, raising=False)
    assert fused.worth_compiling(fused.COMPILE_MIN_ROWS) and not fused.worth_compiling(fused.COMPILE_MIN_ROWS - 1)
    assert fused.log_likelihood_for(vae, False) == vae.log_likelihood
    assert fused.log_likelihood_for(vae, True) != vae.log_likelihood
    monkeypatch.setenv(fused.ENVIRONMENT, "0")
    assert not fused.worth_compiling(10 * fused.COMPILE_MIN_ROWS)
    assert fused.log_likelihood_for(vae, True) == vae.log_likelihood  # the environment wins over the caller
