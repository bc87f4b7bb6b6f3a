"""Evaluating a trained run: test-set ELBO terms, the importance-sampled log-likelihood and,
for an amortized guide, the inference gaps; ``evaluation.json`` in the run directory.

``evaluate_run`` writes the ELBO and its terms, log p(x) with K samples and its standard error,
IWAE bounds for smaller K and the active units; with ``gap=True`` the decomposition of
:func:`pyro_vae.infer.gaps.amortization_gap` on the same images. A mean-field guide has no
encoder: its test images get Gaussians of their own (:func:`fit_test_images`, cached in the run).
M2 adds its classifier's accuracy (on dynamically binarized images also with q(y | x) averaged over
:data:`PIXEL_DRAWS` binarizations of each image), a supervised baseline's, and (with log p(x)) the model's own
posterior over the label beside q(y | x) (:func:`pyro_vae.infer.evaluate.label_inference`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import NamedTuple

import torch

from ..infer.evaluate import (accuracy_over_draws, active_units, code_usage, elbo_terms, importance_log_likelihood,
                              importance_log_likelihood_over_labels, label_inference, posterior_means,
                              semi_supervised_terms)
from ..infer.gaps import (CHECK_STEPS, CONVERGED_GAIN, FAMILY_LABELS, amortization_gap, default_check_images,
                          is_converged)
from ..infer.local_fit import FLOW_FAMILIES, FLOW_FIT, FLOW_LR, fit_local, guide_family, own_family
from ..models.guides import Guide, MeanField, is_amortized, point
from ..models.vae import VAE
from .checkpoint import CheckpointError, load_checkpoint, read_json, save_checkpoint, write_json
from .config import LOCAL_FIT_KEYS, Config, ConfigError, is_fit_override, resolved_dict, with_overrides
from .data import ImageData, load_run_split
from .completion import baseline_loss
from .labels import baseline_accuracy, labels_for
from .runs import Run, RunDir, load_run
from .streams import eval_generator, flushed_subnormals, pixel_draws_generator, seeded

SPLITS = ("test", "train")
# M2 on dynamically binarized images: the classifier's accuracy is also read with q(y | x) averaged over this many
# binarizations of each test image (drawn on pixel_draws_generator(seed)), beside the one x scored
PIXEL_DRAWS = 100
COMPLETION_BCE = (
    "; an image-completion run reports the importance-sampled estimate of the same quantity on -BCE "
    "(importance_sampled: log of the mean weight exp(-BCE(x_h; z)) p(z | x_g) / q(z | x), Pyro's CVAE "
    "tutorial's convention), comparable with its -ELBO, not a log-density"
)
POINT_MASS = (
    "q(z | x) is a point mass at the nearest codes c*, so every importance sample is c* and log p(x) is reported "
    "as its one-sample value, the lower bound log p(x | c*) + log p(c*) (= the ELBO)"
)
NOT_A_DENSITY = (
    "grey-value pixels under a Bernoulli: -BCE is not a normalised log-density, so no "
    "log-likelihood is reported; train with data.pixels = 'dynamic' or 'threshold', or "
    "model.likelihood = 'continuous_bernoulli'"
)


def _fingerprint(*tensors: torch.Tensor, extra: object = None) -> str:
    """A hash of tensors' bytes (and ``repr(extra)``): what a cached result was computed from."""
    digest = hashlib.sha256(repr(extra).encode())
    for t in tensors:
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


UNFINGERPRINTED = {"window": 50, "flow_lr": FLOW_LR}  # local fit options added after fits were cached: at these
# values a fit is the one made before they existed, so they stay out of its fingerprint and old caches still serve


