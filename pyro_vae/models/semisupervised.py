"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling 2014) as a Pyro model and guide.

Model:  y ~ Cat(1/C),  z ~ p(z),  x ~ p(x | z, y)   (the conditional VAE's decoder of [z, onehot(y)])
Guide:  q(y | x) q(z | x, y)                     (a classifier, and the conditional VAE's encoder)

y is a sample site in both. For a labelled image it is observed (the guide skips its y site);
for an unlabelled one the guide's y is enumerated over the C classes in parallel
(``config_enumerate`` with ``TraceEnum_ELBO``), which makes the bound exact in y:

    U(x) = sum_y q(y | x) [ L(x, y) - log q(y | x) ],
    L(x, y) = E_q(z|x,y) [ log p(x | z, y) + log p(y) + log p(z) - log q(z | x, y) ].

The objective sums both over their sets, J = sum_labelled L(x, y) + sum_unlabelled U(x), so a
labelled minibatch is scaled to the N_l labelled images and an unlabelled one to the N_u others.
q(y | x) appears only in the unlabelled term, so labelled images would never train the
classifier: Kingma et al. add ``alpha E_labelled[-log q(y | x)]`` (alpha = 0.1 N), whose
minibatch estimate is ``alpha * classifier_loss(x, y)`` (a mean over the batch); see
:class:`pyro_vae.infer.objectives.SemiSupervisedELBO`.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .conditional import ConditionalNormal, ConditionalVAE
from .vae import data_plate


class SetSizes:
    """N_l and N_u: a minibatch with labels is scaled to the labelled set, one without to the rest."""

    def __init__(self, num_labelled: int, num_unlabelled: int):
        if num_labelled < 1 or num_unlabelled < 0:
            raise ValueError(f"M2 needs num_labelled >= 1 and num_unlabelled >= 0, got {num_labelled} and "
                             f"{num_unlabelled}")
        self.num_labelled, self.num_unlabelled = num_labelled, num_unlabelled

    def of(self, y: torch.Tensor | None) -> int:
        return self.num_unlabelled if y is None else self.num_labelled


class SemiSupervisedVAE(ConditionalVAE):
    """p(x, y, z) = p(y) p(z) p(x | z, y); ``model(x, idx=None, y=None)`` with ``y`` one-hot ``(B, C)`` for
    labelled images and None for unlabelled ones (enumerated by the guide).

    :param num_labelled: N_l, the labelled set's size (labelled minibatches are scaled to it).
    :param num_unlabelled: N_u, the unlabelled set's size.
    """

    labels = "latent"

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood: nn.Module, num_labelled: int,
                 num_unlabelled: int, num_classes: int = 10):
        super().__init__(prior, decoder, likelihood, num_labelled + num_unlabelled, num_classes)
        self.sets = SetSizes(num_labelled, num_unlabelled)

    def prior_y(self, x: torch.Tensor) -> dist.Distribution:
        """p(y) = Cat(1/C), one-hot."""
        return dist.OneHotCategorical(logits=x.new_zeros(self.num_classes))

    def model(self, x: torch.Tensor, idx: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        pyro.module("vae", self)
        with data_plate(x, idx, self.sets.of(y)):
            y = pyro.sample("y", self.prior_y(x), obs=y)  # (B, C), or (C, 1, C) enumerated
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.logits(z, y)), obs=x)

    forward = model


class SemiSupervisedGuide(ConditionalNormal):
    """q(y | x) q(z | x, y): ``classifier`` maps images ``(B, D)`` to the logits of q(y | x) ``(B, C)``; the
    rest is :class:`~pyro_vae.models.conditional.ConditionalNormal`. Enumerate it for unlabelled images:
    ``config_enumerate(guide)`` with ``TraceEnum_ELBO(max_plate_nesting=1)``."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module, z_dim: int, sets: SetSizes):
        super().__init__(encoder, z_dim, sets.num_labelled + sets.num_unlabelled)
        self.classifier = classifier
        self.sets = sets

    def forward(self, x: torch.Tensor, idx: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        pyro.module(self.name, self)
        with data_plate(x, idx, self.sets.of(y)):
            if y is None:
                y = pyro.sample("y", self.q_y(x))
            pyro.sample("z", self.posterior(x, idx, y))

    def q_y(self, x: torch.Tensor) -> dist.Distribution:
        """q(y | x), the classifier, batch ``(B,)``."""
        return dist.OneHotCategorical(logits=self.classifier(x))

    def classifier_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-mean_n log q(y_n | x_n) over labelled images: the minibatch estimate of E_labelled[-log q(y | x)]."""
        return F.cross_entropy(self.classifier(x), y.argmax(-1))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y | x): the predicted labels ``(B,)``."""
        return self.classifier(x).argmax(-1)
