"""``--pcap``: the capture a real daemon writes, read back block by block (pcapng, RAW IPv4 + TCP)."""

from __future__ import annotations

import stat
import struct
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, tpm_roundtrip
from tests.support.tpm_client import command, u16
from vtpm_cuse.cli.pcap import TPM_PORT, _checksum
from vtpm_cuse.tpm.constants import TPM_CC, TPM_SU

SECTION_HEADER, INTERFACE, PACKET = 0x0A0D0D0A, 1, 6


def _blocks(raw: bytes) -> list[tuple[int, bytes]]:
    blocks, offset = [], 0
    while offset < len(raw):
        kind, length = struct.unpack_from("<II", raw, offset)
        assert struct.unpack_from("<I", raw, offset + length - 4)[0] == length
        blocks.append((kind, raw[offset + 8 : offset + length - 4]))
        offset += length
    assert offset == len(raw)
    return blocks


def _segments(raw: bytes) -> list[tuple[int, int, bytes, bytes, bytes]]:
    """``(src port, dst port, payload, ip header, tcp header)`` of every packet."""
    out = []
    for kind, body in _blocks(raw):
        if kind != PACKET:
            continue
        captured = struct.unpack_from("<I", body, 12)[0]
        packet = body[20 : 20 + captured]
        ip, tcp = packet[:20], packet[20:40]
        assert ip[0] == 0x45 and ip[9] == 6 and struct.unpack("!H", ip[2:4])[0] == len(packet)
        src, dst = struct.unpack("!HH", tcp[:4])
        out.append((src, dst, packet[40:], ip, tcp))
    return out


@pytest.mark.parametrize("checksums", [False, True])
def test_commands_and_responses_are_recorded(tmp_path: Path, checksums: bool) -> None:
    capture = tmp_path / "tpm.pcap"
    value = f"file={capture},mode=0600,truncate" + (",checksums" if checksums else "")
    d = Daemon(tmp_path / "state", extra=["--flags", "not-need-init,startup-clear", "--pcap", value]).start()
    sent = [command(TPM_CC.GetRandom, u16(8)), command(TPM_CC.Startup, u16(TPM_SU.CLEAR))]
    try:
        with d.connect_data() as s:
            answers = [tpm_roundtrip(s, cmd) for cmd in sent]
    finally:
        d.stop()
    raw = capture.read_bytes()
    assert stat.S_IMODE(capture.stat().st_mode) == 0o600
    assert [kind for kind, _ in _blocks(raw)][:2] == [SECTION_HEADER, INTERFACE]
    segments = _segments(raw)
    # The daemon's own TPM2_Startup (startup-clear) comes first, then our two exchanges.
    assert segments[0][2][6:10] == struct.pack(">I", TPM_CC.Startup)
    assert [seg[2] for seg in segments[2:6]] == [sent[0], answers[0], sent[1], answers[1]]
    client = segments[0][0]
    assert 50000 <= client <= 55000
    assert [(seg[0], seg[1]) for seg in segments] == [(client, TPM_PORT), (TPM_PORT, client)] * 3
    # sequence numbers advance by the payload, and each side acknowledges the other
    for earlier, later in zip(segments[0::2], segments[2::2], strict=False):
        assert struct.unpack("!I", later[4][4:8])[0] == struct.unpack("!I", earlier[4][4:8])[0] + len(earlier[2])
    for _, _, payload, ip, tcp in segments:
        if checksums:
            assert _checksum(ip) == 0
            pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
            assert _checksum(pseudo + tcp + payload) == 0
        else:
            assert ip[10:12] == b"\0\0" and tcp[16:18] == b"\0\0"
