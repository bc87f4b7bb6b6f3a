"""Random streams of a run: each epoch's and the evaluation's generators, and blocks on a seeded
global stream that leave the training run's stream where it was.

Epoch e's order (and dynamic binarization) comes from a generator seeded by ``(seed, e)``,
so a run resumed from a checkpoint draws exactly the batches an uninterrupted run draws.
"""

from __future__ import annotations

import contextlib

import torch


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator that draws epoch ``epoch``'s batch order and dynamic binarizations."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def eval_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for evaluation, the same every epoch (same test binarization each time)."""
    return epoch_generator(seed, -1, device)


def flushing() -> bool:
    """Whether subnormal float32 results are flushed to zero now (2e-38 / 100 comes out 0)."""
    return (torch.tensor([2e-38]) / 100).item() == 0.0


@contextlib.contextmanager
def flushed_subnormals():
    """Run a block with subnormal floats flushed to zero (``torch.set_flush_denormal``), then restore
    the mode found. Training and evaluation run inside it: on CPUs, arithmetic on subnormals (Adam's
    second moments of the always-black pixels fall into that range within an epoch) costs a third
    of an MLP epoch, and numbers that small are below anything an update or an estimate can see."""
    before = flushing()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu"):
    """Run a block on torch's global RNG seeded with ``seed``, then restore the previous state.

    Evaluation runs inside it, so its Monte-Carlo draws are a fixed function of the
    parameters and never move the training run's random stream.
    """
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
