"""One writer per output (a lock held for the run) and no litter from interrupted saves."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from bundle_edit import tiny_pipeline
from click.testing import CliRunner

from vqtoolkit._util import atomic
from vqtoolkit._util.lock import OutputLockedError, lock_path, output_lock
from vqtoolkit.cli import main


def forked(body) -> int:  # type: ignore[no-untyped-def]
    """Run ``body()`` in a child process that then sleeps until killed; returns once it said ready."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            body(lambda: os.write(write_end, b"ready"))
            time.sleep(600)
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 5) == b"ready"
    os.close(read_end)
    return pid


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_a_second_run_on_the_same_output_is_refused_naming_the_first(tmp_path: Path) -> None:
    output = tmp_path / "m.safetensors"

    def hold(ready) -> None:  # type: ignore[no-untyped-def]
        with output_lock(output):
            ready()
            time.sleep(600)

    first = forked(hold)
    try:
        result = CliRunner().invoke(main, ["train", "--epochs", "1", "--quiet", "-o", str(output)])
        assert result.exit_code == 1
        assert f"another run (PID {first}) is writing {output}" in result.output
        refit = CliRunner().invoke(main, ["fit-prior", "x.safetensors", "--prior", "gmm", "-o", str(output)])
        assert refit.exit_code == 1 and f"PID {first}" in refit.output
        with pytest.raises(OutputLockedError, match=str(first)), output_lock(output):
            pass
    finally:
        kill(first)
    with output_lock(output):  # the killed run's lock is stale: taken over
        assert lock_path(output).read_text().strip() == str(os.getpid())
    assert not lock_path(output).exists()  # released on exit


def test_the_lock_is_released_when_the_run_fails(tmp_path: Path) -> None:
    output = tmp_path / "m.safetensors"
    failed = CliRunner().invoke(
        main, ["train", "--data", "folder", "--data-root", str(tmp_path / "none"), "-o", str(output)]
    )
    assert failed.exit_code != 0
    with output_lock(output):
        pass


def test_a_save_sweeps_the_temporary_files_of_killed_saves(tmp_path: Path, monkeypatch) -> None:
    pipe = tiny_pipeline(None)
    target = tmp_path / "m.safetensors"

    def stuck_save(ready) -> None:  # type: ignore[no-untyped-def]
        def fsync(fd: int) -> None:
            ready()
            time.sleep(600)

        os.fsync = fsync  # the child only: stop inside the save, the temporary file written
        pipe.save(target)

    killed = [forked(stuck_save) for _ in range(3)]
    for pid in killed:
        kill(pid)
    litter = sorted(tmp_path.glob(".m.safetensors.*.tmp"))
    assert {p.name.split(".")[3] for p in litter} == {str(pid) for pid in killed}  # one per killed save

    live = forked(lambda ready: (Path(tmp_path / f".m.safetensors.{os.getpid()}.x.tmp").touch(), ready()))
    legacy_old, legacy_new = (
        tmp_path / ".m.safetensors.k2j4h5g6.tmp",
        tmp_path / ".m.safetensors.a1b2c3d4.tmp",
    )
    legacy_old.touch()
    legacy_new.touch()
    os.utime(legacy_old, (time.time() - atomic.STALE_SECONDS - 60,) * 2)
    other = tmp_path / ".other.safetensors.1.x.tmp"
    other.touch()
    try:
        pipe.save(target)
        left = {p.name for p in tmp_path.glob(".*.tmp")}
        assert left == {f".m.safetensors.{live}.x.tmp", legacy_new.name, other.name}
    finally:
        kill(live)
