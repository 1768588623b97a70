"""The TPM 2.0 engine: marshalling, dispatcher, commands by spec area, state.

What the rest of vtpm-cuse uses of the engine is :data:`__all__`: the
:class:`Engine` (state in, command bytes in, response bytes out), its command
table, the response codes and the state-blob error.  Each name is loaded when
first used (PEP 562), so importing a leaf such as ``vtpm_cuse.tpm.wire`` does
not load the whole engine.  Everything else is internal to the engine and is
imported from the module that defines it.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _DEFINED_IN, __all__)
