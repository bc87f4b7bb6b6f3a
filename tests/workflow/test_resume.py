"""Runs stopped anywhere (SIGKILL, Ctrl-C) and resumed end bit-for-bit where uninterrupted runs end."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_vae.workflow.checkpoint import CheckpointError, load_checkpoint
from pyro_vae.workflow.config import ConfigError
from pyro_vae.workflow.runs import RunDir
from pyro_vae.workflow.data import load_run_data
from pyro_vae.workflow.loop import EpochState
from pyro_vae.workflow.training import Interrupted, Trainer, resume, train, train_or_resume

from ..helpers import tiny_config

pytestmark = pytest.mark.mnist
QUIET = {"progress": False, "log": lambda line: None}


def _config(guide="amortized", epochs=3):
    config = tiny_config(guide={"type": guide})
    config.data.pixels = "dynamic"  # exercises the per-epoch generator too
    config.data.train_size, config.data.test_size = 3000, 300
    config.model.hidden = [256]
    config.train.epochs, config.train.batch_size, config.train.lr = epochs, 50, 3e-3
    config.train.lr_schedule, config.train.lr_decay = "exponential", 0.5  # a resumed epoch must get its own rate
    config.guide.local_steps = 10
    if guide == "amortized":
        config.train.snapshot_epochs = [0, 2, 3]  # recorded in the checkpoint, compared below too
    return config


def _outcome(run: Path) -> dict:
    state = load_checkpoint(run / "checkpoint.pt")
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in state["history"]]
    metrics = json.loads((run / "metrics.json").read_text())
    return {"vae": state["vae"], "guide": state["guide"], "optimizer": state["optimizer"],
            "history": history, "test_loss": metrics["test_loss"], "epoch": state["epoch"],
            "snapshots": state["snapshots"]}


def _assert_same_tree(a, b, where="optimizer"):
    if torch.is_tensor(a):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where} keys differ"
        for key in a:
            _assert_same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where} lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where} differs"


def _assert_identical(a: dict, b: dict):
    assert a["history"] == b["history"] and a["test_loss"] == b["test_loss"] and a["epoch"] == b["epoch"]
    _assert_same_tree(a["optimizer"], b["optimizer"])
    _assert_same_tree(a["snapshots"], b["snapshots"], "snapshots")
    for part in ("vae", "guide"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """Uninterrupted runs to compare with."""
    runs = {}
    for guide in ("amortized", "mean_field"):
        out = tmp_path_factory.mktemp("ref") / guide
        train(_config(guide), out, data_dir, **QUIET)
        runs[guide] = _outcome(out)
    return runs


def _wait_until_training(proc, out: Path, launched: float) -> None:
    """Block until the run has loaded its data and built its parts (or has exited)."""
    if "--resume" in proc.args:
        proc.stdout.readline()  # "resuming ... after epoch ..."
        return
    config = out / "config.toml"
    while proc.poll() is None and not (config.exists() and config.stat().st_mtime >= launched - 1):
        time.sleep(0.02)


def _wait_for_new_checkpoint(proc, out: Path, launched: float) -> None:
    checkpoint = out / "checkpoint.pt"
    while proc.poll() is None and not (checkpoint.exists() and checkpoint.stat().st_mtime >= launched):
        time.sleep(0.02)


@pytest.mark.parametrize("guide", ["amortized", "mean_field"])
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path, data_dir, reference, guide):
    """Kill -9 at random moments of training (mid-step, mid-save, mid-figures), resume, compare."""
    config_file = tmp_path / "config.toml"
    _config(guide).save(config_file)
    out = tmp_path / "run"
    rng = random.Random(1234 if guide == "amortized" else 99)
    env = {**os.environ, "PYRO_VAE_DATA": str(data_dir), "PYTHONUNBUFFERED": "1"}
    kills, from_checkpoint = 0, 0
    for attempt in range(10):
        if (out / "config.toml").exists():
            args = ["--resume", str(out)]
            from_checkpoint += (out / "checkpoint.pt").exists()
        else:
            args = ["--config", str(config_file), "--out", str(out), "--overwrite"]
        launched = time.time()
        proc = subprocess.Popen([sys.executable, "-m", "pyro_vae", "train", "--no-progress", *args],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if attempt < 4:
            # Kills follow observed progress plus a short random delay, so they land mid-step,
            # mid-save or mid-evaluation at any machine speed: after training starts (even
            # attempts) or right after this process wrote a checkpoint (odd attempts).
            _wait_until_training(proc, out, launched)
            if attempt % 2:
                _wait_for_new_checkpoint(proc, out, launched)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.3))
            except subprocess.TimeoutExpired:
                proc.kill()  # SIGKILL
                proc.communicate()
                kills += 1
                continue
        stderr = proc.communicate(timeout=600)[1]
        assert proc.returncode == 0, stderr
        break
    assert proc.returncode == 0 and kills >= 2 and from_checkpoint >= 1
    _assert_identical(_outcome(out), reference[guide])


@pytest.mark.slow
def test_ctrl_c_mid_epoch_saves_and_resumes_bit_identically(tmp_path, data_dir, reference):
    out = tmp_path / "run"
    config = _config()
    trainer = Trainer(config, out, *load_run_data(config, data_dir), **QUIET)
    RunDir(out).prepare(config)
    trainer.start()
    step = trainer.svi.step
    calls = {"n": 0}

    def step_then_ctrl_c(*args):
        calls["n"] += 1
        loss = step(*args)
        if calls["n"] == 70:  # epoch 2 (60 steps per epoch), step 10
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    trainer.svi.step = step_then_ctrl_c
    with pytest.raises(Interrupted, match=r"interrupted in epoch 2 after step 10; .* --resume"):
        trainer.run()
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["position"]["step"] == 10
    resume(out, data_dir=data_dir, **QUIET)
    _assert_identical(_outcome(out), reference["amortized"])


@pytest.mark.slow
def test_training_longer_equals_one_long_run(tmp_path, data_dir, reference):
    out = tmp_path / "run"
    train(_config(epochs=2), out, data_dir, **QUIET)
    resume(out, ["train.epochs=3"], data_dir, **QUIET)
    _assert_identical(_outcome(out), reference["amortized"])
    assert "epochs = 3" in (out / "config.toml").read_text()


@pytest.mark.slow
def test_resume_refuses_changes_and_bad_checkpoints(tmp_path, data_dir):
    out = tmp_path / "run"
    train(_config(epochs=2), out, data_dir, **QUIET)
    with pytest.raises(ConfigError, match=r"changed config \(train.lr\); only train.epochs, train.max_minutes, "
                                          r"train.early_stopping may"):
        resume(out, ["train.lr=0.1"], data_dir, **QUIET)
    with pytest.raises(ConfigError, match=r"^train.epochs below the run's \(train.epochs = 1, .* against "
                                          r"train.epochs = 2, .*; 0: no limit\); resume can only train longer$"):
        resume(out, ["train.epochs=1"], data_dir, **QUIET)
    good = (out / "checkpoint.pt").read_bytes()
    (out / "checkpoint.pt").write_bytes(good[: len(good) // 3])
    with pytest.raises(CheckpointError, match="is corrupt or truncated"):
        resume(out, data_dir=data_dir, **QUIET)
    with pytest.raises(ConfigError, match="is not a run directory"):
        resume(tmp_path / "nothing", data_dir=data_dir, **QUIET)


@pytest.mark.slow
def test_a_checkpoint_from_other_data_is_refused(tmp_path, data_dir):
    out = tmp_path / "run"
    train(_config("mean_field", epochs=1), out, data_dir, **QUIET)
    state = load_checkpoint(out / "checkpoint.pt")
    config = _config("mean_field", epochs=1)
    config.data.train_size = 1000
    trainer = Trainer(config, tmp_path / "other", *load_run_data(config, data_dir), **QUIET)
    with pytest.raises(CheckpointError, match="trained on 3000 images but the data now have 1000"):
        trainer.restore(state)


@pytest.mark.slow
def test_a_longer_run_stopped_before_its_end_is_resumed_not_taken_as_finished(tmp_path, data_dir, reference):
    """train_or_resume counts a run finished only when its metrics.json is there for all its epochs:
    a resume to 3 epochs stopped after it wrote the longer config (before its metrics) is resumed."""
    out = tmp_path / "run"
    train(_config(epochs=2), out, data_dir, **QUIET)
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    _config(epochs=3).save(out / "config.toml")  # what resume writes first, before training epoch 3
    (out / "metrics.json").write_text(json.dumps({"epochs": 2}))  # the shorter run's, as an older resume left it
    lines = []
    assert train_or_resume(_config(epochs=3), out, data_dir, progress=False, log=lines.append) is False
    assert any(line.startswith(f"resuming {out} after epoch 2 of 3") for line in lines)
    _assert_identical(_outcome(out), reference["amortized"])
    resume(out, data_dir=data_dir, **QUIET)  # resuming the finished run again trains nothing more
    _assert_identical(_outcome(out), reference["amortized"])


def test_resuming_to_more_epochs_removes_the_shorter_runs_metrics(tmp_path, data_dir, monkeypatch):
    out = tmp_path / "run"
    config = tiny_config(data={"train_size": 200, "test_size": 100}, train={"epochs": 1})
    train(config, out, data_dir, **QUIET)
    (out / "evaluation.json").write_text("{}")
    (out / "evaluation_q_flow_other.json").write_text("{}")  # a cross-family evaluation of the shorter run

    def stop_at_once(self):  # training stopped before it finished the new epoch
        raise Interrupted("stopped")

    monkeypatch.setattr(Trainer, "run", stop_at_once)
    with pytest.raises(Interrupted):
        resume(out, ["train.epochs=2"], data_dir, **QUIET)
    assert not (out / "metrics.json").exists() and not (out / "evaluation.json").exists()
    assert not (out / "evaluation_q_flow_other.json").exists()
    assert "epochs = 2" in (out / "config.toml").read_text()


@pytest.mark.slow
def test_a_time_budget_ends_training_between_epochs_and_a_larger_one_resumes(tmp_path, data_dir, monkeypatch):
    """train.max_minutes stops after the epoch that spends it (each epoch here takes 30 s of a fake clock);
    such a run counts as finished, a larger budget resumes it, a smaller one is refused."""
    monkeypatch.setattr(EpochState, "seconds", lambda self: 30.0)
    out = tmp_path / "run"
    config = tiny_config(data={"train_size": 100, "test_size": 50}, train={"epochs": 5, "max_minutes": 1.0})
    lines = []
    train(config, out, data_dir, progress=False, log=lines.append)
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["train_seconds"]) == (2, 60.0)
    assert "train.max_minutes = 1 spent (1.0 minutes of training) after epoch 2 of 5" in lines
    assert train_or_resume(config, out, data_dir, **QUIET) is True  # finished: reused, not trained further
    config.train.max_minutes = 2.0
    assert train_or_resume(config, out, data_dir, **QUIET) is False
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 4
    assert "max_minutes = 2.0" in (out / "config.toml").read_text()
    config.train.max_minutes = 1.0
    with pytest.raises(ConfigError, match=r"holds a longer run than this config's: train.max_minutes below the run's"):
        train_or_resume(config, out, data_dir, **QUIET)
    with pytest.raises(ConfigError, match=r"^train.max_minutes below the run's .* against train.epochs = 5, "
                                          r"train.max_minutes = 2.0, "):
        resume(out, ["train.max_minutes=1.5"], data_dir, **QUIET)
    resume(out, ["train.max_minutes=0"], data_dir, **QUIET)  # no limit: on to train.epochs
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 5


@pytest.mark.slow
def test_killed_before_the_first_checkpoint_starts_over(tmp_path, data_dir, reference):
    out = tmp_path / "run"
    out.mkdir()
    _config().save(out / "config.toml")  # what a kill right after the config was written leaves
    resume(out, data_dir=data_dir, **QUIET)
    _assert_identical(_outcome(out), reference["amortized"])



@pytest.mark.slow
def test_the_previous_checkpoint_is_kept_and_named_when_the_latest_is_corrupt(tmp_path, data_dir, reference):
    out = tmp_path / "run"
    train(_config(epochs=2), out, data_dir, **QUIET)
    assert load_checkpoint(out / "checkpoint.prev.pt")["epoch"] == 1
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    (out / "checkpoint.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"checkpoint.pt is corrupt.*the previous checkpoint .*checkpoint.prev.pt "
                                              r"is intact: rename it to checkpoint.pt"):
        resume(out, ["train.epochs=3"], data_dir, **QUIET)
    (out / "checkpoint.prev.pt").rename(out / "checkpoint.pt")  # what the message says to do
    resume(out, ["train.epochs=3"], data_dir, **QUIET)
    _assert_identical(_outcome(out), reference["amortized"])


@pytest.mark.slow
def test_stopped_between_the_two_renames_resumes_from_the_previous(tmp_path, data_dir, reference):
    out = tmp_path / "run"
    train(_config(epochs=2), out, data_dir, **QUIET)
    (out / "checkpoint.pt").unlink()  # the moment after checkpoint.pt became checkpoint.prev.pt
    resume(out, ["train.epochs=3"], data_dir, **QUIET)
    _assert_identical(_outcome(out), reference["amortized"])


@pytest.mark.parametrize("codes", [
    ["prior.type='categorical'", "guide.type='relaxed_categorical'", "guide.temperature_decay=0.01"],
    ["prior.type='learned_categorical'", "guide.type='vq'", "prior.codebook='ema'"],
])
def test_discrete_codes_resumed_train_as_one_run(tmp_path, data_dir, codes):
    """The relaxed guide's temperature is a function of the step, and a moving-average codebook's counts and
    sums travel in the checkpoint: one epoch then a resumed second equals two in one go."""
    from pyro_vae.workflow.config import load_config

    def config(epochs):
        c = load_config(None, [*codes, "model.z_dim=4", "prior.codes=8", "model.hidden=[64]", "data.pixels='dynamic'",
                               "data.train_size=600", "data.test_size=100", "train.batch_size=50"])
        c.train.epochs = epochs
        return c

    train(config(2), tmp_path / "straight", data_dir, figures=False, **QUIET)
    train(config(1), tmp_path / "resumed", data_dir, figures=False, **QUIET)
    resume(tmp_path / "resumed", ["train.epochs=2"], data_dir, figures=False, **QUIET)
    straight, resumed = load_checkpoint(tmp_path / "straight" / "checkpoint.pt"), load_checkpoint(
        tmp_path / "resumed" / "checkpoint.pt")
    for part in ("vae", "guide"):
        for key in straight[part]:
            assert torch.equal(straight[part][key], resumed[part][key]), f"{part}.{key} differs"
    assert [r["train_loss"] for r in straight["history"]] == [r["train_loss"] for r in resumed["history"]]
