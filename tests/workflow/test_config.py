from pathlib import Path

import pytest

from pyro_vae.workflow.build import check_config
from pyro_vae.workflow.config import Config, ConfigError, load_config, parse_override

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.toml"))


def test_defaults_are_the_reference_mlp():
    config = Config()
    assert (config.model.net, config.model.z_dim, config.model.hidden) == ("mlp", 2, [512, 256])
    assert (config.train.batch_size, config.train.lr, config.train.epochs) == (128, 1e-3, 20)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_config_loads_and_checks(path):
    check_config(load_config(path))


def test_vae_2d_is_the_reference_run():
    config = load_config(Path(__file__).resolve().parents[2] / "experiments" / "vae_2d.toml")
    assert config.model.z_dim == 2 and config.model.hidden == [512, 256]
    assert config.train.epochs == 20 and config.train.batch_size == 128 and config.train.lr == 1e-3
    assert config.data.pixels == "grayscale"


def test_overrides_are_toml_literals_or_bare_words():
    config = load_config(
        None,
        [
            "train.epochs=1",
            "train.batch_size=256",
            "prior.type=correlated",
            "guide.type=amortized",
            "prior.covariance=[[1.0, 0.5], [0.5, 1.0]]",
            "train.lr=3e-4",
            'data.pixels="dynamic"',
        ],
    )
    assert config.train.epochs == 1 and config.train.batch_size == 256
    assert config.prior.type == "correlated" and config.guide.type == "amortized"
    assert config.prior.covariance == [[1.0, 0.5], [0.5, 1.0]]
    assert config.train.lr == 3e-4 and config.data.pixels == "dynamic"


def test_int_is_accepted_for_a_float_field():
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


def test_save_and_load_round_trip(tmp_path):
    config = load_config(None, ["prior.type=correlated", "model.z_dim=2", "train.epochs=3"])
    config.save(tmp_path / "config.toml")
    assert load_config(tmp_path / "config.toml") == config


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", r"unknown key 'train.epoch'; valid keys of \[train\]: epochs"),
        ("optim.lr=1", r"unknown config section \[optim\]; valid sections: data, model"),
        ("train.epochs=ten", r"train.epochs must be a int, got 'ten'"),
        ("train.epochs=0", r"train.epochs must be >= 1, got 0"),
        ("train.batch_size=-5", r"train.batch_size must be >= 1"),
        ("train.lr=0", r"train.lr must be > 0"),
        ("guide.local_flow_lr=0", r"guide.local_flow_lr must be > 0"),
        ("guide.local_window=0", r"guide.local_window must be >= 1"),
        ("model.z_dim=0", r"model.z_dim must be >= 1"),
        ("model.hidden=[]", r"model.hidden must be a non-empty list of positive integers"),
        ("model.hidden=[512, -1]", r"model.hidden must be a non-empty list"),
        ("train.validate=1", r"train.validate must be a bool"),
        ("train.lr=nan", r"train.lr must be a finite number, got nan"),
        ("train.lr=inf", r"train.lr must be a finite number, got inf"),
        ("train.epochs", r"is not of the form section.key=value"),
        ("epochs=3", r"is not of the form section.key=value"),
        ("train.seed=4294967296", r"train.seed must be <= 4294967295 \(numpy's seeds are 32-bit\), got 4294967296"),
        ("train.lr=" + "9" * 400, r"train.lr must be a finite number, got 9999"),
        ('prior.loc=["a", "b"]', r"prior.loc must be a list of finite numbers, got \['a', 'b'\]"),
        ("prior.loc=[nan, 0]", r"prior.loc must be a list of finite numbers, got \[nan, 0\]"),
        ("prior.loc=[true, 0]", r"prior.loc must be a list of finite numbers"),
        ("prior.covariance=[[1, inf], [inf, 1]]", r"prior.covariance must be a list of rows of finite numbers"),
        ("prior.covariance=[1, 2]", r"prior.covariance must be a list of rows of finite numbers, got \[1, 2\]"),
        ("train.lr_milestones=[120, 100]", r"train.lr_milestones must be increasing epochs >= 1 .* got \[120, 100\]"),
        ("train.lr_milestones=[0]", r"train.lr_milestones must be increasing epochs >= 1"),
        ("train.lr_milestones=[100, 100]", r"train.lr_milestones must be increasing epochs >= 1"),
        ("train.lr_milestones=[1.5]", r"train.lr_milestones must be increasing epochs >= 1"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_parse_override_keeps_bare_words_as_strings():
    assert parse_override("prior.type=standard") == ("prior", "type", "standard")
    assert parse_override("train.epochs=2") == ("train", "epochs", 2)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found; pass an existing TOML file"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 1")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(bad)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes("[data]\ndataset = 'mnist'  # na\u00efve\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml' is not UTF-8 text \(byte 0xef at position 30\); save it"):
        load_config(latin1)
    with pytest.raises(ConfigError, match="not found; pass an existing TOML file"):
        load_config(tmp_path)  # a folder


