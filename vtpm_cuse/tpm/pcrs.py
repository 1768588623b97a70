"""PCR banks and the PC Client profile's rules for them.

Which locality may extend or reset which PCR, which PCRs are saved by
Shutdown(STATE) and what value each takes at Startup come from the PC Client
Platform TPM Profile (the reference TPM's PCR attribute table).  The rules
live here, once, and the PCR commands, Startup/Shutdown and the H-CRTM/DRTM
sequence all use them.
"""

from __future__ import annotations

import dataclasses

from .algorithms import hash_alg
from .constants import IMPLEMENTATION_PCR, TPM_ALG, TPM_PT_PCR

HCRTM_PCR = 0
DRTM_PCR = 17


@dataclasses.dataclass(frozen=True)
class PcrAttributes:
    state_save: bool
    reset_localities: int  # bit n: locality n may PCR_Reset
    extend_localities: int  # bit n: locality n may extend


_STATIC = PcrAttributes(True, 0x00, 0x1F)
PCR_ATTRIBUTES: tuple[PcrAttributes, ...] = (
    *([_STATIC] * 16),
    PcrAttributes(False, 0x0F, 0x1F),  # 16: debug
    PcrAttributes(False, 0x10, 0x1C),  # 17: DRTM, locality 4
    PcrAttributes(False, 0x10, 0x1C),  # 18: locality 3
    PcrAttributes(False, 0x10, 0x0C),  # 19: locality 2
    PcrAttributes(False, 0x14, 0x0E),  # 20: locality 1
    PcrAttributes(False, 0x14, 0x04),  # 21: dynamic OS
    PcrAttributes(False, 0x14, 0x04),  # 22: dynamic OS
    PcrAttributes(False, 0x0F, 0x1F),  # 23: application
)
assert len(PCR_ATTRIBUTES) == IMPLEMENTATION_PCR


#: PCRs whose changes do not bump the PCR update counter (TPM_PT_PCR_NO_INCREMENT),
#: so software can measure into them without invalidating policies bound to the counter.
NO_INCREMENT = frozenset({16, 21, 22, 23})

#: PCR authorization groups: PCRs sharing one authPolicy (set by PCR_SetAuthPolicy, kept in NV)
#: or one authValue (set by PCR_SetAuthValue, kept until the next Startup other than a Resume).
#: A PCR outside every group is authorized by the empty authValue and has no policy.  libtpms
#: configures one group of each kind, PCRs 20-22 (what its GetCapability reports for
#: TPM_PT_PCR_POLICY / TPM_PT_PCR_AUTH); a group's index keys its value in the state.
PCR_POLICY_GROUPS: tuple[frozenset[int], ...] = (frozenset({20, 21, 22}),)
PCR_AUTH_GROUPS: tuple[frozenset[int], ...] = (frozenset({20, 21, 22}),)


def group_of(groups: tuple[frozenset[int], ...], pcr: int) -> int | None:
    """The index of the group ``pcr`` belongs to, or None."""
    return next((i for i, members in enumerate(groups) if pcr in members), None)


def pcr_auth_value(engine, pcr: int) -> bytes:
    """The authValue that authorizes ``pcr``: its auth group's, or empty."""
    group = group_of(PCR_AUTH_GROUPS, pcr)
    return b"" if group is None else engine.volatile.pcr_auth_values.get(group, b"")


def clear_pcr_policies(engine) -> None:
    """Every policy group back to no policy: the platform's policies go with its seed (ChangePPS)."""
    engine.permanent.pcr_policies = {}


def pcr_auth_policy(engine, pcr: int) -> tuple[int, bytes]:
    """(hashAlg, authPolicy) of ``pcr``: its policy group's, or (TPM_ALG_NULL, empty)."""
    group = group_of(PCR_POLICY_GROUPS, pcr)
    none = (TPM_ALG.NULL, b"")
    return none if group is None else engine.permanent.pcr_policies.get(group, none)


def may_extend(pcr: int, locality: int) -> bool:
    return bool(PCR_ATTRIBUTES[pcr].extend_localities >> locality & 1)


