import re

import pytest

from pyro_vae.workflow.build import check_config
from pyro_vae.workflow.config import ConfigError, load_config
from pyro_vae.workflow.rules import RULES, UNUSED, check_rules, unused_keys


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: "+".join(rule.keys))
def test_every_rule_refuses_its_example_in_one_line_naming_its_keys(rule):
    config = load_config(None, rule.example)
    assert rule.broken(config)
    with pytest.raises(ConfigError) as refused:
        check_config(config)  # what the CLI and the Python API call before anything is written
    message = str(refused.value)
    assert "\n" not in message
    assert message == rule.message(config)
    named = [key for key in rule.keys if re.search(re.escape(key) + r"\b", message)]
    assert len(named) >= 2, f"the message names {named} of the rule's keys {rule.keys}"


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: "+".join(rule.keys))
def test_the_defaults_break_no_rule(rule):
    assert not rule.broken(load_config(None))


@pytest.mark.parametrize(
    "overrides",
    [
        ["train.free_bits=0.5", "train.objective='trace_mean_field'"],
        ["train.objective='iwae'", "train.num_particles=5"],
        ["train.objective='jit_trace'", "train.beta=2.0"],  # a constant weight compiles fine
        ["prior.type='correlated'", "prior.covariance=[[1.0, 0.5], [0.5, 1.0]]", "prior.loc=[1.0, 0.0]"],
        ["guide.local_min_lr=0.05", "guide.local_lr=0.05"],
        ["model.labels='latent'", "data.labelled=100", "data.labelled_seed=3"],  # M2's set apart from its start
        ["train.lr_schedule='multistep'", "train.lr_milestones=[10]"],
    ],
)
def test_legal_neighbours_of_the_rules_pass(overrides):
    check_rules(load_config(None, overrides))
    check_config(load_config(None, overrides))


@pytest.mark.parametrize("guide", ["amortized_full", "iaf", "planar"])
def test_free_bits_refuse_every_guide_without_a_per_dimension_kl(guide):
    with pytest.raises(ConfigError, match="train.free_bits needs a per-dimension KL"):
        check_rules(load_config(None, ["train.free_bits=0.5", "train.objective='trace_mean_field'",
                                       f"guide.type={guide}"]))


@pytest.mark.parametrize("overrides", [["train.beta=2.0"], ["train.kl_anneal_steps=100"], ["train.num_particles=3"],
                                       ["train.objective='jit_trace'"]])
def test_the_vq_objective_refuses_every_weighting_of_its_kl(overrides):
    """Its KL is -log p(c*), exact: a weight, an annealing or more particles would change nothing or the objective."""
    config = load_config(None, ["prior.type='categorical'", "guide.type='vq'", *overrides])
    with pytest.raises(ConfigError, match=r"guide.type = 'vq' \(a one-hot posterior\) trains with its own objective"):
        check_config(config)


def test_the_temperature_rule_is_the_relaxed_guide_s_alone():
    check_config(load_config(None, ["guide.temperature=0.3"]))  # an amortized run: the key does nothing there
    with pytest.raises(ConfigError, match="min_temperature <= temperature"):
        check_config(load_config(None, ["prior.type='categorical'", "guide.type='relaxed_categorical'",
                                        "guide.temperature=0.3"]))


@pytest.mark.parametrize("entry", UNUSED, ids=lambda entry: entry.key)
def test_a_key_set_where_nothing_reads_it_is_named(entry):
    config = load_config(None, entry.example)
    check_config(config)  # a note, not a refusal
    assert not entry.used(config)
    assert unused_keys(config) == [f"{entry.key} (read only with {entry.when})"]


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["guide.type='iaf'", "guide.flows=4", "guide.flow_hidden=[64]"],
        ["prior.type='mixture'", "prior.components=50"],
        ["prior.type='categorical'", "guide.type='vq'", "prior.codes=16", "prior.code_dim=4", "train.commitment=0.5",
         "prior.codebook='ema'", "prior.ema_decay=0.9"],
        ["model.likelihood='normal'", "model.normal_scale=0.2", "model.learn_scale=true"],
        ["train.lr_schedule='exponential'", "train.lr_decay=0.9"],
        ["train.lr_schedule='multistep'", "train.lr_decay=0.1", "train.lr_milestones=[10]"],
    ],
)
def test_keys_their_parts_read_are_not_named(overrides):
    assert unused_keys(load_config(None, overrides)) == []
