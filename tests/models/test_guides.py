import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae.workflow.build import build_model
from pyro_vae.models.guides import AmortizedFullNormal, MeanField
from pyro_vae.workflow.build import GUIDES
from pyro_vae.infer.optim import adam

from ..helpers import tiny_config


def _parts(num_data=64, **sections):
    return build_model(tiny_config(**sections), num_data)


@pytest.mark.parametrize("kind", GUIDES)
@pytest.mark.parametrize("z_dim", [2, 3])
def test_posterior_shapes(tiny_data, kind, z_dim):
    covariance = torch.eye(z_dim).tolist()
    _, guide = _parts(guide={"type": kind}, model={"z_dim": z_dim}, prior={"covariance": covariance})
    idx = torch.tensor([0, 5, 7])
    q = guide.posterior(tiny_data.pixels_at(idx), idx)
    assert q.batch_shape == (3,) and q.event_shape == (z_dim,)
    assert q.rsample().shape == (3, z_dim)


def test_full_covariance_guide_gives_valid_correlated_factors(tiny_data):
    _, guide = _parts(guide={"type": "amortized_full"}, model={"z_dim": 3}, prior={"covariance": torch.eye(3).tolist()})
    assert isinstance(guide, AmortizedFullNormal)
    with torch.no_grad():
        guide.tril_head.bias.normal_()
    L = guide.posterior(tiny_data.images[:4]).scale_tril
    assert torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert (L.tril(-1).abs() > 0).any()  # off-diagonal terms: a full covariance


def test_mean_field_memory_is_two_numbers_per_latent_per_point():
    guide = MeanField(1000, 3)
    assert sum(p.numel() for p in guide.parameters()) == 2 * 1000 * 3


def test_mean_field_step_touches_only_the_minibatch_rows(tiny_data):
    vae, guide = _parts(guide={"type": "mean_field"})
    optimizer = adam(0.1)
    svi = SVI(vae.model, guide, optimizer, Trace_ELBO())
    first, second = torch.tensor([3, 17, 42]), torch.tensor([5, 17, 60])
    before = (guide.loc.detach().clone(), guide.log_scale.detach().clone())
    svi.step(tiny_data.pixels_at(first), first)
    middle = (guide.loc.detach().clone(), guide.log_scale.detach().clone())
    svi.step(tiny_data.pixels_at(second), second)
    after = (guide.loc.detach().clone(), guide.log_scale.detach().clone())
    for old, new, touched in ((before, middle, first), (middle, after, second)):
        untouched = torch.ones(64, dtype=torch.bool)
        untouched[touched] = False
        for table_old, table_new in zip(old, new):
            assert torch.equal(table_old[untouched], table_new[untouched])  # bit-identical
            assert (table_old[touched] != table_new[touched]).all()
    # rows seen only in the first step did not drift in the second (no momentum sweep)
    assert torch.equal(middle[0][3], after[0][3])


def test_mean_field_needs_indices_for_a_subset():
    guide = MeanField(10, 2)
    with pytest.raises(ValueError, match="holds parameters for 10 points but got 3 images"):
        guide.posterior(torch.rand(3, 784))
    assert guide.posterior(torch.rand(10, 784)).batch_shape == (10,)


def test_per_datapoint_rows_use_their_own_learning_rate(tiny_data):
    vae, guide = _parts(guide={"type": "mean_field"})
    optimizer = adam(1e-4, local_lr=0.3)
    svi = SVI(vae.model, guide, optimizer, Trace_ELBO())
    idx = torch.tensor([1, 2])
    rows, weights = guide.loc.detach()[idx].clone(), [p.detach().clone() for p in vae.parameters()]
    svi.step(tiny_data.pixels_at(idx), idx)
    # Adam's first step moves every coordinate by about lr (|m / sqrt(v)| = 1 at t = 1)
    assert torch.allclose((guide.loc.detach()[idx] - rows).abs(), torch.tensor(0.3), rtol=1e-3)
    moved = torch.cat([(p.detach() - w).abs().flatten() for p, w in zip(vae.parameters(), weights)])
    assert moved.max() <= 1e-4 * 1.001 and moved.max() > 0.9e-4
