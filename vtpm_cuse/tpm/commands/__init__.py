"""TPM 2.0 commands, one module per area of the Library specification Part 3.

Importing this package registers every command declaration in the table.
"""

from . import capability, clock, pcr, random, sequences, startup, testing  # noqa: F401
