"""What the digit's label y is to a run (``model.labels``), and what its SVI steps are given.

- ``none``: a VAE of x; a step is ``svi.step(x, idx)`` over the training images.
- ``input``: a conditional VAE; ``svi.step(x, idx, y[idx])`` with the batch's one-hot labels.
- ``latent``: M2; ``data.labelled`` training images (balanced over the classes, drawn with
  :func:`labelled_seed`) keep their labels, the others are unlabelled. An epoch is one pass over the
  unlabelled images, each step ``svi.step(x_u, idx_u, x_l, idx_l, y_l, w)`` with a labelled batch of
  the same size (at most the labelled set) taken in turn from a seeded permutation of the labelled
  images, so that step s of epoch e always sees the same labelled batch (a resumed run included).
  With ``train.labelled_every = k`` the labelled batch enters only steps 0, k, 2k, ... of each epoch, weighted
  S / ceil(S / k) (S steps an epoch), so that over an epoch its terms weigh what they weigh at k = 1 while
  the labelled images are seen k times less often; the steps between take ``(None, None, None, 0.0)`` (no
  labelled batch, weight 0; :class:`~pyro_vae.infer.objectives.SemiSupervisedELBO`). k >= S: one labelled
  batch an epoch, weighted S, about Pyro's ss_vae_M2.py schedule with 100 labels.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

import torch.nn.functional as F

from ..models.conditional import one_hot
from ..models.nets import glorot_init_
from ..models.vae import VAE
from .build import build_classifier
from .config import Config, ConfigError
from .data import NUM_CLASSES, ImageData
from .streams import epoch_generator, seeded

LABELLED_STREAM = 7_919  # offsets the labelled batches' generators from the epochs' own


def labels_for(vae: VAE, data: ImageData) -> torch.Tensor | None:
    """The one-hot labels ``(N, C)`` of ``data`` for a model whose decoder takes y; None for a VAE of x."""
    if not vae.conditional:
        return None
    try:
        return one_hot(data.labels, vae.num_classes, data.images.dtype)
    except ValueError as err:
        raise ConfigError(f"{err}; model.labels = '{vae.labels}' needs a labelled dataset (mnist, fashion_mnist)"
                          ) from None


def balanced_labelled(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """``count`` row indices, ``count / C`` of each class 0..C-1, drawn with ``seed``; sorted.

    Raises ``ConfigError`` when ``count`` is not a multiple of C or a class has too few images."""
    if count % NUM_CLASSES or count <= 0:
        raise ConfigError(f"data.labelled = {count} cannot be balanced over the {NUM_CLASSES} classes; use a "
                          f"positive multiple of {NUM_CLASSES}, e.g. 100")
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in range(NUM_CLASSES):
        rows = (labels.cpu() == label).nonzero().flatten()
        if len(rows) < count // NUM_CLASSES:
            raise ConfigError(f"data.labelled = {count} asks for {count // NUM_CLASSES} images of digit {label}, but "
                              f"the training images hold {len(rows)}; lower data.labelled or raise data.train_size")
        picked.append(rows[torch.randperm(len(rows), generator=generator)[:count // NUM_CLASSES]])
    return torch.cat(picked).sort().values.to(labels.device)


def labelled_seed(config: Config) -> int:
    """The seed that draws M2's labelled set: ``data.labelled_seed``, or ``train.seed`` where it is -1 (then one
    seed draws the set, the initial weights and the stream; fixing it apart holds the set while the start varies)."""
    return config.data.labelled_seed if config.data.labelled_seed >= 0 else config.train.seed


def labelled_rows(train: ImageData, config: Config) -> torch.Tensor:
    """The rows of ``train`` that keep their label: :func:`balanced_labelled` of ``data.labelled`` with
    :func:`labelled_seed`."""
    return balanced_labelled(train.labels, config.data.labelled, labelled_seed(config))


class LabelledBatches:
    """Step s of epoch e's labelled batch ``(x_l, idx_l, y_l)``: rows ``s*B .. (s+1)*B`` (cyclically) of a
    permutation of the labelled set drawn from ``(seed, e)``; its pixels drawn on a generator of ``(seed, e, s)``."""

    def __init__(self, labelled: ImageData, batch_size: int, seed: int):
        self.data, self.seed = labelled, seed
        self.batch = min(batch_size, len(labelled))
        self.y = one_hot(labelled.labels, NUM_CLASSES, labelled.images.dtype)
        self._orders: dict[int, torch.Tensor] = {}

    def __call__(self, epoch: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if epoch not in self._orders:
            generator = epoch_generator(self.seed + LABELLED_STREAM, epoch, self.data.device)
            self._orders = {epoch: self.data.order(generator)}
        order = self._orders[epoch]
        start = (step * self.batch) % len(order)
        idx = order.roll(-start)[:self.batch]
        pixels = epoch_generator(self.seed + LABELLED_STREAM, epoch * 1_000_003 + step, self.data.device)
        return self.data.pixels_at(idx, pixels), idx, self.y[idx]


StepInputs = Callable[[torch.Tensor, int, int], tuple]  # (idx, epoch, step) -> what svi.step takes after x, idx


def training_inputs(vae: VAE, train: ImageData, config: Config) -> tuple[ImageData, StepInputs | None]:
    """``(the images an epoch passes over, the extra arguments of each step)`` for ``model.labels``."""
    if vae.labels == "none":
        return train, None
    if vae.labels == "input":
        y = labels_for(vae, train)
        return train, lambda idx, epoch, step: (y[idx],)
    labelled = labelled_rows(train, config)
    unlabelled = torch.ones(len(train), dtype=torch.bool, device=train.device)
    unlabelled[labelled] = False
    batches = LabelledBatches(train.rows(labelled), config.train.batch_size, config.train.seed)
    epoch_data, every = train.rows(unlabelled.nonzero().flatten()), config.train.labelled_every
    weight = labelled_step_weight(epoch_data.steps(config.train.batch_size), every)  # 1.0 where every step has one

    def every_kth(idx, epoch, step):
        return (*batches(epoch, step // every), weight) if step % every == 0 else (None, None, None, 0.0)

    return epoch_data, every_kth


def labelled_step_weight(steps: int, every: int) -> float:
    """The weight S / ceil(S / k) of the labelled batch on the steps it enters (0, k, 2k, ... of an epoch's S),
    so that an epoch's labelled terms weigh S times one step's, as where every step has one (k = 1); k >= S:
    step 0 alone, weighted S."""
    return steps / math.ceil(steps / every)


BASELINE_MAX_STEPS, BASELINE_BATCH, BASELINE_LR, BASELINE_FITTED = 3000, 100, 1e-3, 0.01


def baseline_accuracy(config: Config, train: ImageData, test_x: torch.Tensor, test_labels: torch.Tensor) -> dict:
    """The supervised baseline of an M2 run: a classifier of the shape of its q(y | x)
    (:func:`~pyro_vae.workflow.build.build_classifier`, the run's init) trained on the run's labelled images
    alone (:func:`labelled_rows` of ``train``) by Adam (lr :data:`BASELINE_LR`) on the cross-entropy, in
    seeded passes of minibatches of up to :data:`BASELINE_BATCH`, the pixels drawn as in training, until a
    pass's mean cross-entropy is below :data:`BASELINE_FITTED` nats (the labelled set fitted; no validation
    set picks a step) or :data:`BASELINE_MAX_STEPS` steps; its accuracy on the test pixels ``test_x``."""
    labelled = train.rows(labelled_rows(train, config))
    with seeded(config.train.seed + 5):
        net = build_classifier(config)
        if config.model.init == "glorot":
            glorot_init_(net)
        optimizer = torch.optim.Adam(net.parameters(), lr=BASELINE_LR)
        batch, steps, passes, pass_loss = min(BASELINE_BATCH, len(labelled)), 0, 0, math.inf
        while pass_loss >= BASELINE_FITTED and steps < BASELINE_MAX_STEPS:
            passes, total = passes + 1, 0.0
            for idx, x in labelled.batches(batch, epoch_generator(config.train.seed + 5, passes)):
                loss = F.cross_entropy(net(x), labelled.labels[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps, total = steps + 1, total + loss.item() * len(idx)
            pass_loss = total / len(labelled)
        with torch.no_grad():
            correct = (net(test_x).argmax(-1) == test_labels).float().mean().item()
    return {"accuracy": correct, "labelled": len(labelled), "steps": steps, "train_loss": pass_loss,
            "fitted": pass_loss < BASELINE_FITTED, "batch": batch, "lr": BASELINE_LR}
