"""Run the data and control channels of one Vtpm until something ends the daemon.

Reasons to end, as in swtpm: CMD_SHUTDOWN; loss of the data client with
``-t/--terminate``; loss of the control client with ``--ctrl ...,terminate``;
SIGTERM/SIGINT.  Whatever the reason, the TPM is stopped the same way on
the way out (automatic TPM2_Shutdown unless disabled, state persisted, lock
released), and socket files we created are removed.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .ctrl_channel import ControlChannel
from .data_channel import DEFAULT_IDLE_TIMEOUT, MAX_CLIENTS, DataChannel
from .endpoints import OpenedEndpoint

__all__ = ["SocketServerConfig", "serve"]

log = logging.getLogger(__name__)

_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class SocketServerConfig:
    """Everything :func:`serve` needs besides the Vtpm; sockets are already open."""

    data: OpenedEndpoint | None
    """None: no data server until a client passes one with CMD_SET_DATAFD (QEMU)."""
    ctrl: OpenedEndpoint | None
    disconnect: bool = False
    """Close data connections after each response."""
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    """Seconds a data or control connection may idle while its table is full and others wait."""
    max_clients: int = MAX_CLIENTS
    """Data connections served at once; more wait in the listen queue."""
    terminate_on_data_loss: bool = False
    terminate_on_ctrl_loss: bool = False


def _trio_socket(sock):  # type: ignore[no-untyped-def]
    if sock is None:
        return None
    sock.setblocking(False)
    return trio.socket.from_stdlib_socket(sock)


async def serve(
    vtpm,  # type: ignore[no-untyped-def]
    config: SocketServerConfig,
    *,
    ready: Callable[[], None] | None = None,
) -> None:
    """Start the TPM if ``--flags`` ask for it, serve, and stop the TPM on the way out.

    ``ready`` is called once both channels accept clients (the daemon uses it
    to let the parent of ``-d`` exit and to write the pid file).  Errors from
    starting the TPM (``vtpm.boot()``) propagate before anything is served.
    """
    await vtpm.boot()  # the listening sockets are open: clients queue in the kernel meanwhile
    try:
        async with trio.open_nursery() as nursery:
            if not vtpm.running:  # waiting for CMD_INIT: import the engine before it comes
                nursery.start_soon(vtpm.preload)
            request_exit = nursery.cancel_scope.cancel
            data = DataChannel(
                vtpm,
                disconnect=config.disconnect,
                idle_timeout=config.idle_timeout,
                max_clients=config.max_clients,
                on_client_lost=request_exit if config.terminate_on_data_loss else None,
            )
            await nursery.start(
                data.run,
                config.data.listener if config.data else None,
                config.data.connected if config.data else None,
            )
            if config.ctrl is not None:
                ctrl = ControlChannel(
                    vtpm,
                    data,
                    request_exit=request_exit,
                    terminate_on_disconnect=config.terminate_on_ctrl_loss,
                    idle_timeout=config.idle_timeout,
                )
                await nursery.start(
                    ctrl.run,
                    _trio_socket(config.ctrl.listener),
                    _trio_socket(config.ctrl.connected),
                )
            nursery.start_soon(_exit_on_signal, request_exit)
            if ready is not None:
                ready()
    finally:
        with trio.CancelScope(shield=True):
            try:
                await vtpm.shutdown()
            except Exception:
                log.exception("stopping the TPM on exit failed")
        for opened in (config.data, config.ctrl):
            if opened is not None:
                opened.close()


async def _exit_on_signal(request_exit: Callable[[], None]) -> None:
    with trio.open_signal_receiver(*_EXIT_SIGNALS) as signals:
        async for signum in signals:
            log.info("received %s; exiting", signal.Signals(signum).name)
            request_exit()
            return
