"""Serve one :class:`Vtpm` as /dev/<name> until a signal, PTM_SHUTDOWN or the kernel ends it.

The order matches swtpm's (§2.1): the TPM is started first when ``--flags``
ask for it (so the device never appears with a half-booted TPM), then the
device is created, then ``ready()`` runs (pid file, privilege drop,
sd_notify, releasing the waiting parent).  On the way out the device's
``destroy`` stops the TPM cleanly (automatic TPM2_Shutdown, state persisted)
and closing /dev/cuse removes the node.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

import trio

from .cuse.handshake import CUSE_PATH, CuseOptions, Handshake
from .cuse.session import serve_cuse
from .device import VtpmDevice
from .vtpm import Vtpm

__all__ = ["serve_vtpm_device", "STOP_SIGNALS"]

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Signals that remove the device and end the daemon (like swtpm's)."""


async def serve_vtpm_device(
    vtpm: Vtpm,
    options: CuseOptions,
    *,
    ready: Callable[[], None] = lambda: None,
    cuse_path: str = CUSE_PATH,
    opened: tuple[int, Handshake] | None = None,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """``opened``: the channel, opened and handshaken before the heavy imports (the daemon);
    without it ``cuse_path`` is opened here."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # The node appears first and the TPM starts behind it (requests wait for that),
        # so the engine's import and self-test overlap the client's start; a TPM that
        # cannot start still fails the command before ready() lets the parent go.
        device = VtpmDevice(vtpm, nursery=nursery, on_terminate=stop.set, booting=True)

        async def watch_signals() -> None:
            with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
                async for signum in signals:
                    log.info("signal %d: removing /dev/%s", signum, options.name)
                    stop.set()
                    return

        async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve_cuse(device, options, cuse_path=cuse_path, opened=opened, task_status=task_status)
            finally:
                stop.set()

        nursery.start_soon(watch_signals)
        session = await nursery.start(serve)
        if vtpm.flags.start_immediately:
            await device.boot()  # its errors end the command before ready()
        else:
            nursery.start_soon(device.boot)
        log.info("serving /dev/%s", options.name)
        ready()
        task_status.started(session)
        await stop.wait()
        if device.terminated:
            log.info("PTM_SHUTDOWN: removing /dev/%s", options.name)
        nursery.cancel_scope.cancel()
