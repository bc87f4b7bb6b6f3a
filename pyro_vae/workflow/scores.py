"""``pyro-vae score``: per-image anomaly scores of a run (:mod:`pyro_vae.infer.scores`) as a CSV.

The images come from a dataset split (the run's dataset by default, any of
:data:`~pyro_vae.workflow.data.DATASETS`) or from the user: an ``.npz`` whose array holds 28 x 28
images (``(N, 28, 28)`` or ``(N, 784)``; uint8 0-255 or floats in [0, 1]) or a folder of 28 x 28
PNGs (read in name order, converted to grey). They are observed as the run's ``data.pixels`` says
(dynamic: one binarization on the evaluation's seeded stream), scored in batches (the model's memory
bounded by the batch and K) with a progress bar, and written one row per image, the file replaced
atomically once every image is scored.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..infer.compiled import worth_compiling
from ..infer.evaluate import importance_log_likelihood, importance_samples
from ..infer.scores import BACKGROUND_SCORES, SCORES, image_scores, likelihood_ratio
from ..models.nets import IMAGE_SHAPE, NUM_PIXELS, UNLABELLED
from .checkpoint import atomic_write_bytes
from .build import proper_density
from .config import Config, ConfigError
from .data import DataError, ImageData, load_images
from .evaluation import NOT_A_DENSITY
from .runs import Run, load_run
from .streams import eval_generator, flushed_subnormals, seeded

SCORE_BATCH = 100  # images scored at once: memory ~ SCORE_BATCH x min(K, CHUNK_ROWS / SCORE_BATCH) x 784 numbers


def read_user_images(path: str | os.PathLike) -> torch.Tensor:
    """Grey values ``(N, 784)`` in [0, 1] from an ``.npz`` or a folder of PNGs; :class:`DataError` naming
    the problem (no such file, an empty folder, another image size, values outside the pixel range)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise DataError(f"--images {path} holds no .png files; put 28 x 28 PNGs there or pass an .npz")
        from PIL import Image

        arrays = []
        for file in files:
            try:
                with Image.open(file) as image:
                    arrays.append(np.asarray(image.convert("L")))
            except OSError as err:
                raise DataError(f"--images: {file} could not be read as a PNG ({err}); replace or remove it") from None
        shapes = {a.shape for a in arrays}
        if shapes != {IMAGE_SHAPE}:
            bad = next(f for f, a in zip(files, arrays) if a.shape != IMAGE_SHAPE)
            raise DataError(f"--images: {bad} is {'x'.join(map(str, np.asarray(Image.open(bad)).shape[:2]))} "
                            f"pixels, not {IMAGE_SHAPE[0]} x {IMAGE_SHAPE[1]}; resize it to 28 x 28")
        values = np.stack(arrays)
    elif path.suffix.lower() == ".npz" and path.is_file():
        try:
            with np.load(path) as archive:
                if not archive.files:
                    raise DataError(f"--images {path} holds no array; save the images with numpy.savez")
                values = archive[archive.files[0]]
        except (OSError, ValueError) as err:
            raise DataError(f"--images {path} could not be read as an .npz ({err})") from None
    else:
        raise DataError(f"--images {path} is neither an .npz file nor a folder of PNGs")
    if values.ndim not in (2, 3) or math.prod(values.shape[1:]) != NUM_PIXELS or len(values) == 0:
        raise DataError(f"--images {path} holds an array of shape {values.shape}; expected (N, 28, 28) or (N, 784) "
                        "with N >= 1")
    if values.dtype == np.uint8:
        values = values.astype(np.float32) / 255.0
    values = values.astype(np.float32).reshape(len(values), NUM_PIXELS)
    if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise DataError(f"--images {path} has values from {np.nanmin(values):g} to {np.nanmax(values):g}; grey "
                        "values must be in [0, 1] (floats) or 0-255 (uint8)")
    return torch.from_numpy(values)


