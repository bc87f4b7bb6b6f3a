"""Property: ``pyro-vae train --set KEY=VALUE`` with any key of the config schema and any TOML value
ends with exit status 0 or 2, or 1 when legal settings make training diverge: never a traceback; on 2
one line on stderr and nothing written; on 1 one line saying where the loss stopped being finite.

The table in test_cli_errors.py holds the cases someone thought of; this test draws the others:
keys from the config dataclasses, values of every TOML type (strings, ints huge and negative,
floats with nan/inf/1e308, bools, lists, nested lists, inline tables) and legal values in cheap
ranges, so that the runs that pass every check train in about a second on 64 images (one in four
also draws its figures).
The draws are derandomized (the same 200 cases on every run), so that CI is reproducible; run with
``--hypothesis-seed`` and ``derandomize`` off to explore others.
"""

import contextlib
import io
import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pyro_vae.cli import EXIT_BAD_INPUT, EXIT_TRAINING_FAILED, main
from pyro_vae.workflow.build import NAMES, check_config
from pyro_vae.workflow.config import Config, ConfigError, load_config

from .conftest import mnist_dir

pytestmark = [pytest.mark.slow, pytest.mark.mnist]

BASE = {
    "data": {"pixels": "threshold", "train_size": 64, "test_size": 64},
    "model": {"hidden": [8], "z_dim": 2},
    "guide": {"local_steps": 20},
    "train": {"epochs": 1, "batch_size": 32, "eval_batch_size": 64},
}
SCHEMA = Config().to_dict()
KEYS = [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys]
PARTS = {key: valid for key, (valid, _) in NAMES.items()}  # the registries: every legal name of every part
NAMES = sorted({name for names in PARTS.values() for name in names})

# --- values ---------------------------------------------------------------------------------
_scalars = st.one_of(
    st.text(max_size=12),
    st.sampled_from(NAMES),
    st.integers(),
    st.sampled_from([0, -1, 1, 2, 2**31, 2**32 - 1, 2**32, 2**63, 2**64, 10**11, 10**30, -(10**30), 10**400]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 1e39, 3.5e38, 1e-300, 5e-324, 0.0, -0.0]),
    st.booleans(),
)
_any_value = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=6,
)
_ints = st.one_of(st.integers(), st.sampled_from([-1, 0, 2**32, 2**63, 10**11, 10**30, 10**400]))
_floats = st.one_of(st.floats(), st.integers(), st.sampled_from([math.nan, math.inf, 1e308, 1e39, 1e-300, 5e-324]))
_TYPED_LISTS = {"model.hidden": st.lists(_ints, max_size=3), "train.snapshot_epochs": st.lists(_ints, max_size=3),
                "prior.loc": st.lists(_floats, max_size=3),
                "prior.covariance": st.lists(st.lists(_floats, min_size=2, max_size=2), min_size=2, max_size=2)}


def _typed(key: str):
    """Values of the key's own type, of any size and sign (ranges are for the checks to judge)."""
    default = SCHEMA[key.split(".")[0]][key.split(".")[1]]
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return _ints
    if isinstance(default, float):
        return _floats
    if isinstance(default, str):
        return st.one_of(st.sampled_from(NAMES), st.text(max_size=8))
    return _TYPED_LISTS.get(key, st.lists(_scalars, max_size=3))


# legal values in ranges that keep a run cheap (a size of 10**6 is legal but slow, not a bug)
_LEGAL = {
    "data.train_size": st.integers(1, 128), "data.test_size": st.integers(1, 128),
    "model.z_dim": st.integers(1, 6), "model.hidden": st.lists(st.integers(1, 16), min_size=1, max_size=3),
    "model.normal_scale": st.floats(0.01, 10), "prior.components": st.integers(1, 10),
    "prior.loc": st.lists(st.floats(-3, 3), max_size=3),
    "prior.covariance": st.sampled_from([[], [[1.0, 0.3], [0.3, 2.0]], [[2.0]], [[1.0, 0.0], [0.0, 1e-3]]]),
    "guide.init_scale": st.floats(0.01, 10), "guide.local_steps": st.integers(1, 30),
    "guide.local_lr": st.floats(1e-4, 0.1), "train.epochs": st.integers(1, 2),
    "train.batch_size": st.integers(1, 10**12), "train.lr": st.floats(1e-5, 0.1),
    "train.seed": st.integers(0, 2**32 - 1), "train.num_particles": st.integers(1, 4),
    "train.beta": st.floats(0, 10), "train.kl_anneal_steps": st.integers(0, 10**12),
    "train.free_bits": st.floats(0, 2), "train.eval_batch_size": st.integers(1, 10**12),
    "train.snapshot_epochs": st.lists(st.integers(0, 3), max_size=3),
}


