"""Run a function in a forked child of this (torch-importing) process, bounded in time and memory.

A fresh interpreter per case costs seconds of ``import torch``; a fork costs milliseconds and
shares what the parent has loaded. The child reports one line back through a pipe; the parent
kills it when it runs past the timeout. Tests and ``benchmarks/hostile_bundles.py`` use it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Outcome:
    """What the child said (``result``), or ``"timeout"``/``"died: ..."``; its time and peak extra memory."""

    result: str
    seconds: float
    extra_bytes: int


def _status(field: str) -> int:
    """A ``/proc/self/status`` size field (``VmRSS``, ``VmHWM``, ``VmSize``) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> int:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); return that RSS."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def run_forked(fn: Callable[[], str], *, timeout: float = 20.0, address_space: int | None = None) -> Outcome:
    """``fn()`` in a forked child, with at most ``address_space`` more bytes of virtual memory.

    An exception in the child becomes ``"TypeName: first line of message"``.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into the caller's code
        try:
            os.close(read_end)
            torch.set_num_threads(1)  # OpenMP pools do not survive a fork
            if address_space is not None:
                hard = resource.getrlimit(resource.RLIMIT_AS)[1]
                resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") + address_space, hard))
            baseline = _reset_peak()
            start = time.perf_counter()
            try:
                result = fn()
            except BaseException as err:
                result = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            seconds = time.perf_counter() - start
            report = {"result": result[:2000], "seconds": seconds, "extra": _status("VmHWM") - baseline}
            os.write(write_end, json.dumps(report).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    start = time.perf_counter()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            return Outcome("timeout", time.perf_counter() - start, 0)
        time.sleep(0.002)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    if not data:
        return Outcome(f"died: wait status {status}", time.perf_counter() - start, 0)
    report = json.loads(data)
    return Outcome(report["result"], report["seconds"], report["extra"])
