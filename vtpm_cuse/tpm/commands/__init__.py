"""TPM 2.0 commands, one module per area of the Library specification Part 3.

Importing this package registers every command declaration in the table.
"""

from . import capability, clock, context, hierarchy, object, pcr, policy, random, sequences, session, startup, testing  # noqa: F401
