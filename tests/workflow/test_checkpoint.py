import os
import pickle
import stat

import pytest
import torch

from pyro_vae.workflow import checkpoint
from pyro_vae.workflow.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json


def test_round_trip(tmp_path):
    state = {"w": torch.randn(3, 4), "epoch": 2, "history": [{"loss": 1.5}], "config": {"a": [1, 2]}}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["history"] == state["history"]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c.pt", {"epoch": 1})

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path / "c.pt", {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary left behind


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "payload": _RunsCode()}, path)
    refused = r"was refused: it holds a Python object \(posix.system\) that could run code"
    with pytest.raises(CheckpointError, match=refused):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(CheckpointError, match="corrupt or truncated, or not a torch checkpoint"):
        load_checkpoint(path)


def test_truncated_and_missing_checkpoints_give_one_line(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"w": torch.randn(100, 100)})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut.pt is corrupt or truncated") as err:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_write_json_is_whole(tmp_path):
    write_json(tmp_path / "h.json", [{"epoch": 1}])
    assert (tmp_path / "h.json").read_text().startswith("[")


def test_run_files_get_the_usual_permissions(tmp_path):
    """Like open(): 0666 less the umask (mkstemp alone would make every run file 0600)."""
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "h.json", [])
        save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
        save_checkpoint(tmp_path / "c.pt", {"epoch": 2}, keep_previous=tmp_path / "c.prev.pt")
    finally:
        os.umask(old)
    for name in ("h.json", "c.pt", "c.prev.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


def test_missing_entries_are_named(tmp_path):
    checkpoint.check_entries({key: 0 for key in checkpoint.RUN_STATE_KEYS}, tmp_path / "c.pt")
    state = {key: 0 for key in checkpoint.RUN_STATE_KEYS if key not in ("optimizer", "config")}
    with pytest.raises(CheckpointError, match=r"c.pt lacks optimizer, config; it was not written by pyro_vae"):
        checkpoint.check_entries(state, tmp_path / "c.pt")


@pytest.mark.parametrize("weights, message", [
    ({"weight": torch.zeros(3, 2), "bias": torch.zeros(3)},
     r"net entry weight has shape \(3, 2\) but the model's is \(2, 3\)"),
    ({"weight": torch.zeros(2, 3)}, r"net lacks bias;"),
    ({"weight": torch.zeros(2, 3), "extra": torch.zeros(1)}, r"net lacks bias and has unexpected extra;"),
    ({"weight": [[0.0] * 3] * 2, "bias": torch.zeros(2)}, r"net entry weight is a list, not a tensor"),
    ([torch.zeros(2, 3)], r"net is a list, not a dict of tensors"),
])
def test_weights_of_another_shape_are_named(tmp_path, weights, message):
    module = torch.nn.Linear(3, 2)
    checkpoint.check_weights(module, module.state_dict(), tmp_path / "c.pt", "net")
    with pytest.raises(CheckpointError, match=r"c.pt: " + message + r".*restore the run's config.toml or retrain"):
        checkpoint.check_weights(module, weights, tmp_path / "c.pt", "net", config_file="config.toml")


def _run_dir(path, **change):
    """A run directory holding an untrained tiny model's checkpoint, with ``change`` applied to it."""
    from pyro_vae.workflow.build import build_model

    from ..helpers import tiny_config

    config = tiny_config(model={"hidden": [8]})
    vae, guide = build_model(config, 64)
    path.mkdir()
    config.save(path / "config.toml")
    state = {"format": 1, "num_data": 64, "vae": vae.state_dict(), "guide": guide.state_dict(), "history": []}
    state.update(change)
    save_checkpoint(path / "checkpoint.pt", {k: v for k, v in state.items() if v is not None})
    return path


def test_load_run_accepts_older_formats_and_checks_the_weights(tmp_path):
    from pyro_vae.workflow.runs import load_run

    assert load_run(_run_dir(tmp_path / "old")).vae.z_dim == 2  # format 1 still evaluates and plots
    no_guide = _run_dir(tmp_path / "no_guide", guide=None)
    with pytest.raises(CheckpointError, match=r"checkpoint.pt lacks guide.*start a new run \(no earlier copy"):
        load_run(no_guide)
    (no_guide / "checkpoint.prev.pt").write_bytes((tmp_path / "old" / "checkpoint.pt").read_bytes())
    with pytest.raises(CheckpointError, match=r"checkpoint.pt lacks guide.*earlier copy .*no_guide.checkpoint.prev.pt"):
        load_run(no_guide)
    bad = _run_dir(tmp_path / "bad")
    state = load_checkpoint(bad / "checkpoint.pt")
    state["guide"]["loc_head.weight"] = torch.zeros(5, 8)
    save_checkpoint(bad / "checkpoint.pt", state)
    wrong = r"guide entry loc_head.weight has shape \(5, 8\) but the model.s is \(2, 8\).*restore the run.s config.toml"
    with pytest.raises(CheckpointError, match=wrong):
        load_run(bad)


_WRITER = """
import sys, torch
from pyro_vae.workflow.checkpoint import save_checkpoint
payloads = [torch.full((2_000_000,), float(i)) for i in range(2)]
i = 0
while True:
    save_checkpoint(sys.argv[1], {"w": payloads[i % 2], "i": i % 2})
    i += 1
"""


@pytest.mark.slow
def test_a_writer_killed_mid_write_leaves_a_whole_checkpoint(tmp_path):
    """SIGKILL a process that keeps rewriting an 8 MB checkpoint: the file is always one whole version."""
    import random
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "c.pt"
    rng = random.Random(0)
    for _ in range(4):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)])
        while not path.exists():
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.0))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        state = load_checkpoint(path)  # the whole file, every byte of the tensor
        assert torch.equal(state["w"], torch.full((2_000_000,), float(state["i"])))
