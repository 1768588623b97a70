"""Loaded objects: what TPM2_CreatePrimary, TPM2_Load and TPM2_ContextLoad put in a
transient slot, and the slots themselves.

A :class:`LoadedObject` is plain data -- the marshalled public area and the
sensitive values as octets -- so the volatile state that holds it can be
serialised (STORE_VOLATILE, migration) like everything else.  Live
``cryptography`` keys are rebuilt from it on use (:mod:`.keys`); nothing that
cannot be written out is kept.

Transient handles are shared: hash/event sequences (``volatile.sequences``)
and objects (``volatile.objects.loaded``) take slots from the same
slots (``ObjectStore.slots``, the engine's ``max_objects``), as in the reference
TPM, so :func:`allocate_handle` is the one place that hands a transient handle out.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .algorithms import hash_alg
from .constants import DEFAULT_OBJECT_SLOTS, HR_TRANSIENT, TPM_ALG, TPMA_OBJECT
from .errors import TPM_RC, TpmError

if TYPE_CHECKING:
    from .state import VolatileState


def object_name(name_alg: int, public: bytes) -> bytes:
    """Name = nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1, "Names")."""
    return name_alg.to_bytes(2, "big") + hash_alg(name_alg).digest(public)


def qualified_name(name_alg: int, parent_qualified_name: bytes, name: bytes) -> bytes:
    """QN = nameAlg || H_nameAlg(QN(parent) || Name); a hierarchy's QN is its handle."""
    return name_alg.to_bytes(2, "big") + hash_alg(name_alg).digest(parent_qualified_name + name)


def hierarchy_name(hierarchy: int) -> bytes:
    """The Name (and Qualified Name) of a hierarchy: its handle."""
    return hierarchy.to_bytes(4, "big")


@dataclasses.dataclass
class LoadedObject:
    """One object in a transient slot.

    ``sensitive`` is the TPMU_SENSITIVE_COMPOSITE value: an RSA prime, an ECC
    private scalar, a symmetric key or keyed-hash data.  Secrets stay out of
    ``repr``.
    """

    #: Marshalled TPMT_PUBLIC; the Name is computed over exactly these octets.
    public: bytes
    #: TPM_RH_OWNER, _ENDORSEMENT, _PLATFORM or _NULL (a temporary object).
    hierarchy: int
    qualified_name: bytes
    auth_value: bytes = dataclasses.field(default=b"", repr=False)
    seed_value: bytes = dataclasses.field(default=b"", repr=False)
    sensitive: bytes = dataclasses.field(default=b"", repr=False)
    #: stClear set on the object or inherited from its parent: gone at TPM Restart.
    st_clear: bool = False
    primary: bool = False
    #: Loaded by TPM2_LoadExternal without a private part (Part 1, "publicOnly"): there is no
    #: key to use and no authValue (a keyed-hash object's sensitive data may legitimately be
    #: empty, so the flag is explicit rather than read off empty fields).
    public_only: bool = False
    _area: Any = dataclasses.field(default=None, repr=False, compare=False, metadata={"transient": True})

    @property
    def area(self):
        """The parsed TPMT_PUBLIC (parsed once, on first use)."""
        if self._area is None:
            from .types import TPMT_PUBLIC

            self._area = TPMT_PUBLIC.unpack(self.public)
        return self._area

    @property
    def type(self) -> int:
        return self.area.type

    @property
    def name_alg(self) -> int:
        return self.area.nameAlg

    @property
    def attributes(self) -> int:
        return self.area.objectAttributes

    @property
    def auth_policy(self) -> bytes:
        return self.area.authPolicy

    @property
    def name(self) -> bytes:
        return object_name(self.name_alg, self.public)

    @property
    def is_storage_parent(self) -> bool:
        """An ordinary parent: a restricted decryption key that is not a keyed hash
        (a keyed-hash one would be a derivation parent, which this TPM does not implement)."""
        attrs = self.attributes
        return (
            bool(attrs & TPMA_OBJECT.restricted)
            and bool(attrs & TPMA_OBJECT.decrypt)
            and self.type != TPM_ALG.KEYEDHASH
            and self.name_alg != TPM_ALG.NULL
        )

    def sensitive_area(self, auth_value: bytes | None = None):
        """The TPMT_SENSITIVE of this object (optionally with another authValue)."""
        from .types import TPMT_SENSITIVE

        return TPMT_SENSITIVE(
            sensitiveType=self.type,
            authValue=self.auth_value if auth_value is None else auth_value,
            seedValue=self.seed_value,
            sensitive=self.sensitive,
        )

    def __repr__(self) -> str:
        return (
            f"LoadedObject(type=0x{self.type:04x}, name={self.name.hex()}, "
            f"hierarchy=0x{self.hierarchy:08x}, primary={self.primary})"
        )


@dataclasses.dataclass
class ObjectStore:
    """The object part of the TPM's RAM."""

    loaded: dict[int, LoadedObject] = dataclasses.field(default_factory=dict)
    #: Sequence number of the last object context saved (TPMS_CONTEXT.sequence).
    context_sequence: int = 0
    #: How many transient slots this RAM has: configuration (Engine(max_objects=...)), not
    #: state, so it is not serialised and the engine sets it on whatever RAM it runs with.
    slots: int = dataclasses.field(default=DEFAULT_OBJECT_SLOTS, compare=False, metadata={"transient": True})


def slots_in_use(volatile: VolatileState) -> int:
    """Transient slots taken by objects and sequences together."""
    return len(volatile.objects.loaded) + len(volatile.sequences)


def require_slot_handle(volatile: VolatileState, handle: int) -> None:
    """A transient handle beyond this TPM's slots is TPM_RC_VALUE: a TPM built with that many
    slots has TRANSIENT_LAST there, so TPMI_DH_OBJECT's unmarshalling refuses it (Part 2)."""
    if not 0 <= handle - HR_TRANSIENT < volatile.objects.slots:
        raise TpmError(TPM_RC.VALUE, f"0x{handle:08x} is beyond the {volatile.objects.slots} object slots")


def require_free_slot(volatile: VolatileState) -> None:
    if slots_in_use(volatile) >= volatile.objects.slots:
        raise TpmError(TPM_RC.OBJECT_MEMORY, f"all {volatile.objects.slots} object slots are in use")


def allocate_handle(volatile: VolatileState) -> int:
    """The lowest free transient handle, or TPM_RC_OBJECT_MEMORY when every slot is taken."""
    require_free_slot(volatile)
    handle = HR_TRANSIENT
    while handle in volatile.objects.loaded or handle in volatile.sequences:
        handle += 1
    return handle


def load(volatile: VolatileState, obj: LoadedObject) -> int:
    """Put ``obj`` in a free slot and return its handle."""
    handle = allocate_handle(volatile)
    volatile.objects.loaded[handle] = obj
    return handle


def transient_handles(volatile: VolatileState) -> list[int]:
    return sorted([*volatile.objects.loaded, *volatile.sequences])
