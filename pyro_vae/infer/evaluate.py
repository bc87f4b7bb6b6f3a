"""Evaluation: ELBO terms, importance-sampled log-likelihood, IWAE bounds, active units.

``ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))``; ``loss = -ELBO`` (for grey-value
pixels under a Bernoulli, ``loss = BCE + KL``, the reference experiments' number).
``log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log K``, z_k ~ q(z|x).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.kl import kl_divergence

from ..models.conditional import one_hot
from ..models.discrete import code_indices
from ..models.guides import Guide, point
from ..models.vae import VAE
from .compiled import log_weight_for, worth_compiling


def stream_devices(device: torch.device | str) -> list[int]:
    """The CUDA device whose generator ``torch.random.fork_rng`` keeps for draws on ``device`` (none on a CPU)."""
    device = torch.device(device)
    return [device.index or 0] if device.type == "cuda" else []


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu"):
    """Run a block on torch's global streams seeded with ``seed``, the CPU's and ``device``'s, then restore them.

    Evaluation runs inside it, so its Monte-Carlo draws are a fixed function of the parameters and never
    move the training run's random stream; only the streams restored afterwards are seeded (``torch.manual_seed``
    would reseed every GPU's)."""
    cuda = stream_devices(device)
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


def batches(x: torch.Tensor, batch_size: int):
    """``(idx, x[idx])`` over consecutive rows of ``x``, ``batch_size`` at a time."""
    for start in range(0, x.shape[0], batch_size):
        idx = torch.arange(start, min(start + batch_size, x.shape[0]), device=x.device)
        yield idx, x[idx]


def given(y: torch.Tensor | None, idx: torch.Tensor) -> dict:
    """The keyword a conditional model and guide take for rows ``idx`` (``{"y": y[idx]}``), none without labels."""
    return {} if y is None else {"y": y[idx]}


def stderr(values: torch.Tensor) -> float:
    """Standard error of the mean of per-datapoint ``values``: std / sqrt(N) (nan for N < 2)."""
    return (values.std() / math.sqrt(len(values))).item() if len(values) > 1 else float("nan")


def kl_term(q, p, z: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """KL(q || p) per batch element: analytic where registered, else ``log q(z) - log p(z)``.

    :param z: a sample from ``q`` (used only for the Monte-Carlo fallback).
    :returns: ``(kl, is_analytic)`` with ``kl`` of shape ``q.batch_shape``.
    """
    try:
        return kl_divergence(q, p.expand(q.batch_shape)), True
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z), False


@torch.no_grad()
def elbo_terms(
    vae: VAE,
    guide: Guide,
    x: torch.Tensor,
    batch_size: int = 1000,
    means: list | None = None,
    y: torch.Tensor | None = None,
) -> dict:
    """Mean per-image ``elbo``, ``recon`` (E_q log p(x|z), one sample), ``kl`` and ``loss`` on images ``x`` ``(N, D)``.

    The guide is asked for q(z | x_n) with the rows' indices, so a mean-field guide
    fitted to ``x`` works too. ``kl_estimator`` says whether the KL is analytic or a
    one-sample Monte-Carlo estimate; ``convention`` says whether ``recon`` is a true
    log-likelihood or minus a binary cross-entropy (grey-value pixels).

    :param means: if given, a list the batches' codes (:func:`~pyro_vae.models.guides.point`: E_q[z | x_n]
        for a Gaussian q) are appended to (``torch.cat(means)`` equals :func:`posterior_means`).
    :param y: one-hot labels ``(N, C)`` of a conditional VAE: the terms of ELBO(x | y) <= log p(x | y).
    """
    totals = {"recon": 0.0, "kl": 0.0}
    analytic = True
    for idx, xb in batches(x, batch_size):
        q = guide.posterior(xb, idx, **given(y, idx))
        z = q.rsample()  # (B, z_dim)
        recon = vae.log_likelihood(z, xb, **given(y, idx))  # (B,)
        kl, is_analytic = kl_term(q, vae.prior_for(xb, **given(y, idx)), z)
        analytic &= is_analytic
        if means is not None:
            means.append(point(q))  # after z is scored (a flow's cache holds z until then)
        totals["recon"] += recon.sum().item()
        totals["kl"] += kl.sum().item()
    n = x.shape[0]
    recon, kl = totals["recon"] / n, totals["kl"] / n
    return {
        "elbo": recon - kl,
        "loss": kl - recon,
        "recon": recon,
        "kl": kl,
        "kl_estimator": "analytic" if analytic else "monte_carlo",
        "convention": vae.likelihood.convention,
    }