def fit_test_images(vae: VAE, x: torch.Tensor, config: Config, cache: Path | None = None) -> tuple[Guide, dict]:
    """Per-image Gaussians for new images ``x`` (a mean-field run's test set), decoder frozen.

    The fit (:func:`pyro_vae.infer.local_fit.fit_local` with the [guide] settings) runs on its own
    seeded stream and is kept in ``cache`` with a fingerprint of the decoder's weights, the
    images and the settings; a later call with the same three reads it back instead of refitting.
    """
    options = config.guide.local_fit_options()
    fingerprinted = {k: v for k, v in options.items() if k not in UNFINGERPRINTED or v != UNFINGERPRINTED[k]}
    key = _fingerprint(*vae.state_dict().values(), x, extra=(fingerprinted, config.train.seed,
                                                             config.train.eval_batch_size))
    if cache is not None and cache.is_file():
        try:
            saved = load_checkpoint(cache, map_location=x.device)
        except CheckpointError:
            saved = None
        if saved is not None and saved.get("key") == key:
            return MeanField(x.shape[0], vae.z_dim, saved["loc"], saved["scale"], sparse=False), saved["summary"]
    with seeded(config.train.seed + 1, x.device):
        fit = fit_local(vae, x, batch_size=config.train.eval_batch_size, **options)
    q = fit.guide.posterior(x)
    summary = fit.summary()
    if cache is not None:
        save_checkpoint(cache, {"key": key, "loc": q.mean.detach(), "scale": q.stddev.detach(), "summary": summary})
    return fit.guide, summary


class EvaluatedSet(NamedTuple):
    """The test images under the current parameters: ELBO terms, the guide that gave them, and the
    posterior means E_q[z | x] ``(N, z_dim)`` of the same pass (what snapshots and figures draw)."""

    terms: dict
    guide: Guide
    codes: torch.Tensor


@flushed_subnormals()
def evaluate_test_set(vae: VAE, guide: Guide, test: ImageData, config: Config, device,
                      cache: Path | None = None) -> EvaluatedSet:
    """Test-set ELBO terms, the guide they used (mean-field: :func:`fit_test_images`, cached in
    ``cache``) and the posterior means of the evaluation's binarization (a model with labels: given
    each image's label; for M2 the terms are of its bound with y summed out, and its accuracy).

    Runs under :func:`seeded`, so the same parameters always give the same numbers.
    """
    with seeded(config.train.seed + 1, device):
        x = test.observed(eval_generator(config.train.seed, device)).images
        y, batch = labels_for(vae, test), config.train.eval_batch_size
        local = {}
        if not is_amortized(guide):
            guide, summary = fit_test_images(vae, x, config, cache)
            local = {"local_fit": summary}
        if vae.labels == "latent":
            terms = semi_supervised_terms(vae, guide, x, test.labels, batch)
            return EvaluatedSet(terms, guide, posterior_means(guide, x, batch, y))
        means: list[torch.Tensor] = []
        terms = elbo_terms(vae, guide, x, batch, means=means, y=y)
        if is_discrete(vae):
            terms.update(code_usage(guide, x, batch))
    return EvaluatedSet({**terms, **local}, guide, torch.cat(means))


def is_discrete(vae: VAE) -> bool:
    """Whether the model's latents are discrete codes (a categorical prior, :mod:`pyro_vae.models.discrete`)."""
    return getattr(vae.prior, "discrete", False)