def may_reset(pcr: int, locality: int) -> bool:
    # A TPM that does DRTM never lets locality 4 reset a PCR by command;
    # only _TPM_Hash_Start does that.
    return locality != 4 and bool(PCR_ATTRIBUTES[pcr].reset_localities >> locality & 1)


def resets_to_ones(pcr: int) -> bool:
    """DRTM PCRs start at all ones so a value of zero proves a DRTM happened."""
    return bool(PCR_ATTRIBUTES[pcr].reset_localities & 0x10)


def startup_value(pcr: int, size: int, startup_locality: int) -> bytes:
    if resets_to_ones(pcr):
        return b"\xff" * size
    if pcr == HCRTM_PCR:
        return bytes(size - 1) + bytes([startup_locality])
    return bytes(size)


def pcr_properties() -> dict[int, set[int]]:
    """TPM_PT_PCR property -> PCRs having it (GetCapability(TPM_CAP_PCR_PROPERTIES))."""
    props: dict[int, set[int]] = {p: set() for p in TPM_PT_PCR}
    extend_tags = (
        TPM_PT_PCR.EXTEND_L0,
        TPM_PT_PCR.EXTEND_L1,
        TPM_PT_PCR.EXTEND_L2,
        TPM_PT_PCR.EXTEND_L3,
        TPM_PT_PCR.EXTEND_L4,
    )
    reset_tags = (
        TPM_PT_PCR.RESET_L0,
        TPM_PT_PCR.RESET_L1,
        TPM_PT_PCR.RESET_L2,
        TPM_PT_PCR.RESET_L3,
        TPM_PT_PCR.RESET_L4,
    )
    for pcr, attrs in enumerate(PCR_ATTRIBUTES):
        if attrs.state_save:
            props[TPM_PT_PCR.SAVE].add(pcr)
        if resets_to_ones(pcr):
            props[TPM_PT_PCR.DRTM_RESET].add(pcr)
        for locality in range(5):
            if may_extend(pcr, locality):
                props[extend_tags[locality]].add(pcr)
            # Reported from the attribute table: the DRTM PCRs show as reset by locality 4
            # (by _TPM_Hash_Start), even though PCR_Reset refuses locality 4.
            if attrs.reset_localities >> locality & 1:
                props[reset_tags[locality]].add(pcr)
        if pcr in NO_INCREMENT:
            props[TPM_PT_PCR.NO_INCREMENT].add(pcr)
    props[TPM_PT_PCR.POLICY] = set().union(*PCR_POLICY_GROUPS)
    props[TPM_PT_PCR.AUTH] = set().union(*PCR_AUTH_GROUPS)
    return props


class PcrBanks:
    """Operations on the PCR values held in VolatileState.pcrs (alg -> 24 values).

    An unallocated PCR has the empty value b"" in its bank.
    """

    def __init__(self, values: dict[int, list[bytes]], on_change: callable = lambda pcr: None) -> None:
        self.values = values
        self.on_change = on_change

    def allocated(self, alg: int, pcr: int) -> bool:
        bank = self.values.get(alg)
        return bank is not None and bool(bank[pcr])

    def extend(self, pcr: int, alg: int, digest: bytes) -> None:
        """PCR := H(PCR || digest) in one bank; a no-op for an unallocated PCR."""
        if self.allocated(alg, pcr):
            bank = self.values[alg]
            bank[pcr] = hash_alg(alg).digest(bank[pcr] + digest)
            self.on_change(pcr)

    def set_all_banks(self, pcr: int, make: callable, *, counted: bool = True) -> None:
        """Set ``pcr`` in every allocated bank; one change for the update counter.

        ``counted=False`` is for _TPM_Hash_End, whose resets (the dynamic PCRs at a
        DRTM event, PCR 0 at an H-CRTM event) do not move the counter: only the
        extends of the measurement that follow count, once per bank (as in libtpms'
        PCRResetDynamics and PcrDrtm, which change the PCR memory without PCRChanged).
        """
        for alg, bank in self.values.items():
            if bank[pcr]:
                bank[pcr] = make(hash_alg(alg).digest_size)
        if counted:
            self.on_change(pcr)
