"""The models: what a student reads beside the equations.

``z ~ p(z)``, ``x ~ p(x | z)`` (:class:`VAE` with a prior, a decoder and a likelihood) and the
guide ``q(z | x)``, z a Gaussian vector or discrete codes (:mod:`.discrete`); plain torch modules and
Pyro sample statements, no files, no configs.
"""

from .guides import AmortizedFlow, AmortizedFullNormal, AmortizedNormal, Guide, MeanField, is_amortized, point
from .likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood, NormalLikelihood, log_density
from .nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .priors import (CorrelatedPrior, FlowPrior, LearnedPrior, MixturePrior, StandardNormalPrior, VampPrior,
                     equicorrelation)
from .conditional import ConditionalNormal, ConditionalVAE
from .discrete import (CategoricalPrior, Codebook, CodebookCategorical, CodebookPrior, NearestCode, OneHotCodes,
                       RelaxedCategoricalGuide, RelaxedOneHotCodes, VectorQuantizer)
from .semisupervised import SemiSupervisedGuide, SemiSupervisedVAE
from .vae import VAE, data_plate

__all__ = [
    "AmortizedFlow", "AmortizedFullNormal", "AmortizedNormal", "BernoulliLikelihood", "CategoricalPrior", "Codebook",
    "CodebookCategorical", "CodebookPrior", "NearestCode", "OneHotCodes", "RelaxedCategoricalGuide",
    "RelaxedOneHotCodes", "VectorQuantizer", "ConditionalNormal",
    "ConditionalVAE", "SemiSupervisedGuide",
    "ContinuousBernoulliLikelihood", "ConvDecoder", "ConvEncoder", "CorrelatedPrior", "FlowPrior", "Guide",
    "LearnedPrior", "MLPDecoder", "MLPEncoder", "MeanField", "MixturePrior", "NormalLikelihood",
    "SemiSupervisedVAE", "StandardNormalPrior", "VAE", "data_plate", "equicorrelation", "VampPrior", "is_amortized",
    "log_density", "point",
]
