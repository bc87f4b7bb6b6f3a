"""How the programs are fitted and judged: objectives, the optimizer, importance-sampled
log p(x), local fits q*, and the inference gaps. Imports only :mod:`pyro_vae.models`.
"""

from .evaluate import (DefensiveMixture, active_units, code_usage, elbo_terms, importance_log_likelihood, kl_term,
                       posterior_means)
from .gaps import amortization_gap, is_converged
from .local_fit import LocalFit, LocalFullNormal, fit_local, mean_elbo, refinement_gain
from .objectives import IWAE, DReGIWAE, FreeBitsELBO, KLWeight, VectorQuantizedELBO, kl_weighted
from .optim import LR_SCHEDULES, GroupedAdam, adam, lr_factor

__all__ = [
    "LR_SCHEDULES", "DefensiveMixture", "DReGIWAE", "FreeBitsELBO", "GroupedAdam", "IWAE", "KLWeight", "LocalFit",
    "LocalFullNormal", "VectorQuantizedELBO", "active_units", "code_usage", "adam", "amortization_gap",
    "elbo_terms", "fit_local",
    "importance_log_likelihood", "is_converged", "kl_term", "kl_weighted", "lr_factor", "mean_elbo",
    "posterior_means", "refinement_gain",
]
