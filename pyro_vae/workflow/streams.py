"""Random streams of a run: each epoch's and the evaluation's generators, and blocks on a seeded
global stream that leave the training run's stream where it was.

Epoch e's order (and dynamic binarization) comes from a generator seeded by ``(seed, e)``,
so a run resumed from a checkpoint draws exactly the batches an uninterrupted run draws.
"""

from __future__ import annotations

import contextlib

import torch

from ..infer.evaluate import seeded  # noqa: F401  (a block on seeded global streams: the evaluators' own)


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator that draws epoch ``epoch``'s batch order and dynamic binarizations."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def eval_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for evaluation, the same every epoch (same test binarization each time)."""
    return epoch_generator(seed, -1, device)


def pixel_draws_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for further draws of the evaluation images' pixels (M2's accuracy over binarizations), apart
    from :func:`eval_generator`'s and every epoch's."""
    return epoch_generator(seed, -2, device)


PROBE_SIZE = 1 << 20  # elements: more than torch's per-thread grain (32,768) times any thread count used here


def flushing() -> bool:
    """Whether subnormal float32 results are flushed to zero on every thread of torch's pool now
    (2e-38 / 100 over a tensor large enough that each worker thread computes part of it)."""
    return bool(((torch.full((PROBE_SIZE,), 2e-38) / 100) == 0).all())


@contextlib.contextmanager
def flushed_subnormals():
    """Run a block with subnormal floats flushed to zero on the calling thread, then restore the mode
    found. Training and evaluation run inside it: on CPUs, arithmetic on subnormals (Adam's second
    moments of the always-black pixels fall into that range within an epoch) is slow, and numbers
    that small are below anything an update or an estimate can see. Torch's worker threads keep the
    mode they started with (``torch.set_flush_denormal`` sets the calling thread's; a worker takes the
    mode of the thread that starts it): to flush every thread, enter this before the first parallel
    operation, as ``pyro-vae``'s command line does."""
    before = (torch.tensor([2e-38]) / 100).item() == 0.0  # the calling thread's mode (one element: computed here)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


