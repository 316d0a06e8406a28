"""Fuzzing bundles: whatever happens to the bytes, loading succeeds identically or raises BundleError.

Mutations: truncation, flipped bytes, edited metadata JSON (with the checksum left stale, as
corruption would, or recomputed, as a deliberate edit would), raw edits of the JSON text,
missing, extra, reshaped or retyped tensors, and structured edits of every component's config
fields (huge, negative, zero, wrong type, wrong length; re-signed as an attacker would). Never
another exception, never a hang, never more than a few hundred MB: each load runs in a forked
child of this process (torch already imported: milliseconds per case instead of seconds) under an
address-space cap and a timeout. A loaded bundle must also reconstruct and sample. The
``VQTOOLKIT_FUZZ_EXAMPLES`` variable sets the examples per Hypothesis mutation kind; the ``slow``
test runs 10 000 mutants and prints the tally.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from bundle_edit import join, split, tiny_pipeline
from forked import run_forked
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import vqtoolkit
from vqtoolkit._util import deadline
from vqtoolkit.errors import BundleError

EXAMPLES = int(os.environ.get("VQTOOLKIT_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORKDIR = Path(tempfile.mkdtemp(prefix="vqtoolkit-fuzz-"))
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.int64, torch.bool]


@functools.cache
def original() -> tuple[Any, bytes]:
    pipe = tiny_pipeline(n_components=2, pca_dim=3)
    path = pipe.save(WORKDIR / "original.safetensors")
    return pipe, path.read_bytes()


#: Extra address space a load may map, and how long it may take, before the case counts as a failure.
ADDRESS_SPACE = 1 << 30
TIMEOUT = 20.0
#: CPU seconds a build on meta may take here: a looping config (``num_stages: 3e9``) is refused
#: after 2 s instead of BUILD_SECONDS (10 s), which keeps the fuzz quick and far under TIMEOUT.
FUZZ_BUILD_SECONDS = 2.0


@pytest.fixture(autouse=True)
def quick_build_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked children inherit the shorter deadline; test_bundle.py tests the deadline itself."""
    monkeypatch.setattr(deadline, "BUILD_SECONDS", FUZZ_BUILD_SECONDS)


def try_load(path: Path, check: Callable[[Any], None]) -> str:
    """In the child: ``refused: KIND``, ``loaded``, or ``other: ...`` for anything that is a bug."""
    try:
        loaded = vqtoolkit.load(path)
    except BundleError as err:
        if not str(err) or "\n" in str(err):
            return f"other: a bundle error is one line; got {str(err)!r}"
        return "refused: " + outcome(str(err))
    try:
        check(loaded)
        use(loaded)
    except Exception as err:
        return f"other: loaded, then {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
    return "loaded"


def use(pipe: Any) -> None:
    """What a user does next with a loaded bundle: reconstruct, and sample from its prior."""
    shape = pipe.info.get("image_shape", [1, 28, 28])
    pipe.reconstruct(torch.rand(1, *shape))
    if pipe.prior is not None and pipe.prior.is_fitted:
        pipe.sample(1)


def run_case(data: bytes, check: Callable[[Any], None]) -> str:
    """Load ``data`` as a bundle in a forked child; its one-line answer (``other: ...`` for failures)."""
    path = WORKDIR / "mutated.safetensors"
    path.write_bytes(data)
    answer = run_forked(lambda: try_load(path, check), timeout=TIMEOUT, address_space=ADDRESS_SPACE).result
    if answer == "loaded" or answer.startswith(("refused: ", "other: ")):
        return answer
    return f"other: {answer}"  # timeout, crash, or an exception escaping the child's own handling


def load_bytes(data: bytes, check: Callable[[Any], None] | None = None) -> bool:
    """Whether ``data`` loaded (and passed ``check``); a refusal is ``False``; anything else fails."""
    answer = run_case(data, check or (lambda loaded: None))
    event(answer)
    assert not answer.startswith("other: "), answer
    return answer == "loaded"


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


def edit_check(tensors: dict[str, torch.Tensor], *, signed: bool) -> Callable[[Any], None]:
    """What a loaded edit must be: re-signed edits exactly the file's tensors, unsigned ones unchanged."""
    return functools.partial(assert_matches_file, tensors=tensors) if signed else assert_identical


@FUZZ
@given(data=st.data())
def test_truncated(data: st.DataObject) -> None:
    raw = original()[1]
    cut = data.draw(st.integers(0, len(raw) - 1), label="length")
    assert not load_bytes(raw[:cut])


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
    load_bytes(bytes(raw), assert_identical)


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
    load_bytes(join(document, tensors, sign=sign), edit_check(tensors, signed=sign))


@FUZZ
@given(data=st.data(), sign=st.booleans())
def test_edited_metadata_text(data: st.DataObject, sign: bool) -> None:
    document, tensors = split(original()[1])
    text = json.dumps(document)
    start = data.draw(st.integers(0, len(text)), label="start")
    end = data.draw(st.integers(start, min(len(text), start + 20)), label="end")
    text = text[:start] + data.draw(st.text(max_size=10), label="insert") + text[end:]
    load_bytes(join(None, tensors, sign=sign, text=text), edit_check(tensors, signed=sign))


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
    load_bytes(join(document, tensors, sign=sign), edit_check(tensors, signed=sign))


