"""Training objectives: -ELBO estimators, the IWAE bound, KL weighting and free bits.

``Loss = -ELBO``,  ``ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))``.

- ``trace``: :class:`pyro.infer.Trace_ELBO`, the Monte-Carlo estimate
  ``log p(x, z) - log q(z|x)`` at z ~ q (reparameterized);
- ``trace_mean_field``: :class:`pyro.infer.TraceMeanField_ELBO`, the analytic KL(q || p)
  wherever one is registered (diagonal Normal vs Normal or MultivariateNormal, MVN vs
  MVN), the Monte-Carlo term elsewhere (mixture prior);
- ``jit_trace``, ``jit_trace_mean_field``: the same, compiled by Pyro with ``torch.jit.trace``;
- ``iwae``: the importance-weighted bound (Burda et al. 2015) with K = ``num_particles``,
  ``L_K = E[log (1/K) sum_k p(x, z_k) / q(z_k | x)]``, written directly below;
- ``iwae_dreg``: the same bound with doubly-reparameterized gradients for the guide (Tucker et al. 2019);
- :class:`VectorQuantizedELBO`: a VQ-VAE's -ELBO plus its codebook and commitment losses;
- :class:`SemiSupervisedELBO`: M2's objective (unlabelled images by enumeration, labelled ones, and
  the classifier's cross-entropy), which a semi-supervised model trains with whatever the config names.

KL weight: ``ELBO_beta = E_q[log p(x|z)] - beta_t KL``, with ``beta_t = beta * min(1, t / T)``
(linear annealing over T steps), applied by scaling the log-densities of site ``z`` in
both model and guide. Free bits (Kingma et al. 2016): each latent dimension's KL,
averaged over the minibatch, counts as at least ``lambda`` nats.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.kl import kl_divergence
from pyro.infer import (ELBO, JitTrace_ELBO, JitTraceMeanField_ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO,
                        config_enumerate)
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class _DirectLoss(ELBO):
    """An objective written as ``differentiable_loss``; ``loss`` and ``loss_and_grads`` follow from it."""

    def _get_trace(self, model, guide, args, kwargs):  # traces are built in differentiable_loss
        raise NotImplementedError

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


class IWAE(_DirectLoss):
    """-L_K per minibatch, scaled to the data like the other objectives.

    ``L_K(x) = logsumexp_k [log p(x, z_k) - log q(z_k | x)] - log K``, z_1..K ~ q(z | x),
    drawn at once in a ``particles`` plate (dim -2); with K = 1 it is the ELBO.
    """

    def __init__(self, num_particles: int = 5):
        super().__init__(num_particles=num_particles, max_plate_nesting=1)

    def _particle_traces(self, model, guide, *args, **kwargs):
        """The model's and the guide's traces with K particles drawn at once."""
        with pyro.plate("particles", self.num_particles, dim=-2):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        return model_trace, guide_trace

    def _log_weights(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, float]:
        return self._weights(*self._particle_traces(model, guide, *args, **kwargs))

    @staticmethod
    def _weights(model_trace, guide_trace) -> tuple[torch.Tensor, float]:
        """``log w`` ``(K, B)`` and the data plate's scale N / B."""
        model_trace.compute_log_prob()
        guide_trace.compute_log_prob()
        log_w, scales = 0.0, set()
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for site in trace.nodes.values():
                if site["type"] == "sample" and not site_is_subsample(site):
                    log_w = log_w + sign * site["unscaled_log_prob"]  # (K, B)
                    scales.add(float(site["scale"]))  # the data plate's N / B
        if len(scales) != 1:
            raise ValueError(
                "the iwae objective needs every sample site at the data plate's scale, got scales "
                f"{sorted(scales)}; a KL weight (kl_weighted) has no meaning inside an importance weight: "
                "weight the KL under Trace_ELBO or TraceMeanField_ELBO instead"
            )
        return log_w, scales.pop()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        log_w, scale = self._log_weights(model, guide, *args, **kwargs)
        bound = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)  # (B,)
        return -scale * bound.sum()


