"""``--cancel-fifo``'s FIFO (vtpm_cuse/cancel_fifo.py) on the host: what QEMU's
passthrough backend does to its cancel-path (open O_WRONLY, write "-") reaches the
cancel callback; the FIFO is 0600, reused when stale, refused over another file,
removed at the end.  The end-to-end cancel through QEMU runs in the VM
(tests/vm/test_qemu_passthrough.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from vtpm_cuse.cancel_fifo import CancelFifo, CancelFifoError, serve_with_cancel_fifo


def test_writes_cancel_and_the_fifo_goes_away(tmp_path: Path) -> None:
    fifo = CancelFifo(str(tmp_path / "cancel"))
    fifo.create()
    mode = os.stat(fifo.path).st_mode
    assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o600
    calls: list[int] = []

    def cancel() -> bool:
        calls.append(1)
        return True

    async def serve() -> None:
        for expected in (1, 2):
            # QEMU opens cancel-path O_WRONLY once and writes "-" per cancel; a
            # writer that closes in between must not end the watch either.
            writer = os.open(fifo.path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(writer, b"-")
            os.close(writer)
            with trio.fail_after(5):
                while len(calls) < expected:
                    await trio.sleep(0.01)

    trio.run(serve_with_cancel_fifo, fifo, cancel, serve)
    assert calls == [1, 1]
    fifo.remove()
    assert not os.path.exists(fifo.path)


def test_a_stale_fifo_is_reused_and_another_file_refused(tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    os.mkfifo(stale, 0o644)
    fifo = CancelFifo(str(stale))
    fifo.create()
    assert stat.S_IMODE(os.stat(stale).st_mode) == 0o600
    fifo.remove()
    regular = tmp_path / "regular"
    regular.write_text("x")
    with pytest.raises(CancelFifoError, match=f"{regular}: exists and is not a FIFO"):
        CancelFifo(str(regular)).create()
    assert regular.read_text() == "x"
    with pytest.raises(CancelFifoError, match="No such file or directory"):
        CancelFifo(str(tmp_path / "missing" / "fifo")).create()
