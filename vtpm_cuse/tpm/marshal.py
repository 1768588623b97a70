"""One marshalling layer for every TPM 2.0 structure.

Each structure of Part 2 is declared once, as a value of one of the type
classes below, and that one declaration both unmarshals (bytes -> Python
value, with every bound checked) and marshals (Python value -> bytes).

Python values:
    UInt, Interface, Attributes  -> int
    Sized, FixedBytes            -> bytes
    SizedStruct                  -> the inner structure's value (or None when empty)
    ListOf                       -> list
    Struct                       -> an instance of the dataclass generated for it
    Union member                 -> the member type's value (None for empty members)

Errors raise :class:`~vtpm_cuse.tpm.errors.TpmError` with the bare response
code the specification names for that check; the dispatcher adds the
parameter/handle/session number.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import TPM_RC, TpmError


class Reader:
    """A cursor over an immutable byte buffer."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise TpmError(TPM_RC.INSUFFICIENT, f"need {n} bytes, {self.remaining} left")
        start = self.pos
        self.pos += n
        return self.data[start : self.pos]

    def rest(self) -> bytes:
        return self.take(self.remaining)


class TpmType:
    """Base of all type declarations."""

    name: str

    def unmarshal(self, r: Reader) -> Any:
        raise NotImplementedError

    def marshal(self, value: Any, out: bytearray) -> None:
        raise NotImplementedError

    def pack(self, value: Any) -> bytes:
        out = bytearray()
        self.marshal(value, out)
        return bytes(out)

    def unpack(self, data: bytes) -> Any:
        """Unmarshal exactly ``data``; trailing bytes are TPM_RC_SIZE."""
        r = Reader(bytes(data))
        value = self.unmarshal(r)
        if r.remaining:
            raise TpmError(TPM_RC.SIZE, f"{r.remaining} trailing bytes after {self.name}")
        return value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class UInt(TpmType):
    """Unsigned big-endian integer of ``size`` bytes (UINT8..UINT64, and TPM_ typedefs)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self.max = (1 << (8 * size)) - 1

    def unmarshal(self, r: Reader) -> int:
        return int.from_bytes(r.take(self.size), "big")

    def marshal(self, value: int, out: bytearray) -> None:
        out += int(value).to_bytes(self.size, "big")


class Int(UInt):
    """Signed big-endian integer (INT8..INT64)."""

    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, size)
        self.min = -(1 << (8 * size - 1))
        self.max = (1 << (8 * size - 1)) - 1

    def unmarshal(self, r: Reader) -> int:
        return int.from_bytes(r.take(self.size), "big", signed=True)

    def marshal(self, value: int, out: bytearray) -> None:
        out += int(value).to_bytes(self.size, "big", signed=True)


UINT8 = UInt("UINT8", 1)
UINT16 = UInt("UINT16", 2)
UINT32 = UInt("UINT32", 4)
UINT64 = UInt("UINT64", 8)
INT8 = Int("INT8", 1)
INT32 = Int("INT32", 4)
BYTE = UINT8
BOOL = UINT8


class Interface(UInt):
    """A TPMI_ or enumerated TPM_ type: a base integer restricted to valid values.

    ``values`` and ``ranges`` (inclusive) list what is accepted; anything else
    is ``rc``.  ``null`` is the value the "+" form of the type adds (e.g.
    TPMI_ALG_HASH+ accepts TPM_ALG_NULL); :meth:`plus` makes that variant.
    """

    def __init__(
        self,
        name: str,
        base: UInt,
        values: Iterable[int] = (),
        ranges: Iterable[tuple[int, int]] = (),
        rc: int = TPM_RC.VALUE,
        null: int | None = None,
        allow_null: bool = False,
    ) -> None:
        super().__init__(name, base.size)
        self.base = base
        self.signed = isinstance(base, Int)
        self.values = frozenset(int(v) for v in values)
        self.ranges = tuple(ranges)
        self.rc = rc
        self.null = null
        self.allow_null = allow_null

    def plus(self) -> Interface:
        """The "+" variant of this type, which also accepts the null value."""
        if self.null is None:
            raise ValueError(f"{self.name} has no null value")
        return Interface(self.name + "+", self.base, self.values, self.ranges, self.rc, self.null, True)

    def accepts(self, value: int) -> bool:
        if value in self.values:
            return True
        if self.allow_null and value == self.null:
            return True
        return any(lo <= value <= hi for lo, hi in self.ranges)

    def check(self, value: int) -> int:
        """``value`` if this type accepts it, else its response code (for a value read elsewhere)."""
        if value not in self.values and not self.accepts(value):
            raise TpmError(self.rc, f"{self.name} does not accept 0x{value:x}")
        return value

    def unmarshal(self, r: Reader) -> int:
        return self.check(int.from_bytes(r.take(self.size), "big", signed=self.signed))  # the base's, inlined

    def marshal(self, value: int, out: bytearray) -> None:
        self.base.marshal(value, out)


class Attributes(UInt):
    """A TPMA_ bit field; setting a reserved bit is TPM_RC_RESERVED_BITS."""

    def __init__(self, name: str, base: UInt, reserved_mask: int) -> None:
        super().__init__(name, base.size)
        self.reserved_mask = reserved_mask

    def unmarshal(self, r: Reader) -> int:
        value = int.from_bytes(r.take(self.size), "big")
        if value & self.reserved_mask:
            raise TpmError(TPM_RC.RESERVED_BITS, f"{self.name} reserved bits in 0x{value:x}")
        return value


class FixedBytes(TpmType):
    """An array of exactly ``size`` octets (a TPMU_HA member, a pcrSelect array...)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size

    def unmarshal(self, r: Reader) -> bytes:
        return r.take(self.size)

    def marshal(self, value: bytes, out: bytearray) -> None:
        if len(value) != self.size:
            raise ValueError(f"{self.name} needs {self.size} bytes, got {len(value)}")
        out += value


