"""Discrete latent codes: M categorical latents of K classes per image.

Two programs share the model ``c_m ~ Categorical(pi_m)`` (m = 1..M, uniform or learned pi),
``x ~ p(x | decoder(codes))``:

- **Relaxed categorical** (Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017): the site ``z`` holds the M
  one-hot codes, flattened ``(B, M K)``; q(c_m | x) = Categorical(softmax(logits_m(x))). Samples are exact
  one-hots whose gradient is the Gumbel-softmax relaxation's at temperature tau (straight-through), and the
  KL is the exact discrete one, ``KL = sum_m sum_k q_mk log(q_mk / pi_mk)``, so the ELBO and the
  importance-sampled log p(x) are those of the discrete model; only the gradient is relaxed.
- **VQ-VAE** (van den Oord, Vinyals & Kavukcuoglu 2017): class k of every position is a learned code
  vector e_k of a codebook E ``(K, D)``; the site ``z`` holds the M chosen vectors, flattened ``(B, M D)``.
  q(c_m | x) is a deterministic one-hot at the code nearest to the encoder's output z_e,m(x), so log q = 0
  and ``ELBO = log p(x | e_c) + sum_m log pi_m[c_m]``; under the uniform prior the KL is the constant
  M log K. Gradients reach the encoder straight through the quantization, ``z_q = sg(e_c) + z_e - sg(z_e)``,
  and the codebook by ``||sg(z_e) - e_c||^2`` (or by moving averages), with the commitment loss
  ``beta ||z_e - sg(e_c)||^2`` (:class:`pyro_vae.infer.objectives.VectorQuantizedELBO`).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from torch import nn
from torch.distributions import register_kl

from .guides import Guide


class OneHotCodes(dist.TorchDistribution):
    """M independent categoricals of K classes, the value their one-hots flattened, ``(..., M K)``.

    ``log p(c) = sum_m log softmax(logits_m)[c_m]``.

    :param logits: ``(..., M, K)`` unnormalised log-probabilities.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.real_vector  # one-hot rows, flattened; checked by :meth:`log_prob`'s reshape only
    discrete = True  # :func:`pyro_vae.models.guides.point` takes its mode
    shared_codes = False  # class k of one position has nothing to do with class k of another

    def __init__(self, logits: torch.Tensor, validate_args=None):
        self.logits = logits - logits.logsumexp(-1, keepdim=True)  # normalised, (..., M, K)
        self.positions, self.classes = logits.shape[-2:]
        super().__init__(logits.shape[:-2], torch.Size([self.positions * self.classes]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.logits.expand(*batch_shape, self.positions, self.classes), **self._extra())

    def _extra(self) -> dict:
        return {}

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.exp()  # (..., M, K)

    def sample(self, sample_shape=torch.Size()):
        codes = dist.Categorical(logits=self.logits).sample(sample_shape)  # (..., M)
        return F.one_hot(codes, self.classes).to(self.logits.dtype).flatten(-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value.unflatten(-1, (self.positions, self.classes)) * self.logits).sum((-2, -1))

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum((-2, -1))

    @property
    def mean(self) -> torch.Tensor:
        return self.probs.flatten(-2)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable code of each position, as one-hots ``(..., M K)``."""
        return F.one_hot(self.logits.argmax(-1), self.classes).to(self.logits.dtype).flatten(-2)


class RelaxedOneHotCodes(OneHotCodes):
    """:class:`OneHotCodes` with a straight-through Gumbel-softmax ``rsample`` at ``temperature``
    (:class:`pyro.distributions.RelaxedOneHotCategoricalStraightThrough`): the sample is an exact one-hot
    draw of the categorical (argmax of logits + Gumbel noise, whatever tau), its gradient the relaxed
    sample's. ``log_prob`` stays the categorical's."""

    has_rsample = True

    def __init__(self, logits: torch.Tensor, temperature: float = 1.0, validate_args=None):
        super().__init__(logits, validate_args=validate_args)
        self.temperature = temperature

    def _extra(self) -> dict:
        return {"temperature": self.temperature}

    def rsample(self, sample_shape=torch.Size()):
        relaxed = dist.RelaxedOneHotCategoricalStraightThrough(
            torch.tensor(self.temperature, dtype=self.logits.dtype, device=self.logits.device), logits=self.logits)
        return relaxed.rsample(sample_shape).flatten(-2)


@register_kl(OneHotCodes, OneHotCodes)
def _kl_codes(q: OneHotCodes, p: OneHotCodes) -> torch.Tensor:
    """KL(q || p) = sum_m sum_k q_mk (log q_mk - log p_mk)."""
    return (q.probs * (q.logits - p.logits)).sum((-2, -1))


def log_prob_of_codes(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """sum_m log pi_m[c_m] for normalised ``logits`` ``(..., M, K)`` and codes ``(..., M)`` (broadcast), ``(...)``."""
    logits = logits.expand(*codes.shape, logits.shape[-1])
    return logits.gather(-1, codes.unsqueeze(-1)).squeeze(-1).sum(-1)


class Codebook(nn.Module):
    """The K code vectors E ``(K, D)`` of a VQ-VAE, learned by a loss (a parameter) or by exponential moving
    averages of the encoder outputs assigned to each code (``ema_decay`` gamma; buffers):

    ``N_k <- gamma N_k + (1 - gamma) n_k``, ``S_k <- gamma S_k + (1 - gamma) sum_{i: c_i = k} z_e,i``,
    ``e_k = S_k / N_k`` (van den Oord et al. 2017, appendix A.1). Each code starts as one observation of its
    initial vector (N_k = 1, S_k = e_k), so no count is zero and the paper's Laplace smoothing of the counts is
    not needed (near zero it would shrink an unused code towards the origin); a code whose count has decayed
    below eps (no output picked it for about log(eps) / log(gamma) steps) keeps its vector.

    Initialised uniform on [-sqrt(3 / D), sqrt(3 / D)]: variance 1/D per dimension, a code of unit expected
    squared norm.
    """

    def __init__(self, codes: int, code_dim: int, ema_decay: float | None = None, eps: float = 1e-5):
        super().__init__()
        if codes < 2 or code_dim < 1:
            raise ValueError(f"a codebook needs codes >= 2 and code_dim >= 1, got {codes} and {code_dim}")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise ValueError(f"a codebook's ema_decay must be in (0, 1), got {ema_decay}")
        bound = math.sqrt(3 / code_dim)  # E||e||^2 = 1
        weight = torch.empty(codes, code_dim).uniform_(-bound, bound)
        self.ema_decay, self.eps = ema_decay, eps
        if ema_decay is None:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("ema_count", torch.ones(codes))  # each code starts as one sight of itself
            self.register_buffer("ema_sum", weight.clone())

    @property
    def codes(self) -> int:
        return self.weight.shape[0]

    @property
    def code_dim(self) -> int:
        return self.weight.shape[1]

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """argmin_k ||v - e_k||^2 for vectors ``(..., D)``, shape ``(...)``."""
        flat = vectors.reshape(-1, self.code_dim)
        distances = (flat.square().sum(1, keepdim=True) - 2 * flat @ self.weight.T
                     + self.weight.square().sum(1))  # (n, K)
        return distances.argmin(1).reshape(vectors.shape[:-1])

    @torch.no_grad()
    def ema_update(self, z_e: torch.Tensor, indices: torch.Tensor) -> None:
        """One moving-average step from encoder outputs ``z_e`` ``(..., D)`` assigned to ``indices`` ``(...)``."""
        if self.ema_decay is None:
            raise RuntimeError("this codebook is learned by its loss, not by moving averages")
        assigned = F.one_hot(indices.reshape(-1), self.codes).to(z_e.dtype)  # (n, K)
        gamma = self.ema_decay
        self.ema_count.mul_(gamma).add_(assigned.sum(0), alpha=1 - gamma)
        self.ema_sum.mul_(gamma).add_(assigned.T @ z_e.reshape(-1, self.code_dim), alpha=1 - gamma)
        live = self.ema_count > self.eps  # (K,)
        self.weight[live] = self.ema_sum[live] / self.ema_count[live].unsqueeze(1)


class CodebookCategorical(dist.TorchDistribution):
    """p(z): each of M positions one of the K code vectors, code k with probability softmax(logits_m)[k];
    the value the M vectors flattened, ``(..., M D)``. ``log p(z) = sum_m log pi_m[c_m]``, c_m the code
    each vector is (its nearest, exactly equal for a value drawn from here or from :class:`NearestCode`).

    :param codebook: the :class:`Codebook`.
    :param logits: ``(..., M, K)``.
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.real_vector

    def __init__(self, codebook: Codebook, logits: torch.Tensor, validate_args=None):
        self.codebook = codebook
        self.logits = logits - logits.logsumexp(-1, keepdim=True)
        self.positions = logits.shape[-2]
        event = torch.Size([self.positions * codebook.code_dim])
        super().__init__(logits.shape[:-2], event, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return CodebookCategorical(self.codebook, self.logits.expand(*batch_shape, *self.logits.shape[-2:]))

    def sample(self, sample_shape=torch.Size()):
        codes = dist.Categorical(logits=self.logits).sample(sample_shape)  # (..., M)
        return self.codebook.weight[codes].flatten(-2)

    def indices(self, value: torch.Tensor) -> torch.Tensor:
        """The code of each position of ``value`` ``(..., M D)``, shape ``(..., M)``."""
        return self.codebook.nearest(value.unflatten(-1, (self.positions, self.codebook.code_dim)))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return log_prob_of_codes(self.logits, self.indices(value))


class NearestCode(dist.TorchDistribution):
    """q(z | x) of a VQ-VAE: a point mass at the codes nearest to the encoder's outputs ``z_e`` ``(B, M, D)``.

    ``rsample`` gives ``z_q = sg(e_c) + z_e - sg(z_e)`` (the value e_c exactly, the gradient straight through to
    z_e);
    ``log_prob`` is 0 (the support is the one point), so its entropy is 0 and KL(q || p) = -log p(z_q).
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True
    discrete = True
    shared_codes = True  # every position chooses from the same K code vectors

    def __init__(self, z_e: torch.Tensor, codebook: Codebook, validate_args=None):
        self.z_e, self.codebook = z_e, codebook
        self.codes = codebook.nearest(z_e.detach())  # (B, M)
        self.quantized = codebook.weight[self.codes]  # (B, M, D)
        super().__init__(z_e.shape[:-2], torch.Size([z_e.shape[-2] * z_e.shape[-1]]), validate_args=validate_args)

    @property
    def classes(self) -> int:
        """K, the codes each position chooses from."""
        return self.codebook.codes

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError("a NearestCode posterior is not expanded")
        return self

    def rsample(self, sample_shape=torch.Size()):
        straight_through = self.quantized.detach() + (self.z_e - self.z_e.detach())  # value e_c, gradient to z_e
        return straight_through.flatten(-2).expand(*sample_shape, *self.batch_shape, *self.event_shape)

    def sample(self, sample_shape=torch.Size()):
        return self.rsample(sample_shape).detach()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return value.new_zeros(value.shape[:-1])

    def entropy(self) -> torch.Tensor:
        return self.z_e.new_zeros(self.batch_shape)

    @property
    def mean(self) -> torch.Tensor:
        return self.quantized.flatten(-2)

    mode = mean

    def codebook_loss(self) -> torch.Tensor:
        """||sg(z_e) - e_c||^2 summed over positions and dimensions, ``(B,)``: moves the codes to the outputs."""
        return (self.z_e.detach() - self.quantized).square().sum((-2, -1))

    def commitment_loss(self) -> torch.Tensor:
        """||z_e - sg(e_c)||^2 summed, ``(B,)``: keeps the encoder's outputs near the codes they chose."""
        return (self.z_e - self.quantized.detach()).square().sum((-2, -1))


@register_kl(NearestCode, CodebookCategorical)
def _kl_nearest_code(q: NearestCode, p: CodebookCategorical) -> torch.Tensor:
    """KL(delta_c || p) = -log p(c) = -sum_m log pi_m[c_m]."""
    return -log_prob_of_codes(p.logits, q.codes)


class CategoricalPrior(nn.Module):
    """p(c) = prod_m Categorical(c_m; pi_m) over one-hot codes (:class:`OneHotCodes`): uniform pi_m = 1/K, or
    learned logits per position (``learned``, uniform at the start: the ELBO fits pi_m to the codes q picks).

    :param positions: M, the categorical latents per image.
    :param classes: K, each one's classes.
    """

    discrete = True

    def __init__(self, positions: int, classes: int, learned: bool = False):
        super().__init__()
        if positions < 1 or classes < 2:
            raise ValueError(f"a categorical prior needs z_dim >= 1 positions of codes >= 2 classes, got "
                             f"{positions} and {classes}")
        logits = torch.zeros(positions, classes)
        if learned:
            self.logits = nn.Parameter(logits)
        else:
            self.register_buffer("logits", logits)
        self.positions, self.classes = positions, classes

    @property
    def z_dim(self) -> int:
        """The width of a code as the decoder reads it (the one-hots, flattened)."""
        return self.positions * self.classes

    def forward(self) -> OneHotCodes:
        return OneHotCodes(self.logits)


class CodebookPrior(CategoricalPrior):
    """p(z) = prod_m Categorical over the code vectors of a :class:`Codebook` (:class:`CodebookCategorical`):
    the VQ-VAE's prior, which owns its codebook; uniform or learned as :class:`CategoricalPrior`."""

    def __init__(self, positions: int, codebook: Codebook, learned: bool = False):
        super().__init__(positions, codebook.codes, learned)
        self.codebook = codebook

    @property
    def z_dim(self) -> int:
        return self.positions * self.codebook.code_dim

    def forward(self) -> CodebookCategorical:
        return CodebookCategorical(self.codebook, self.logits)


class RelaxedCategoricalGuide(Guide):
    """q(c | x) = prod_m Categorical(softmax(logits_m(h(x)))), one linear head on the encoder body, sampled
    straight through at the temperature of step t, ``tau_t = max(min_temperature, temperature exp(-decay t))``
    (Jang et al. 2017's schedule; :meth:`set_step`, called by the training loop). Its ``family`` is None: the
    gap decomposition's local q* is for the continuous guides."""

    def __init__(self, encoder: nn.Module, positions: int, classes: int, num_data: int, temperature: float = 1.0,
                 min_temperature: float | None = None, temperature_decay: float = 0.0):
        super().__init__(num_data)
        if not 0 < (min_temperature or temperature) <= temperature or temperature_decay < 0:
            raise ValueError(f"a relaxed categorical guide needs 0 < min_temperature <= temperature and "
                             f"temperature_decay >= 0, got {min_temperature}, {temperature}, {temperature_decay}")
        self.encoder, self.positions, self.classes = encoder, positions, classes
        self.logits_head = nn.Linear(encoder.out_features, positions * classes)
        self.initial_temperature, self.temperature = temperature, temperature
        self.min_temperature, self.temperature_decay = min_temperature or temperature, temperature_decay

    def set_step(self, step: int) -> None:
        """The temperature of training step ``step``: a function of the step alone, so a resumed run repeats it."""
        decayed = self.initial_temperature * math.exp(-self.temperature_decay * step)
        self.temperature = max(self.min_temperature, decayed)

    def posterior(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> RelaxedOneHotCodes:
        logits = self.logits_head(self.encoder(x)).unflatten(-1, (self.positions, self.classes))  # (B, M, K)
        return RelaxedOneHotCodes(logits, self.temperature)


class VectorQuantizer(Guide):
    """q(c | x): the codes nearest to z_e(x) = head(h(x)) ``(B, M, D)`` (:class:`NearestCode`), in the codebook of
    the model's :class:`CodebookPrior` (read through :meth:`attach`, not owned: its parameters are the model's)."""

    deterministic = True  # every draw of q is the same code: importance sampling needs one

    def __init__(self, encoder: nn.Module, positions: int, code_dim: int, num_data: int):
        super().__init__(num_data)
        self.encoder, self.positions, self.code_dim = encoder, positions, code_dim
        self.head = nn.Linear(encoder.out_features, positions * code_dim)
        self._codebook: tuple[Codebook, ...] = ()

    def attach(self, codebook: Codebook) -> None:
        """Quantize with ``codebook`` (the prior's)."""
        if codebook.code_dim != self.code_dim:
            raise ValueError(f"the codebook's vectors have {codebook.code_dim} dimensions, the encoder's outputs "
                             f"{self.code_dim}")
        self._codebook = (codebook,)

    def posterior(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> NearestCode:
        if not self._codebook:
            raise RuntimeError("attach the prior's codebook first (VectorQuantizer.attach)")
        z_e = self.head(self.encoder(x)).unflatten(-1, (self.positions, self.code_dim))  # (B, M, D)
        return NearestCode(z_e, self._codebook[0])


def code_indices(q: dist.Distribution) -> torch.Tensor:
    """The code each position takes under posterior ``q`` (its most probable one), ``(B, M)``."""
    if isinstance(q, NearestCode):
        return q.codes
    if isinstance(q, OneHotCodes):
        return q.logits.argmax(-1)
    raise TypeError(f"{type(q).__name__} is not a posterior over discrete codes")
