import io

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam as PyroAdam
from pyro.optim import PyroOptim

from pyro_vae.workflow.build import build_model
from pyro_vae.infer.optim import STATE_FORMAT, adam, migrate_state

from ..helpers import tiny_config


def _steps(optimizer, data, steps=8, frozen=(), **sections):
    """``steps`` SVI steps of a tiny VAE; the decoder is frozen (left out of SVI) in the steps ``frozen``."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae, guide = build_model(tiny_config(**sections), len(data))
    svi = SVI(vae.model, guide, optimizer, Trace_ELBO())
    generator = torch.Generator().manual_seed(0)
    for step, (idx, x) in zip(range(steps), data.batches(16, generator)):
        vae.decoder.requires_grad_(step not in frozen)
        vae.train(step not in frozen)  # pyro.module warns about frozen params of a module in training mode
        svi.step(x, idx)
    return vae, guide, svi


def _parameters(vae, guide) -> list[torch.Tensor]:
    return [*vae.parameters(), *guide.parameters()]


def _assert_same_tree(a, b, where="state"):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where} keys differ"
        for key in a:
            _assert_same_tree(a[key], b[key], f"{where}.{key}")
    else:
        assert a == b, f"{where} differs"


def test_grouped_adam_follows_pyros_per_parameter_adam(tiny_data):
    """One fused Adam over all dense parameters takes the same steps as one Adam per parameter."""
    vae_a, guide_a, _ = _steps(adam(1e-3), tiny_data)
    vae_b, guide_b, _ = _steps(PyroAdam({"lr": 1e-3}), tiny_data)
    for a, b in zip(_parameters(vae_a, guide_a), _parameters(vae_b, guide_b)):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_a_parameter_left_out_of_later_steps_stays_where_pyros_adam_leaves_it():
    """A param site used only in steps 0-1 neither moves nor advances its state afterwards (as in pyro.optim.Adam)."""

    def model(use_b):
        loc = pyro.param("a", torch.tensor([0.3, -0.2])).sum()
        if use_b:
            loc = loc + pyro.param("b", torch.tensor(0.0))
        pyro.sample("x", dist.Normal(loc, 1.0), obs=torch.tensor(3.0))

    def guide(use_b):
        pass

    def run(optimizer):
        pyro.clear_param_store()
        svi = SVI(model, guide, optimizer, Trace_ELBO())
        for step in range(10):
            svi.step(step < 2)
            if step == 1:
                b_after_use = pyro.param("b").detach().clone()
        store = pyro.get_param_store()
        return store["a"].detach().clone(), store["b"].detach().clone(), b_after_use

    optimizer = adam(0.1)
    a, b, b_after_use = run(optimizer)
    assert torch.equal(b, b_after_use)
    assert optimizer.get_state()["b"]["adam"]["step"].item() == 2
    a_ref, b_ref, _ = run(PyroAdam({"lr": 0.1}))
    assert torch.allclose(b, b_ref, atol=1e-7) and torch.allclose(a, a_ref, atol=1e-6)


def test_a_vae_whose_decoder_is_frozen_for_some_steps_follows_pyros_adam(tiny_data):
    """Whole model: steps 3-5 leave the decoder out of SVI; all parameters end where pyro.optim.Adam puts them."""
    frozen = range(3, 6)
    vae_a, guide_a, _ = _steps(adam(1e-2), tiny_data, steps=9, frozen=frozen)
    vae_b, guide_b, _ = _steps(PyroAdam({"lr": 1e-2}), tiny_data, steps=9, frozen=frozen)
    for a, b in zip(_parameters(vae_a, guide_a), _parameters(vae_b, guide_b)):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)  # fused vs per-parameter rounding


def test_the_same_parameters_every_step_take_one_fused_adam_step(tiny_data):
    """Ordinary training is bit-identical to a single fused torch Adam over all parameters (sorted by name)."""

    class OneFusedAdam(PyroOptim):
        def __init__(self):
            super().__init__(torch.optim.Adam, {"lr": 1e-3})
            self.optimizer = None

        def __call__(self, params, *args, **kwargs):
            if self.optimizer is None:
                params = sorted(params, key=pyro.get_param_store().param_name)
                self.optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
            self.optimizer.step()

    vae_a, guide_a, _ = _steps(adam(1e-3), tiny_data)
    vae_b, guide_b, _ = _steps(OneFusedAdam(), tiny_data)
    for a, b in zip(_parameters(vae_a, guide_a), _parameters(vae_b, guide_b)):
        assert torch.equal(a, b)


def test_state_round_trips_by_parameter_name(tiny_data):
    """Saving and loading the optimizer state mid-run continues exactly (dense and sparse)."""
    sections = {"guide": {"type": "mean_field"}}
    optimizer = adam(1e-3, 0.05)
    vae, guide, svi = _steps(optimizer, tiny_data, steps=4, **sections)
    state = optimizer.get_state()
    assert all(entry["format"] == STATE_FORMAT for entry in state.values())
    assert any("adam" in v for v in state.values()) and any("row_adam" in v for v in state.values())
    weights = tuple({k: v.clone() for k, v in part.state_dict().items()} for part in (vae, guide))
    idx = torch.arange(16)
    x = tiny_data.pixels_at(idx)
    pyro.set_rng_seed(9)
    svi.step(x, idx)
    expected = [p.detach().clone() for p in _parameters(vae, guide)]
    expected_state = optimizer.get_state()

    pyro.clear_param_store()
    vae2, guide2 = build_model(tiny_config(**sections), len(tiny_data))
    vae2.load_state_dict(weights[0])
    guide2.load_state_dict(weights[1])
    restored = adam(1e-3, 0.05)
    restored.set_state(state)
    svi2 = SVI(vae2.model, guide2, restored, Trace_ELBO())
    pyro.set_rng_seed(9)
    svi2.step(x, idx)
    for a, b in zip(expected, _parameters(vae2, guide2)):
        assert torch.equal(a, b)
    _assert_same_tree(restored.get_state(), expected_state)


def test_state_round_trips_before_any_step_and_through_a_weights_only_load(tiny_data):
    """``set_state(s); get_state() == s`` on a fresh optimizer; the state is tensors and plain containers."""
    optimizer = adam(1e-3, 0.05)
    _steps(optimizer, tiny_data, steps=3, guide={"type": "mean_field"})
    state = optimizer.get_state()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    fresh = adam(1e-3, 0.05)
    fresh.set_state(loaded)
    _assert_same_tree(fresh.get_state(), state)
    assert fresh.get_state() is not loaded and adam(1e-3).get_state() == {}


def _table_step(optimizer, table, idx, target):
    """One step on the rows ``idx`` of ``table`` with the sparse gradient of ``sum((table[idx] - target)^2)``."""
    loss = ((F.embedding(idx, table, sparse=True) - target) ** 2).sum()
    loss.backward()
    optimizer([table])
    table.grad = None


def _row_state(optimizer) -> dict:
    return optimizer.get_state()["table"]["row_adam"]


def test_a_row_updated_once_after_many_steps_of_other_rows_moves_like_adams_first_step():
    """Per-row bias correction: the first update of a row is x - lr * g / (|g| + eps), whatever the table's age."""
    lr = 0.05
    optimizer = adam(1e-3, lr)
    table = pyro.param("table", torch.randn(20, 3)).unconstrained()
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(20, dtype=torch.int64)
    for _ in range(30):
        idx = torch.randint(10, (8,), generator=generator)
        _table_step(optimizer, table, idx, torch.randn(8, 3))
        counts[idx.unique()] += 1
    before = table.detach().clone()
    moments = _row_state(optimizer)
    target = torch.randn(1, 3)
    _table_step(optimizer, table, torch.tensor([15]), target)

    g = 2 * (before[15] - target[0]).double()
    expected = before[15].double() - lr * g / (g.abs() + 1e-8)
    assert torch.allclose(table[15].detach().double(), expected, rtol=0, atol=1e-7)
    reference = before[15].clone().requires_grad_(True)  # a fresh torch Adam, one step
    reference_adam = torch.optim.Adam([reference], lr=lr, foreach=False)
    reference.grad = g.float()
    reference_adam.step()
    assert torch.allclose(table[15].detach(), reference.detach(), rtol=0, atol=1e-7)
    others = torch.arange(20) != 15
    after = _row_state(optimizer)
    assert torch.equal(table.detach()[others], before[others])
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(after[key][others], moments[key][others]), key
    counts[15] = 1
    assert torch.equal(after["step"], counts)