@torch.no_grad()
def posterior_means(guide: Guide, x: torch.Tensor, batch_size: int = 1000, y: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """E_q[z | x_n] (E_q[z | x_n, y_n] given one-hot labels ``y``) for every row of ``x`` ``(N, D)``, shape
    ``(N, z_dim)`` (for a flow posterior, the code :func:`~pyro_vae.models.guides.point`)."""
    means = [point(guide.posterior(xb, idx, **given(y, idx))) for idx, xb in batches(x, batch_size)]
    return torch.cat(means)


@torch.no_grad()
def log_weights(vae: VAE, q, x: torch.Tensor, num_samples: int, prior=None, y: torch.Tensor | None = None,
                log_weight=None) -> torch.Tensor:
    """Importance log-weights log p(x, z_k) - log q(z_k | x), z_k ~ q, shape ``(K, B)`` (with one-hot labels
    ``y`` ``(B, C)``: log p(x, z_k | y) - log q(z_k | x, y)).

    :param prior: ``vae.prior_for(x, y)`` if already built (a VampPrior encodes its pseudo-inputs to build it).
    :param log_weight: ``(z, x, y, q, prior) -> log w`` from :func:`~pyro_vae.infer.compiled.log_weight_for`
        (default: eager)."""
    z = q.sample((num_samples,))  # (K, B, z_dim)
    prior = vae.prior_for(x, y) if prior is None else prior
    return (log_weight or log_weight_for(vae, False))(z, x, y, q, prior)


def importance_samples(guide: Guide, num_samples: int) -> int:
    """The samples an importance estimate draws: ``num_samples``, or 1 for a point-mass q (``guide.deterministic``:
    a VQ-VAE's nearest codes c*, which every draw repeats)."""
    return 1 if getattr(guide, "deterministic", False) else num_samples


CHUNK_ROWS = 2500  # samples x images decoded at once by the sampler (make bench scans 250-5,000 against it)


@torch.no_grad()
def importance_log_likelihood(
    vae: VAE,
    guide: Guide,
    x: torch.Tensor,
    num_samples: int = 5000,
    chunk_size: int | None = None,
    batch_size: int = 100,
    y: torch.Tensor | None = None,
    compile: bool | None = None,
) -> dict:
    """Per-datapoint importance-sampled log p(x) of images ``x`` ``(N, D)`` with q(z|x) as proposal (given
    one-hot labels ``y`` ``(N, C)`` of a conditional VAE: log p(x | y), with q(z | x, y)).

    ``log p(x) ~= logsumexp_k [log p(x | z_k) + log p(z_k) - log q(z_k | x)] - log K``, z_k ~ q(z|x).

    For a given K this is also the IWAE bound L_K (Burda et al. 2015): E[L_K] <= log p(x),
    rising to log p(x) as K grows. Memory is bounded by ``chunk_size * batch_size * D``
    numbers: samples are drawn ``chunk_size`` at a time (default: :data:`CHUNK_ROWS` rows in all,
    at least one sample per image) and folded into a running logsumexp. Distribution argument
    checks are off inside (the samples come from q itself; binary pixels under a Bernoulli are
    checked by :func:`~pyro_vae.models.likelihoods.log_density`); an estimate that is not finite (a
    diverged model) raises ``ValueError``. A point-mass q (``guide.deterministic``: a VQ-VAE's nearest codes
    c*) draws one sample, as every draw is c*: the estimate is then the bound log p(x | c*) + log p(c*).
    log p(x | z) runs compiled (:mod:`pyro_vae.infer.compiled`), with log p(z) - log q(z | x) in the same graph
    where both are diagonal Gaussians (:func:`~pyro_vae.infer.compiled.log_weight_for`), where ``compile`` says
    so; by default where the estimate decodes enough codes (:func:`~pyro_vae.infer.compiled.worth_compiling` of
    K x N).

    :returns: ``log_likelihood`` (mean over the data), ``stderr`` (its standard error
        over datapoints), ``per_datapoint`` ``(N,)`` and ``num_samples`` (the samples drawn).
    """
    if num_samples < 1 or (chunk_size is not None and chunk_size < 1) or batch_size < 1:
        raise ValueError(f"importance_log_likelihood needs num_samples, chunk_size and batch_size >= 1, got "
                         f"{num_samples}, {chunk_size}, {batch_size}")
    num_samples = importance_samples(guide, num_samples)
    per_point = []
    weigh = log_weight_for(vae, worth_compiling(num_samples * x.shape[0]) if compile is None else compile)
    with pyro.validation_enabled(False):
        for idx, xb in batches(x, batch_size):
            labels = given(y, idx)
            q = guide.posterior(xb, idx, **labels)
            prior = vae.prior_for(xb, **labels)  # once per batch: a VampPrior encodes its pseudo-inputs here
            chunk = chunk_size or max(1, CHUNK_ROWS // xb.shape[0])
            running = torch.full((xb.shape[0],), -math.inf, device=xb.device)
            for start in range(0, num_samples, chunk):
                k = min(chunk, num_samples - start)
                log_w = log_weights(vae, q, xb, k, prior, log_weight=weigh, **labels)
                running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
            per_point.append(running - math.log(num_samples))
    values = torch.cat(per_point)
    if not torch.isfinite(values).all():
        raise ValueError(f"the importance-sampled log p(x) of {int((~torch.isfinite(values)).sum())} images is not "
                         "finite: the model or the guide gives non-finite densities (a diverged run?)")
    return {
        "log_likelihood": values.mean().item(),
        "stderr": stderr(values),
        "per_datapoint": values,
        "num_samples": num_samples,
    }


class DefensiveMixture(Guide):
    """The proposal r(z | x) = (1/M) sum_m q_m(z | x) over M guides of one Gaussian family.

    Importance weights under r are at most M times those under any single q_m, so
    E_r[w^2] <= M min_m E_{q_m}[w^2]: the estimate is never much worse than with the best of
    the guides, whichever that is for a given image (Hesterberg 1995; Owen & Zhou 2000).
    """

    def __init__(self, guides: list[Guide]):
        super().__init__(guides[0].num_data)
        self.guides = list(guides)  # not a ModuleList: the mixture owns no parameters

    def posterior(self, x, idx=None):
        parts = [g.posterior(x, idx) for g in self.guides]
        weights = x.new_full((x.shape[0], len(parts)), 1.0 / len(parts))  # (B, M)
        if all(isinstance(q, dist.MultivariateNormal) for q in parts):
            components = dist.MultivariateNormal(torch.stack([q.loc for q in parts], -2),
                                                 scale_tril=torch.stack([q.scale_tril for q in parts], -3))
        elif all(isinstance(q, dist.Independent) and isinstance(q.base_dist, dist.Normal) for q in parts):
            components = dist.Normal(torch.stack([q.base_dist.loc for q in parts], -2),
                                     torch.stack([q.base_dist.scale for q in parts], -2)).to_event(1)
        else:
            raise ValueError("DefensiveMixture needs guides whose q are all diagonal or all full-covariance Normals")
        return dist.MixtureSameFamily(dist.Categorical(probs=weights), components)


@torch.no_grad()
def active_units(guide: Guide, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 1000,
                 y: torch.Tensor | None = None) -> dict:
    """Latent dimensions in use (Burda et al. 2015): A_u = Cov_x(E_q[z_u | x]) > ``threshold`` (E_q[z_u | x, y]
    given one-hot labels ``y``)."""
    activity = posterior_means(guide, x, batch_size, y).var(0)  # (z_dim,)
    return {"active_units": int((activity > threshold).sum()), "activity": activity.tolist()}


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of the usage ``p = counts / sum(counts)`` along the last dimension: the number of equally used
    codes that would have the same entropy (K when every code is used alike, 1 when one code is)."""
    p = counts / counts.sum(-1, keepdim=True)
    return torch.exp(-torch.xlogy(p, p).sum(-1))


@torch.no_grad()
def code_usage(guide: Guide, x: torch.Tensor, batch_size: int = 1000) -> dict:
    """How a guide over discrete codes (:mod:`pyro_vae.models.discrete`) uses its K codes on images ``x``, each
    position's most probable code c_m(x) counted over the images:

    - ``position_perplexity``: exp(H) of each position's usage, averaged over the M positions;
    - ``perplexity``: with codes shared by the positions (a VQ-VAE's codebook), exp(H) of the usage pooled over
      the positions; else (``shared`` false: class k means something else at each position) the per-position one;
    - ``dead_codes``: shared, the codes no position of any image takes; else the (position, class) pairs no
      image takes; ``codes``: K, ``positions``: M.
    """
    counts, shared = None, True
    for idx, xb in batches(x, batch_size):
        q = guide.posterior(xb, idx)
        used = F.one_hot(code_indices(q), q.classes).sum(0)  # (M, K)
        counts, shared = (used if counts is None else counts + used), q.shared_codes
    per_position = perplexity(counts.double()).mean().item()
    unused = counts.sum(0) if shared else counts
    return {"perplexity": perplexity(counts.sum(0).double()).item() if shared else per_position,
            "position_perplexity": per_position, "dead_codes": int((unused == 0).sum()), "codes": counts.shape[1],
            "positions": counts.shape[0], "shared": shared}


def classifier_log_probs(guide, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """log q(y | x) ``(N, C)`` of M2's classifier (normalised), in batches of ``batch_size`` images."""
    return torch.cat([guide.q_y(xb).logits for _, xb in batches(x, batch_size)])


@torch.no_grad()
def accuracy_over_draws(guide, draws: Iterable[torch.Tensor], labels: torch.Tensor, batch_size: int = 1000) -> float:
    """The classifier's accuracy on images whose pixels are random (dynamic binarization), the draw's noise
    averaged out: the fraction of images whose ``argmax_y (1/S) sum_s q(y | x_s)`` is their label, over the
    S draws ``x_s`` of every image ``(N, D)`` that ``draws`` yields (S = 1: argmax q(y | x_1), one draw's)."""
    total = None
    for x in draws:
        probs = classifier_log_probs(guide, x, batch_size).exp()
        total = probs if total is None else total + probs
    if total is None:
        raise ValueError("accuracy_over_draws needs at least one draw of the images")
    return (total.argmax(-1) == labels).float().mean().item()


@torch.no_grad()
def semi_supervised_terms(vae, guide, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> dict:
    """M2's bound on log p(x) for images whose labels it is not told, summed over y exactly, and the
    classifier's accuracy against ``labels`` ``(N,)``:

    ``U(x) = sum_y q(y|x) [E_q(z|x,y) log p(x|z,y) - KL(q(z|x,y) || p(z))] - KL(q(y|x) || p(y))``

    (one z per image and class; ``recon`` the first sum's term, ``kl`` the two KLs), mean per image, with
    ``accuracy`` the fraction of images whose argmax_y q(y | x) is their label.
    """
    totals = {"recon": 0.0, "kl": 0.0, "correct": 0}
    analytic = True
    prior = vae.prior()
    classes = torch.eye(vae.num_classes, dtype=x.dtype, device=x.device).unsqueeze(1)  # (C, 1, C)
    for idx, xb in batches(x, batch_size):
        q_y = guide.q_y(xb)
        probs = q_y.probs.T  # (C, B)
        q_z = guide.posterior(xb, idx, classes)  # batch (C, B)
        z = q_z.rsample()  # (C, B, z_dim)
        recon = vae.log_likelihood(z, xb, classes)  # (C, B)
        kl_z, is_analytic = kl_term(q_z, prior, z)
        analytic &= is_analytic
        kl_y = (q_y.probs * (q_y.logits - vae.prior_y(xb).logits)).sum(-1)  # (B,)
        totals["recon"] += (probs * recon).sum().item()
        totals["kl"] += ((probs * kl_z).sum(0) + kl_y).sum().item()
        totals["correct"] += (guide.predict(xb) == labels[idx]).sum().item()
    n = x.shape[0]
    recon, kl = totals["recon"] / n, totals["kl"] / n
    return {"elbo": recon - kl, "loss": kl - recon, "recon": recon, "kl": kl,
            "kl_estimator": "analytic" if analytic else "monte_carlo", "convention": vae.likelihood.convention,
            "accuracy": totals["correct"] / n}


@torch.no_grad()
def importance_log_likelihood_over_labels(vae, guide, x: torch.Tensor, num_samples: int = 5000, **kwargs) -> dict:
    """log p(x) of a model with a label latent y (M2), y summed out exactly and z importance-sampled for each:

    ``log p(x) ~= logsumexp_y [log p(y) + log p^(x | y)]``, p^(x | y) the K-sample estimate with q(z | x, y)
    (:func:`importance_log_likelihood` given y); C times its cost. Same keys as it returns, and ``log_joint``
    ``(N, C)``: log p(y) + log p^(x | y), whose softmax over y is the model's own posterior p(y | x)
    (:func:`label_inference`); compiled where the C x K x N decoded codes are enough
    (:func:`~pyro_vae.infer.compiled.worth_compiling`), unless ``compile`` is given."""
    n, classes = x.shape[0], vae.num_classes
    log_p_y = vae.prior_y(x).logits  # (C,), normalised
    kwargs.setdefault("compile", worth_compiling(classes * num_samples * n))
    per_class = []
    for c in range(classes):
        y = one_hot(torch.full((n,), c, device=x.device), classes, x.dtype)
        per_class.append(importance_log_likelihood(vae, guide, x, num_samples, y=y, **kwargs)["per_datapoint"]
                         + log_p_y[c])
    log_joint = torch.stack(per_class, -1)
    values = torch.logsumexp(log_joint, -1)
    return {"log_likelihood": values.mean().item(), "stderr": stderr(values), "per_datapoint": values,
            "num_samples": num_samples, "log_joint": log_joint}


@torch.no_grad()
def label_inference(guide, x: torch.Tensor, labels: torch.Tensor, log_joint: torch.Tensor,
                    batch_size: int = 1000) -> dict:
    """M2's classifier q(y | x) beside the model's own posterior over the label,
    ``log p(y | x) = log p(x, y) - logsumexp_y' log p(x, y')`` from the per-class estimates ``log_joint``
    ``(N, C)`` (:func:`importance_log_likelihood_over_labels`):

    - ``model_accuracy``: of argmax_y p(y | x), the model's Bayes classifier;
    - ``agreement``: how often argmax q(y | x) = argmax p(y | x);
    - ``kl``: mean KL(q(y | x) || p(y | x)) = sum_y q (log q - log p), the label's part of the gap
      log p(x) - U(x) (the rest is sum_y q(y | x) [log p(x | y) - L(x, y)], z's), with ``kl_stderr``;
    - ``confusion``: the counts of argmax q(y | x) for each true label, ``confusion[label][guess]`` (C x C;
      its diagonal over its sum is q's accuracy, a row's diagonal over the row's sum a digit's recall).

    p(y | x) is a ratio of K-sample estimates, consistent as K grows but not unbiased: each log p^(x | y) leans
    low by about half the relative variance of p^(x | y), Var(w / p) / 2K, so a class whose q(z | x, y) fits
    worse is under-weighted; q(z | x, y) is trained with weight q(y | x), so the classes q(y | x) rules out fit
    worst, which leans ``agreement`` up. ``kl_stderr`` is the spread over images alone."""
    log_q = classifier_log_probs(guide, x, batch_size)
    log_p = log_joint - torch.logsumexp(log_joint, -1, keepdim=True)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    model_guess, guess = log_p.argmax(-1), log_q.argmax(-1)
    classes = log_q.shape[-1]
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"label_inference needs labels in 0..{classes - 1}, got {labels.min().item()}.."
                         f"{labels.max().item()}; evaluate M2 on a labelled dataset")
    confusion = torch.bincount(labels * classes + guess, minlength=classes * classes).reshape(classes, classes)
    return {"model_accuracy": (model_guess == labels).float().mean().item(),
            "agreement": (model_guess == guess).float().mean().item(),
            "kl": kl.mean().item(), "kl_stderr": stderr(kl), "confusion": confusion.tolist()}
