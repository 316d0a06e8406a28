"""Fuzzing bundles: whatever happens to the bytes, loading succeeds identically or raises BundleError.

Mutations: truncation, flipped bytes, edited metadata JSON (with the checksum left stale, as
corruption would, or recomputed, as a deliberate edit would), raw edits of the JSON text, and
missing, extra, reshaped or retyped tensors. Never another exception, never a hang (each load
runs under an alarm). ``VQTOOLKIT_FUZZ_EXAMPLES`` sets the examples per mutation kind.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from bundle_edit import join, split, tiny_pipeline
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import vqtoolkit
from vqtoolkit.errors import BundleError

EXAMPLES = int(os.environ.get("VQTOOLKIT_FUZZ_EXAMPLES", "80"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORKDIR = Path(tempfile.mkdtemp(prefix="vqtoolkit-fuzz-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int64, torch.bool]


@functools.cache
def original() -> tuple[Any, bytes]:
    pipe = tiny_pipeline(n_components=2, pca_dim=3)
    path = pipe.save(WORKDIR / "original.safetensors")
    return pipe, path.read_bytes()


@contextlib.contextmanager
def no_hang(seconds: int = 20) -> Iterator[None]:
    def timeout(signum: int, frame: Any) -> None:
        raise TimeoutError(f"loading took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def load_bytes(data: bytes) -> Any | None:
    """Load ``data`` as a bundle: the pipeline, or ``None`` on BundleError (anything else escapes)."""
    path = WORKDIR / "mutated.safetensors"
    path.write_bytes(data)
    with no_hang():
        try:
            loaded = vqtoolkit.load(path)
        except BundleError as err:
            assert str(err) and "\n" not in str(err), "a bundle error is one line"
            event("BundleError: " + outcome(str(err)))
            return None
    event("loaded")
    return loaded


def outcome(message: str) -> str:
    """The kind of problem a message reports, for Hypothesis' statistics (--hypothesis-show-statistics)."""
    for phrase in (
        "not a readable safetensors",
        "not a vqtoolkit bundle",
        "not valid JSON",
        "checksum",
        "format version",
        "does not describe",
        "not installed",
        "not of type",
        "has no option",
        "cannot rebuild",
        "do not match",
        "expected",
        "belong to no component",
        "entry",
        "info",
        "must describe",
        "components",
        "unknown component role",
        "does not have",
        "has dim",
        "has in_channels",
        "has downsample",
    ):
        if phrase in message:
            return phrase
    return message[:60]


def parts(pipe: Any) -> dict[str, torch.nn.Module]:
    model = pipe.model
    return {
        "encoder": model.encoder,
        "quantizer": model.quantizer,
        "decoder": model.decoder,
        "prior": pipe.prior,
    }


def assert_identical(loaded: Any) -> None:
    pipe, _ = original()
    for role, component in parts(pipe).items():
        other = parts(loaded)[role]
        assert type(other) is type(component) and other.config == component.config
        a, b = component.state_dict(), other.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), role
    assert json.dumps(loaded.info) == json.dumps(pipe.info)


def assert_matches_file(loaded: Any, tensors: dict[str, torch.Tensor]) -> None:
    """A deliberate, re-signed edit may load: then the model holds exactly the file's tensors."""
    state = {
        f"{role}.{k}": v
        for role, c in parts(loaded).items()
        if c is not None
        for k, v in c.state_dict().items()
    }
    assert state.keys() == tensors.keys()
    assert all(torch.equal(state[k], tensors[k]) for k in state)


def assert_edit_outcome(loaded: Any | None, tensors: dict[str, torch.Tensor], *, signed: bool) -> None:
    """An edit was refused (``None``), or it loads: re-signed edits as written, unsigned ones unchanged."""
    if loaded is None:
        return
    if signed:
        assert_matches_file(loaded, tensors)
    else:
        assert_identical(loaded)


@FUZZ
@given(data=st.data())
def test_truncated(data: st.DataObject) -> None:
    raw = original()[1]
    cut = data.draw(st.integers(0, len(raw) - 1), label="length")
    assert load_bytes(raw[:cut]) is None


@FUZZ
@given(data=st.data())
def test_flipped_bytes(data: st.DataObject) -> None:
    raw = bytearray(original()[1])
    header_end = 8 + int.from_bytes(raw[:8], "little")
    region = data.draw(st.sampled_from([(0, header_end), (0, len(raw))]), label="region")
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(*region).map(lambda i: min(i, len(raw) - 1)), st.integers(1, 255)),
            min_size=1,
            max_size=4,
        ),
        label="flips",
    )
    for position, mask in flips:
        raw[position] ^= mask
    loaded = load_bytes(bytes(raw))
    if loaded is not None:
        assert_identical(loaded)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every location in a JSON document (``()`` is the root)."""
    yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from paths(child, (*prefix, key))


@FUZZ
@given(data=st.data(), sign=st.booleans())
def test_edited_metadata(data: st.DataObject, sign: bool) -> None:
    document, tensors = split(original()[1])
    document = copy.deepcopy(document)
    where = data.draw(st.sampled_from(list(paths(document))[1:]), label="path")
    parent = functools.reduce(lambda node, key: node[key], where[:-1], document)
    action = data.draw(st.sampled_from(["replace", "delete", "add"]), label="action")
    if action == "replace":
        parent[where[-1]] = data.draw(JSON_VALUES, label="value")
    elif action == "delete":
        del parent[where[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8), label="key")] = data.draw(JSON_VALUES, label="value")
    else:
        parent.append(data.draw(JSON_VALUES, label="value"))
    loaded = load_bytes(join(document, tensors, sign=sign))
    assert_edit_outcome(loaded, tensors, signed=sign)


@FUZZ
@given(data=st.data(), sign=st.booleans())
def test_edited_metadata_text(data: st.DataObject, sign: bool) -> None:
    document, tensors = split(original()[1])
    text = json.dumps(document)
    start = data.draw(st.integers(0, len(text)), label="start")
    end = data.draw(st.integers(start, min(len(text), start + 20)), label="end")
    text = text[:start] + data.draw(st.text(max_size=10), label="insert") + text[end:]
    loaded = load_bytes(join(None, tensors, sign=sign, text=text))
    assert_edit_outcome(loaded, tensors, signed=sign)


@FUZZ
@given(data=st.data(), sign=st.booleans())
def test_edited_tensors(data: st.DataObject, sign: bool) -> None:
    document, tensors = split(original()[1])
    name = data.draw(st.sampled_from(sorted(tensors)), label="tensor")
    action = data.draw(st.sampled_from(["drop", "extra", "reshape", "retype"]), label="action")
    if action == "drop":
        del tensors[name]
    elif action == "extra":
        prefix = data.draw(
            st.sampled_from(["encoder.", "quantizer.", "decoder.", "prior.", "", "x."]), label="prefix"
        )
        tensors[prefix + data.draw(st.text(min_size=1, max_size=8), label="name")] = torch.zeros(2)
    elif action == "reshape":
        shape = data.draw(st.lists(st.integers(0, 9), max_size=4), label="shape")
        tensors[name] = torch.zeros(shape, dtype=tensors[name].dtype)
    else:
        dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
        tensors[name] = tensors[name].to(dtype)
    loaded = load_bytes(join(document, tensors, sign=sign))
    assert_edit_outcome(loaded, tensors, signed=sign)
