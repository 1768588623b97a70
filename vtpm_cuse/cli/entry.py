"""The ``vtpm-cuse`` console entry point: fix the command line, then run the daemon.

Kept free of heavy imports (trio, cryptography) so that the one-time re-exec of
:mod:`.proctitle` costs an interpreter start and nothing more.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from . import startup_gc
from .proctitle import reexec_with_name_last


def main() -> NoReturn:
    reexec_with_name_last(sys.argv[1:])
    startup_gc.pause()  # before the daemon's imports: see .startup_gc
    from .daemon import main as daemon_main

    daemon_main(sys.argv[1:])


if __name__ == "__main__":
    main()
