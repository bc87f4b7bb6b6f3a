"""Local variational fits: per-datapoint posteriors optimised with the decoder frozen (the q* of Cremer et al. 2018).

For each image x_n,  q*_n = argmax_{q in family} ELBO(x_n; q),
ELBO(x_n; q) = E_q[log p(x_n | z)] - KL(q || p(z)),
over a diagonal Gaussian N(loc_n, diag scale_n^2), a full one N(loc_n, L_n L_n^T), (family
``flow``) a flow guide's q(z | h_n) with its own features h_n in place of the encoder's h(x_n) (the
heads and flows frozen: the image of every h in R^F, which holds every posterior the encoder can
output, and a little more where its features are constrained, e.g. ReLU's h >= 0), or (family
``planar``) :data:`PLANAR_FLOWS` planar flows on a diagonal Gaussian, every parameter of them the image's
own (a per-datapoint flow q*, as in Cremer et al.'s flow cells; it holds every diagonal Gaussian), by
Adam on (loc_n, log scale_n), (loc_n, L_n), h_n or (loc_n, log scale_n, b_nk, u_nk, w_nk) with Pyro's
``TraceMeanField_ELBO`` (analytic KL where one is registered, else Monte Carlo) and ``num_particles``
samples a step; the model's parameters are held fixed.

Stopping rule (on the mean ELBO per image of a chunk, every ``window`` steps): when a window gains less
than ``tolerance`` nats/image over the previous one, the learning rate is divided by ``decay``; when that
happens at ``min_lr`` the fit has converged (``stopped_on = "tolerance"``). ``max_steps`` caps every chunk
(``stopped_on = "cap"``). The Gaussian families measure a window by the mean of its steps' objectives.
The flow families, whose KL is a Monte-Carlo estimate too and whose fits creep, measure it by the ELBO at
the window's end on :data:`COMMON_DRAWS` base draws per image, the same at every window (common random
numbers: the gain between two windows is the fits' difference, not the estimates' noise), with windows of
at least :data:`FLOW_WINDOW` steps (the same tolerance over more steps) from a rate of at most ``flow_lr``
(default :data:`FLOW_LR`; the README's gap section tells what the Gaussians' rule left undone on per-image planar
fits). Every window's end, rate and measure is kept (``LocalFit.windows``).
:func:`refinement_gain` checks the result: how much a longer, lower-noise optimisation still gains.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import nn
from pyro.distributions import constraints
from pyro.distributions.transforms.planar import ConditionedPlanar
from torch.distributions import transform_to

from pyro.distributions.kl import kl_divergence

from .evaluate import seeded, stderr, stream_devices
from ..models.guides import Guide, MeanField
from ..models.vae import VAE

FAMILIES = ("diagonal", "full", "flow", "planar")
FLOW_FAMILIES = ("flow", "planar")  # a Monte-Carlo KL, and no density at another distribution's samples
PLANAR_FLOWS = 10  # planar flows per image in the per-image flow family (as many as the planar guide of nll_budget)
CHECK_ROWS = 2500  # samples x images the convergence check decodes at once (a conv decoder's activations)
PLANAR_IDENTITY = math.log(math.e - 1)  # u = this w / |w|^2 makes a planar flow the identity (u_hat = 0)
MOMENT_SAMPLES = 256  # samples of a flow guide's q(z | x) whose moments start a Gaussian fit
FLOW_PARTICLES = 8  # the least samples a step of a flow family's fit: its KL is Monte Carlo too, and the
# stopping rule needs a quiet objective (with 1 sample, fits on a linear-Gaussian model stopped 0.1 nat short)
COMMON_DRAWS = 32  # base draws per image on which a flow family's stopping rule scores every window's end
FLOW_WINDOW = 250  # the least steps of a flow family's window (a per-step tolerance five times finer)
FLOW_LR = 0.01  # the highest rate a flow family's fit starts at by default (fit_local's flow_lr, the config's
# guide.local_flow_lr; at 0.05 planar flows jitter below their optimum)
FLOW_FIT = {"particles": FLOW_PARTICLES, "window": FLOW_WINDOW, "lr": FLOW_LR, "common_draws": COMMON_DRAWS}
# what a flow family's fit takes beyond the config's [guide] settings (an evaluation records it; "lr" is the
# default cap, which the config's guide.local_flow_lr, recorded with the config, may move)


class LocalFullNormal(Guide):
    """q(z_n) = N(loc_n, L_n L_n^T) with free loc_n and L_n for each of N points (dense parameters).

    ``L_n = tril(raw_n, -1) + diag(softplus(diag(raw_n)))``, so every L_n is a valid Cholesky factor.

    :param init_loc: ``(N, z_dim)`` initial means.
    :param init_scale_tril: ``(N, z_dim, z_dim)`` initial Cholesky factors.
    """

    amortized, family = False, "full"

    def __init__(self, init_loc: torch.Tensor, init_scale_tril: torch.Tensor):
        super().__init__(init_loc.shape[0])
        to_raw = transform_to(constraints.softplus_lower_cholesky).inv
        self.loc = nn.Parameter(init_loc.detach().clone())  # (N, z_dim)
        self.raw_scale_tril = nn.Parameter(to_raw(init_scale_tril.detach()).tril().clone())  # (N, z_dim, z_dim)

    def posterior(self, x, idx=None):
        if idx is None:
            idx = torch.arange(self.num_data, device=x.device)
        scale_tril = transform_to(constraints.softplus_lower_cholesky)(self.raw_scale_tril[idx])
        return dist.MultivariateNormal(self.loc[idx], scale_tril=scale_tril)


class LocalFeatures(Guide):
    """q(z_n) = template.from_features(h_n) with free features h_n for each of N points: a flow guide's
    family (its heads and conditional flows, held fixed) with each image's own context in place of
    the encoder's h(x_n).

    :param template: an :class:`~pyro_vae.models.guides.AmortizedFlow`, referred to, not owned (not a
        submodule: :func:`fit_local` holds its parameters fixed and optimises only :attr:`features`).
    :param init_features: ``(N, features)`` initial h_n, e.g. the encoder's h(x_n).
    """

    amortized, family = False, "flow"

    def __init__(self, template: Guide, init_features: torch.Tensor):
        super().__init__(init_features.shape[0])
        object.__setattr__(self, "template", template)  # not registered: Pyro and Adam see only the features
        self.features = nn.Parameter(init_features.detach().clone())  # (N, features)

    def posterior(self, x, idx=None):
        if idx is None:
            idx = torch.arange(self.num_data, device=x.device)
        return self.template.from_features(self.features[idx])


class LocalPlanar(Guide):
    """q(z_n) = T_nK o ... o T_n1 N(loc_n, diag scale_n^2), with T_nk(z) = z + u_hat_nk tanh(w_nk . z + b_nk) a
    planar flow (Rezende & Mohamed 2015; Pyro's ``ConditionedPlanar``, whose u_hat keeps it invertible) with
    parameters of its own for each of N points and each of K flows.

    A flow with ``u = PLANAR_IDENTITY w / |w|^2`` is the identity, so the family holds every diagonal Gaussian,
    and :meth:`at_identity` starts a fit exactly at one (w a random unit vector, from the global stream, so that
    |u| = 0.54 and Adam's first steps, about ``lr`` a coordinate, move the flow a little, not by a large shear).

    :param loc, scale: the base Gaussians' ``(N, D)`` means and standard deviations.
    :param bias, u, w: the flows' ``(N, K, 1)``, ``(N, K, D)`` and ``(N, K, D)`` parameters (the order
        :meth:`state` returns them in, after loc and scale).
    """

    amortized, family = False, "planar"

    def __init__(self, loc, scale, bias, u, w):
        super().__init__(loc.shape[0])
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale.detach().log().clone())
        self.bias, self.u, self.w = (nn.Parameter(t.detach().clone()) for t in (bias, u, w))

    @classmethod
    def at_identity(cls, loc: torch.Tensor, scale: torch.Tensor, flows: int = PLANAR_FLOWS) -> LocalPlanar:
        """N(loc, diag scale^2) itself: K identity flows on it."""
        n, d = loc.shape
        w = torch.randn(n, flows, d, dtype=loc.dtype, device=loc.device)
        w = w / w.norm(dim=-1, keepdim=True)
        u = PLANAR_IDENTITY * w
        return cls(loc, scale, loc.new_zeros(n, flows, 1), u, w)

    def state(self) -> tuple:
        return tuple(t.detach() for t in (self.loc, self.log_scale.exp(), self.bias, self.u, self.w))

    def posterior(self, x, idx=None):
        if idx is None:
            idx = torch.arange(self.num_data, device=x.device)
        base = dist.Normal(self.loc[idx], self.log_scale[idx].exp()).to_event(1)
        bias, u, w = self.bias[idx], self.u[idx], self.w[idx]
        return dist.TransformedDistribution(base, [ConditionedPlanar((bias[:, k], u[:, k], w[:, k]))
                                                   for k in range(self.w.shape[1])])


def own_family(guide: Guide) -> str | None:
    """The family of a guide's q(z | x) among :data:`FAMILIES` (``guide.family``), None for a guide of none of
    them (a mixture, discrete codes)."""
    family = getattr(guide, "family", None)
    return family if family in FAMILIES else None


def guide_family(guide: Guide) -> str:
    """The family of a guide's q(z | x) a local fit works in: ``"diagonal"``, ``"full"``, ``"flow"`` or ``"planar"``.

    Raises ``ValueError`` for a guide whose q is none of them (no local fit in its family exists).
    """
    family = own_family(guide)
    if family is None:
        raise ValueError(
            f"{type(guide).__name__} has no family for a local fit (family {getattr(guide, 'family', None)!r}); "
            f"local fits exist for the families {', '.join(FAMILIES)}"
        )
    return family


@dataclass
class LocalFit:
    """The fitted local guide and how each chunk's optimisation ended."""

    guide: Guide
    steps: list = field(default_factory=list)  # steps taken, per chunk
    stopped_on: list = field(default_factory=list)  # "tolerance" or "cap", per chunk
    seconds: float = 0.0
    num_particles: int = 1  # samples a step
    common_draws: int = 0  # draws per image the stopping rule scores windows on (0: the steps' own objectives)
    window: int = 50  # steps between the stopping rule's comparisons
    lr: tuple = ()  # the rates it started at and could fall to (a flow family's start is at most flow_lr)
    windows: list = field(default_factory=list)  # per chunk, [steps, rate, measured ELBO] at each window's end

    def summary(self) -> dict:
        """Steps (min, median, max), how many chunks stopped on the rule or on the cap, and every chunk's
        ``windows``."""
        steps = sorted(self.steps)
        return {
            "chunks": len(steps),
            "steps_min": steps[0],
            "steps_median": steps[len(steps) // 2],
            "steps_max": steps[-1],
            "stopped_on_tolerance": self.stopped_on.count("tolerance"),
            "stopped_on_cap": self.stopped_on.count("cap"),
            "seconds": self.seconds,
            "num_particles": self.num_particles,
            "common_draws": self.common_draws,
            "window": self.window,
            **({"lr": self.lr[0], "min_lr": self.lr[1]} if self.lr else {}),
            "windows": self.windows,
        }


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Hold modules' parameters fixed (no gradients) and in eval mode for the block."""
    flags = [(p, p.requires_grad) for module in modules for p in module.parameters()]
    training = [(module, module.training) for module in modules]
    for module in modules:
        module.train(False)
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield modules
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for module, mode in training:
            module.train(mode)


def generative_modules(vae: VAE) -> list[nn.Module]:
    """What p(x, z) computes through: the VAE, and the guide a VampPrior mixes posteriors of."""
    owner = getattr(vae.prior, "posterior_owner", None)
    return [vae] if owner is None else [vae, owner]


def _start(init: Guide | None, x: torch.Tensor, z_dim: int, family: str, init_scale: float) -> tuple:
    """The local parameters to start from: (loc, scale or scale_tril) of the init guide's q(z | x) (of a flow
    guide: the moments of :data:`MOMENT_SAMPLES` of its samples), else of N(0, init_scale^2 I); for the flow
    family (features,) of the init guide."""
    if family == "flow":
        with torch.no_grad():
            if isinstance(init, _RowSlice) and isinstance(init.inner, LocalFeatures):
                return (init.inner.features[init.start : init.start + x.shape[0]],)
            if isinstance(init, LocalFeatures):
                return (init.features[: x.shape[0]],)
            if hasattr(init, "from_features"):
                return (init.encoder(x),)
        raise ValueError("a local fit in the flow family starts from a flow guide's features: pass init, the "
                         "amortized flow guide")
    if family == "planar":
        inner = init.inner if isinstance(init, _RowSlice) else init
        if isinstance(inner, LocalPlanar):  # a fitted per-image flow: its own rows, as they are
            offset = init.start if isinstance(init, _RowSlice) else 0
            return tuple(t[offset : offset + x.shape[0]] for t in inner.state())
        return LocalPlanar.at_identity(*_start(init, x, z_dim, "diagonal", init_scale)).state()
    if init is None:
        loc = x.new_zeros(x.shape[0], z_dim)
        scale = torch.full_like(loc, init_scale)
        return loc, (scale if family == "diagonal" else torch.diag_embed(scale))
    with torch.no_grad():
        q = init.posterior(x, torch.arange(x.shape[0], device=x.device))  # amortized guides ignore idx
        if isinstance(q, dist.TransformedDistribution):  # a flow's q: no closed-form moments, so its samples'
            z = q.sample((MOMENT_SAMPLES,))  # (S, B, z_dim)
            loc, centred = z.mean(0), z - z.mean(0)
            if family == "diagonal":
                return loc, centred.pow(2).mean(0).sqrt()
            covariance = torch.einsum("sbi,sbj->bij", centred, centred) / MOMENT_SAMPLES
            eye = torch.eye(z.shape[-1], dtype=z.dtype, device=z.device)
            return loc, torch.linalg.cholesky(covariance + 1e-6 * eye)
        if family == "diagonal":
            return q.mean, q.variance.sqrt()
        if isinstance(q, dist.MultivariateNormal):
            return q.mean, q.scale_tril
        return q.mean, torch.diag_embed(q.variance.sqrt())


def _local_guide(family: str, state: tuple, template: Guide | None = None) -> Guide:
    """A local guide of ``family`` from its parameters ``state`` (see :func:`_start`)."""
    if family == "diagonal":
        loc, scale = state
        return MeanField(loc.shape[0], loc.shape[1], loc, scale, sparse=False)
    if family == "flow":
        return LocalFeatures(template, state[0])
    if family == "planar":
        return LocalPlanar(*state)
    return LocalFullNormal(*state)


def _local_state(local: Guide, family: str, x: torch.Tensor) -> tuple:
    """The fitted parameters of a local guide of the images ``x``, in :func:`_local_guide`'s order."""
    if family == "flow":
        return (local.features.detach(),)
    if family == "planar":
        return local.state()
    q = local.posterior(x)
    return q.mean.detach(), (q.variance.sqrt().detach() if family == "diagonal" else q.scale_tril.detach())


def _template(init: Guide | None, family: str) -> Guide | None:
    """The flow guide a local fit of the flow family uses (from ``init``: a flow guide or a local fit)."""
    if family != "flow":
        return None
    inner = getattr(init, "inner", init)
    return inner.template if isinstance(inner, LocalFeatures) else init


def _objective(num_particles: int) -> TraceMeanField_ELBO:
    """The local ELBO with ``num_particles`` samples drawn at once (a particle plate at dim -2)."""
    return TraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                               max_plate_nesting=1)


def _step(objective, vae: VAE, local: Guide, x: torch.Tensor, optimizer) -> float:
    """One Adam step on the local parameters; returns the mean ELBO per image before it."""
    optimizer.zero_grad(set_to_none=True)
    loss = objective.differentiable_loss(vae.model, local, x) / x.shape[0]  # -mean ELBO per image
    loss.backward()
    optimizer.step()
    return -loss.item()


def _elbo_on_common_draws(vae: VAE, local: Guide, x: torch.Tensor, num_samples: int, seed: int) -> float:
    """The mean ELBO per image of ``local`` on ``num_samples`` draws per image from the stream ``seed``: the
    same base draws at every call (the global stream is left where it was)."""
    with seeded(seed, x.device):
        return mean_elbo(vae, local, x, num_samples, max(1, CHECK_ROWS // num_samples))["elbo"]


def _fit_chunk(vae: VAE, x: torch.Tensor, local: Guide, lr: float, min_lr: float, decay: float,
               tolerance: float, window: int, max_steps: int, num_particles: int,
               common_draws: int = 0, windows: list | None = None) -> tuple[int, str]:
    """Maximise the chunk's ELBO over ``local``'s parameters; returns (steps, stopped_on). A window is
    measured by its steps' mean objective, or with ``common_draws`` by :func:`_elbo_on_common_draws`; each
    window's [steps, rate, measure] is appended to ``windows``."""
    objective = _objective(num_particles)
    optimizer = torch.optim.Adam(local.parameters(), lr=lr)
    seed = int(torch.randint(2**62, ())) if common_draws else None  # from the global stream: runs repeat
    window_sum, previous, steps = 0.0, -math.inf, 0
    while steps < max_steps:
        window_sum += _step(objective, vae, local, x, optimizer)
        steps += 1
        if steps % window == 0:
            mean = (_elbo_on_common_draws(vae, local, x, common_draws, seed) if common_draws
                    else window_sum / window)
            if windows is not None:
                windows.append([steps, lr, mean])
            if mean - previous < tolerance:
                if lr <= min_lr * (1 + 1e-9):
                    return steps, "tolerance"
                lr = max(lr / decay, min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
            previous, window_sum = mean, 0.0
    return steps, "cap"


def fit_local(
    vae: VAE,
    x: torch.Tensor,
    init: Guide | None = None,
    family: str = "diagonal",
    lr: float = 0.05,
    min_lr: float = 5e-4,
    decay: float = 3.0,
    tolerance: float = 0.01,
    window: int = 50,
    max_steps: int = 5000,
    num_particles: int = 4,
    init_scale: float = 0.1,
    batch_size: int = 1000,
    flow_lr: float = FLOW_LR,
) -> LocalFit:
    """Fit per-datapoint posteriors q(z_n) of ``family`` to the images ``x`` ``(N, D)`` with the decoder frozen.

    max over q_n in ``family`` of ELBO(x_n; q_n); see the module docstring for the stopping rule.
    Chunks of ``batch_size`` images are fitted one after another (their objectives are
    independent). With ``init`` a guide, each q_n starts at its q(z | x_n) (for an amortized
    encoder: the q* of Cremer et al. 2018); otherwise at N(0, init_scale^2 I). The ``flow`` family
    needs ``init``: the amortized flow guide, whose features h(x_n) each fit starts from; the ``planar``
    family starts with identity flows on the diagonal Gaussian the other families would start from.
    Both take at least :data:`FLOW_PARTICLES` samples a step, start at a rate of at most ``flow_lr``, and
    their stopping rule scores windows of at least :data:`FLOW_WINDOW` steps on :data:`COMMON_DRAWS` common
    draws per image.

    :param tolerance: nats per image a window of ``window`` steps must gain to count as progress.
    :param flow_lr: the highest rate a flow family's fit starts at (default :data:`FLOW_LR`; the features of
        a borrowed flow family creep at it, and take a higher one).
    :returns: a :class:`LocalFit`; ``fit.guide`` is a guide over the rows of ``x`` (``idx`` = row numbers).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if not (0 < min_lr <= lr) or flow_lr <= 0 or decay <= 1 or window < 1 or max_steps < 0 or num_particles < 1:
        raise ValueError(
            f"fit_local needs 0 < min_lr <= lr, flow_lr > 0, decay > 1, window >= 1, max_steps >= 0 and "
            f"num_particles >= 1; got min_lr={min_lr}, lr={lr}, flow_lr={flow_lr}, decay={decay}, window={window}, "
            f"max_steps={max_steps}, num_particles={num_particles}"
        )
    start_time = time.perf_counter()
    common_draws = COMMON_DRAWS if family in FLOW_FAMILIES else 0
    if family in FLOW_FAMILIES:
        num_particles, window = max(num_particles, FLOW_PARTICLES), max(window, FLOW_WINDOW)
        lr = min(lr, flow_lr)
        min_lr = min(min_lr, lr)
    fit = LocalFit(guide=None, num_particles=num_particles, common_draws=common_draws, window=window,
                   lr=(lr, min_lr))
    template = _template(init, family)
    states = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        local = _local_guide(family, _start(_rows(init, start, chunk.shape[0]), chunk, vae.z_dim, family, init_scale),
                             template)
        local.name = "local_guide"
        if max_steps > 0:
            with torch.enable_grad(), pyro.validation_enabled(False), pyro.get_param_store().scope(), \
                    frozen(*generative_modules(vae), *([template] if template is not None else [])):
                fit.windows.append([])
                steps, stopped = _fit_chunk(vae, chunk, local, lr, min_lr, decay, tolerance, window,
                                            max_steps, num_particles, common_draws, fit.windows[-1])
        else:
            steps, stopped = 0, "cap"
            fit.windows.append([])
        fit.steps.append(steps), fit.stopped_on.append(stopped)
        with torch.no_grad():
            states.append(_local_state(local, family, chunk))
    fit.guide = _local_guide(family, tuple(torch.cat(parts) for parts in zip(*states)), template).to(x.device)
    fit.seconds = time.perf_counter() - start_time
    return fit


class _RowSlice(Guide):
    """Rows ``start .. start + n`` of a local guide, seen as a guide over n points."""

    amortized = False

    def __init__(self, guide: Guide, start: int, n: int):
        super().__init__(n)
        self.inner, self.start = guide, start

    def posterior(self, x, idx=None):
        idx = torch.arange(x.shape[0], device=x.device) if idx is None else idx
        return self.inner.posterior(x, idx + self.start)


def _rows(init: Guide | None, start: int, n: int) -> Guide | None:
    """An amortized guide as it is; a local one restricted to the chunk's rows."""
    if init is None or init.amortized:
        return init
    return _RowSlice(init, start, n)


@torch.no_grad()
def mean_elbo(vae: VAE, guide: Guide, x: torch.Tensor, num_samples: int = 100, batch_size: int = 500) -> dict:
    """ELBO per image of ``guide`` on ``x`` with ``num_samples`` samples each: mean and standard error.

    ``ELBO(x_n) ~= 1/S sum_s log p(x_n | z_s) - KL(q_n || p)``, the KL analytic where registered.
    """
    values = []
    prior = vae.prior()
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size]
        idx = torch.arange(start, start + chunk.shape[0], device=x.device)
        q = guide.posterior(chunk, idx)
        z = q.sample((num_samples,))  # (S, B, z_dim)
        try:
            kl = kl_divergence(q, prior.expand(q.batch_shape))
        except NotImplementedError:  # Monte Carlo on the same samples (a flow scores them from its cache)
            kl = (q.log_prob(z) - prior.log_prob(z)).mean(0)
        recon = vae.log_likelihood(z, chunk)  # (S, B)
        values.append(recon.mean(0) - kl)
    values = torch.cat(values)
    return {"elbo": values.mean().item(), "stderr": stderr(values),
            "per_datapoint": values}


def refinement_gain(vae: VAE, x: torch.Tensor, fit: LocalFit, steps: int, lr: float = 0.01,
                    min_lr: float = 1e-4, num_particles: int = 16, num_samples: int = 1000) -> dict:
    """How much optimising a local fit further still gains, nats per image (the convergence check).

    Starts from ``fit.guide``'s first ``len(x)`` rows (``x`` = the first images it was fitted to) and
    runs ``steps`` Adam steps with ``num_particles`` samples each, the learning rate decaying
    exponentially from ``lr`` to ``min_lr``; the ELBOs before and after are estimated with
    ``num_samples`` samples per image on common random numbers (the same base draws eps, z = T(eps)
    under each fit), and ``gain`` is the mean of the paired differences: its standard error then
    measures how far the fits differ, not the two estimates' own sampling noise.
    """
    family = guide_family(fit.guide)
    before_guide = _RowSlice(fit.guide, 0, x.shape[0])
    template = _template(fit.guide, family)
    refined = _local_guide(family, _start(before_guide, x, vae.z_dim, family, init_scale=1.0), template)
    refined.name = "local_guide"
    objective = _objective(num_particles)
    optimizer = torch.optim.Adam(refined.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=(min_lr / lr) ** (1 / max(1, steps)))
    with torch.enable_grad(), pyro.validation_enabled(False), pyro.get_param_store().scope(), \
                    frozen(*generative_modules(vae), *([template] if template is not None else [])):
        for _ in range(steps):
            _step(objective, vae, refined, x, optimizer)
            schedule.step()
    batch = max(1, CHECK_ROWS // num_samples)  # images a decoder pass takes; the same chunks, so the same draws
    with torch.random.fork_rng(devices=stream_devices(x.device)):  # the draws of `before`, then again for `after`
        before = mean_elbo(vae, before_guide, x, num_samples, batch)
    after = mean_elbo(vae, refined, x, num_samples, batch)
    diff = after["per_datapoint"] - before["per_datapoint"]
    return {"images": x.shape[0], "steps": steps, "num_particles": num_particles, "lr": [lr, min_lr],
            "num_samples": num_samples, "draws": "common",
            "elbo_before": before["elbo"], "elbo_after": after["elbo"], "gain": diff.mean().item(),
            "gain_stderr": stderr(diff)}
