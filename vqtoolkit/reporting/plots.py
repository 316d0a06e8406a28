"""Pictures of a training run: per-epoch curves and a codebook-usage histogram (matplotlib).

Both write PNGs atomically (beside, then renamed). matplotlib is a dependency of vqtoolkit, so every
install draws them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from torch import Tensor

from vqtoolkit._util.atomic import atomic_write
from vqtoolkit.errors import ConfigError

#: Panels of the training-curve figure: (title, train key, test key or None, log scale).
CURVES = (
    ("reconstruction MSE", "train_recon", "test_mse", True),
    ("VQ loss (codebook + β·commitment)", "train_vq", None, True),
    ("perplexity", "train_perplexity", "test_perplexity", False),
    ("codes used", "train_codes_used", "test_codes_used", False),
)
#: The VQGAN recipe's panels, drawn when the history has them: (title, [(key, label)], log scale).
ADVERSARIAL_CURVES = (
    ("adversarial losses", (("train_gan", "generator"), ("train_disc", "discriminator")), False),
    ("adaptive weight λ", (("train_adaptive_weight", "λ"),), True),
)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ConfigError("plots need matplotlib, a dependency of vqtoolkit: pip install matplotlib") from err
    return plt


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        fig.clf()
        _pyplot().close(fig)
    return buffer.getvalue()


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, png_bytes(fig))
    return path


def training_curves(history: list[dict[str, Any]], path: str | Path, *, title: str = "") -> Path:
    """Panels per epoch: reconstruction MSE, VQ loss, perplexity, codes used (train and test).

    A run with the VQGAN recipe adds the generator's and the discriminator's adversarial losses
    and the adaptive weight λ.
    """
    return _save(curves_figure(history, title=title), path)


def curves_figure(history: list[dict[str, Any]], *, title: str = "", columns: int = 4) -> Any:
    """The figure of :func:`training_curves`, its panels in ``columns`` columns."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    adversarial = any("train_disc" in r for r in history)
    panels: list[tuple[str, tuple[tuple[str | None, str], ...], bool]]
    panels = [(name, ((train, "train"), (test, "test")), log) for name, train, test, log in CURVES]
    panels += list(ADVERSARIAL_CURVES) if adversarial else []
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.4 * rows), squeeze=False)
    epochs = [r["epoch"] for r in history]
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (name, lines, log) in zip(axes.flat, panels, strict=False):
        for (key, label), style in zip(lines, ("o-", "s--"), strict=False):
            if key is not None and all(key in r for r in history):
                values = [float("nan") if r[key] is None else r[key] for r in history]  # None: not yet on
                ax.plot(epochs, values, style, label=label, markersize=3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


#: The most bars a usage chart draws: a larger codebook (``lfq`` at 2^16 codes) shows its top codes.
TOP_CODES = 1024


def code_usage(counts: Tensor, path: str | Path, *, title: str = "codebook usage on the test images") -> Path:
    """Bar chart of how often each code is chosen, most used first, with dead codes counted.

    Beyond :data:`TOP_CODES` codes only the most used are drawn, and the title says what share of
    the positions they take.
    """
    return _save(usage_figure(counts, title=title), path)


def usage_figure(counts: Tensor, *, title: str = "codebook usage on the test images") -> Any:
    """The figure of :func:`code_usage`."""
    plt = _pyplot()
    counts = counts.detach().cpu().long()
    ordered = counts.sort(descending=True).values
    share = (ordered.double() / max(1, int(counts.sum()))).numpy()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    dead = int((counts == 0).sum())
    used = f"{len(counts) - dead}/{len(counts)} codes used, {dead} dead"
    if len(share) > TOP_CODES:
        used = f"top {TOP_CODES} codes ({share[:TOP_CODES].sum():.1%} of positions); {used}"
        share = share[:TOP_CODES]
    ax.bar(range(len(share)), share, width=1.0)
    ax.set_title(f"{title}: {used}", fontsize=10)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("share of positions")
    ax.set_xlim(-0.5, len(share) - 0.5)
    ax.grid(alpha=0.3, axis="y")
    return fig
