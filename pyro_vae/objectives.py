"""Training objectives: -ELBO estimators from Pyro.

``Loss = -ELBO``,  ``ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z))``.

- ``trace``: :class:`pyro.infer.Trace_ELBO`, the Monte-Carlo estimate
  ``log p(x, z) - log q(z|x)`` at z ~ q (reparameterized);
- ``trace_mean_field``: :class:`pyro.infer.TraceMeanField_ELBO`, which uses the analytic
  KL(q || p) wherever one is registered (diagonal Normal vs Normal or
  MultivariateNormal, MVN vs MVN) and the Monte-Carlo term elsewhere (mixture prior).
"""

from __future__ import annotations

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

from .config import ConfigError

OBJECTIVES = {"trace": Trace_ELBO, "trace_mean_field": TraceMeanField_ELBO}


def build_objective(name: str, num_particles: int = 1) -> ELBO:
    """The ELBO estimator named ``name`` (a key of :data:`OBJECTIVES`) with ``num_particles`` samples."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown train.objective {name!r}; valid objectives: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](num_particles=num_particles)