def test_every_row_is_an_adam_of_its_own_and_rows_outside_a_batch_stay_bit_identical():
    """Random batches with repeated indices: each row follows a torch Adam stepped only when the row is drawn."""
    lr = 0.05
    optimizer = adam(1e-3, lr)
    init = torch.randn(12, 2)
    table = pyro.param("table", init.clone()).unconstrained()
    rows = [init[n].clone().requires_grad_(True) for n in range(12)]
    references = [torch.optim.Adam([row], lr=lr, foreach=False) for row in rows]
    generator = torch.Generator().manual_seed(2)
    for _ in range(25):
        idx = torch.randint(12, (6,), generator=generator)
        target = torch.randn(6, 2, generator=generator)
        before = table.detach().clone()
        moments = _row_state(optimizer) if optimizer.get_state() else None  # none before the first step
        _table_step(optimizer, table, idx, target)
        for n in idx.unique().tolist():
            rows[n].grad = sum(2 * (rows[n].detach() - target[i]) for i in range(6) if idx[i] == n)
            references[n].step()
        out = torch.ones(12, dtype=torch.bool)
        out[idx] = False
        assert torch.equal(table.detach()[out], before[out])
        if moments is not None:
            after = _row_state(optimizer)
            for key in ("step", "exp_avg", "exp_avg_sq"):
                assert torch.equal(after[key][out], moments[key][out]), key
    state = _row_state(optimizer)
    for n in range(12):
        assert torch.allclose(table[n].detach(), rows[n].detach(), rtol=0, atol=1e-6), n
        ref = references[n].state.get(rows[n], {})
        assert state["step"][n].item() == int(ref.get("step", torch.tensor(0.0)).item()), n
        if ref:
            assert torch.allclose(state["exp_avg"][n], ref["exp_avg"], rtol=0, atol=1e-6)
            assert torch.allclose(state["exp_avg_sq"][n], ref["exp_avg_sq"], rtol=0, atol=1e-6)


