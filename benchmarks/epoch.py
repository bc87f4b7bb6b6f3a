"""pyro_vae's SVI loop against hand-written PyTorch loops, in short segments of training steps.

Each side is a callable that runs ``steps`` training steps on the next window of
``steps x batch`` training images (the windows cycle through the training set, so every
side sees the same images in the same kind of shuffled order):

``pyro_vae``
    :func:`pyro_vae.workflow.loop.run_epoch` (what ``Trainer.run`` calls) on the window: the
    ``svi.step(x, idx)`` calls over ``ImageData.batches_in`` batches, with
    :func:`pyro_vae.adam` and Pyro validation set as the config says (off by default),
    like a training run;
``handwritten``
    the same networks over the same in-memory tensors, loss BCE + analytic KL,
    ``torch.optim.Adam(fused=True)`` (the kernel :func:`pyro_vae.adam` uses), so the ratio is the
    package's machinery alone;
``dataloader`` (optional)
    the hand-written loop fed by ``torch.utils.data.DataLoader`` over
    ``torchvision.datasets.MNIST`` with ``transforms.ToTensor()``, batch 128, shuffle
    (the common tutorial set-up), ``steps`` batches from an iterator that restarts each epoch.

Every side runs with subnormal floats flushed to zero on every thread, as ``pyro-vae`` does
(``python -m benchmarks`` sets it before torch's worker threads start): without it, Adam's moments of the always-black
pixels turn subnormal within an epoch and slow every side by a varying amount.
"""

from __future__ import annotations

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import SVI

from pyro_vae import adam, build_model, load_config, load_data
from pyro_vae.workflow.data import ImageData
from pyro_vae.workflow.build import build_objective
from pyro_vae.workflow.loop import EpochState, FiniteLoss, ProgressBar, run_epoch


def _handwritten_step(guide, vae, x, optimizer):
    h = guide.encoder(x)
    loc, log_var = guide.loc_head(h), guide.log_var_head(h)  # (B, z_dim)
    z = loc + (0.5 * log_var).exp() * torch.randn_like(loc)
    logits = vae.decoder(z)  # (B, 784)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * (1 + log_var - loc.pow(2) - log_var.exp()).sum()
    loss = (recon + kl) / x.shape[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _windows(train: ImageData, size: int) -> list[ImageData]:
    """Consecutive, disjoint windows of ``size`` images (views, no copies)."""
    return [ImageData(train.images[s:s + size], train.labels[s:s + size], train.pixels)
            for s in range(0, len(train) - size + 1, size)]


def segment_sides(net: str, data_dir, steps: int, train_size: int = 0, objective: str = "trace_mean_field",
                  dataloader: bool = False) -> dict:
    """Callables that each run ``steps`` training steps: ``pyro_vae``, ``handwritten`` (and ``dataloader``).

    :param net: ``mlp`` or ``conv`` (``model.net``), the reference networks of that kind.
    :param train_size: training images (0: all 60,000); must hold ``steps x batch_size``.
    :param objective: pyro_vae's ``train.objective``; the default's analytic KL matches the
        hand-written loss term for term.
    """
    config = load_config(None, [f"model.net={net}", f"data.train_size={train_size}", f"train.objective={objective}"])
    train, _ = load_data("mnist", "grayscale", data_dir, train_size, 1)
    n, batch = len(train), config.train.batch_size
    windows = _windows(train, steps * batch)
    if not windows:
        raise ValueError(f"train_size {n} holds fewer images than steps x batch = {steps} x {batch}; "
                         f"lower steps to at most {n // batch} or raise train_size")
    picks = {"pyro_vae": 0, "handwritten": 0, "dataloader": 0}

    def window(side: str) -> ImageData:
        picks[side] += 1
        return windows[(picks[side] - 1) % len(windows)]

    pyro.clear_param_store()
    pyro.enable_validation(config.train.validate)  # as Trainer.start does
    vae, guide = build_model(config, n)
    svi = SVI(vae.model, guide, adam(config.train.lr), build_objective(config))

    def pyro_vae_segment():
        data = window("pyro_vae")
        run_epoch(svi, data, batch, EpochState.begin(data, picks["pyro_vae"], 0), [FiniteLoss(), ProgressBar(False)])

    hand_vae, hand_guide = build_model(config, n)
    hand_opt = torch.optim.Adam([*hand_vae.parameters(), *hand_guide.parameters()], lr=config.train.lr,
                                fused=True)  # the kernel pyro_vae.adam steps the dense parameters with
    generator = torch.Generator().manual_seed(0)

    def handwritten_segment():
        images = window("handwritten").images
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch):
            _handwritten_step(hand_guide, hand_vae, images[order[start:start + batch]], hand_opt)

    sides = {"pyro_vae": pyro_vae_segment, "handwritten": handwritten_segment}
    if dataloader:
        sides["dataloader"] = _dataloader_segment(config, data_dir, n, steps)
    return sides


def _dataloader_segment(config, data_dir, n: int, steps: int):
    from torchvision import datasets, transforms

    vae, guide = build_model(config, n)
    optimizer = torch.optim.Adam([*vae.parameters(), *guide.parameters()], lr=config.train.lr)
    dataset = datasets.MNIST(data_dir, train=True, transform=transforms.ToTensor())
    if n < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(n))
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.train.batch_size, shuffle=True)

    def batches():
        while True:
            yield from loader

    stream = batches()

    def dataloader_segment():
        for _ in range(steps):
            x, _ = next(stream)
            _handwritten_step(guide, vae, x.reshape(x.shape[0], -1), optimizer)

    return dataloader_segment
