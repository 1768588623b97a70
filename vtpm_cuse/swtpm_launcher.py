"""``vtpm-swtpm``: vtpm-cuse under the name ``swtpm``, for libvirt.

libvirt (qemuTPMEmulatorStart, 9.0) gives the TPM daemon one second to create the Unix
control socket it names with ``--ctrl type=unixio,path=P,mode=M``, and fails the domain's
start otherwise.  This command used to bind that socket itself before exec'ing the
daemon, which then needed ~0.6 s of imports to get there.  The daemon now opens every
endpoint before it imports trio, ``cryptography`` or the engine (see
:mod:`vtpm_cuse.cli.daemon`), so ``vtpm-swtpm`` is the daemon's entry point under the
name libvirt installs, kept so that existing ``swtpm`` symlinks keep working.
"""

from __future__ import annotations

from typing import NoReturn

from vtpm_cuse.cli.entry import main as _entry_main

__all__ = ["main"]


def main() -> NoReturn:
    _entry_main()


if __name__ == "__main__":
    main()