# -- structured header mutations, and the tally -----------------------------------------------------
#: Pipelines whose bundles the structured fuzzer mutates: every built-in quantizer and prior.
ORIGINALS = {
    "vq+gmm": {"prior": "gmm", "quantizer": "vq", "n_components": 2, "pca_dim": 3},
    "ema+pixelcnn": {"prior": "pixelcnn", "quantizer": "ema", "channels": 4, "layers": 3, "epochs": 1},
    "fsq+categorical": {"prior": "categorical", "quantizer": "fsq"},
    "residual+categorical": {"prior": "categorical", "quantizer": "residual", "conditional": True},
}
HUGE = [10**6, 10**9, 3 * 10**9, 10**12, 10**18, 10**30]
ODD = [
    None,
    True,
    False,
    "x",
    "",
    0,
    -1,
    -(10**9),
    0.5,
    -2.5,
    float("inf"),
    float("nan"),
    [],
    {},
    [1, 2],
    {"a": 1},
]


@functools.cache
def original_bytes(name: str) -> bytes:
    options = dict(ORIGINALS[name])
    pipe = tiny_pipeline(options.pop("prior"), options.pop("quantizer"), **options)
    return pipe.save(WORKDIR / f"{name}.safetensors").read_bytes()


def field_values(value: Any) -> list[Any]:
    """Values to put in place of a config field: huge, negative, zero, wrong type, wrong length."""
    values = [*HUGE, *ODD]
    if isinstance(value, list) and value:
        values += [
            value[:-1],
            [*value, value[-1]],
            [*value, 10**9],
            [10**9] * len(value),
            [-1] * len(value),
            [0] * len(value),
            [str(v) for v in value],
            [[v] for v in value],
            value[::-1],
        ]
    if isinstance(value, int) and not isinstance(value, bool):
        values += [value + 1, value - 1, 2 * value, 1000 * value, -value]
    if isinstance(value, float):
        values += [value * 1e9, -value, 0.0, 1e308]
    return values


def structured_mutant(rng: random.Random, document: dict[str, Any]) -> None:
    """Edit one to three config (or info) fields of ``document`` in place."""
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        role = rng.choice([*document["components"], "info"])
        table = document["info"] if role == "info" else document["components"][role]["config"]
        key = rng.choice([*table, "unknown_option"]) if table else "unknown_option"
        if rng.random() < 0.05 and key in table:
            del table[key]
        else:
            table[key] = rng.choice(field_values(table.get(key)))


def random_mutant(rng: random.Random) -> tuple[bytes, Callable[[Any], None], str]:
    """One mutant of one of :data:`ORIGINALS`: its bytes, what a load must equal, and its kind."""
    raw = original_bytes(rng.choice(sorted(ORIGINALS)))
    kind = rng.choices(["config", "truncate", "flip", "tensor"], weights=[70, 10, 10, 10])[0]
    document, tensors = split(raw)
    if kind == "truncate":
        return raw[: rng.randrange(len(raw))], lambda loaded: None, kind
    if kind == "flip":
        flipped = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= rng.randint(1, 255)
        return bytes(flipped), lambda loaded: None, kind  # a flip that loads must be harmless padding
    if kind == "tensor":
        name = rng.choice(sorted(tensors))
        shape = [rng.choice([0, 1, 2, 7, 49, 10**3]) for _ in range(rng.randint(0, 3))]
        tensors[name] = torch.zeros(shape, dtype=tensors[name].dtype)
    else:
        structured_mutant(rng, document)
    sign = rng.random() < 0.9
    return join(document, tensors, sign=sign), edit_check(tensors, signed=sign), kind


def fuzz(cases: int, seed: int) -> Counter[str]:
    """Run ``cases`` random mutants; the tally of answers (``other: ...`` answers kept verbatim)."""
    rng = random.Random(seed)
    tally: Counter[str] = Counter()
    for _ in range(cases):
        data, check, kind = random_mutant(rng)
        answer = run_case(data, check)
        tally[answer if answer.startswith("other: ") else f"{kind} {answer.split(':')[0]}"] += 1
    return tally


def report(tally: Counter[str]) -> str:
    refused = sum(n for k, n in tally.items() if k.endswith(" refused"))
    loaded = sum(n for k, n in tally.items() if k.endswith(" loaded"))
    other = sum(n for k, n in tally.items() if k.startswith("other: "))
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(tally.items()) if not k.startswith("other: "))
    return (
        f"fuzz tally: {sum(tally.values())} cases, {refused} refused, {loaded} loaded, {other} anything else "
        f"({by_kind})"
    )


def check_tally(tally: Counter[str]) -> None:
    print(report(tally))
    others = [k for k in tally if k.startswith("other: ")]
    assert not others, others[:10]


def test_structured_header_mutations() -> None:
    check_tally(fuzz(int(os.environ.get("VQTOOLKIT_FUZZ_CASES", "150")), seed=13))


@pytest.mark.slow
def test_ten_thousand_mutants() -> None:
    check_tally(fuzz(10_000, seed=2026))