class DReGIWAE(IWAE):
    """The IWAE bound with doubly-reparameterized gradients for the guide (Tucker, Lawson, Gu and
    Maddison 2019); the same value as :class:`IWAE`.

    With ``log w_k = log p(x, z_k) - log q(z_k | x)`` and ``w~_k = w_k / sum_j w_j``:
    the model's parameters theta get IWAE's gradient ``sum_k w~_k grad_theta log w_k``; the guide's
    phi get ``sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi)``, with log q's own parameters held
    fixed (the score term, zero in expectation, is dropped). At the exact posterior every
    ``log w_k = log p(x)`` and the guide's gradient is exactly zero, where IWAE's is noise.
    Needs a Gaussian guide (``Normal`` or ``MultivariateNormal``, whose parameters can be held
    fixed) and a model whose densities do not depend on the guide's parameters (not a VampPrior;
    checked on the first step).
    """

    def __init__(self, num_particles: int = 5):
        super().__init__(num_particles)
        self._checked = False

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        model_trace, guide_trace = self._particle_traces(model, guide, *args, **kwargs)
        log_w, scale = self._weights(model_trace, guide_trace)
        site = guide_trace.nodes["z"]
        log_q_fixed = _with_parameters_fixed(site["fn"]).log_prob(site["value"])  # (K, B), a gradient in z only
        log_w_fixed = log_w + site["unscaled_log_prob"] - log_q_fixed
        theta, phi = _trainable_params(model_trace), _trainable_params(guide_trace)
        if not self._checked:
            _refuse_shared_parameters(model_trace, theta, phi)
            self._checked = True
        weights = torch.softmax(log_w.detach(), dim=0)  # w~_k, (K, B)
        model_loss = -scale * (weights * log_w).sum()
        guide_loss = -scale * (weights.square() * log_w_fixed).sum()
        if theta:
            torch.autograd.backward(model_loss, inputs=list(theta), retain_graph=bool(phi))
        if phi:
            torch.autograd.backward(guide_loss, inputs=list(phi))
        bound = torch.logsumexp(log_w.detach(), dim=0) - math.log(self.num_particles)
        return -scale * bound.sum().item()


def _refuse_shared_parameters(model_trace, theta: set, phi: set) -> None:
    """Raise when the model shares parameters with the guide, by name or through its latent
    densities (a VampPrior's p(z) is built from the guide's encoder): DReG's split of the gradient
    into a model part and a guide part would then weight a direct path as a path through z."""
    shared = len(theta & phi)
    latent_params = [p for p in phi if p.requires_grad]
    for site in model_trace.nodes.values():
        if shared or site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        log_p = site["fn"].log_prob(site["value"].detach())
        if log_p.requires_grad:
            grads = torch.autograd.grad(log_p.sum(), latent_params, allow_unused=True, retain_graph=True)
            shared += sum(g is not None for g in grads)
    if shared:
        raise ValueError(
            f"iwae_dreg needs a model whose densities do not depend on the guide's parameters; {shared} do "
            "(a VampPrior mixes the guide's posteriors); use objective 'iwae'"
        )


def _trainable_params(trace) -> set:
    """The parameters a trace registered (``pyro.module`` / ``pyro.param``) that take gradients."""
    return {site["value"].unconstrained() for site in trace.nodes.values()
            if site["type"] == "param" and site["value"].unconstrained().requires_grad}


def _with_parameters_fixed(fn):
    """A copy of a Gaussian q whose parameters are detached: its log-density has a gradient in z only."""
    events = 0
    while isinstance(fn, pyro.distributions.Independent):
        events, fn = events + fn.reinterpreted_batch_ndims, fn.base_dist
    if isinstance(fn, pyro.distributions.Normal):
        fixed = pyro.distributions.Normal(fn.loc.detach(), fn.scale.detach())
    elif isinstance(fn, pyro.distributions.MultivariateNormal):
        fixed = pyro.distributions.MultivariateNormal(fn.loc.detach(), scale_tril=fn.scale_tril.detach())
    else:
        raise ValueError(
            f"iwae_dreg holds the guide's parameters fixed in log q, which needs a Normal or MultivariateNormal q, "
            f"got {type(fn).__name__}; use objective 'iwae' with this guide"
        )
    return fixed.to_event(events) if events else fixed