def test_the_largest_seed_is_accepted():
    assert load_config(None, ["train.seed=4294967295"]).train.seed == 2**32 - 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("prior.type=gaussian", r"unknown prior.type 'gaussian'; valid priors: standard, correlated"),
        ("guide.type=flow", r"unknown guide.type 'flow'; valid guides: amortized"),
        ("model.net=resnet", r"unknown model.net 'resnet'; valid nets: mlp, conv"),
        ("model.likelihood=poisson", r"unknown model.likelihood 'poisson'"),
        ("train.objective=renyi", r"unknown train.objective 'renyi'"),
        ("data.pixels=binary", r"unknown data.pixels 'binary'; valid modes: grayscale, dynamic"),
        ("data.dataset=cifar", r"unknown data.dataset 'cifar'; valid datasets: mnist"),
        ("train.device=tpu", r"unknown train.device 'tpu'"),
    ],
)
def test_unknown_part_names_list_the_valid_ones(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(load_config(None, [override]))


# --- property-based: parsing never fails in an unexpected way -----------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pyro_vae.workflow.config import from_dict  # noqa: E402

_KEYS = [(s, k) for s, section in Config().to_dict().items() for k in section]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(_KEYS), st.text(max_size=40))
def test_any_override_gives_a_config_or_a_config_error(key, raw):
    section, name = key
    try:
        config = load_config(None, [f"{section}.{name}={raw}"])
    except ConfigError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(getattr(getattr(config, section), name), type(getattr(getattr(Config(), section), name)))


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20), st.integers())
def test_unknown_names_are_config_errors(section, key, value):
    if section in Config().to_dict() and key in Config().to_dict()[section]:
        return
    try:
        from_dict({section: {key: value}})
    except ConfigError as err:
        assert "unknown" in str(err)
    else:
        raise AssertionError(f"{section}.{key} was accepted")


@settings(max_examples=100, deadline=None)
@given(
    epochs=st.integers(1, 10**6),
    batch_size=st.integers(1, 10**5),
    lr=st.floats(1e-8, 10, allow_nan=False),
    hidden=st.lists(st.integers(1, 4096), min_size=1, max_size=4),
    z_dim=st.integers(1, 64),
    pixels=st.sampled_from(["grayscale", "dynamic", "threshold"]),
)
def test_valid_configs_round_trip_through_toml(tmp_path_factory, epochs, batch_size, lr, hidden, z_dim, pixels):
    overrides = [f"train.epochs={epochs}", f"train.batch_size={batch_size}", f"train.lr={lr!r}",
                 f"model.hidden={hidden}", f"model.z_dim={z_dim}", f'data.pixels="{pixels}"']
    config = load_config(None, overrides)
    assert (config.train.epochs, config.train.lr, config.model.hidden) == (epochs, lr, hidden)
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    config.save(path)
    assert load_config(path) == config
