"""One training epoch: pyro_vae's SVI loop against hand-written PyTorch loops.

(a) ``handwritten``: the same networks over the same in-memory tensors, loss
    BCE + analytic KL, ``torch.optim.Adam``;
(b) ``dataloader``: the same loop fed by ``torch.utils.data.DataLoader`` over
    ``torchvision.datasets.MNIST`` with ``transforms.ToTensor()``, batch 128, shuffle
    (the common tutorial set-up).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.infer import SVI
from torchvision import datasets, transforms

from pyro_vae import adam, build_model, load_config, load_data
from pyro_vae.objectives import build_objective
from pyro_vae.train import epoch_generator, train_epoch


def _handwritten_step(guide, vae, x, optimizer):
    h = guide.encoder(x)
    loc, log_var = guide.loc_head(h), guide.log_var_head(h)
    z = loc + (0.5 * log_var).exp() * torch.randn_like(loc)
    logits = vae.decoder(z)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * (1 + log_var - loc.pow(2) - log_var.exp()).sum()
    loss = (recon + kl) / x.shape[0]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def epoch_sides(net: str, data_dir, train_size: int = 0, objective: str = "trace_mean_field") -> dict:
    """Callables that each run one epoch: ``pyro_vae``, ``handwritten`` and ``dataloader``."""
    config = load_config(None, [f"model.net={net}", f"data.train_size={train_size}", f"train.objective={objective}"])
    train, _ = load_data("mnist", "grayscale", data_dir, train_size, 1)
    n, batch = len(train), config.train.batch_size

    vae, guide = build_model(config, n)
    svi = SVI(vae.model, guide, adam(config.train.lr), build_objective(objective))
    epochs = iter(range(1, 10**6))

    def pyro_vae_epoch():
        train_epoch(svi, train, batch, epoch_generator(0, next(epochs)), 0, progress=False)

    hand_vae, hand_guide = build_model(config, n)
    hand_opt = torch.optim.Adam([*hand_vae.parameters(), *hand_guide.parameters()], lr=config.train.lr)
    generator = torch.Generator().manual_seed(0)

    def handwritten_epoch():
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            _handwritten_step(hand_guide, hand_vae, train.images[order[start:start + batch]], hand_opt)

    loader_vae, loader_guide = build_model(config, n)
    loader_opt = torch.optim.Adam([*loader_vae.parameters(), *loader_guide.parameters()], lr=config.train.lr)
    dataset = datasets.MNIST(data_dir, train=True, transform=transforms.ToTensor())
    if train_size:
        dataset = torch.utils.data.Subset(dataset, range(train_size))
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)

    def dataloader_epoch():
        for x, _ in loader:
            _handwritten_step(loader_guide, loader_vae, x.reshape(x.shape[0], -1), loader_opt)

    return {"pyro_vae": pyro_vae_epoch, "handwritten": handwritten_epoch, "dataloader": dataloader_epoch}