def _legal(key: str):
    if key in _LEGAL:
        return _LEGAL[key]
    default = SCHEMA[key.split(".")[0]][key.split(".")[1]]
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, str):
        return st.sampled_from(list(PARTS.get(key, [default])))
    if isinstance(default, int):
        return st.integers(max(default // 4, 1), max(default, 1))  # keys added later: near the default
    if isinstance(default, float):
        return st.floats(default / 4, default * 2) if default > 0 else st.just(default)
    return st.just(default)


def _cheap(config: Config) -> bool:
    """Whether a config that passes every check trains in seconds (the ranges of ``_LEGAL``; other
    numbers, such as keys added later, at most twice their default)."""
    d, m, g, t = config.data, config.model, config.guide, config.train
    others = [(getattr(getattr(config, s), k), v) for s, values in SCHEMA.items() for k, v in values.items()
              if f"{s}.{k}" not in _LEGAL and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return (0 < d.train_size <= 128 and 0 < d.test_size <= 128 and m.z_dim <= 6 and len(m.hidden) <= 3
            and max(m.hidden) <= 16 and 0.01 <= m.normal_scale <= 10 and config.prior.components <= 10
            and all(abs(x) <= 3 for x in config.prior.loc) and 0.01 <= g.init_scale <= 10
            and g.local_steps <= 30 and g.local_lr <= 0.1 and t.epochs <= 2 and t.lr <= 0.1
            and t.num_particles <= 4 and t.beta <= 10 and t.free_bits <= 2
            and all(value <= 2 * default for value, default in others))


def _toml(value) -> str:
    """``value`` as a TOML literal (inline tables for dicts)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string (or, with DEL, a bare word)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}" for k, v in value.items()) + "}"


@st.composite
def _overrides(draw) -> list[str]:
    """0-3 parts chosen among the legal names (the prior x guide x objective grid), then 1-2 keys
    set to a value of any TOML type, of the key's type at any size, in the cheap legal range, or
    to text that is not TOML."""
    parts = draw(st.lists(st.sampled_from(sorted(PARTS)), max_size=3, unique=True))
    texts = [f"{key}={_toml(draw(st.sampled_from(list(PARTS[key]))))}" for key in parts]
    keys = draw(st.lists(st.sampled_from(KEYS + ["train.epoch", "optim.lr"]), min_size=1, max_size=2, unique=True))
    for key in keys:
        kind = draw(st.sampled_from(["any", "typed", "typed", "legal", "legal", "text"]))
        if kind == "text":  # not TOML at all: taken as a bare word
            texts.append(f"{key}={draw(st.text(max_size=10))}")
            continue
        if key not in KEYS or kind == "any":
            value = draw(_any_value)
        else:
            value = draw(_typed(key) if kind == "typed" else _legal(key))
        texts.append(f"{key}={_toml(value)}")
    return texts


_COUNT = itertools.count()
FIGURES_EVERY = 4  # a legal run draws its figures in one case of four (drawing is most of a tiny run's time)


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
    if mnist_dir() is None:
        pytest.skip("MNIST not found: set PYRO_VAE_DATA to a folder holding MNIST/raw")
    root = tmp_path_factory.mktemp("properties")
    path = root / "tiny.toml"
    path.write_text("\n".join(
        f"[{section}]\n" + "".join(f"{key} = {_toml(v)}\n" for key, v in values.items() if key in SCHEMA[section])
        for section, values in BASE.items()
    ))
    return root, path


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.filter_too_much,
                                                                  HealthCheck.too_slow])
@given(overrides=_overrides())
@example(overrides=["model.net=conv", "guide.type=amortized_full", "train.lr=0.09375", "data.pixels=grayscale"])
def test_any_override_exits_0_or_2_and_writes_nothing_on_2(base_config, overrides):
    root, config_file = base_config
    try:
        config = load_config(config_file, overrides)
        check_config(config)
    except ConfigError:
        pass  # refused: main must say so in one line, writing nothing
    else:
        assume(_cheap(config))  # legal but slow (10**6 epochs, 60,000 images) is not a bug
    case = next(_COUNT)
    out = root / f"run{case}"
    argv = ["train", "--config", str(config_file), "--out", str(out), "--data-dir", str(mnist_dir()),
            "--no-progress", *(["--no-figures"] if case % FIGURES_EVERY else [])]
    for text in overrides:
        argv += ["--set", text]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_info:  # argparse
            code = exit_info.code
    err = stderr.getvalue()
    assert code in (0, EXIT_BAD_INPUT, EXIT_TRAINING_FAILED), f"exit {code} for {overrides}: {err[-2000:]}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("pyro-vae")]
    if code == EXIT_BAD_INPUT:
        assert len(lines) == 1, err
        assert not Path(out).exists(), f"{overrides} wrote {sorted(Path(out).rglob('*'))}"
    elif code == EXIT_TRAINING_FAILED:  # a legal but unstable setting (a large train.lr) diverged
        assert len(lines) == 1 and lines[0].startswith("pyro-vae: training failed: loss became"), err
        assert "lower train.lr" in lines[0], err