def evaluation_codes(guide: Guide, test: ImageData, config: Config, device, y: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Posterior means E_q[z | x] (E_q[z | x, y] given one-hot labels ``y``) of the test images (the
    evaluation's fixed binarization)."""
    x = test.observed(eval_generator(config.train.seed, device)).images
    return posterior_means(guide, x, config.train.eval_batch_size, y)


def snapshot_data(guide, train: ImageData, test: ImageData) -> ImageData:
    """The images the figures over training follow: the test set, or for a guide without an
    encoder (mean-field) as many training images, the rows its Gaussians belong to."""
    return test if is_amortized(guide) else train.subset(len(test))


def _split(run: Run, split: str, data_dir, limit: int = 0) -> ImageData:
    """The run's ``split`` ("test" or "train"), its first ``limit`` images when ``limit`` > 0."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return load_run_split(run.config, split == "train", data_dir, limit)


def _named_family(q_family: str | None, flows_from: str | Path | None) -> str | None:
    """The q* family asked for: ``--q-family``, or ``flow`` for ``--flows-from``; None for the guide's own."""
    return q_family or ("flow" if flows_from else None)


def flows_source(flows_from: str | Path) -> dict:
    """What a borrowed flow family depends on: the run it comes from (its folder's name), its config and its
    epochs; not the path it was named by, so one run named two ways is one family."""
    source = RunDir(flows_from)
    return {"run": Path(flows_from).resolve().name, "epochs": source.epochs_done(),
            "config": source.saved_config().to_dict()}


def run_settings(config: Config, epochs: int, split: str, num_samples: int, images: int, gap: bool = False) -> dict:
    """The part of :func:`evaluation_settings` that the run's config and epoch count fix: all of it without the gap,
    so a run's saved numbers can be matched without its weights."""
    settings = {"split": split, "num_samples": num_samples, "images": images, "gap": gap, "epochs": epochs,
                "config": config.to_dict()}
    if config.model.labels == "latent":  # (an M2 evaluation saved before it held the model's p(y | x) is not reused)
        settings["label_posterior"] = True
        if config.data.pixels == "dynamic":  # (nor one saved before its accuracy over binarizations)
            settings["pixel_draws"] = PIXEL_DRAWS
    return settings


def evaluation_settings(run: Run, split: str, num_samples: int, images: int, gap: bool,
                        q_family: str | None = None, flows_from: str | Path | None = None,
                        check_steps: int = CHECK_STEPS) -> dict:
    """What an evaluation's numbers depend on: the run's whole config, its epochs, the split, K,
    the number of images, whether the gap was measured and, for the gap, q*'s family and (a flow family's)
    fitting rule; for M2, that it holds the model's p(y | x) and (dynamic pixels) how many binarizations its averaged
    accuracy read. A saved evaluation is reused only when these are equal."""
    settings = run_settings(run.config, run.dir.epochs_done(), split, num_samples, images, gap)
    if not gap:
        return settings
    settings["check_images"] = default_check_images(images)  # (one saved under another rule is not reused)
    if check_steps != CHECK_STEPS:
        settings["check_steps"] = check_steps
    named = _named_family(q_family, flows_from)
    if named:
        settings["q_family"] = {"family": named, "flows_from": flows_source(flows_from) if flows_from else None}
    if (named or own_family(run.guide)) in FLOW_FAMILIES:
        settings["flow_fit"] = FLOW_FIT
    return settings


@flushed_subnormals()
def evaluate_run(
    run_dir: str | Path,
    num_samples: int = 5000,
    split: str = "test",
    data_dir=None,
    iwae_samples: tuple[int, ...] = (1, 10, 100),
    gap: bool = False,
    limit: int = 0,
    save: bool = True,
    q_family: str | None = None,
    flows_from: str | Path | None = None,
    check_steps: int = CHECK_STEPS,
    fit_overrides: list[str] | tuple = (),
) -> dict:
    """Evaluate a run on ``split`` and write ``evaluation.json`` (unless ``save`` is false; with q* of another
    family, ``evaluation_q_<family>.json``, :func:`evaluation_path`); see the module docstring.

    :param limit: evaluate the first ``limit`` images only (0 = all).
    :param q_family: with ``gap``, fit q* in this family instead of the guide's; ``flows_from``: a run whose
        flow guide's flows make the flow family (:func:`pyro_vae.infer.gaps.amortization_gap`'s cross cells).
    :param fit_overrides: ``guide.local_*=value`` settings of the local fits (:data:`LOCAL_FIT_KEYS`) in place
        of the run's, e.g. a longer cap for q*; the evaluation's settings record the config they make.
    """
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    if check_steps < CHECK_STEPS:
        raise ConfigError(f"--check-steps must be at least {CHECK_STEPS} (a shorter check shows nothing), got "
                          f"{check_steps}")
    if (q_family or flows_from) and not gap:
        raise ConfigError("--q-family and --flows-from choose the family of q* for --gap: add --gap")
    run = with_fit_settings(load_run(run_dir), fit_overrides)
    if fit_overrides and not gap and (is_amortized(run.guide) or split != "test"):
        raise ConfigError(f"--set {fit_overrides[0]} changes only --gap's q* or a mean-field run's test posteriors, "
                          "and this evaluation fits neither: add --gap or drop --set")
    family_guide = _flow_family_guide(run, flows_from) if flows_from else None
    if flows_from and q_family not in (None, "flow"):
        raise ConfigError(f"--flows-from gives q* a flow family; drop --q-family {q_family} or --flows-from")
    seed = run.config.train.seed
    data = _split(run, split, data_dir, limit)
    x = data.observed(eval_generator(seed)).images
    report: dict = {"split": split, "images": len(data), "num_samples": num_samples,
                    "convention": run.vae.likelihood.convention, "epochs": len(run.history),
                    "settings": evaluation_settings(run, split, num_samples, len(data), gap, q_family, flows_from,
                                                    check_steps)}
    proper = run.vae.likelihood.convention == "log_likelihood"
    if gap:
        check_gap(run.config, run.vae, run.guide, cross=bool(q_family or flows_from))
    with seeded(seed + 3):
        guide = run.guide
        if not is_amortized(guide) and split == "test":  # on "train" it has its own rows
            guide, report["local_fit"] = fit_test_images(run.vae, x, run.config, cache=run.dir.local_fit)
        y, batch, latent = labels_for(run.vae, data), run.config.train.eval_batch_size, run.vae.labels == "latent"
        if run.vae.labels == "input":
            report["conditional"] = "log p(x | y): the labels are given"
        if latent:  # M2: its bound and log p(x) with y summed out; the classifier against the supervised baseline
            report["elbo"] = semi_supervised_terms(run.vae, guide, x, data.labels, batch)
            report["accuracy"] = report["elbo"]["accuracy"]
            if data.pixels == "dynamic":  # x is one binarization of the test image: its noise averaged out too
                draws = pixel_draws_generator(seed)
                report["accuracy_over_draws"] = {"value": accuracy_over_draws(
                    guide, (data.observed(draws).images for _ in range(PIXEL_DRAWS)), data.labels, batch),
                    "draws": PIXEL_DRAWS}
            if split == "test":
                report["baseline"] = baseline_accuracy(run.config, load_run_split(run.config, True, data_dir), x,
                                                       data.labels)
        else:
            report["elbo"] = elbo_terms(run.vae, guide, x, batch, y=y)
        if is_discrete(run.vae):  # codes in use, where a Gaussian z has its active units
            report["code_usage"] = code_usage(guide, x, batch)
        else:
            report["active_units"] = active_units(guide, x, y=y)["active_units"]
        if run.vae.task == "completion":  # -log p(x_h | x_g) of the deterministic network the prior reads
            report["completion_baseline"] = baseline_loss(run.vae.baseline, x, batch)

        if guide.deterministic:  # a point-mass q: every importance sample is the same code, so one says all
            report["note"] = POINT_MASS
            num_samples, iwae_samples = 1, ()
            report["num_samples"] = num_samples

        def log_likelihood(k: int) -> dict:
            if latent:
                return importance_log_likelihood_over_labels(run.vae, guide, x, k)
            return importance_log_likelihood(run.vae, guide, x, k, y=y)

        if not proper:
            report["log_likelihood"] = None
            report["note"] = "; ".join(note for note in (NOT_A_DENSITY, report.get("note")) if note)
            if run.vae.task == "completion":  # the tutorial's convention: the same estimator on -BCE
                report["importance_sampled"] = _timed_estimate(log_likelihood, num_samples)[0]
                report["note"] += COMPLETION_BCE
        elif gap:  # one K-sample estimate, with the better proposal, serves both
            report["gap"] = measure_gap(run, x, num_samples, family=_named_family(q_family, flows_from),
                                        family_guide=family_guide, check_steps=check_steps)
            report["log_likelihood"] = dict(report["gap"]["log_likelihood"])
        else:
            report["log_likelihood"], estimate = _timed_estimate(log_likelihood, num_samples)
            if latent:  # q(y | x) beside the model's own p(y | x), from the same per-class estimates
                report["labels"] = label_inference(guide, x, data.labels, estimate["log_joint"], batch)
        if proper:
            report["iwae"] = {
                str(k): log_likelihood(k)["log_likelihood"]
                for k in iwae_samples if k < num_samples
            }
    report["file"] = evaluation_path(run_dir, cross_family(own_family(run.guide), q_family,
                                                         Path(flows_from).resolve().name if flows_from else None)).name
    if save:
        write_json(run.dir.path / report["file"], report)
    return report


def with_fit_settings(run: Run, overrides: list[str] | tuple) -> Run:
    """``run`` with its local fits' settings changed by ``section.key=value`` overrides of
    :data:`LOCAL_FIT_KEYS` (any other key would change the model the weights belong to: a ConfigError)."""
    for text in overrides:
        if not is_fit_override(text):
            raise ConfigError(f"--set {text}: an evaluation may change only the local fits' settings "
                              f"({', '.join(LOCAL_FIT_KEYS)}); train a new run to change anything else")
    return dataclasses.replace(run, config=with_overrides(run.config, overrides)) if overrides else run


def cross_family(own: str | None, q_family: str | None, flows_from: str | None) -> str | None:
    """The name of q*'s family where it is not the guide's own family ``own`` (a cross cell of the gap table: the
    ``--q-family``, or ``flow_<run>`` for the flows of the run named ``flows_from``), else None."""
    if flows_from:
        return f"flow_{flows_from}"
    if q_family and q_family != own:
        return q_family
    return None


def evaluation_path(run_dir: str | Path, family: str | None = None) -> Path:
    """The file an evaluation of ``run_dir`` is written to: ``evaluation.json``, or for q* of another family
    (a cross cell of the gap table) ``evaluation_q_<family>.json``, so it leaves the run's own evaluation alone."""
    return RunDir(run_dir).cross_evaluation(family) if family else RunDir(run_dir).evaluation


def _timed_estimate(log_likelihood, num_samples: int) -> tuple[dict, dict]:
    """``(the report's entry, the estimator's whole result)`` of one K-sample estimate, timed."""
    start = time.perf_counter()
    ll = log_likelihood(num_samples)
    return {"value": ll["log_likelihood"], "stderr": ll["stderr"], "proposal": "q",
            "seconds": time.perf_counter() - start}, ll


def finished_evaluation(run_dir: str | Path, settings: dict, path: Path | None = None) -> dict | None:
    """The run's saved evaluation (``path``, default ``evaluation.json``; :func:`evaluation_path`) if it was made
    with exactly these :func:`evaluation_settings`, else None."""
    report = read_json(path or RunDir(run_dir).evaluation)
    saved = report.get("settings") if isinstance(report, dict) else None
    if not isinstance(saved, dict) or _with_defaults(saved) != settings:
        return None
    return report


def _with_defaults(settings: dict) -> dict:
    """Saved evaluation settings with every config in them (the run's, a borrowed flow family's run's) resolved: a
    config saved before keys were added is compared with those keys at their defaults."""
    resolved = {**settings, "config": resolved_dict(settings.get("config"))}
    family = settings.get("q_family")
    source = family.get("flows_from") if isinstance(family, dict) else None
    if isinstance(source, dict) and "config" in source:
        resolved["q_family"] = {**family, "flows_from": {**source, "config": resolved_dict(source["config"])}}
    return resolved


def _flow_family_guide(run: Run, flows_from: str | Path):
    """The flow guide of the run in ``flows_from``, checked against ``run``: its flows make a q* family."""
    source = load_run(flows_from)
    if own_family(source.guide) != "flow":
        raise ConfigError(f"--flows-from {flows_from}: its guide.type is {source.config.guide.type!r}, not a flow "
                          "guide ('iaf' or 'planar')")
    if source.config.model.z_dim != run.config.model.z_dim:
        raise ConfigError(f"--flows-from {flows_from}: its model.z_dim = {source.config.model.z_dim} differs from "
                          f"this run's {run.config.model.z_dim}; a q* family must live in this run's latent space")
    return source.guide


def check_gap(config: Config, vae: VAE, guide: Guide, cross: bool = False) -> None:
    """That the gap can be measured on a model of ``config`` (its ``vae`` and ``guide``), with q* of the guide's own
    family unless ``cross``; else a ConfigError naming what stands in the way."""
    if vae.task == "completion":
        raise ConfigError("the amortization gap is measured for models of the whole image; this run completes "
                          f"images (model.completion = {config.model.completion}): evaluate it without --gap")
    if vae.conditional:
        raise ConfigError("the amortization gap is measured for models of x alone; this run's model takes labels "
                          f"(model.labels = {config.model.labels!r}): evaluate it without --gap")
    if not is_amortized(guide):
        raise ConfigError("the amortization gap needs an amortized guide; this run's guide is mean_field")
    if vae.likelihood.convention != "log_likelihood":
        raise ConfigError(f"the amortization gap needs a proper likelihood: {NOT_A_DENSITY}")
    if is_discrete(vae):
        raise ConfigError("the inference gaps fit a Gaussian or flow q* of a continuous z; this run's latents are "
                          f"discrete codes (guide.type = {config.guide.type!r}): evaluate it without --gap")
    if cross:  # q* of a family the caller names: no amortization gap is formed
        return
    try:
        guide_family(guide)
    except ValueError as err:
        raise ConfigError(f"the amortization gap needs q* in the guide's family: {err}") from None


def measure_gap(run: Run, x: torch.Tensor, num_samples: int = 5000, log=print, family: str | None = None,
                family_guide=None, check_steps: int = CHECK_STEPS) -> dict:
    """:func:`pyro_vae.infer.gaps.amortization_gap` of a run on images ``x`` with its [guide] fit settings
    (q* in ``family``, of ``family_guide``'s flows, where given); a one-line warning is logged when q* is not
    converged."""
    check_gap(run.config, run.vae, run.guide, cross=family is not None or family_guide is not None)
    if family == "flow" and family_guide is None and own_family(run.guide) != "flow":
        raise ConfigError(f"a flow q* takes the flows of a flow guide, and this run's guide is "
                          f"{run.config.guide.type}: add --flows-from RUN, a run with guide.type 'iaf' or 'planar'")
    gap = amortization_gap(run.vae, run.guide, x, run.config.guide.local_fit_options(), num_samples,
                           batch_size=run.config.train.eval_batch_size, family=family, family_guide=family_guide,
                           check_steps=check_steps)
    check = gap["convergence"]
    if check and not check["converged"]:
        log(f"warning: q* is not converged: a further optimisation gains {check['gain']:.3f} +- "
            f"{check['gain_stderr']:.3f} nats/image (> {CONVERGED_GAIN}); lower guide.local_tolerance "
            "or guide.local_min_lr, or raise guide.local_particles or guide.local_steps")
    return gap


def format_report(report: dict) -> str:
    """A plain-text table of an evaluation report."""
    e = report["elbo"]
    rows = [
        ("images", f"{report['images']} ({report['split']})"),
        ("-ELBO per image", f"{-e['elbo']:.2f}  (recon {-e['recon']:.2f} + KL {e['kl']:.2f}, KL {e['kl_estimator']})"),
    ]
    if "code_usage" in report:
        rows.append(("codes in use", usage_line(report["code_usage"])))
    else:
        rows.append(("active units", str(report["active_units"])))
    if "local_fit" in report:
        rows.append(("local fit (test images)", _fit_line(report["local_fit"])))
    if "accuracy" in report:
        rows.append(("accuracy of q(y|x)", f"{report['accuracy']:.4f}"))
    if "accuracy_over_draws" in report:
        over = report["accuracy_over_draws"]
        rows.append(("accuracy of mean q(y|x)", f"{over['value']:.4f}  (argmax of q(y|x) averaged over "
                                                f"{over['draws']} binarizations of each image)"))
    if "labels" in report:
        labels = report["labels"]
        rows.append(("accuracy of p(y|x)", f"{labels['model_accuracy']:.4f}  (the model's own posterior, y's "
                                            f"log p(x, y) importance-sampled, K={report['num_samples']} each; "
                                            f"argmax agrees with q's on {labels['agreement']:.4f})"))
        rows.append(("KL(q(y|x) || p(y|x))", f"{labels['kl']:.3f} +- {labels['kl_stderr']:.3f}  (the label's part "
                                              "of log p(x) - bound, exact as K grows)"))
        if "confusion" in labels:  # (evaluations made before it was recorded lack it)
            recalls = [f"{d}: {row[d] / sum(row):.2f}" if sum(row) else f"{d}: -"
                       for d, row in enumerate(labels["confusion"])]
            rows.append(("recall of q(y|x)", " ".join(recalls) + "  (by true class; labels.confusion has the counts)"))
    if "baseline" in report:
        b = report["baseline"]
        rows.append(("baseline classifier", f"{b['accuracy']:.4f}  (the {b['labelled']} labelled images alone, "
                                            f"{b['steps']} Adam steps, train loss {b['train_loss']:.3f})"))
    if "completion_baseline" in report:
        rows.append(("baseline -log p(x_h | x_g)", f"{report['completion_baseline']:.2f}  (the deterministic network)"))
    if "importance_sampled" in report:
        est = report["importance_sampled"]
        rows.append((f"-log p(x_h | x_g), K={report['num_samples']}",
                     f"{-est['value']:.2f} +- {est['stderr']:.2f}  (importance-sampled on -BCE of grey pixels, the "
                     "CVAE tutorial's convention: not a log-density)"))
    elif report["log_likelihood"] is None:
        rows.append(("log p(x)", "not reported: " + report["note"]))
    else:
        ll = report["log_likelihood"]
        given = " | y" if report.get("conditional") else ""
        name = "log p(x_h | x_g)" if "completion_baseline" in report else f"log p(x{given})"
        rows.append((f"{name}, K={report['num_samples']}",
                     f"{ll['value']:.2f} +- {ll['stderr']:.2f}  (proposal: {ll.get('proposal', 'q')}"
                     f"{'; y summed out' if 'accuracy' in report else ''}"
                     f"{'; a point mass, so K = 1: the ELBO' if report.get('note') == POINT_MASS else ''})"))
        for k, value in report["iwae"].items():
            rows.append((f"IWAE bound, K={k}", f"{value:.2f}"))
    if "gap" in report:
        g = report["gap"]
        rows += [
            ("L[q amortized]", f"{g['elbo_amortized']:.2f}"),
            (f"L[q*] ({FAMILY_LABELS[g['family']]})", f"{g['elbo_optimal']:.2f}  ({_fit_line(g['local_fit'])})"),
            ("approximation gap", f"{g['approximation_gap']:.2f} +- {g['approximation_gap_stderr']:.2f}"),
            ("amortization gap", f"{g['amortization_gap']:.2f} +- {g['amortization_gap_stderr']:.2f}"
             if g["amortization_gap"] is not None else "none: q* is of another family than q"),
        ]
        if g["convergence"]:
            c = g["convergence"]
            rows.append(("q* convergence check", f"a further {c['steps']} steps ({c['num_particles']} samples each) "
                         f"gain {c['gain']:.3f} +- {c['gain_stderr']:.3f} nats on {c['images']} images: "
                         + ("converged" if is_converged(c) else "NOT converged")))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def usage_line(usage: dict) -> str:
    """:func:`~pyro_vae.infer.evaluate.code_usage` in words: a shared codebook's pooled perplexity and dead codes,
    or per position those of M categoricals whose classes mean something else at each position."""
    if usage.get("shared", True):
        return (f"perplexity {usage['perplexity']:.1f} of {usage['codes']} codes ({usage['dead_codes']} dead), "
                f"per position {usage['position_perplexity']:.1f}")
    return (f"perplexity per position {usage['position_perplexity']:.1f} of {usage['codes']} classes "
            f"({usage['dead_codes']} of {usage['positions'] * usage['codes']} (position, class) pairs unused)")


def _fit_line(fit: dict) -> str:
    """Steps and stopping of a local fit, in words."""
    steps = (f"{fit['steps_median']} steps" if fit["steps_min"] == fit["steps_max"]
             else f"{fit['steps_min']}-{fit['steps_max']} steps, median {fit['steps_median']}")
    return (f"{steps}; {fit['stopped_on_tolerance']} of {fit['chunks']} chunks stopped on the rule, "
            f"{fit['stopped_on_cap']} on the cap; {fit['seconds']:.0f} s")


@flushed_subnormals()
def inference_seconds(run: Run, x: torch.Tensor, repeats: int = 5) -> dict:
    """Median seconds to infer q(z | x) for one new image: an encoder pass, or a real local fit
    (gradients on, the run's stopping rule; its steps are returned too)."""
    times, steps = [], []
    for _ in range(repeats if is_amortized(run.guide) else 1):
        start = time.perf_counter()
        if is_amortized(run.guide):
            with torch.no_grad():
                point(run.guide.posterior(x[:1]))
        else:
            steps.append(fit_local(run.vae, x[:1], family=guide_family(run.guide),
                                   **run.config.guide.local_fit_options()).steps[0])
        times.append(time.perf_counter() - start)
    return {"seconds": sorted(times)[len(times) // 2], "local_fit_steps": steps[0] if steps else None}
