"""One self-contained HTML page that shows what a model learned.

:func:`write_report` renders a :class:`~vqtoolkit.pipeline.Pipeline` (usually a loaded bundle) into
a single ``.html`` file: the model card, the metrics, the training curves, codebook usage with the
most and least used codes decoded, originals beside reconstructions, prior samples (one row per
label for a conditional prior) and an interpolation strip. Every picture is an inlined base64 PNG,
so the page needs no server, makes no request and works with JavaScript off. Charts need matplotlib
(``pip install "vqtoolkit[plot]"``); without it the page says so and shows the rest.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from string import Template
from typing import Any

import torch
from torch import Tensor

import vqtoolkit
from vqtoolkit import plots, registry
from vqtoolkit.atomic import atomic_write
from vqtoolkit.data import ImageDataset
from vqtoolkit.errors import VQToolkitError
from vqtoolkit.images import grid_bytes
from vqtoolkit.pipeline import TRAINING_FACTS, Pipeline
from vqtoolkit.streaming import as_tensor
from vqtoolkit.evaluation import code_counts

log = logging.getLogger(__name__)

#: Every small image is enlarged this many times (nearest neighbour) before it is inlined.
SCALE = 3
#: Held-out images shown beside their reconstructions.
RECONSTRUCTIONS = 32
#: Most and least used codes decoded.
CODES_SHOWN = 16
#: Samples per label row (conditional prior) and in the grid (unconditional).
SAMPLES_PER_LABEL, SAMPLES = 10, 32
#: Images in the interpolation strip, both ends included.
STRIP_STEPS = 10
#: Metrics keys that score the quality of prior samples (set by :mod:`vqtoolkit.metrics` tools).
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

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
:root { color-scheme: light; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2433; background: #f5f6f8; }
main { max-width: 1120px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.6rem; margin: 0.4em 0 0.1em; word-break: break-word; }
h2 { font-size: 1.25rem; margin: 0 0 0.5em; }
h3 { font-size: 1rem; margin: 0.8em 0 0.3em; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 16px;
          margin: 16px 0; }
.sub { color: #586174; margin: 0; }
.note { color: #586174; font-size: 0.92rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; min-width: 50%; max-width: 100%; font-size: 0.95rem; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid #eceef2;
         overflow-wrap: break-word; }
th { font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; overflow-wrap: normal; }
code { font-size: 0.88rem; overflow-wrap: anywhere; }
ul { padding-left: 1.2em; margin: 0.3em 0; }
.components li { margin: 0.25em 0; }
img { max-width: 100%; height: auto; display: block; }
img.pixels { image-rendering: pixelated; image-rendering: crisp-edges; }
.figures { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 0; min-width: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
.pair figure { flex: 1 1 300px; max-width: 100%; }
.pair figure + figure { border-left: 3px solid #dde1e8; padding-left: 24px; }
.label-row { display: flex; align-items: center; gap: 12px; margin: 4px 0; }
.label-row span { flex: 0 0 4.5em; font-weight: 600; font-variant-numeric: tabular-nums; }
.label-row img { min-width: 0; }
@media (max-width: 640px) {
  main { padding: 8px; }
  section { padding: 12px; }
  .pair figure + figure { border-left: 0; padding-left: 0; border-top: 3px solid #dde1e8;
                          padding-top: 12px; }
  .label-row span { flex-basis: 3.5em; }
}
</style>
</head>
<body>
<main>
<header>
<h1>$title</h1>
<p class="sub">$subtitle</p>
</header>
$sections
<p class="note">Written by vqtoolkit $version. Everything on this page is inside this one file.</p>
</main>
</body>
</html>
""")


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML."""
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """An inline ``data:`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, *, pixels: bool = True) -> str:
    """An ``<img>`` of inlined PNG bytes; ``pixels`` keeps enlarged small images sharp."""
    cls = ' class="pixels"' if pixels else ""
    return f'<img{cls} src="{data_uri(png)}" alt="{esc(alt)}">'


def grid_img(images: Tensor, alt: str, *, nrow: int) -> str:
    """An ``<img>`` of an image grid, every pixel enlarged :data:`SCALE` times."""
    return img(grid_bytes(images, nrow=nrow, scale=SCALE), alt)


def section(title: str, body: str, anchor: str) -> str:
    """One card of the page."""
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def note(text: str) -> str:
    """A grey paragraph (escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...] | None = None) -> str:
    """A table of escaped text; the first cell of each row is a heading, numbers align."""

    def cell(value: str, first: bool) -> str:
        if first:
            return f"<th>{esc(value)}</th>"
        numeric = value.replace(".", "", 1).replace("-", "", 1).replace("e", "", 1).isdigit()
        return f'<td class="num">{esc(value)}</td>' if numeric else f"<td>{esc(value)}</td>"

    head = "" if header is None else "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>\n"
    body = "\n".join("<tr>" + "".join(cell(v, i == 0) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table>\n{head}{body}\n</table></div>'


def fmt(value: Any) -> str:
    """Numbers to 5 significant digits, everything else as JSON-ish text."""
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


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
        from vqtoolkit.bundle import summary

        about = summary(bundle)
        facts.append(("bundle", f"{bundle.name}, {about['file_bytes'] / 1e6:.2f} MB"))
        facts.append(
            ("written by", f"vqtoolkit {about['vqtoolkit_version']}, torch {about['torch_version']}")
        )
    facts.append(("report by", f"vqtoolkit {vqtoolkit.__version__}"))
    return section(
        "Model card", "<h3>Components</h3>\n" + components + "\n<h3>Training</h3>\n" + table(facts), "card"
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
