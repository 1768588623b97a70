"""Declarations of the TPM 2.0 structures, grouped as in Part 2.

Import from here: ``from vtpm_cuse.tpm.types import TPML_PCR_SELECTION``.
"""

from .buffers import *  # noqa: F401,F403
from .capability import *  # noqa: F401,F403
from .interfaces import *  # noqa: F401,F403
from .misc import *  # noqa: F401,F403
from .objects import *  # noqa: F401,F403
from .pcr import *  # noqa: F401,F403
from .public import *  # noqa: F401,F403
from .session import *  # noqa: F401,F403