class Sized(TpmType):
    """A TPM2B_ of octets (or any size-prefixed byte array, e.g. pcrSelect)."""

    def __init__(
        self, name: str, max_size: int, size_type: UInt = UINT16, over_rc: int = TPM_RC.SIZE, min_size: int = 0
    ) -> None:
        self.name = name
        self.max_size = max_size
        self.min_size = min_size
        self.size_type = size_type
        self.over_rc = over_rc

    def unmarshal(self, r: Reader) -> bytes:
        size = int.from_bytes(r.take(self.size_type.size), "big")
        if size > self.max_size or size < self.min_size:
            raise TpmError(self.over_rc, f"{self.name} size {size} outside {self.min_size}..{self.max_size}")
        return r.take(size)

    def marshal(self, value: bytes, out: bytearray) -> None:
        if len(value) > self.max_size:
            raise ValueError(f"{self.name} holds at most {self.max_size} bytes, got {len(value)}")
        self.size_type.marshal(len(value), out)
        out += value


class SizedStruct(TpmType):
    """A TPM2B_ wrapping a structure (TPM2B_PUBLIC, TPM2B_ECC_POINT, ...).

    The declared size must equal what the inner structure consumed
    (TPM_RC_SIZE otherwise); a size of zero is TPM_RC_SIZE unless the
    structure may be empty, in which case the value is None.
    """

    def __init__(self, name: str, inner: TpmType, allow_empty: bool = False) -> None:
        self.name = name
        self.inner = inner
        self.allow_empty = allow_empty

    def unmarshal(self, r: Reader) -> Any:
        size = UINT16.unmarshal(r)
        if size == 0:
            if self.allow_empty:
                return None
            raise TpmError(TPM_RC.SIZE, f"{self.name} is empty")
        start = r.pos
        value = self.inner.unmarshal(r)
        if r.pos - start != size:
            raise TpmError(TPM_RC.SIZE, f"{self.name} size {size} but contents took {r.pos - start}")
        return value

    def marshal(self, value: Any, out: bytearray) -> None:
        if value is None:
            UINT16.marshal(0, out)
            return
        body = self.inner.pack(value)
        UINT16.marshal(len(body), out)
        out += body


class ListOf(TpmType):
    """A TPML_: a UINT32 count followed by that many elements."""

    def __init__(self, name: str, element: TpmType, max_count: int, over_rc: int = TPM_RC.SIZE) -> None:
        self.name = name
        self.element = element
        self.max_count = max_count
        self.over_rc = over_rc

    def unmarshal(self, r: Reader) -> list:
        count = UINT32.unmarshal(r)
        if count > self.max_count:
            raise TpmError(self.over_rc, f"{self.name} count {count} > {self.max_count}")
        element = self.element
        return [element.unmarshal(r) for _ in range(count)]

    def marshal(self, value: list, out: bytearray) -> None:
        if len(value) > self.max_count:
            raise ValueError(f"{self.name} holds at most {self.max_count} elements, got {len(value)}")
        UINT32.marshal(len(value), out)
        for item in value:
            self.element.marshal(item, out)