class SemiSupervisedELBO(_DirectLoss):
    """-J^alpha of M2 (Kingma et al. 2014) for one unlabelled and one labelled minibatch:

    ``loss = -U(x_u) + w * (-L(x_l, y_l) + alpha * mean_l[-log q(y_l | x_l)])``,

    each bound scaled to its own set by the model's plates: U by ``TraceEnum_ELBO`` (y of the unlabelled
    images summed out exactly by parallel enumeration of the guide's y site), L by ``Trace_ELBO`` (y
    observed). Arguments: ``(x_u, idx_u, x_l, idx_l, y_l[, w])``, ``y_l`` one-hot; ``w`` (default 1) weighs the
    labelled batch of a step where it enters only every k-th step (``train.labelled_every``), ``w = 0`` where a
    step has none (``x_l``, ``idx_l``, ``y_l`` then None).

    The gradient is the whole objective's; the value it reports (``loss``, ``loss_and_grads``, so what
    ``svi.step`` returns) is the unlabelled part, -U(x_u) scaled to N_u: per unlabelled image, the
    training counterpart of M2's test loss.

    :param alpha: the classifier term's weight (Kingma et al.: 0.1 N).
    """

    def __init__(self, alpha: float):
        super().__init__(num_particles=1, max_plate_nesting=1)
        self.alpha = alpha
        self.enumerated = TraceEnum_ELBO(max_plate_nesting=1)
        self.observed = Trace_ELBO(max_plate_nesting=1)

    def parts(self, model, guide, x_u, idx_u, x_l, idx_l, y_l,
              weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(-U(x_u), -w L(x_l, y_l), w alpha mean_l[-log q(y_l | x_l)])``, each differentiable (the last two 0
        where ``w = 0``)."""
        unlabelled = self.enumerated.differentiable_loss(model, config_enumerate(guide, "parallel"), x_u, idx_u)
        if weight == 0:
            zero = unlabelled.new_zeros(())
            return unlabelled, zero, zero
        labelled = self.observed.differentiable_loss(model, guide, x_l, idx_l, y_l)
        return unlabelled, weight * labelled, weight * (self.alpha * guide.classifier_loss(x_l, y_l))

    def differentiable_loss(self, model, guide, *args) -> torch.Tensor:
        return sum(self.parts(model, guide, *args))

    def loss(self, model, guide, *args) -> float:
        with torch.no_grad():
            return self.parts(model, guide, *args)[0].item()

    def loss_and_grads(self, model, guide, *args) -> float:
        parts = self.parts(model, guide, *args)
        sum(parts).backward()
        return parts[0].item()


class VectorQuantizedELBO(_DirectLoss):
    """A VQ-VAE's objective (van den Oord et al. 2017), per image and scaled to the data like the ELBO:

    ``loss = -log p(x | z_q) + KL + ||sg(z_e) - e_c||^2 + commitment ||z_e - sg(e_c)||^2``,

    KL = -log p(c) for the one-hot posterior (M log K under the uniform prior), the squared norms summed over
    positions and dimensions (:class:`~pyro_vae.models.discrete.NearestCode`). With a moving-average codebook
    the codebook term is left out and each training step (``loss_and_grads``) moves the codes instead. The
    value reported (``loss``, ``loss_and_grads``, so what ``svi.step`` returns) is the -ELBO alone.

    :param commitment: beta, the commitment loss's weight (0.25 in the paper).
    """

    def __init__(self, commitment: float = 0.25):
        super().__init__(num_particles=1, max_plate_nesting=1)
        self.commitment = commitment

    def parts(self, model, guide, *args, **kwargs) -> tuple:
        """``(-ELBO, the codebook and commitment losses, q)``, each loss scaled to the data."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        model_trace.compute_log_prob()
        q, x_site = guide_trace.nodes["z"]["fn"], model_trace.nodes["x"]
        kl = kl_divergence(q, model_trace.nodes["z"]["fn"])  # (B,)
        scale = x_site["scale"]
        neg_elbo = scale * (kl - x_site["unscaled_log_prob"]).sum()
        quantization = self.commitment * q.commitment_loss()
        if q.codebook.ema_decay is None:
            quantization = quantization + q.codebook_loss()
        return neg_elbo, scale * quantization.sum(), q

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        neg_elbo, quantization, _ = self.parts(model, guide, *args, **kwargs)
        return neg_elbo + quantization

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.parts(model, guide, *args, **kwargs)[0].item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        neg_elbo, quantization, q = self.parts(model, guide, *args, **kwargs)
        (neg_elbo + quantization).backward()
        if q.codebook.ema_decay is not None:
            q.codebook.ema_update(q.z_e.detach(), q.codes)
        return neg_elbo.item()


class FreeBitsELBO(_DirectLoss):
    """-ELBO with free bits: ``loss = -E_q log p(x|z) + beta_t sum_j max(lambda, mean_batch KL_j)`` (x N).

    beta_t is the KL weight that :func:`kl_weighted` puts on site ``z`` (1 without it).

    Needs a per-dimension analytic KL: a diagonal Normal guide and prior (standard).
    """

    def __init__(self, free_bits: float, num_particles: int = 1):
        super().__init__(num_particles=num_particles)
        self.free_bits = free_bits

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        total = 0.0
        for _ in range(self.num_particles):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            model_trace.compute_log_prob()
            q, p = guide_trace.nodes["z"]["fn"], model_trace.nodes["z"]["fn"]
            kl_per_dim = kl_divergence(_base_normal(q), _base_normal(p))  # (B, z_dim)
            x_site = model_trace.nodes["x"]
            beta = guide_trace.nodes["z"]["scale"] / x_site["scale"]  # the KL weight beta_t of kl_weighted
            recon = x_site["unscaled_log_prob"]  # (B,)
            batch = recon.shape[0]
            floored = torch.clamp(kl_per_dim.mean(0), min=self.free_bits).sum()
            total = total + x_site["scale"] * (beta * batch * floored - recon.sum())
        return total / self.num_particles


def _base_normal(fn):
    base = fn
    while isinstance(base, pyro.distributions.Independent):
        base = base.base_dist
    if not isinstance(base, pyro.distributions.Normal):
        raise ValueError(
            f"FreeBitsELBO needs a diagonal Normal prior and guide (a KL per dimension), got {type(base).__name__}; "
            "use a standard Normal prior with a diagonal guide"
        )
    return base


class KLWeight:
    """The current KL weight beta_t = beta * min(1, t / anneal_steps) (beta when anneal_steps = 0)."""

    def __init__(self, beta: float = 1.0, anneal_steps: int = 0):
        self.beta, self.anneal_steps = beta, anneal_steps
        self.value = self.at(1)

    def at(self, step: int) -> float:
        if self.anneal_steps == 0:
            return self.beta
        return self.beta * min(1.0, step / self.anneal_steps)

    def set_step(self, step: int) -> None:
        self.value = self.at(step)

    @property
    def active(self) -> bool:
        return self.beta != 1.0 or self.anneal_steps > 0


class _ScaleLatent(Messenger):
    """Multiply the log-density of site ``name`` by ``weight.value`` (model and guide alike)."""

    def __init__(self, name: str, weight: KLWeight):
        super().__init__()
        self.name, self.weight = name, weight

    def _process_message(self, msg):
        if msg["name"] == self.name:
            msg["scale"] = msg["scale"] * self.weight.value


def kl_weighted(program, weight: KLWeight, site: str = "z"):
    """``program`` with the log-density of ``site`` scaled by the KL weight: -beta KL in the ELBO."""
    return _ScaleLatent(site, weight)(program)


ELBOS = {"trace": Trace_ELBO, "trace_mean_field": TraceMeanField_ELBO,
         "jit_trace": JitTrace_ELBO, "jit_trace_mean_field": JitTraceMeanField_ELBO}
