import os
import pickle

import pytest
import torch

from pyro_vae import checkpoint
from pyro_vae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, write_json


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
