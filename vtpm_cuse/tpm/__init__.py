"""The TPM 2.0 engine: marshalling, dispatcher, commands by spec area, state.

What the rest of vtpm-cuse uses of the engine is :data:`__all__`: the
:class:`Engine` (state in, command bytes in, response bytes out), its command
table, the response codes and the state-blob error.  Each name is loaded when
first used (PEP 562), so importing a leaf such as ``vtpm_cuse.tpm.wire`` does
not load the whole engine.  Everything else is internal to the engine and is
imported from the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["COMMANDS", "TPM_RC", "CommandTable", "Engine", "StateBlobError", "TpmError"]

#: public name -> the module that defines it
_DEFINED_IN = {
    "COMMANDS": ".commands",
    "CommandTable": ".command",
    "Engine": ".engine",
    "StateBlobError": ".state",
    "TPM_RC": ".errors",
    "TpmError": ".errors",
}


def __getattr__(name: str) -> Any:
    if name not in _DEFINED_IN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_DEFINED_IN[name], __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