class Union:
    """A TPMU_: which member is present is decided by a selector elsewhere.

    ``members`` maps selector values to a member type, or to None for a
    selector that selects an empty member (e.g. TPM_ALG_NULL).  A selector
    with no entry is TPM_RC_SELECTOR.
    """

    def __init__(self, name: str, members: Mapping[int, TpmType | None]) -> None:
        self.name = name
        self.members = {int(k): v for k, v in members.items()}

    def member(self, selector: int) -> TpmType | None:
        try:
            return self.members[selector]
        except KeyError:
            raise TpmError(TPM_RC.SELECTOR, f"{self.name} has no member for 0x{selector:x}") from None

    def unmarshal(self, r: Reader, selector: int) -> Any:
        member = self.member(selector)
        return None if member is None else member.unmarshal(r)

    def marshal(self, value: Any, out: bytearray, selector: int) -> None:
        member = self.members[selector]
        if member is not None:
            member.marshal(value, out)

    def __repr__(self) -> str:
        return f"<Union {self.name}>"


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a Struct: a type, or a Union with the name of its selector field."""

    name: str
    type: TpmType | Union
    selector: str | None = None


def U(name: str, union: Union, selector: str) -> Field:
    """Shorthand for a union field selected by an earlier field."""
    return Field(name, union, selector)


class Struct(TpmType):
    """A TPMS_ or TPMT_ structure: fields marshalled in order.

    Calling the declaration builds a value: ``TPMS_PCR_SELECTION(hash=..., pcrSelect=...)``.
    """

    def __init__(self, name: str, fields: Iterable[Field | tuple[str, TpmType]]) -> None:
        self.name = name
        self.fields: tuple[Field, ...] = tuple(f if isinstance(f, Field) else Field(*f) for f in fields)
        self._plan: tuple[tuple[str, Any, str | None], ...] = tuple((f.name, f.type, f.selector) for f in self.fields)
        # Without unions (most structures) a field never needs another's value: the
        # bound (un)marshallers are called in order and the value built positionally.
        self._simple = all(f.selector is None for f in self.fields)
        self._readers = tuple(f.type.unmarshal for f in self.fields)
        self._writers = tuple((f.name, f.type.marshal) for f in self.fields)

    @functools.cached_property
    def cls(self) -> type:
        """The value class, made on first use: building ~300 dataclasses (three generated
        methods each) took ~80 ms of every daemon start, and most of them are never used."""
        cls = dataclasses.make_dataclass(
            self.name, [(f.name, Any) for f in self.fields], eq=True, namespace={"__doc__": f"A {self.name} value."}
        )
        cls.__tpm_type__ = self
        return cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.cls(*args, **kwargs)

    def unmarshal(self, r: Reader) -> Any:
        if self._simple:
            return self.cls(*[read(r) for read in self._readers])
        values: dict[str, Any] = {}
        for fname, ftype, selector in self._plan:
            if selector is None:
                values[fname] = ftype.unmarshal(r)
            else:
                values[fname] = ftype.unmarshal(r, values[selector])
        return self.cls(**values)

    def marshal(self, value: Any, out: bytearray) -> None:
        if self._simple:
            for fname, write in self._writers:
                write(getattr(value, fname), out)
            return
        for fname, ftype, selector in self._plan:
            if selector is None:
                ftype.marshal(getattr(value, fname), out)
            else:
                ftype.marshal(getattr(value, fname), out, getattr(value, selector))


def enum_interface(
    name: str,
    base: UInt,
    enum_cls: Iterable[int],
    rc: int = TPM_RC.VALUE,
    exclude: Iterable[int] = (),
    null: int | None = None,
) -> Interface:
    """An Interface accepting the members of an enum (minus ``exclude``)."""
    excluded = set(int(e) for e in exclude)
    return Interface(name, base, [int(v) for v in enum_cls if int(v) not in excluded], rc=rc, null=null)