@flushed_subnormals()
def score_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, images: str | os.PathLike | None = None,
              dataset: str | None = None, split: str = "test", num_samples: int = 100, limit: int = 0,
              data_dir=None, progress: bool = True, background: str | os.PathLike | None = None,
              log=lambda line: None) -> Path:
    """Score images with a run and write the CSV (default ``<run>/scores_<source>.csv``); returns its path.

    :param images: the user's images (:func:`read_user_images`); else the ``split`` of ``dataset``
        (default: the run's), its first ``limit`` images when ``limit`` > 0.
    :param background: a run trained with ``data.noise`` on the same data: adds the likelihood ratio.
    :param log: where a note on the scores goes (a point-mass q's neg_log_likelihood is a bound).
    """
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    run = load_run(run_dir)
    check_scorable(run.config)
    if run.guide.deterministic:
        log("note: q(z | x) is a point mass (the nearest codes c*): neg_log_likelihood is the bound "
            "-log p(x | c*) - log p(c*), one sample")
    background_run = load_background(run, background) if background is not None else None
    if images is not None:
        grey = read_user_images(images)
        labels, source = torch.full((len(grey),), UNLABELLED), Path(images).stem
    else:
        if split not in ("test", "train"):
            raise ConfigError(f"unknown split {split!r}; valid splits: test, train")
        name = dataset or run.config.data.dataset
        grey, labels = load_images(name, split == "train", data_dir, limit=limit)
        source = f"{name}_{split}"
    if limit > 0:
        grey, labels = grey[:limit], labels[:limit]
    out = Path(out) if out else run.dir / f"scores_{source}.csv"
    scores = score_images(run, grey, num_samples, progress, f"scoring {source}", background_run)
    rows = [[i, source, "" if int(labels[i]) == UNLABELLED else int(labels[i]),
             *(f"{values[i].item():.4f}" for values in scores.values())] for i in range(len(grey))]
    text = _csv_text(["index", "source", "label", *scores], rows)
    atomic_write_bytes(out, text.encode())
    return out


def check_scorable(config: Config) -> None:
    """Refuse, in one line, a run (its config) whose scores would not mean what they say: a model with
    labels, of part of the image (completion) or without an encoder, or a likelihood that is not a proper density."""
    if config.model.labels != "none" or config.guide.type == "mean_field" or config.model.completion:
        raise ConfigError("pyro-vae score needs a model of the whole image x alone with an encoder (model.labels = "
                          "'none', model.completion = 0, a guide other than mean_field); this run has model.labels = "
                          f"{config.model.labels!r}, model.completion = {config.model.completion} and "
                          f"guide.type = {config.guide.type!r}")
    if not proper_density(config):
        raise ConfigError(f"pyro-vae score needs a run with a proper density: {NOT_A_DENSITY}")


def load_background(run: Run, path: str | os.PathLike) -> Run:
    """The background model of Ren et al.'s likelihood ratio for ``run``: a run of the same dataset and pixels,
    trained with ``data.noise`` > 0; refused in one line otherwise."""
    background = load_run(path)
    check_scorable(background.config)
    ours, theirs = run.config.data, background.config.data
    if (theirs.dataset, theirs.pixels) != (ours.dataset, ours.pixels) or theirs.noise <= 0:
        raise ConfigError(f"--background {path} must be a run of the same data with noise (data.dataset = "
                          f"{ours.dataset!r}, data.pixels = {ours.pixels!r}, data.noise > 0, e.g. 0.2), got "
                          f"{theirs.dataset!r}, {theirs.pixels!r}, noise {theirs.noise}")
    return background


def score_images(run: Run, grey: torch.Tensor, num_samples: int, progress: bool = True, desc: str = "scoring",
                 background: Run | None = None) -> dict[str, torch.Tensor]:
    """:func:`~pyro_vae.infer.scores.image_scores` of grey images ``(N, 784)`` observed as the run's pixels
    (one binarization on the evaluation's stream), :data:`SCORE_BATCH` at a time, on a seeded stream; with a
    ``background`` run (:func:`load_background`) the likelihood ratio too."""
    seed = run.config.train.seed
    x = ImageData(grey, torch.full((len(grey),), UNLABELLED), run.config.data.pixels).observed(
        eval_generator(seed)).images
    # for all the batches, each alone too small to compile
    parts, compile = [], worth_compiling(importance_samples(run.guide, num_samples) * len(x))
    with seeded(seed + 6):
        for start in tqdm(range(0, len(x), SCORE_BATCH), desc=desc, unit="batch", disable=not progress, leave=False):
            parts.append(image_scores(run.vae, run.guide, x[start:start + SCORE_BATCH], num_samples, SCORE_BATCH,
                                      compile))
    scores = {name: torch.cat([part[name] for part in parts]) for name in SCORES}
    if background is not None:  # on a stream of its own: the other scores stay what they are without it
        with seeded(seed + 7):
            log_p0 = importance_log_likelihood(background.vae, background.guide, x, num_samples,
                                               batch_size=SCORE_BATCH)["per_datapoint"]
        scores["likelihood_ratio"] = likelihood_ratio(scores["neg_log_likelihood"], log_p0)
    return scores


def _csv_text(header: list[str], rows: list[list]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def read_scores(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A scores CSV back as ``{score name: (N,) tensor}`` (and ``label``, -1 where none)."""
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        rows, columns = list(reader), reader.fieldnames or []
    table = {name: torch.tensor([float(r[name]) for r in rows], dtype=torch.float64)
             for name in (*SCORES, *BACKGROUND_SCORES) if name in columns}
    table["label"] = torch.tensor([int(r["label"]) if r["label"] else UNLABELLED for r in rows])
    return table
