"""``--pcap``: record every TPM command and response as a pcapng capture.

As swtpm does, the exchange is written as a simulated TCP conversation over
IPv4 loopback -- client port chosen in 50000..55000, TPM port 2321 -- so that
Wireshark's TPM 2.0 dissector decodes it; commands the daemon sends on its
own (``--flags startup-clear``) are recorded too.  IP and TCP checksums are
zero unless ``checksums`` is given.  Write errors are ignored (a full disk
must not take the TPM down), as in swtpm.

File layout (pcapng): a Section Header Block and one Interface Description
Block (link type RAW: packets start with the IPv4 header) whenever the
recorder opens the file, then one Enhanced Packet Block per command and per
response.  Appending a new section to an existing capture is valid pcapng.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from .options import PcapOption

__all__ = ["PcapWriter", "TPM_PORT", "record_commands"]

log = logging.getLogger(__name__)

TPM_PORT = 2321
"""The port Wireshark associates with TPM 2.0 commands."""
CLIENT_PORTS = (50000, 55000)
LOOPBACK = bytes((127, 0, 0, 1))


class _Block(IntEnum):
    SECTION_HEADER = 0x0A0D0D0A
    INTERFACE_DESCRIPTION = 0x00000001
    ENHANCED_PACKET = 0x00000006


_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_LINKTYPE_RAW = 101
_SNAPLEN = 0
_IP_TCP = 6
_TCP_PSH_ACK = 0x18


def _block(kind: _Block, body: bytes) -> bytes:
    padded = body + bytes(-len(body) % 4)
    length = 12 + len(padded)
    return struct.pack("<II", kind, length) + padded + struct.pack("<I", length)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass
class _Flow:
    """One direction of the simulated connection."""

    src_port: int
    dst_port: int
    seq: int


@dataclass
class PcapWriter:
    """Writes the capture to ``fd``; :meth:`exchange` records one command and its response."""

    fd: int
    checksums: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: _Flow = field(init=False)
    _server: _Flow = field(init=False)
    _ip_id: int = 0

    def __post_init__(self) -> None:
        port = random.randint(*CLIENT_PORTS)
        self._client = _Flow(port, TPM_PORT, random.getrandbits(32))
        self._server = _Flow(TPM_PORT, port, random.getrandbits(32))
        section = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1)
        interface = struct.pack("<HHI", _LINKTYPE_RAW, 0, _SNAPLEN)
        self._write(_block(_Block.SECTION_HEADER, section) + _block(_Block.INTERFACE_DESCRIPTION, interface))

    @classmethod
    def open(cls, option: PcapOption) -> PcapWriter:
        """Open ``file=`` (appending unless ``truncate``, created with ``mode``) or adopt ``fd=``."""
        if option.fd is not None:
            return cls(option.fd, option.checksums)
        assert option.path is not None
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | (os.O_TRUNC if option.truncate else 0)
        return cls(os.open(option.path, flags, option.mode), option.checksums)

    def exchange(self, command: bytes, response: bytes) -> None:
        with self._lock:
            self._packet(self._client, self._server, command)
            self._packet(self._server, self._client, response)

    def _packet(self, sender: _Flow, receiver: _Flow, payload: bytes) -> None:
        tcp = struct.pack("!HHIIBBHHH", sender.src_port, sender.dst_port, sender.seq, receiver.seq, 5 << 4,
                          _TCP_PSH_ACK, 0xFFFF, 0, 0)  # fmt: skip
        sender.seq = (sender.seq + len(payload)) & 0xFFFFFFFF
        self._ip_id = (self._ip_id + 1) & 0xFFFF
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), self._ip_id, 0, 64, _IP_TCP, 0,
                         LOOPBACK, LOOPBACK)  # fmt: skip
        if self.checksums:
            pseudo = LOOPBACK + LOOPBACK + struct.pack("!BBH", 0, _IP_TCP, len(tcp) + len(payload))
            tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp + payload)) + tcp[18:]
            ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        packet = ip + tcp + payload
        micros = time.time_ns() // 1000
        header = struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(packet), len(packet))
        self._write(_block(_Block.ENHANCED_PACKET, header + packet))

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except OSError as exc:
            log.debug("pcap: write failed (ignored): %s", exc.strerror)


def record_commands(vtpm: object, writer: PcapWriter) -> None:
    """Record every command ``vtpm`` executes, whichever channel it came from.

    Wraps the instance's two entry points (``execute`` for async channels and
    internal commands, ``execute_here`` for the blocking data threads), so no
    transport needs to know about the capture.
    """
    for name in ("execute", "execute_here"):
        original = getattr(vtpm, name, None)
        if original is None:
            continue
        setattr(vtpm, name, _recording(original, writer, asynchronous=name == "execute"))


def _recording(original: Callable, writer: PcapWriter, *, asynchronous: bool) -> Callable:  # type: ignore[type-arg]
    if asynchronous:

        async def execute(command: bytes) -> bytes:
            response = await original(command)
            writer.exchange(bytes(command), response)
            return response

        return execute

    def execute_here(command: bytes) -> bytes:
        response = original(command)
        writer.exchange(bytes(command), response)
        return response

    return execute_here
