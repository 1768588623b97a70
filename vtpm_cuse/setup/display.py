"""``vtpm-setup --display``: what the manufactured TPM holds, read back through TPM commands."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..state import DirectoryStore, StateKey, StateKind
from ..tpm.constants import HR_NV_INDEX, HR_PERSISTENT, TPM_CAP, TPM_CC, TPM_SU
from ..tpm.engine import Engine
from .driver import InProcessTpm

__all__ = ["describe_state"]

MAX_HANDLES = 64


def _handles(tpm: InProcessTpm, first: int) -> list[int]:
    reply = tpm.call(TPM_CC.GetCapability, capability=TPM_CAP.HANDLES, property=first, propertyCount=MAX_HANDLES)
    return list(reply.fields.capabilityData.data)


def describe_state(state_dir: Path, file_key: StateKey | None = None) -> Iterator[str]:
    """Persistent handles, NV indices with their sizes, and the PCR banks of the state."""
    store = DirectoryStore(state_dir, lock=False, file_key=file_key)
    tpm = InProcessTpm(Engine.from_blobs(store.load(StateKind.PERMANENT)))
    tpm.call(TPM_CC.Startup, startupType=TPM_SU.CLEAR)
    for handle in _handles(tpm, HR_PERSISTENT):
        yield f"Persistent key: 0x{handle:08x}"
    for index in _handles(tpm, HR_NV_INDEX):
        public = tpm.call(TPM_CC.NV_ReadPublic, index).fields.nvPublic
        yield f"NV index 0x{index:08x}: {public.dataSize} bytes, attributes 0x{public.attributes:08x}"
    pcrs = tpm.call(TPM_CC.GetCapability, capability=TPM_CAP.PCRS, property=0, propertyCount=1)
    active = [f"0x{sel.hash:04x}" for sel in pcrs.fields.capabilityData.data if any(sel.pcrSelect)]
    yield f"Active PCR banks (hash algorithm ids): {', '.join(active)}"
