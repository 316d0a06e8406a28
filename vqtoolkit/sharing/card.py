"""The ``README.md`` model card of a model folder: YAML front matter the Hub indexes, then the facts.

The front matter carries ``library_name: vqtoolkit``, tags naming the components, the dataset and the
held-out metrics (as a ``model-index``, the Hub's format for results); the body shows the sample grid,
how to load the model, and tables of components, training facts and metrics, all read from the
bundle's own metadata document.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: Labels of the metrics vqtoolkit records in ``info.metrics``, in the order the card shows them.
METRIC_LABELS = {
    "test_mse": ("mse", "reconstruction MSE"),
    "test_psnr": ("psnr", "reconstruction PSNR (dB)"),
    "test_perplexity": ("perplexity", "code perplexity"),
    "test_codes_used": ("codes_used", "codes used"),
    "test_prior_bits_per_code": ("bits_per_code", "prior bits per code"),
    "test_prior_bits_per_code_given_label": ("bits_per_code_given_label", "prior bits per code given label"),
}

#: Hub dataset ids of the datasets vqtoolkit loads by name (``digits`` is scikit-learn's own).
HUB_DATASETS = {
    "mnist": "ylecun/mnist",
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
    "digits": "digits",
}


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """Block YAML lines for nested dicts/lists of JSON scalars (each scalar as JSON, which is valid YAML)."""
    pad = "  " * indent
    lines: list[str] = []
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, item in items:
        head = f"{pad}{key}:" if isinstance(value, Mapping) else f"{pad}-"
        if isinstance(item, (Mapping, list)) and item:
            if isinstance(value, Mapping) or isinstance(item, list):
                lines += [head, *_yaml(item, indent + 1)]
            else:  # a mapping in a list: its first key on the dash's line
                nested = _yaml(item, indent + 1)
                lines += [f"{head} {nested[0].lstrip()}", *nested[1:]]
        else:
            lines.append(f"{head} {json.dumps(item)}")
    return lines


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }


def front_matter(document: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The card's metadata: library, tags, dataset, metric names and a ``model-index`` of the results.

    Args:
        document: The bundle's metadata document (``components`` and ``info``).
        name: The model's name (its repo id, or the folder's name).

    Returns:
        A JSON-like dict, written as YAML between ``---`` lines by :func:`model_card`.
    """
    components, info = document["components"], document.get("info", {})
    tags = ["vqtoolkit", "vq-vae", "vector-quantization", "image-generation"]
    tags += [f"{role}-{entry['name']}" for role, entry in components.items()]
    meta: dict[str, Any] = {"library_name": "vqtoolkit", "tags": tags}
    dataset = info.get("dataset")
    if dataset in HUB_DATASETS:
        meta["datasets"] = [HUB_DATASETS[dataset]]
    metrics = {k: v for k, v in _finite(info.get("metrics", {})).items() if k in METRIC_LABELS}
    if metrics:
        meta["metrics"] = [METRIC_LABELS[k][0] for k in metrics]
    if metrics and dataset:
        result = {
            "task": {"type": "image-to-image", "name": "Image reconstruction"},
            "dataset": {"type": HUB_DATASETS.get(dataset, dataset), "name": dataset, "split": "test"},
            "metrics": [
                {
                    "type": METRIC_LABELS[k][0],
                    "value": float(f"{v:.6g}") if isinstance(v, float) else v,
                    "name": f"test {METRIC_LABELS[k][1]}",
                }
                for k, v in metrics.items()
            ],
        }
        meta["model-index"] = [{"name": name, "results": [result]}]
    return meta


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _number(value: Any) -> str:
    return f"{value:.5g}" if isinstance(value, float) else str(value)


def model_card(document: Mapping[str, Any], name: str, *, samples: str | None = None) -> str:
    """The ``README.md`` of a model folder: front matter, sample grid, usage and the model's facts.

    Args:
        document: The bundle's metadata document (``components`` and ``info``).
        name: The model's repo id (``user/name``), or the folder's name for a local model.
        samples: File name of the sample grid beside the card, if one was drawn.

    Returns:
        The card's Markdown text.
    """
    components, info = document["components"], document.get("info", {})
    parts = {role: f"{role} `{components[role]['name']}`" for role in ("encoder", "quantizer", "decoder")}
    codebook = components["quantizer"]["config"]
    if "num_codes" in codebook and "dim" in codebook:
        parts["quantizer"] += f" ({codebook['num_codes']} codes of {codebook['dim']} dims)"
    chain = " → ".join(parts.values())
    prior = components.get("prior")
    lines = ["---", *_yaml(front_matter(document, name)), "---", "", f"# {name}", ""]
    lines += [
        f"A VQ-VAE made with vqtoolkit {document.get('vqtoolkit_version', '')}: {chain}"
        + (f", and a `{prior['name']}` prior over its codes." if prior else ", without a prior."),
        "",
    ]
    if samples:
        lines += [f"![samples drawn from the prior]({samples})", ""]
    lines += [
        "## Use it",
        "",
        "```python",
        "import torch",
        "import vqtoolkit  # pip install vqtoolkit[hub]",
        "",
        f'pipe = vqtoolkit.from_pretrained("{name}")',
        "codes = pipe.encode(images)                  # (B, C, H, W) in [0, 1] -> code grids",
        "same = pipe.decode(codes)",
    ]
    if prior:
        lines.append("new = pipe.sample(16, generator=torch.Generator().manual_seed(0))")
    lines += [
        "```",
        "",
        f"From the shell: `vqtool pull {name} -o model/`, then `vqtool sample model/model.safetensors -n 64 "
        "-o grid.png`; `vqtool export model/model.safetensors -o onnx/` writes the encoder and decoder "
        "for ONNX Runtime.",
        "",
        "## Components",
        "",
        *_table(
            ("role", "name", "from", "config"),
            [
                (
                    role,
                    f"`{e['name']}`",
                    f"{e['distribution']} {e['version']}",
                    f"`{json.dumps(e['config'])}`",
                )
                for role, e in components.items()
            ],
        ),
        "",
    ]
    facts = [
        (k, info[k]) for k in ("dataset", "image_shape", "epochs", "batch_size", "lr", "seed") if k in info
    ]
    if facts:
        lines += ["## Training", "", *_table(("fact", "value"), [(k, _number(v)) for k, v in facts]), ""]
    metrics = info.get("metrics", {})
    shown = [(METRIC_LABELS.get(k, (k, k))[1], _number(v)) for k, v in metrics.items()]
    if shown:
        lines += ["## Held-out metrics", "", *_table(("metric", "value"), shown), ""]
    lines += [
        "## Files",
        "",
        "* `model.safetensors`: the vqtoolkit bundle (one safetensors file, no pickle; `vqtoolkit.load` "
        "reads it alone).",
        "* `config.json`: the components and their configs as plain JSON, readable without vqtoolkit.",
    ]
    if samples:
        lines.append(f"* `{samples}`: the grid above, drawn with a fixed seed.")
    return "\n".join(lines) + "\n"
