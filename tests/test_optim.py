import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam as PyroAdam

from pyro_vae.build import build_model
from pyro_vae.optim import adam

from .helpers import tiny_config


def _steps(optimizer, data, steps=8, **sections):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, guide = build_model(tiny_config(**sections), len(data))
    svi = SVI(vae.model, guide, optimizer, Trace_ELBO())
    generator = torch.Generator().manual_seed(0)
    for _, (idx, x) in zip(range(steps), data.batches(16, generator)):
        svi.step(x, idx)
    return vae, guide, svi


def test_grouped_adam_follows_pyros_per_parameter_adam(tiny_data):
    """One fused Adam over all dense parameters takes the same steps as one Adam per parameter."""
    vae_a, guide_a, _ = _steps(adam(1e-3), tiny_data)
    vae_b, guide_b, _ = _steps(PyroAdam({"lr": 1e-3}), tiny_data)
    for a, b in zip([*vae_a.parameters(), *guide_a.parameters()], [*vae_b.parameters(), *guide_b.parameters()]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_state_round_trips_by_parameter_name(tiny_data):
    """Saving and loading the optimizer state mid-run continues exactly (dense and sparse)."""
    sections = {"guide": {"type": "mean_field"}}
    optimizer = adam(1e-3, 0.05)
    vae, guide, svi = _steps(optimizer, tiny_data, steps=4, **sections)
    state = optimizer.get_state()
    assert any("adam" in v for v in state.values()) and any("sparse_adam" in v for v in state.values())
    weights = tuple({k: v.clone() for k, v in part.state_dict().items()} for part in (vae, guide))
    idx = torch.arange(16)
    x = tiny_data.pixels_at(idx)
    pyro.set_rng_seed(9)
    svi.step(x, idx)
    expected = [p.detach().clone() for p in [*vae.parameters(), *guide.parameters()]]

    pyro.clear_param_store()
    vae2, guide2 = build_model(tiny_config(**sections), len(tiny_data))
    vae2.load_state_dict(weights[0])
    guide2.load_state_dict(weights[1])
    restored = adam(1e-3, 0.05)
    restored.set_state(state)
    svi2 = SVI(vae2.model, guide2, restored, Trace_ELBO())
    pyro.set_rng_seed(9)
    svi2.step(x, idx)
    for a, b in zip(expected, [*vae2.parameters(), *guide2.parameters()]):
        assert torch.equal(a, b)
