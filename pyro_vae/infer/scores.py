"""Per-image anomaly scores of a trained VAE: how badly the model explains each image.

For images ``x`` ``(N, D)`` (each score: higher = more anomalous):

- ``neg_log_likelihood``: -log p(x) by importance sampling with q(z | x) (K samples), nats;
- ``neg_elbo``: -(log p(x | z) + log p(z) - log q(z | x)) at one z ~ q, or with the analytic KL
  where one is registered, nats;
- ``reconstruction_error``: -log p(x | z = E_q[z | x]), nats;
- ``complexity_bits``: L(x), the length in bits of the image as a PNG (8-bit grey, 28 x 28), a
  generic compressor's estimate of its complexity;
- ``complexity_corrected``: S(x) = -log2 p(x) - L(x), bits (Serra et al. 2020): the likelihood
  corrected for how simple an image is to any compressor. A plain likelihood rates simple images
  (mostly black, like MNIST digits) as likely whatever the model was trained on (Nalisnick et al.
  2019); S asks whether the model explains x better than a generic compressor does;
- ``complexity_bits_webp``, ``complexity_corrected_webp``: the same with lossless WebP as the compressor
  (Serra et al. found the choice of compressor matters: the better it compresses, the better S works);
- ``likelihood_ratio`` (with a background model): -log p(x) + log p_0(x), nats (Ren et al. 2019: minus
  their LLR), p_0 a model of the same data with a share of every training image's pixels replaced by
  noise. Both models explain the low-level statistics (the black background) alike, so their ratio
  keeps what only the clean training data taught.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch

from ..models.guides import Guide, point
from ..models.vae import VAE
from .evaluate import batches, importance_log_likelihood, kl_term

SCORES = ("neg_log_likelihood", "neg_elbo", "reconstruction_error", "complexity_bits", "complexity_corrected",
          "complexity_bits_webp", "complexity_corrected_webp")
COMPRESSORS = {  # the name a complexity score carries -> PIL's format and its lossless settings
    "": ("PNG", {"optimize": True}),
    "_webp": ("WEBP", {"lossless": True, "quality": 100, "method": 6}),
}
BACKGROUND_SCORES = ("likelihood_ratio",)  # the scores a background model adds


def compressed_bits(images: torch.Tensor, compressor: str = "", shape: tuple[int, int] = (28, 28)) -> torch.Tensor:
    """L(x): bits of each image ``(N, H*W)`` in [0, 1] saved as an 8-bit grey image by a lossless compressor of
    :data:`COMPRESSORS` (PIL; ``""`` PNG with optimize, ``"_webp"`` lossless WebP at its slowest method), ``(N,)``."""
    from PIL import Image

    fmt, options = COMPRESSORS[compressor]
    pixels = (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, *shape).numpy()
    bits = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image), mode="L").save(buffer, fmt, **options)
        bits.append(8 * len(buffer.getvalue()))
    return torch.tensor(bits, dtype=torch.float64)


def likelihood_ratio(neg_log_likelihood: torch.Tensor, background_log_likelihood: torch.Tensor) -> torch.Tensor:
    """-log p(x) + log p_0(x) per image: minus Ren et al.'s LLR, higher for a more anomalous image."""
    return neg_log_likelihood + background_log_likelihood


@torch.no_grad()
def image_scores(vae: VAE, guide: Guide, x: torch.Tensor, num_samples: int = 100, batch_size: int = 100,
                 compile: bool | None = None) -> dict:
    """Every score of :data:`SCORES` for images ``x`` ``(N, D)`` (observed pixels), each a tensor ``(N,)``
    (:func:`likelihood_ratio` takes a background model's log p_0(x) beside them). With a point-mass q (a
    VQ-VAE's nearest codes c*) every importance sample is c*: ``neg_log_likelihood`` is then the bound
    -log p(x | c*) - log p(c*), drawn once (:func:`~pyro_vae.infer.evaluate.importance_log_likelihood`, which
    ``compile`` goes to: a caller scoring many such batches decides for all of them)."""
    prior = vae.prior()
    neg_elbo, reconstruction = [], []
    for idx, xb in batches(x, batch_size):
        q = guide.posterior(xb, idx)
        z = q.rsample()
        kl, _ = kl_term(q, prior, z)
        neg_elbo.append(kl - vae.log_likelihood(z, xb))
        reconstruction.append(-vae.log_likelihood(point(q), xb))
    nll = -importance_log_likelihood(vae, guide, x, num_samples, batch_size=batch_size,
                                     compile=compile)["per_datapoint"]
    scores = {"neg_log_likelihood": nll, "neg_elbo": torch.cat(neg_elbo),
              "reconstruction_error": torch.cat(reconstruction)}
    for suffix in COMPRESSORS:
        bits = compressed_bits(x, suffix)
        scores[f"complexity_bits{suffix}"] = bits
        scores[f"complexity_corrected{suffix}"] = nll.double() / math.log(2) - bits
    return {name: scores[name] for name in SCORES}
