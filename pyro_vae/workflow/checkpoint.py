"""Safe, atomic files: checkpoints that cannot run code when loaded, and JSON written whole.

A write goes to a temporary file in the same folder, is flushed and fsync'ed, then
renamed over the target (atomic on POSIX), so a crash or a full disk leaves the
previous version in place. Checkpoints are loaded with ``torch.load(weights_only=True)``,
which accepts tensors and plain containers only and refuses pickled objects.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; one line naming the file and the reason."""


RUN_STATE_KEYS = ("format", "epoch", "position", "num_data", "vae", "guide", "optimizer", "rng", "history",
                  "seconds", "config")
"""The entries of a training checkpoint (``pyro_vae.workflow.training.Trainer.state``) that resuming needs."""


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it, else set and put back."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, payload: bytes, keep_previous: str | os.PathLike | None = None) -> None:
    """Write ``payload`` to ``path`` via temp file + fsync + rename; the old file survives failures.

    :param keep_previous: move the file being replaced there first (the last good copy).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files get open()'s usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        moved = keep_previous is not None and path.exists()
        if moved:
            os.replace(path, keep_previous)
        try:
            os.replace(tmp, path)
        except BaseException:
            if moved:  # put the last good file back where it was
                os.replace(keep_previous, path)
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def as_read_back(value):
    """``value`` as a JSON file gives it back (tuples as lists): what a saved value is compared with."""
    return json.loads(json.dumps(value))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def save_checkpoint(path: str | os.PathLike, state: dict, keep_previous: str | os.PathLike | None = None) -> None:
    """Save a dict of tensors and plain values (no custom objects) atomically.

    :param keep_previous: where the checkpoint being replaced is kept (None: not kept).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue(), keep_previous)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything that could run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; train first or pass the right run directory")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise CheckpointError(
                f"checkpoint {path} was refused: it holds a Python object ({found.group(1)}) that could "
                "run code when loaded; only load checkpoints written by pyro_vae"
            ) from None
        detail = [line for line in str(err).splitlines() if line.startswith("Unsupported")][:1]
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated, or not a torch checkpoint "
            f"({detail[0] if detail else 'unpickling failed'}); use an earlier copy or retrain"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}); "
            "use an earlier copy or retrain"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a pyro_vae state dict")
    return state


def check_entries(state: dict, path: str | os.PathLike, keys=RUN_STATE_KEYS,
                  fix: str = "use an earlier copy or retrain") -> None:
    """Raise :class:`CheckpointError` naming the entries among ``keys`` that ``state`` lacks, and ``fix``
    (the caller, which knows the run's files, names the copy to use)."""
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} lacks {', '.join(missing)}; it was not written by pyro_vae train, or it is "
            f"damaged: {fix}"
        )


def check_weights(module: torch.nn.Module, weights: Any, path: str | os.PathLike, entry: str,
                  config_file: str = "config") -> None:
    """Raise :class:`CheckpointError` unless ``weights`` (the checkpoint's ``entry``) holds a tensor of
    the right shape for every entry of ``module.state_dict()``, and nothing else; the message names the
    run's ``config_file`` to restore."""
    fix = f"it was trained with another config: restore the run's {config_file} or retrain"
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path}: {entry} is a {type(weights).__name__}, not a dict of tensors; {fix}")
    expected = module.state_dict()
    missing = [key for key in expected if key not in weights]
    unexpected = [key for key in weights if key not in expected]
    if missing or unexpected:
        found = [f"lacks {', '.join(missing[:5])}"] if missing else []
        found += [f"has unexpected {', '.join(unexpected[:5])}"] if unexpected else []
        raise CheckpointError(f"checkpoint {path}: {entry} {' and '.join(found)}; {fix}")
    for key, tensor in expected.items():
        value = weights[key]
        if not torch.is_tensor(value):
            raise CheckpointError(
                f"checkpoint {path}: {entry} entry {key} is a {type(value).__name__}, not a tensor; {fix}"
            )
        if value.shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint {path}: {entry} entry {key} has shape {tuple(value.shape)} but the model's is "
                f"{tuple(tensor.shape)}; {fix}"
            )
