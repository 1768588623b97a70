"""TPM 2.0 commands, one module per area of the Library specification Part 3.

:data:`COMMANDS` is the engine's command table: every command declared in
the modules :data:`AREAS` names.  A new area is a new module and a new name in
that list; nothing registers itself by being imported.
"""

import importlib

from ..command import CommandTable

__all__ = ["AREAS", "COMMANDS"]

#: The command modules, by Part 3 area.
AREAS = (
    "asymmetric",  # 14
    "attestation",  # 18 (and NV_Certify, 31.16)
    "audit",  # 21
    "capability",  # 30
    "clock",  # 29
    "context",  # 28
    "dictionary_attack",  # 25
    "duplication",  # 13
    "hierarchy",  # 24
    "nv",  # 31
    "object",  # 12
    "pcr",  # 22
    "platform",  # 26 (PP_Commands, SetAlgorithmSet) and Vendor_TCG_Test
    "policy",  # 23 (and PolicyRestart, 11)
    "policy_authorizations",  # 23.3-23.5, 23.16, 23.22
    "policy_conditions",  # 23.9, 23.10, 23.23 (1.83)
    "random",  # 16
    "sequences",  # 15.4, 17
    "session",  # 11
    "signing",  # 20
    "symmetric",  # 15
    "startup",  # 9
    "testing",  # 10
)

COMMANDS = CommandTable.of_modules(*(importlib.import_module(f".{area}", __name__) for area in AREAS))
