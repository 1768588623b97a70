"""Creation data (Part 2, TPMS_CREATION_DATA): what TPM2_CreatePrimary,
TPM2_Create and TPM2_CreateLoaded record about the circumstances of creation,
so TPM2_CertifyCreation can later vouch for them through the creation ticket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .algorithms import hash_alg
from .constants import TPM_ALG, locality_attribute
from .pcr_selection import filter_selection, selection_digest
from .tickets import creation_ticket

if TYPE_CHECKING:
    from .engine import Engine


def creation_data(
    engine: Engine,
    locality: int,
    name_alg: int,
    creation_pcr: list,
    outside_info: bytes,
    parent_name_alg: int,
    parent_name: bytes,
    parent_qualified_name: bytes,
) -> tuple[Any, bytes]:
    """(TPMS_CREATION_DATA, creationHash = H_nameAlg(marshalled creation data)).

    For a primary object the parent is the hierarchy: parentNameAlg is
    TPM_ALG_NULL and both parent names are the hierarchy handle.
    """
    from .types import TPMS_CREATION_DATA

    banks = engine.volatile.pcrs
    selection, _ = filter_selection(banks, creation_pcr)
    data = TPMS_CREATION_DATA(
        pcrSelect=selection,
        pcrDigest=selection_digest(banks, name_alg, selection),
        locality=locality_attribute(locality),
        parentNameAlg=parent_name_alg,
        parentName=parent_name,
        parentQualifiedName=parent_qualified_name,
        outsideInfo=outside_info,
    )
    return data, hash_alg(name_alg).digest(TPMS_CREATION_DATA.pack(data))


def creation_outputs(
    engine: Engine,
    locality: int,
    name_alg: int,
    name: bytes,
    hierarchy: int,
    creation_pcr: list,
    outside_info: bytes,
    parent_name_alg: int = TPM_ALG.NULL,
    parent_name: bytes | None = None,
    parent_qualified_name: bytes | None = None,
) -> dict:
    """creationData, creationHash and creationTicket as a command returns them."""
    if parent_name is None:
        parent_name = parent_qualified_name = hierarchy.to_bytes(4, "big")
    data, digest = creation_data(
        engine, locality, name_alg, creation_pcr, outside_info, parent_name_alg, parent_name, parent_qualified_name
    )
    return {
        "creationData": data,
        "creationHash": digest,
        "creationTicket": creation_ticket(engine, hierarchy, name, digest),
    }
