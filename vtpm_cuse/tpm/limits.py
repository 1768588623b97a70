"""The engine's size limits that the command line needs too.

They live apart from :mod:`.constants` (Part 2's hundreds of enum members) so that
parsing ``--object-slots`` or ``--locality`` does not import those before the daemon
has opened its sockets (scripts/bench_startup.py); :mod:`.constants` re-exports them.
"""

from __future__ import annotations

#: Localities 0-4 (PC Client); TPMA_LOCALITY values from 32 up name one extended locality.
MAX_LOCALITY = 4
#: The most transient object slots an engine may be configured with (Engine(max_objects=...),
#: --object-slots); it bounds TRANSIENT_FIRST..TRANSIENT_LAST of TPMI_DH_OBJECT.
MAX_LOADED_OBJECTS = 255
#: Transient slots unless configured otherwise: enough for tpm2-tools run without a resource
#: manager (libtpms has 3, which such a run exhausts quickly).
DEFAULT_OBJECT_SLOTS = 32
