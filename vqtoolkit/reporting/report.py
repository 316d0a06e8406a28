"""One self-contained HTML page that shows what a model learned.

:func:`write_report` renders a :class:`~vqtoolkit.pipeline.Pipeline` (usually a loaded bundle) into
a single ``.html`` file: the model card, the metrics, the training curves, codebook usage with the
most and least used codes decoded, originals beside reconstructions, prior samples (one row per
label for a conditional prior) and an interpolation strip. Every picture is an inlined base64 PNG,
so the page needs no server, makes no request and works with JavaScript off. Charts need matplotlib
(``pip install "vqtoolkit[plot]"``); without it the page says so and shows the rest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

import vqtoolkit
from vqtoolkit._util.atomic import atomic_write
from vqtoolkit.components import registry
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.data.streaming import as_tensor
from vqtoolkit.errors import VQToolkitError
from vqtoolkit.pipeline import Pipeline
from vqtoolkit.reporting import plots
from vqtoolkit.reporting.html import PAGE, esc, fmt, grid_img, img, note, section, table
from vqtoolkit.stages import TRAINING_FACTS
from vqtoolkit.training.evaluation import code_counts

log = logging.getLogger(__name__)

#: Held-out images shown beside their reconstructions.
RECONSTRUCTIONS = 32
#: Most and least used codes decoded.
CODES_SHOWN = 16
#: Samples per label row (conditional prior) and in the grid (unconditional).
SAMPLES_PER_LABEL, SAMPLES = 10, 32
#: Images in the interpolation strip, both ends included.
STRIP_STEPS = 10
#: Metrics keys that score the quality of prior samples (set by :mod:`vqtoolkit.scoring.metrics` tools).
SAMPLE_QUALITY_MARKERS = ("sample", "frechet", "classifier")
#: What each recorded metric means, for the table.
METRIC_NOTES = {
    "test_mse": "reconstruction mean squared error on held-out images",
    "test_psnr": "reconstruction PSNR in dB (higher is better)",
    "test_perplexity": "exp(entropy) of the code distribution: effective number of codes",
    "test_codes_used": "codes chosen at least once on held-out images",
    "test_prior_bits_per_code": "prior NLL per code position, marginal over labels",
    "test_prior_bits_per_code_given_label": "prior NLL per code position given the label",
}


# -- sections ----------------------------------------------------------------------------------------
def model_card(pipe: Pipeline, bundle: Path | None) -> str:
    """Components with their options, training facts, bundle size and versions."""
    parts = {"encoder": pipe.model.encoder, "quantizer": pipe.model.quantizer, "decoder": pipe.model.decoder}
    if pipe.prior is not None:
        parts["prior"] = pipe.prior
    components = (
        '<ul class="components">\n'
        + "\n".join(
            f"<li><b>{esc(role)}</b> {esc(registry.name_of(c))}: <code>"
            + esc(", ".join(f"{k}={json.dumps(v)}" for k, v in getattr(c, "config", {}).items()))
            + "</code></li>"
            for role, c in parts.items()
        )
        + "\n</ul>"
    )
    info = pipe.info
    facts: list[tuple[str, str]] = [
        (key.replace("_", " "), fmt(info[key])) for key in (*TRAINING_FACTS, "num_classes") if key in info
    ]
    grid = pipe.grid_shape()
    if grid is not None:
        facts.append(("code grid per image", " × ".join(map(str, grid))))
    facts.append(("codebook size", str(pipe.model.quantizer.num_codes)))
    parameters = sum(p.numel() for p in pipe.model.parameters())
    facts.append(("stage-1 parameters", f"{parameters:,}"))
    if bundle is not None:
        from vqtoolkit.storage.bundle import summary

        about = summary(bundle)
        facts.append(("bundle", f"{bundle.name}, {about['file_bytes'] / 1e6:.2f} MB"))
        facts.append(
            ("written by", f"vqtoolkit {about['vqtoolkit_version']}, torch {about['torch_version']}")
        )
    facts.append(("report by", f"vqtoolkit {vqtoolkit.__version__}"))
    return section(
        "Model card", "<h3>Components</h3>\n" + components + "\n<h3>Training</h3>\n" + table(facts), "card"
    )


def chance_note(sample_quality: dict[str, Any]) -> str:
    """How far the Fréchet ceiling moves over random sets of real images, when it was measured."""
    subsets = (sample_quality.get("frechet") or {}).get("real_train_subsets") or []
    if len(subsets) < 2:
        return ""
    return (
        f" By chance alone, {len(subsets)} random sets of real training images lie {fmt(min(subsets))} to "
        f"{fmt(max(subsets))} from the test split in Fréchet distance."
    )


def metrics_section(pipe: Pipeline, sample_quality: dict[str, Any] | None = None) -> str:
    """Recorded metrics, and sample quality beside its ceiling (the same score of real images).

    ``sample_quality`` is a scores dict shaped ``{figure: {"samples", "reconstructions", "real_train",
    "real_test"}}`` (figures ``classifier_score``, ``frechet``, ``label_accuracy``); metrics the
    bundle records whose names mark them as sample scores are listed there too.
    """
    recorded = dict(pipe.info.get("metrics") or {})
    quality = {k: v for k, v in recorded.items() if any(m in k for m in SAMPLE_QUALITY_MARKERS)}
    rest = {k: v for k, v in recorded.items() if k not in quality}
    body = (
        table(((k, fmt(v)) for k, v in rest.items()), header=("metric", "value"))
        if rest
        else note("The bundle records no metrics.")
    )
    known = [f"<li><code>{esc(k)}</code>: {esc(METRIC_NOTES[k])}</li>" for k in rest if k in METRIC_NOTES]
    if known:
        body += '\n<ul class="note">' + "".join(known) + "</ul>"
    body += "\n<h3>Sample quality</h3>\n"
    figures = [
        (name, row)
        for name, row in (sample_quality or {}).items()
        if isinstance(row, dict) and row.get("samples") is not None
    ]
    if figures:
        columns = ("samples", "reconstructions", "real_train", "real_test")
        body += table(
            (
                (name, *(fmt(row[c]) if row.get(c) is not None else "–" for c in columns))
                for name, row in figures
            ),
            header=("score", "samples", "stage-1 reconstructions", "real train (ceiling)", "real test"),
        )
    if quality:
        body += table(((k, fmt(v)) for k, v in quality.items()), header=("metric", "value"))
    if figures or quality:
        body += note(
            "A score's ceiling is the same score of real images; no prior beats its stage-1 reconstructions."
            + chance_note(sample_quality or {})
        )
    else:
        body += note(
            "No sample-quality score for this bundle (how recognisable prior samples are, against the "
            "ceiling of real images); the reconstruction and prior likelihood numbers above are what it "
            "was judged by."
        )
    return section("Metrics", body, "metrics")


def history_of(pipe: Pipeline, bundle: Path | None) -> tuple[list[dict[str, Any]], str]:
    """The per-epoch history (from the bundle, else the metrics log beside it) and where it came from."""
    history = pipe.info.get("history")
    if history:
        return list(history), "the bundle"
    if bundle is not None:
        log_path = bundle.with_name(f"{bundle.stem}-metrics.jsonl")
        if log_path.is_file():
            lines = log_path.read_text(encoding="utf-8").splitlines()
            return [json.loads(line) for line in lines if line.strip()], log_path.name
    return [], ""


def curves_section(pipe: Pipeline, bundle: Path | None) -> str:
    """Loss, MSE, perplexity and codes used per epoch, train and test."""
    history, source = history_of(pipe, bundle)
    if not history:
        return section(
            "Training curves",
            note("No per-epoch history: the bundle records none and no metrics log lies beside it."),
            "curves",
        )
    chart = img(plots.png_bytes(plots.curves_figure(history, columns=2)), "training curves", pixels=False)
    last = history[-1]
    epochs = f"{len(history)} epoch" + ("s" if len(history) != 1 else "")
    caption = note(
        f"{epochs}, {last.get('step', '?')} steps; numbers from {source}. The VQ loss is "
        "codebook + β·commitment; perplexity and codes used come from code counts over each whole epoch."
    )
    return section("Training curves", chart + "\n" + caption, "curves")


def codes_section(pipe: Pipeline, data: ImageDataset) -> str:
    """Usage histogram on held-out images and the most and least used codes, each decoded alone."""
    counts = code_counts(pipe.model, data.test_images)
    order = counts.sort(descending=True, stable=True).indices
    body = img(plots.png_bytes(plots.usage_figure(counts)), "codebook usage histogram", pixels=False)
    grid = pipe.grid_shape()
    if grid is not None and len(grid) == 2:
        k = min(CODES_SHOWN, len(counts))
        parts = []
        for name, chosen in (("most used", order[:k]), ("least used", order.flip(0)[:k])):
            flat = chosen.view(-1, 1, 1).expand(-1, *grid).contiguous()
            decoded = pipe.decode(flat)
            uses = ", ".join(f"#{int(c)}: {int(counts[c])}" for c in chosen)
            parts.append(
                f"<figure><figcaption>{esc(name)}</figcaption>"
                f"{grid_img(decoded, f'{name} codes decoded', nrow=8)}"
                f'<p class="note">code: uses — {esc(uses)}</p></figure>'
            )
        body += (
            "\n<h3>Codes decoded</h3>\n"
            + note(
                "Each tile is the decoder's image of a grid filled with one code: what that code "
                "paints. Read left to right, top to bottom."
            )
            + '<div class="figures pair">'
            + "".join(parts)
            + "</div>"
        )
    else:
        body += note("This quantizer's codes do not fill a grid alone (several per position); not decoded.")
    return section("Codebook usage", body, "codes")


def reconstructions_section(pipe: Pipeline, data: ImageDataset) -> str:
    """Held-out originals and their reconstructions, side by side at the same positions."""
    originals = as_tensor(data.test_images[:RECONSTRUCTIONS])
    recon = pipe.reconstruct(originals).cpu().clamp(0, 1)
    mse = float(((recon - originals) ** 2).mean())
    figures = "".join(
        f"<figure><figcaption>{esc(name)}</figcaption>{grid_img(images, name, nrow=8)}</figure>"
        for name, images in (("originals", originals), ("reconstructions", recon))
    )
    caption = note(
        f"The first {len(originals)} held-out {data.name} images; each reconstruction sits at the "
        f"same place as its original. MSE over these: {mse:.5f}."
    )
    return section("Reconstructions", f'<div class="figures pair">{figures}</div>\n{caption}', "recon")


def samples_section(pipe: Pipeline, data: ImageDataset | None, seed: int) -> str:
    """Prior samples: a grid, or one row per label for a conditional prior."""
    if pipe.prior is None or not pipe.prior.is_fitted:
        return section("Samples", note("No fitted prior: this bundle cannot sample."), "samples")
    generator = torch.Generator().manual_seed(seed)
    name = registry.name_of(pipe.prior)
    if pipe.prior.conditional:
        classes = getattr(data, "classes", None)
        num_classes = int(pipe.prior.config.get("num_classes") or pipe.info.get("num_classes") or 0)
        rows = []
        for label in range(num_classes):
            images = pipe.sample(SAMPLES_PER_LABEL, label=label, generator=generator)
            title = classes[label] if classes and label < len(classes) else str(label)
            rows.append(
                f'<div class="label-row"><span>{esc(title)}</span>'
                f"{grid_img(images, f'samples of label {title}', nrow=SAMPLES_PER_LABEL)}</div>"
            )
        body = note(f"{SAMPLES_PER_LABEL} samples per label from the conditional {name} prior.") + "".join(
            rows
        )
    else:
        body = grid_img(pipe.sample(SAMPLES, generator=generator), "prior samples", nrow=8) + note(
            f"{SAMPLES} samples from the {name} prior (seed {seed})."
        )
    return section("Samples", body, "samples")


def interpolation_section(pipe: Pipeline, data: ImageDataset) -> str:
    """A walk through latent space between two held-out images of different labels."""
    labels = data.test_labels
    other = int((labels != labels[0]).nonzero()[0]) if bool((labels != labels[0]).any()) else 1
    a, b = (as_tensor(data.test_images[i : i + 1])[0] for i in (0, other))
    strip = pipe.interpolate(a, b, STRIP_STEPS).cpu()
    body = grid_img(torch.cat([a[None], strip, b[None]]), "interpolation strip", nrow=STRIP_STEPS + 2)
    body += note(
        f"Held-out image 0 (label {int(labels[0])}) to image {other} (label {int(labels[other])}): the "
        f"originals at both ends, between them {STRIP_STEPS} points on the straight line between their "
        "encoder latents, each snapped to its nearest codes and decoded (pipe.interpolate)."
    )
    return section("Interpolation", body, "interpolation")


# -- the page ----------------------------------------------------------------------------------------
def render_report(
    pipe: Pipeline,
    data: ImageDataset | None = None,
    *,
    bundle: str | Path | None = None,
    seed: int = 0,
    sample_quality: dict[str, Any] | None = None,
) -> str:
    """The report page as one HTML string (see the module docstring for what it shows).

    ``data`` (the bundle's dataset) feeds the sections that need held-out images; without it they
    say so. ``bundle`` adds its file size and versions, and is where a metrics log is looked for.
    ``sample_quality`` adds sample scores beside their ceilings (see :func:`metrics_section`).
    """
    bundle = None if bundle is None else Path(bundle)
    sections = [model_card(pipe, bundle), metrics_section(pipe, sample_quality)]
    try:
        sections.append(curves_section(pipe, bundle))
    except VQToolkitError as err:  # matplotlib missing
        sections.append(section("Training curves", note(str(err)), "curves"))
    if data is None:
        missing = "Held-out images are not available (pass the dataset, e.g. --data-root); not shown."
        sections += [section("Codebook usage", note(missing), "codes")]
        sections += [section("Reconstructions", note(missing), "recon")]
    else:
        try:
            sections.append(codes_section(pipe, data))
        except VQToolkitError as err:
            sections.append(section("Codebook usage", note(str(err)), "codes"))
        sections.append(reconstructions_section(pipe, data))
    sections.append(samples_section(pipe, data, seed))
    if data is not None:
        sections.append(interpolation_section(pipe, data))
    title = f"vqtoolkit report: {bundle.name}" if bundle is not None else "vqtoolkit report"
    parts = [registry.name_of(c) for c in (pipe.model.encoder, pipe.model.quantizer, pipe.model.decoder)]
    subtitle = " → ".join(parts) + (f", prior {registry.name_of(pipe.prior)}" if pipe.prior else "")
    if "dataset" in pipe.info:
        subtitle += f"; trained on {pipe.info['dataset']} for {pipe.info.get('epochs', '?')} epochs"
    return PAGE.substitute(
        title=esc(title),
        subtitle=esc(subtitle),
        sections="\n".join(sections),
        version=esc(vqtoolkit.__version__),
    )


def write_report(
    pipe: Pipeline,
    path: str | Path,
    data: ImageDataset | None = None,
    *,
    bundle: str | Path | None = None,
    seed: int = 0,
    sample_quality: dict[str, Any] | None = None,
) -> Path:
    """Write :func:`render_report`'s page to ``path`` (atomically) and return the path."""
    path = Path(path)
    page = render_report(pipe, data, bundle=bundle, seed=seed, sample_quality=sample_quality)
    atomic_write(path, page.encode("utf-8"))
    log.info("wrote report %s (%d kB)", path, len(page) // 1000)
    return path
