"""Hypothesis strategies derived from the marshalling declarations.

Each declaration kind maps to a strategy for valid values of it, so every
declared structure can be round-tripped without writing a strategy per type.
"""

from __future__ import annotations

from functools import singledispatch

from hypothesis import strategies as st

from vtpm_cuse.tpm.marshal import (
    Attributes,
    FixedBytes,
    Int,
    Interface,
    ListOf,
    Sized,
    SizedStruct,
    Struct,
    TpmType,
    UInt,
)

#: Keep generated lists short; the bound checks are tested separately.
MAX_LIST = 4


@singledispatch
def values(t: TpmType) -> st.SearchStrategy:
    raise NotImplementedError(f"no strategy for {t!r}")


@values.register
def _(t: UInt) -> st.SearchStrategy:
    return st.integers(0, t.max)


@values.register
def _(t: Int) -> st.SearchStrategy:
    return st.integers(t.min, t.max)


@values.register
def _(t: Interface) -> st.SearchStrategy:
    options = [st.sampled_from(sorted(t.values))] if t.values else []
    options += [st.integers(lo, hi) for lo, hi in t.ranges]
    if t.allow_null:
        options.append(st.just(t.null))
    return st.one_of(options)


@values.register
def _(t: Attributes) -> st.SearchStrategy:
    return st.integers(0, t.max).map(lambda v: v & ~t.reserved_mask)


@values.register
def _(t: FixedBytes) -> st.SearchStrategy:
    return st.binary(min_size=t.size, max_size=t.size)


@values.register
def _(t: Sized) -> st.SearchStrategy:
    return st.binary(min_size=t.min_size, max_size=min(t.max_size, 80))


@values.register
def _(t: SizedStruct) -> st.SearchStrategy:
    inner = values(t.inner)
    return st.one_of(st.none(), inner) if t.allow_empty else inner


@values.register
def _(t: ListOf) -> st.SearchStrategy:
    return st.lists(values(t.element), max_size=min(t.max_count, MAX_LIST))


@values.register
def _(t: Struct) -> st.SearchStrategy:
    # A selector may only take values every union it selects has a member for.
    selects: dict[str, list] = {}
    for field in t.fields:
        if field.selector is not None:
            selects.setdefault(field.selector, []).append(field.type)

    @st.composite
    def build(draw):
        fields = {}
        for field in t.fields:
            if field.selector is None:
                unions = selects.get(field.name, [])
                if unions and type(field.type) is UInt:
                    # A plain integer selector (TPMT_NV_PUBLIC_2's handleType): draw a member's key,
                    # rather than filter 256 (or 2**32) values down to a few.
                    keys = set.intersection(*(set(u.members) for u in unions))
                    fields[field.name] = draw(st.sampled_from(sorted(keys)))
                    continue
                fields[field.name] = draw(
                    values(field.type).filter(lambda v, unions=unions: all(v in u.members for u in unions))
                )
            else:
                member = field.type.members[fields[field.selector]]
                fields[field.name] = None if member is None else draw(values(member))
        return t(**fields)

    return build()


# --- the smallest valid value (deterministic, no hypothesis run) ----------------------------------


@singledispatch
def smallest(t: TpmType):
    """The value hypothesis would shrink ``values(t)`` to, computed directly (seed corpora:
    a ``find`` per command costs seconds)."""
    raise NotImplementedError(f"no smallest value for {t!r}")


@smallest.register
def _(t: UInt) -> int:
    return 0


@smallest.register
def _(t: Int) -> int:
    return max(t.min, min(0, t.max))


@smallest.register
def _(t: Interface) -> int:
    options = sorted(t.values) + [lo for lo, _ in t.ranges] + ([t.null] if t.allow_null else [])
    return min(options, key=abs)


@smallest.register
def _(t: Attributes) -> int:
    return 0


@smallest.register
def _(t: FixedBytes) -> bytes:
    return bytes(t.size)


@smallest.register
def _(t: Sized) -> bytes:
    return bytes(t.min_size)


@smallest.register
def _(t: SizedStruct):
    return None if t.allow_empty else smallest(t.inner)


@smallest.register
def _(t: ListOf) -> list:
    return []


@smallest.register
def _(t: Struct):
    selects: dict[str, list] = {}
    for field in t.fields:
        if field.selector is not None:
            selects.setdefault(field.selector, []).append(field.type)
    fields: dict = {}
    for field in t.fields:
        if field.selector is not None:
            member = field.type.members[fields[field.selector]]
            fields[field.name] = None if member is None else smallest(member)
        elif unions := selects.get(field.name):
            keys = set.intersection(*(set(u.members) for u in unions))
            if type(field.type) is not UInt:
                keys = {k for k in keys if _admits(field.type, k)}
            fields[field.name] = min(keys)
        else:
            fields[field.name] = smallest(field.type)
    return t(**fields)


def _admits(t: TpmType, value: int) -> bool:
    if isinstance(t, Interface):
        return value in t.values or any(lo <= value <= hi for lo, hi in t.ranges) or (t.allow_null and value == t.null)
    return True
