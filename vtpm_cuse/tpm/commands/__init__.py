"""TPM 2.0 commands, one module per area of the Library specification Part 3.

:data:`COMMANDS` is the engine's command table: every command declared in
the modules listed here.  A new area is a new module and a new name in this
list; nothing registers itself by being imported.
"""

from ..command import CommandTable
from . import capability, clock, context, hierarchy, object, pcr, policy, random, sequences, session, startup, testing

__all__ = ["COMMANDS"]

COMMANDS = CommandTable.of_modules(
    capability, clock, context, hierarchy, object, pcr, policy, random, sequences, session, startup, testing
)
