"""Score a pipeline's samples against real images with the dataset's own classifier.

Three figures, each next to the same figure for real images (its ceiling):

* **classifier score** ``exp(E[KL(p(y|x) || p(y))])`` (the Inception score's analogue, at most the
  number of classes) of the samples, of as many real training images and of the test split;
* **Fréchet distance** to the test split in the classifier's penultimate feature space, for the
  samples and for as many real training images (the distance depends on the sample size, so the
  ceiling uses the same size). The estimate is noisy at a thousand images, so the ceiling is also
  given over :data:`CEILING_SUBSETS` random sets of real training images: their range is how far
  the figure moves by chance alone;
* **label accuracy** for a conditional prior: the share of samples drawn for label ``y`` that the
  classifier assigns to ``y`` (labels cycle through the classes), next to the classifier's
  accuracy on real training and test images.

The same training images passed through the frozen stage 1 (encode, quantize, decode) are scored
too: no prior can beat its stage 1's reconstructions, so they separate what the prior loses from
what the codes cannot express.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.data.streaming import as_tensor
from vqtoolkit.scoring import metrics
from vqtoolkit.scoring.classifier import Classifier, classify, dataset_classifier

if TYPE_CHECKING:
    from vqtoolkit.pipeline import Pipeline

#: Random sets of real training images whose Fréchet distances give the ceiling's spread.
CEILING_SUBSETS = 5


def draw(
    pipe: Pipeline, n: int, num_classes: int, *, temperature: float = 1.0, seed: int = 0
) -> tuple[Tensor, Tensor | None]:
    """``n`` samples, and for a conditional prior the labels asked for (cycling through the classes)."""
    generator = torch.Generator().manual_seed(seed)
    prior = pipe.prior
    if prior is None or not prior.conditional:
        return pipe.sample(n, temperature=temperature, generator=generator), None
    labels = torch.arange(n) % num_classes
    images = torch.empty(n, *pipe.info.get("image_shape", (1, 28, 28)))
    for label in range(num_classes):
        where = (labels == label).nonzero().squeeze(1)
        if len(where):
            images[where] = pipe.sample(len(where), label=label, temperature=temperature, generator=generator)
    return images, labels


def score_images(
    net: Classifier, images: Tensor, labels: Tensor | None, test_features: Tensor
) -> dict[str, float | None]:
    """Classifier score, Fréchet distance to the test features and (given labels) label accuracy."""
    probs, features = classify(net, images)
    return {
        "classifier_score": metrics.classifier_score(probs),
        "frechet": metrics.frechet_distance(features, test_features),
        "label_accuracy": None if labels is None else metrics.label_accuracy(probs, labels),
    }


def score_samples(
    pipe: Pipeline,
    data: ImageDataset,
    n: int = 1000,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores of ``n`` samples of ``pipe`` beside those of real ``data`` (see the module docstring).

    Returns ``{"num_samples", "num_classes", "temperature", "guidance" (``None`` for a prior
    without it), "classifier_score": {...},
    "frechet": {...}, "label_accuracy": {...}}`` where each figure maps ``samples``,
    ``reconstructions``, ``real_train`` and (classifier score, label accuracy) ``real_test`` to a
    value; ``frechet`` also maps ``real_train_subsets`` to the distances of
    :data:`CEILING_SUBSETS` sets of real training images, ``real_train`` first.
    """
    net = dataset_classifier(data, progress=progress)
    images, labels = draw(pipe, n, data.num_classes, temperature=temperature, seed=seed)
    test_probs, test_features = classify(net, as_tensor(data.test_images))
    picks = [
        torch.randperm(len(data.train_images), generator=torch.Generator().manual_seed(seed + k))[:n]
        for k in range(CEILING_SUBSETS)
    ]
    pick = picks[0]
    train_images = as_tensor(data.train_images[pick])
    sampled = score_images(net, images.cpu(), labels, test_features)
    real = score_images(net, train_images, data.train_labels[pick], test_features)
    real_spread = [real["frechet"]] + [
        metrics.frechet_distance(classify(net, as_tensor(data.train_images[other]))[1], test_features)
        for other in picks[1:]
    ]
    with torch.inference_mode():
        rebuilt = torch.cat([pipe.reconstruct(batch).cpu() for batch in train_images.split(500)])
    recon = score_images(net, rebuilt.clamp(0, 1), data.train_labels[pick], test_features)
    guidance = getattr(pipe.prior, "guidance", None)
    result: dict[str, Any] = {
        "num_samples": n,
        "num_classes": data.num_classes,
        "temperature": temperature,
        "guidance": guidance,
    }
    result["classifier_score"] = {
        "samples": sampled["classifier_score"],
        "reconstructions": recon["classifier_score"],
        "real_train": real["classifier_score"],
        "real_test": metrics.classifier_score(test_probs),
    }
    result["frechet"] = {
        "samples": sampled["frechet"],
        "reconstructions": recon["frechet"],
        "real_train": real["frechet"],
        "real_train_subsets": real_spread,
    }
    result["label_accuracy"] = {
        "samples": sampled["label_accuracy"],
        "reconstructions": recon["label_accuracy"],
        "real_train": real["label_accuracy"],
        "real_test": metrics.label_accuracy(test_probs, data.test_labels),
    }
    return result


def format_scores(scores: dict[str, Any]) -> list[str]:
    """Human-readable lines: each figure for the samples beside its real-image ceilings."""
    lines = [
        f"sample quality of {scores['num_samples']} samples (temperature {scores['temperature']:g}"
        + (f", guidance {scores['guidance']:g}" if scores.get("guidance") is not None else "")
        + ") against real images:",
        f"{'':<18}{'samples':>10}{'recon train':>12}{'real train':>12}{'real test':>11}{'samples/train':>15}",
    ]
    rows = [
        ("classifier score", "classifier_score", f"  (at most {scores['num_classes']})"),
        ("frechet to test", "frechet", "  (0 is best)"),
        ("label accuracy", "label_accuracy", "  (conditional prior)"),
    ]
    for title, key, note in rows:
        row = scores[key]
        if row["samples"] is None:
            continue
        cells = "".join(
            f"{row[c]:>{w}.4g}" if row.get(c) is not None else f"{'-':>{w}}"
            for c, w in (("samples", 10), ("reconstructions", 12), ("real_train", 12), ("real_test", 11))
        )
        ratio = row["samples"] / row["real_train"] if row["real_train"] else float("nan")
        lines.append(f"{title:<18}{cells}{ratio:>15.3f}{note}")
    subsets = scores["frechet"].get("real_train_subsets")
    if subsets and len(subsets) > 1:
        lines.append(
            f"(chance alone: {len(subsets)} random sets of {scores['num_samples']} real training images "
            f"are {min(subsets):.4g} to {max(subsets):.4g} from test, mean {sum(subsets) / len(subsets):.4g})"
        )
    return lines
