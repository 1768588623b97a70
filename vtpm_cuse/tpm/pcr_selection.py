"""Walking a TPML_PCR_SELECTION over the PCR banks: the one routine for every
command that reads PCRs by selection (PCR_Read, PolicyPCR, creation data).

Only implemented, allocated PCRs count: a selected PCR that is beyond
IMPLEMENTATION_PCR or in a bank that is not allocated is skipped, as Part 3
says for PCR_Read and the reference TPM does everywhere else.  The order is
the selection's: bank by bank as given, PCRs ascending within a bank.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .algorithms import hash_alg
from .constants import IMPLEMENTATION_PCR
from .types.pcr import TPMS_PCR_SELECTION, selection_bits, selection_bytes

__all__ = ["filter_selection", "selected_values", "selection_digest"]

Banks = Mapping[int, Sequence[bytes]]


def selected_values(banks: Banks, selection: Sequence[Any]) -> Iterator[tuple[int, int, bytes]]:
    """(index of the TPMS_PCR_SELECTION, PCR number, value) for each selected PCR that exists."""
    for index, sel in enumerate(selection):
        bank = banks.get(sel.hash)
        if bank is None:
            continue
        for pcr in sorted(selection_bits(sel.pcrSelect)):
            if pcr < IMPLEMENTATION_PCR and bank[pcr]:
                yield index, pcr, bank[pcr]


def filter_selection(banks: Banks, selection: Sequence[Any], limit: int | None = None) -> tuple[list, list[bytes]]:
    """The selection reduced to the PCRs that exist (each sizeofSelect kept), and their values.

    With ``limit``, only the first ``limit`` such PCRs are kept (PCR_Read returns at most
    one TPML_DIGEST of values).
    """
    kept: list[list[int]] = [[] for _ in selection]
    values: list[bytes] = []
    for index, pcr, value in selected_values(banks, selection):
        if len(values) == limit:
            break
        kept[index].append(pcr)
        values.append(value)
    reduced = [
        TPMS_PCR_SELECTION(hash=sel.hash, pcrSelect=selection_bytes(pcrs, len(sel.pcrSelect)))
        for sel, pcrs in zip(selection, kept, strict=True)
    ]
    return reduced, values


def selection_digest(banks: Banks, alg: int, selection: Sequence[Any]) -> bytes:
    """H_alg of the selected PCR values concatenated (pcrDigest of PolicyPCR and creation data)."""
    h = hash_alg(alg).new()
    for _, _, value in selected_values(banks, selection):
        h.update(value)
    return h.digest()