def test_duplicate_indices_are_one_update_with_the_summed_gradient():
    """Row 3 drawn twice in a batch: one Adam step (its count goes up by one) on the sum of both gradients."""
    lr = 0.05
    optimizer = adam(1e-3, lr)
    table = pyro.param("table", torch.zeros(6, 2)).unconstrained()
    for _ in range(5):  # age the table through the other rows
        _table_step(optimizer, table, torch.tensor([0, 1]), torch.ones(2, 2))
    targets = torch.tensor([[1.0, -2.0], [0.5, 4.0], [3.0, 3.0]])
    _table_step(optimizer, table, torch.tensor([3, 3, 5]), targets)
    state = _row_state(optimizer)
    assert state["step"].tolist() == [5, 5, 0, 1, 0, 1]
    g = -2 * (targets[0] + targets[1])  # rows start at 0
    assert torch.allclose(state["exp_avg"][3], 0.1 * g) and torch.allclose(table[3].detach(), -lr * g.sign())


def test_an_old_dense_state_migrates_exactly(tiny_data):
    """The previous ``{"name": {"adam": ...}}`` format continues bit for bit."""
    optimizer = adam(1e-3)
    vae, guide, svi = _steps(optimizer, tiny_data, steps=3)
    state = optimizer.get_state()
    old = {name: {"adam": entry["adam"]} for name, entry in state.items()}
    assert all(entry["format"] == STATE_FORMAT for entry in migrate_state(old).values())
    _assert_same_tree(migrate_state(old), state)
    weights = [p.detach().clone() for p in _parameters(vae, guide)]
    idx = torch.arange(16)
    x = tiny_data.pixels_at(idx)
    pyro.set_rng_seed(5)
    svi.step(x, idx)
    expected = [p.detach().clone() for p in _parameters(vae, guide)]

    restored = adam(1e-3)
    restored.set_state(old)
    with torch.no_grad():
        for p, w in zip(_parameters(vae, guide), weights):
            p.copy_(w)
    pyro.set_rng_seed(5)
    SVI(vae.model, guide, restored, Trace_ELBO()).step(x, idx)
    for a, b in zip(expected, _parameters(vae, guide)):
        assert torch.equal(a, b)


