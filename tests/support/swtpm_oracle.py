"""Debian's swtpm (libtpms) as a reference TPM for comparison tests.

Starts ``swtpm socket --tpm2`` on free loopback ports and sends raw command
bytes; tests run the same bytes against our engine and compare response
codes where the specification leaves room for doubt.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

from ioctl_defs.constants import PtmCmd

from .net import free_port, recv_exact, tpm_roundtrip

#: TPM_RC_RETRY, TPM_RC_TESTING: the command was not executed.
NOT_EXECUTED = (0x922, 0x90A)
MAX_RETRIES = 5


class SwtpmOracle:
    def __init__(self) -> None:
        if shutil.which("swtpm") is None:
            raise RuntimeError("Debian's swtpm is not installed (apt-get install swtpm)")
        self.dir = tempfile.mkdtemp(prefix="swtpm-oracle-")
        self.port = free_port()
        self.ctrl_port = free_port()
        self.proc = subprocess.Popen(
            [
                "swtpm",
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={self.dir}",
                "--server",
                f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl",
                f"type=tcp,port={self.ctrl_port},bindaddr=127.0.0.1",
                "--flags",
                "not-need-init",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"swtpm did not start: {self.proc.stderr.read()!r}") from None
                time.sleep(0.05)

    def execute(self, command: bytes) -> bytes:
        """The response, once libtpms executed the command: TPM_RC_RETRY and TPM_RC_TESTING
        (it self-tests an algorithm on first use) mean "not executed, send again", as a TSS does."""
        for _ in range(MAX_RETRIES):
            response = tpm_roundtrip(self.sock, command)
            if int.from_bytes(response[6:10], "big") not in NOT_EXECUTED:
                break
        return response

    def ctrl(self, cmd: int, body: bytes = b"", reply: int = 4) -> bytes:
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=10) as s:
            s.sendall(cmd.to_bytes(4, "big") + body)
            return recv_exact(s, reply)

    def init(self, flags: int = 0) -> None:
        """CMD_INIT: power-cycle the TPM (_TPM_Init; TPM2_Startup has not run yet).

        swtpm runs with ``not-need-init``, so it is already initialised; this makes the
        starting point explicit, the same as a fresh :class:`Engine`.
        """
        assert self.ctrl(PtmCmd.CMD_INIT, flags.to_bytes(4, "big")) == bytes(4)

    def set_locality(self, locality: int) -> None:
        """CMD_SET_LOCALITY: the locality of the commands that follow."""
        assert self.ctrl(PtmCmd.CMD_SET_LOCALITY, bytes([locality])) == bytes(4)

    def hash_sequence(self, data: bytes) -> None:
        """CMD_HASH_START / CMD_HASH_DATA / CMD_HASH_END (``swtpm_ioctl -h data``)."""
        assert self.ctrl(PtmCmd.CMD_HASH_START) == bytes(4)
        assert self.ctrl(PtmCmd.CMD_HASH_DATA, len(data).to_bytes(4, "big") + data) == bytes(4)
        assert self.ctrl(PtmCmd.CMD_HASH_END) == bytes(4)

    def close(self) -> None:
        try:
            self.sock.close()
            self.proc.terminate()
            self.proc.wait(5)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.proc.stderr:
                self.proc.stderr.close()
