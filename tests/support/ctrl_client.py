"""A client of the socket control channel (swtpm's CMD_* protocol) built on the
ioctl_defs tables: the request is packed and the response read and decoded
exactly as a real client (swtpm_ioctl, QEMU, libvirt) would.
"""

from __future__ import annotations

import socket

from ioctl_defs import Part, PtmCmd, by_cmd

from .net import recv_exact


def ctrl_call(sock: socket.socket, cmd: PtmCmd, request: Part | None = None) -> Part:
    """Send one control command and return its decoded response.

    The response is read in steps (``socket_wanted``) because its length
    depends on its result code and payload length.  A broken connection raises
    OSError (ConnectionError), which callers treat as "the daemon died".
    """
    spec = by_cmd(cmd)
    sock.sendall(spec.pack_socket_request(request))
    response_type = spec.socket_response
    buf = b""
    while len(buf) < (wanted := response_type.socket_wanted(buf)):
        buf += recv_exact(sock, wanted - len(buf))
    return response_type.unpack_socket(buf)


def ctrl_result(sock: socket.socket, cmd: PtmCmd, request: Part | None = None) -> int:
    """Only the ``tpm_result`` of a control command (0 is success)."""
    return int(ctrl_call(sock, cmd, request).tpm_result)
