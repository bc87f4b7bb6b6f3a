"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling 2014) as a Pyro model and guide.

Model:  y ~ Cat(1/C),  z ~ N(0, I),  x ~ p(x | y, z)   (a decoder of [z, onehot(y)]).
Guide:  q(y | x) q(z | x, y)   (a classifier, and an encoder of [x, onehot(y)]).

y is a sample site in both. For a labelled image it is observed (the guide skips its y site);
for an unlabelled one the guide's y is enumerated over the C classes in parallel
(``TraceEnum_ELBO``), which makes the bound exact in y:

    L(x) = sum_y q(y | x) [ ELBO(x, y) - log q(y | x) ],
    ELBO(x, y) = E_q(z|x,y) [ log p(x | y, z) + log p(y) + log p(z) - log q(z | x, y) ].

The objective sums both over their sets, J = sum_labelled L(x, y) + sum_unlabelled U(x), so a
labelled minibatch is scaled to the N_l labelled images and an unlabelled one to the N_u others.
q(y | x) appears only in the unlabelled term, so labelled images would never train the
classifier: Kingma et al. add ``alpha E_labelled[-log q(y | x)]`` (alpha = 0.1 N), whose
minibatch estimate is ``alpha * classifier_loss(x, y)`` (a mean over the batch).
"""

from __future__ import annotations

from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .nets import NUM_PIXELS, _mlp, joined
from .vae import data_plate


class SemiSupervisedVAE(nn.Module):
    """M2: ``model(x, y=None, idx=None)`` and ``guide(x, y=None, idx=None)``; ``y`` one-hot ``(B, C)``
    for labelled images, None for unlabelled ones (then enumerate the guide:
    ``pyro.infer.config_enumerate(m2.guide)`` with ``TraceEnum_ELBO(max_plate_nesting=1)``).

    :param z_dim: the style latent's size.
    :param num_classes: C.
    :param hidden: the widths of each of the three MLPs (decoder, classifier, z-encoder).
    :param num_labelled: N_l, the labelled set's size (labelled minibatches are scaled to it).
    :param num_unlabelled: N_u, the unlabelled set's size.
    """

    def __init__(self, z_dim: int, num_classes: int = 10, hidden: Sequence[int] = (500,), num_labelled: int = 1,
                 num_unlabelled: int = 1, num_pixels: int = NUM_PIXELS, activation: str = "softplus"):
        super().__init__()
        if z_dim < 1 or num_classes < 2 or not hidden:
            raise ValueError(f"M2 needs z_dim >= 1, num_classes >= 2 and hidden widths, got z_dim = {z_dim}, "
                             f"num_classes = {num_classes}, hidden = {list(hidden)}")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.num_labelled, self.num_unlabelled = num_labelled, num_unlabelled
        self.decoder = nn.Sequential(_mlp([z_dim + num_classes, *hidden], activation),
                                     nn.Linear(hidden[-1], num_pixels))  # logits of p(x | y, z)
        self.classifier = nn.Sequential(_mlp([num_pixels, *hidden], activation),
                                        nn.Linear(hidden[-1], num_classes))  # logits of q(y | x)
        self.encoder = nn.Sequential(_mlp([num_pixels + num_classes, *hidden], activation),
                                     nn.Linear(hidden[-1], 2 * z_dim))  # loc, log scale of q(z | x, y)

    def prior_y(self, x: torch.Tensor) -> dist.Distribution:
        return dist.OneHotCategorical(logits=x.new_zeros(self.num_classes))

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> None:
        pyro.module("m2", self)
        with data_plate(x, idx, self._set_size(y)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            y = pyro.sample("y", self.prior_y(x), obs=y)
            logits = self.decoder(joined(z, y))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, idx: torch.Tensor | None = None) -> None:
        pyro.module("m2", self)
        with data_plate(x, idx, self._set_size(y)):
            if y is None:
                y = pyro.sample("y", self.q_y(x))
            pyro.sample("z", self.q_z(x, y))

    def _set_size(self, y: torch.Tensor | None) -> int:
        """The size of the set a minibatch comes from: N_l with labels, N_u without."""
        return self.num_unlabelled if y is None else self.num_labelled

    def q_y(self, x: torch.Tensor) -> dist.Distribution:
        """q(y | x), the classifier, batch ``(B,)``."""
        return dist.OneHotCategorical(logits=self.classifier(x))

    def q_z(self, x: torch.Tensor, y: torch.Tensor) -> dist.Distribution:
        """q(z | x, y); ``y`` may carry enumeration dimensions on the left, which the result keeps."""
        loc, log_scale = self.encoder(joined(x, y)).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def classifier_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-mean_n log q(y_n | x_n) over labelled images: the minibatch estimate of E_labelled[-log q(y | x)]."""
        return F.cross_entropy(self.classifier(x), y.argmax(-1))

    @torch.no_grad()
    def generate(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """E[x | y, z]: the images drawn for labels ``y`` (one-hot) and styles ``z``."""
        return torch.sigmoid(self.decoder(joined(z, y)))

