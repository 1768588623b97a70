"""Creation data (Part 2, TPMS_CREATION_DATA): what TPM2_CreatePrimary,
TPM2_Create and TPM2_CreateLoaded record about the circumstances of creation,
so TPM2_CertifyCreation can later vouch for them through the creation ticket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .algorithms import hash_alg
from .constants import IMPLEMENTATION_PCR, TPM_ALG
from .tickets import creation_ticket

if TYPE_CHECKING:
    from .engine import Engine


def locality_attribute(locality: int) -> int:
    """TPMA_LOCALITY of a locality: one bit for 0-4, the value itself for extended localities."""
    return 1 << locality if locality < 5 else locality


def filter_pcr_selection(engine: "Engine", selection: list) -> list:
    """The selection with unimplemented and unallocated PCRs removed (sizeofSelect kept)."""
    from .types import TPMS_PCR_SELECTION
    banks = engine.volatile.pcrs
    out = []
    for sel in selection:
        bank = banks.get(sel.hash)
        bits = bytearray(len(sel.pcrSelect))
        for i, octet in enumerate(sel.pcrSelect):
            for bit in range(8):
                pcr = 8 * i + bit
                if octet >> bit & 1 and pcr < IMPLEMENTATION_PCR and bank is not None and bank[pcr]:
                    bits[i] |= 1 << bit
        out.append(TPMS_PCR_SELECTION(hash=sel.hash, pcrSelect=bytes(bits)))
    return out


def pcr_digest(engine: "Engine", alg: int, selection: list) -> bytes:
    """H_alg of the selected PCR values, bank by bank in selection order, PCRs ascending."""
    h = hash_alg(alg).new()
    banks = engine.volatile.pcrs
    for sel in selection:
        for i, octet in enumerate(sel.pcrSelect):
            for bit in range(8):
                if octet >> bit & 1:
                    h.update(banks[sel.hash][8 * i + bit])
    return h.digest()


def creation_data(engine: "Engine", locality: int, name_alg: int, creation_pcr: list, outside_info: bytes,
                  parent_name_alg: int, parent_name: bytes, parent_qualified_name: bytes) -> tuple[Any, bytes]:
    """(TPMS_CREATION_DATA, creationHash = H_nameAlg(marshalled creation data)).

    For a primary object the parent is the hierarchy: parentNameAlg is
    TPM_ALG_NULL and both parent names are the hierarchy handle.
    """
    from .types import TPMS_CREATION_DATA
    selection = filter_pcr_selection(engine, creation_pcr)
    data = TPMS_CREATION_DATA(
        pcrSelect=selection, pcrDigest=pcr_digest(engine, name_alg, selection),
        locality=locality_attribute(locality), parentNameAlg=parent_name_alg, parentName=parent_name,
        parentQualifiedName=parent_qualified_name, outsideInfo=outside_info)
    return data, hash_alg(name_alg).digest(TPMS_CREATION_DATA.pack(data))


def creation_outputs(engine: "Engine", locality: int, name_alg: int, name: bytes, hierarchy: int,
                     creation_pcr: list, outside_info: bytes, parent_name_alg: int = TPM_ALG.NULL,
                     parent_name: bytes | None = None, parent_qualified_name: bytes | None = None) -> dict:
    """creationData, creationHash and creationTicket as a command returns them."""
    if parent_name is None:
        parent_name = parent_qualified_name = hierarchy.to_bytes(4, "big")
    data, digest = creation_data(engine, locality, name_alg, creation_pcr, outside_info,
                                 parent_name_alg, parent_name, parent_qualified_name)
    return {"creationData": data, "creationHash": digest,
            "creationTicket": creation_ticket(engine, hierarchy, name, digest)}