BAD_STATES = {
    "old SparseAdam table": (
        {"guide$$$loc": {"sparse_adam": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []}}},
        r"^optimizer state for 'guide\$\$\$loc' is an old SparseAdam table state without per-row step counts"
        r".*start a new run",
    ),
    "unknown format": ({"w": {"format": "other/9", "adam": {}}}, r"has format 'other/9'.*expected format"),
    "not a dict": ([1, 2], r"optimizer state is a list, expected a dict keyed by parameter name"),
    "row state without counts": (
        {"t": {"format": STATE_FORMAT, "row_adam": {"exp_avg": torch.zeros(2)}}},
        r"'t' has row_adam keys \['exp_avg'\], expected \['step', 'exp_avg', 'exp_avg_sq'\]",
    ),
}


@pytest.mark.parametrize("name", BAD_STATES)
def test_unusable_states_are_refused_in_one_line(name):
    state, match = BAD_STATES[name]
    for check in (migrate_state, adam(1e-3).set_state):
        with pytest.raises(ValueError, match=match) as error:
            check(state)
        assert "\n" not in str(error.value)


def test_a_step_releases_the_gradients_it_used(tiny_data):
    """After the step the gradients are None (not zeroed copies): the next backward writes them afresh."""
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    from pyro_vae.workflow.build import build_model

    from ..helpers import tiny_config

    pyro.clear_param_store()
    vae, guide = build_model(tiny_config(), len(tiny_data))
    SVI(vae.model, guide, adam(1e-3), Trace_ELBO()).step(tiny_data.images[:8])
    assert all(p.grad is None for p in [*vae.parameters(), *guide.parameters()])


@pytest.mark.parametrize("dense", [True, False])
def test_the_lr_factor_scales_the_step_of_dense_parameters_and_table_rows(dense):
    """Adam's first step moves a parameter by lr (its gradient's sign times lr): with the factor, by lr * factor."""
    pyro.clear_param_store()
    optimizer = adam(0.1, local_lr=0.2)
    optimizer.set_lr_factor(0.25)
    if dense:
        p = pyro.param("w", torch.zeros(3))
        p.grad = torch.tensor([1.0, -2.0, 3.0])
        expected = torch.tensor([-0.025, 0.025, -0.025])
    else:
        p = pyro.param("table", torch.zeros(4, 2))
        p.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.tensor([[1.0, -1.0]]), (4, 2),
                                         check_invariants=True)
        expected = torch.tensor([[0.0, 0.0], [-0.05, 0.05], [0.0, 0.0], [0.0, 0.0]])
    optimizer([p])
    assert torch.allclose(p.detach(), expected, atol=1e-6)


def test_lr_schedules():
    from pyro_vae.infer.optim import lr_factor

    assert [lr_factor("constant", e) for e in (1, 50)] == [1.0, 1.0]
    assert [lr_factor("exponential", e, 0.5) for e in (1, 2, 4)] == [1.0, 0.5, 0.125]
    epochs = [1, 100, 101, 120, 121, 200]  # after epoch 100 x 0.1, after epoch 120 x 0.1 again
    assert [lr_factor("multistep", e, 0.1, [100, 120]) for e in epochs] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    stages = [1, 2, 4, 5, 13, 14, 40, 41, 1093, 1094, 3280, 5000]  # Burda et al.: 3^i epochs at 10^(-i/7)
    expected = [0, 1, 1, 2, 2, 3, 3, 4, 6, 7, 7, 7]
    assert [lr_factor("burda", e) for e in stages] == pytest.approx([10 ** (-i / 7) for i in expected])
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'cosine'"):
        lr_factor("cosine", 1)
