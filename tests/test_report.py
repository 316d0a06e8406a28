"""The HTML report: self-contained, escaped, complete, and rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqtoolkit
from vqtoolkit.data.datasets import ImageDataset
from vqtoolkit.reporting.report import render_report, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium; .ci/run does it)"
)
#: Written into a test copy of the page only: the page itself has no script and works with JS off.
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.dataset.requests = JSON.stringify(performance.getEntriesByType("resource").map(e => e.name));
});
</script>"""
URL_ATTRIBUTES = {"src", "href", "srcset", "poster", "data", "action", "background"}


class Page(HTMLParser):
    """Tags, URL-valued attributes, headings and image sources of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.images: list[str] = []
        self.headings: list[str] = []
        self._heading = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._heading = tag == "h2"
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value is not None:
                self.urls.append(value)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        if self._heading:
            self.headings.append(data.strip())
            self._heading = False


def decoded_images(page: Page) -> list[Image.Image]:
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in page.images)
    return [Image.open(io.BytesIO(base64.b64decode(src[len(prefix) :]))) for src in page.images]


@pytest.fixture(scope="module")
def page_text(trained: vqtoolkit.Pipeline, small_digits: ImageDataset) -> str:
    return render_report(trained, small_digits, seed=1)


def test_report_is_one_self_contained_page_without_script(page_text: str) -> None:
    page = Page(page_text)
    assert page.headings == [
        "Model card",
        "Metrics",
        "Training curves",
        "Codebook usage",
        "Reconstructions",
        "Samples",
        "Interpolation",
    ]
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    assert all(url.startswith("data:") or url.startswith("#") for url in page.urls), page.urls
    assert not re.search(r"url\(|@import", page_text.split("</style>")[0])  # the CSS fetches nothing
    images = decoded_images(page)
    assert len(images) == 8
    for picture in images:
        picture.load()
        assert min(picture.size) >= 60 and np.asarray(picture.convert("L")).std() > 5


def test_small_images_are_enlarged_to_be_seen(page_text: str) -> None:
    page = Page(page_text)
    recon = decoded_images(page)[5]  # originals, then reconstructions: 8 per row of 28-px digits ×3
    assert recon.size == ((28 * 3 + 2 * 3) * 8 + 2 * 3, (28 * 3 + 2 * 3) * 4 + 2 * 3)
    assert 'class="pixels"' in page_text and "image-rendering: pixelated" in page_text


def test_text_from_the_bundle_is_escaped(trained: vqtoolkit.Pipeline, small_digits: ImageDataset) -> None:
    trained.info["dataset"] = "<script>alert(1)</script>"
    try:
        text = render_report(trained, small_digits)
    finally:
        trained.info["dataset"] = "digits"
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_conditional_prior_gets_one_row_per_label(
    trained: vqtoolkit.Pipeline, small_digits: ImageDataset
) -> None:
    pipe = vqtoolkit.Pipeline(trained.model, None, dict(trained.info))
    pipe.fit_prior(small_digits, "categorical", conditional=True, progress=False)
    text = render_report(pipe, small_digits)
    rows = re.findall(r'<div class="label-row"><span>(\d+)</span>', text)
    assert rows == [str(label) for label in range(10)]


def test_without_data_or_history_the_page_says_so(trained: vqtoolkit.Pipeline) -> None:
    pipe = vqtoolkit.Pipeline(trained.model, trained.prior, {"metrics": trained.info["metrics"]})
    text = render_report(pipe)
    assert "No per-epoch history" in text and "Held-out images are not available" in text
    assert len(Page(text).images) == 1  # the prior samples still show


def test_history_falls_back_to_the_metrics_log_beside_the_bundle(
    trained: vqtoolkit.Pipeline, tmp_path: Path
) -> None:
    bundle = tmp_path / "m.safetensors"
    pipe = vqtoolkit.Pipeline(trained.model, trained.prior, {"metrics": trained.info["metrics"]})
    pipe.save(bundle)
    lines = [json.dumps(record) for record in trained.info["history"]]
    (tmp_path / "m-metrics.jsonl").write_text("\n".join(lines) + "\n")
    text = render_report(vqtoolkit.load(bundle), bundle=bundle)
    assert "numbers from m-metrics.jsonl" in text and "m.safetensors" in text


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=True)


@needs_chromium
def test_chromium_renders_every_image_and_requests_nothing(
    trained: vqtoolkit.Pipeline, small_digits: ImageDataset, tmp_path: Path
) -> None:
    page = write_report(trained, tmp_path / "report.html", small_digits)
    shot = tmp_path / "shot.png"
    chromium("--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280) and pixels.std() > 20  # not a blank page

    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri()).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body is not None
    attributes = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(1)))
    assert attributes["images"] == "8" and attributes["broken"] == "0", attributes
    assert json.loads(attributes["requests"].replace("&quot;", '"')) == []


@needs_chromium
def test_the_browser_check_catches_a_broken_image_and_a_request(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(f'<html><body><img src="https://example.com/x.png">{PROBE}</body></html>')
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", bad.as_uri()).stdout
    assert 'data-broken="1"' in dom and "example.com/x.png" in dom


def test_sampling_in_the_report_is_seeded(trained: vqtoolkit.Pipeline) -> None:
    pipe = vqtoolkit.Pipeline(trained.model, trained.prior, {})
    torch.manual_seed(5)
    a = render_report(pipe, seed=3)
    torch.manual_seed(6)
    assert render_report(pipe, seed=3) == a


def test_sample_quality_is_shown_beside_its_ceiling(trained: vqtoolkit.Pipeline) -> None:
    pipe = vqtoolkit.Pipeline(trained.model, trained.prior, {})
    assert "No sample-quality score" in render_report(pipe)
    scores = {
        "num_samples": 100,
        "classifier_score": {"samples": 6.25, "reconstructions": 8.5, "real_train": 9.125, "real_test": 9.0},
        "frechet": {"samples": 41.5, "reconstructions": 3.25, "real_train": 1.5},
        "label_accuracy": {"samples": None, "reconstructions": 0.9, "real_train": 0.99, "real_test": 0.98},
    }
    text = render_report(pipe, sample_quality=scores)
    assert "real train (ceiling)" in text and "No sample-quality score" not in text
    assert re.search(r"<th>classifier_score</th><td[^>]*>6.25</td><td[^>]*>8.5</td><td[^>]*>9.125</td>", text)
    assert re.search(r"<th>frechet</th>.*<td>–</td></tr>", text)
    assert "<th>label_accuracy</th>" not in text  # no samples score: an unconditional prior
    assert "By chance alone" not in text
    scores["frechet"]["real_train_subsets"] = [1.5, 1.25, 2.0]
    assert "3 random sets of real training images lie 1.25 to 2 from the test split" in render_report(
        pipe, sample_quality=scores
    )
