"""Test collection rules shared by every test module.

tests/vm/ holds tests that need a kernel with CUSE (/dev/cuse): they run inside
the QEMU guest that tests/test_vm_*.py boot.  On a host without CUSE they are
not collected directly — the launcher tests run them in the guest instead, so a
plain ``pytest`` still exercises them and fails if the guest cannot be had.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

collect_ignore_glob = [] if os.path.exists("/dev/cuse") else ["vm/*"]
