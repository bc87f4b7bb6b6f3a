import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.util import check_model_guide_match

from pyro_vae.workflow.build import build_model
from pyro_vae.infer.optim import adam

from ..helpers import tiny_config


def _parts(num_data=64, **sections):
    return build_model(tiny_config(**sections), num_data)


@pytest.mark.parametrize("prior", ["standard", "correlated", "learned", "mixture"])
def test_model_and_guide_traces_have_matching_sites_and_shapes(tiny_data, prior):
    vae, guide = _parts(prior={"type": prior})
    idx = torch.tensor([3, 9, 11, 20, 41, 60, 61, 63])
    x = tiny_data.pixels_at(idx)
    guide_trace = poutine.trace(guide).get_trace(x, idx)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, idx)
    check_model_guide_match(model_trace, guide_trace, max_plate_nesting=1)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    z_site, x_site = model_trace.nodes["z"], model_trace.nodes["x"]
    assert z_site["value"].shape == (8, 2) and z_site["log_prob"].shape == (8,)
    assert x_site["fn"].event_shape == (784,) and x_site["log_prob"].shape == (8,)
    assert guide_trace.nodes["z"]["log_prob"].shape == (8,)
    plate = [f for f in z_site["cond_indep_stack"] if f.name == "data"][0]
    assert plate.size == 8  # the subsample; the full size shows in the scale below
    assert z_site["scale"] == pytest.approx(64 / 8)  # minibatch scaled to the full data


def test_without_indices_the_plate_is_the_batch(tiny_data):
    vae, guide = _parts()
    x = tiny_data.images[:5]
    trace = poutine.trace(guide).get_trace(x)
    assert trace.nodes["z"]["scale"] == 1.0 and trace.nodes["z"]["value"].shape == (5, 2)


def test_trace_elbo_matches_a_hand_computed_single_sample(tiny_data):
    vae, guide = _parts(prior={"type": "correlated"})
    idx = torch.arange(10)
    x = tiny_data.pixels_at(idx)
    pyro.set_rng_seed(123)
    loss = Trace_ELBO().loss(vae.model, guide, x, idx)
    pyro.set_rng_seed(123)
    with torch.no_grad():
        q = guide.posterior(x)
        z = q.rsample()
        log_weight = vae.likelihood(vae.decoder(z)).log_prob(x) + vae.prior().log_prob(z) - q.log_prob(z)
    assert loss == pytest.approx(-(64 / 10) * log_weight.sum().item(), rel=1e-5)


def test_a_few_hundred_svi_steps_lower_the_loss(tiny_data):
    vae, guide = _parts()
    svi = SVI(vae.model, guide, adam(3e-3), Trace_ELBO())
    generator = torch.Generator().manual_seed(0)
    losses = []
    while len(losses) < 300:
        for idx, x in tiny_data.batches(16, generator):
            losses.append(svi.step(x, idx) / len(tiny_data))
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < first - 100  # from ~540 nats per image to well under 440


def test_any_module_can_be_the_decoder(tiny_data):
    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(2, 784))

        def forward(self, z):
            return z @ self.weight

    vae, guide = _parts()
    vae.decoder = Linear()
    svi = SVI(vae.model, guide, adam(1e-2), Trace_ELBO())
    idx = torch.arange(16)
    svi.step(tiny_data.pixels_at(idx), idx)
    assert vae.decoder.weight.abs().sum() > 0  # registered through pyro.module and trained


def test_sampling_and_decoding(tiny_data):
    vae, _ = _parts(prior={"type": "correlated"})
    z = vae.sample_prior(12)
    images = vae.decode_mean(z)
    assert z.shape == (12, 2) and images.shape == (12, 784)
    assert ((images >= 0) & (images <= 1)).all()
