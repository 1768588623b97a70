"""Base classes: a union half as a dataclass, and a C struct as a pair of halves.

Each tpm_ioctl.h struct is a union of ``req`` and ``resp``.  The two halves
are separate dataclasses (subclasses of :class:`Part`), bound together by a
:class:`CStruct`, which knows the union's total size.  The size matters
because the ioctl path always carries the *whole* union, while the socket
path carries only the half that is travelling.

Error responses: when ``tpm_result`` is non-zero, swtpm sends only the
4-byte result on the socket (GET_STATEBLOB: sometimes its 16-byte header),
and on the CUSE device the rest of the caller's buffer still holds the
request bytes.  So for a failed response only ``tpm_result`` means
anything; pack and unpack both treat every other field as zero/empty.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Self

from .abi import Abi, resolve_abi
from .errors import MalformedMessage
from .layout import Int, Layout

__all__ = ["CStruct", "Part", "PayloadPart", "ResultPart"]

_RESULT_SIZE = 4


class Part:
    """One half (``req`` or ``resp``) of a tpm_ioctl.h union.

    Subclasses are frozen dataclasses whose attributes are the non-padding,
    non-length fields of :attr:`LAYOUT`.
    """

    LAYOUT: ClassVar[Layout]
    SOCKET_EXACT: ClassVar[bool] = True
    """Socket bodies must have exactly the described size.  False where
    swtpm accepts trailing bytes (e.g. QEMU pads ``loc`` to 4 bytes)."""

    c_struct: ClassVar[CStruct]
    """The struct this half belongs to; set by :class:`CStruct`."""
    half: ClassVar[str]
    """``"req"`` or ``"resp"``; set by :class:`CStruct`."""

    def __post_init__(self) -> None:
        for field in self.LAYOUT.value_fields:
            value = getattr(self, field.name)
            if isinstance(field, Int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"{self.describe()}.{field.name} must be an int, got {value!r}")
                if not 0 <= value < field.limit:
                    raise ValueError(f"{self.describe()}.{field.name}={value:#x} does not fit in u{8 * field.width}")
            else:
                if not isinstance(value, bytes | bytearray | memoryview):
                    raise TypeError(f"{self.describe()}.{field.name} must be bytes, got {type(value).__name__}")
                if len(value) >= 1 << 32:
                    raise ValueError(f"{self.describe()}.{field.name} is longer than a u32 length allows")
                object.__setattr__(self, field.name, bytes(value))

    # -- identity ---------------------------------------------------------

    @classmethod
    def describe(cls) -> str:
        """``"ptm_getstate.resp"`` -- used in error messages."""
        bound = cls.__dict__.get("c_struct")
        return f"{bound.name}.{cls.half}" if bound is not None else cls.__name__

    @classmethod
    def ioctl_size(cls, abi: Abi | None = None) -> int:
        """Size of the whole union on the ioctl path (what ``_IOC_SIZE`` says)."""
        return cls.c_struct.ioctl_size(abi)

    @property
    def is_error(self) -> bool:
        """A response whose ``tpm_result`` is non-zero."""
        return self.LAYOUT.has_result and self.tpm_result != 0

    def _canonical(self) -> Self:
        """The form that is actually transmitted (see module docstring on errors)."""
        if self.is_error:
            return type(self)(tpm_result=self.tpm_result)  # type: ignore[call-arg]
        return self

    def _values(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in self.LAYOUT.value_fields}

    # -- ioctl path -------------------------------------------------------

    def pack_ioctl(self, abi: Abi | None = None) -> bytes:
        """The whole union in the ABI's byte order, zero padded to ``_IOC_SIZE``."""
        abi = resolve_abi(abi)
        src = self._canonical()
        body = src.LAYOUT.encode(src._values(), abi.struct_order, ioctl=True, what=self.describe())
        return body.ljust(self.ioctl_size(abi), b"\0")

    @classmethod
    def unpack_ioctl(cls, data: bytes | bytearray | memoryview, abi: Abi | None = None) -> Self:
        """Decode this half from a full ioctl buffer.

        Halves without fields accept anything: for ``_IOR`` commands the
        kernel copies no input at all.
        """
        if cls.LAYOUT.is_empty:
            return cls()
        abi = resolve_abi(abi)
        buf = bytes(data)
        size = cls.ioctl_size(abi)
        if len(buf) != size:
            raise MalformedMessage(
                cls.describe(),
                "ioctl",
                f"got {len(buf)} bytes, the {abi.name} union is {size} bytes",
                actual=len(buf),
                expected=size,
            )
        order = abi.struct_order
        if cls.LAYOUT.has_result:
            result = int.from_bytes(buf[:_RESULT_SIZE], abi.byteorder)
            if result:
                return cls(tpm_result=result)  # type: ignore[call-arg]
        return cls(**cls.LAYOUT.decode(buf, order, ioctl=True, what=cls.describe()))

    # -- socket path ------------------------------------------------------

    @classmethod
    def socket_error_size(cls, result: int) -> int:
        """Bytes swtpm sends on the socket for a failed response."""
        return _RESULT_SIZE

    def pack_socket(self) -> bytes:
        """Big-endian body: exactly this half, payload at its real length."""
        src = self._canonical()
        body = src.LAYOUT.encode(src._values(), ">", ioctl=False, what=self.describe())
        if self.is_error:
            return body[: self.socket_error_size(self.tpm_result)]
        return body

    @classmethod
    def socket_wanted(cls, prefix: bytes | bytearray | memoryview) -> int:
        """How many bytes the complete socket message has, judging by ``prefix``.

        Read until ``len(buf) >= socket_wanted(buf)``, asking again after each
        read: the answer can only grow once the result or length is known.
        """
        layout = cls.LAYOUT
        if layout.has_result:
            if len(prefix) < _RESULT_SIZE:
                return _RESULT_SIZE
            result = int.from_bytes(bytes(prefix[:_RESULT_SIZE]), "big")
            if result:
                return cls.socket_error_size(result)
        if layout.payload is None or len(prefix) < layout.header_size:
            return layout.header_size
        return layout.header_size + layout.peek_length(bytes(prefix), ">")

    @classmethod
    def unpack_socket(cls, data: bytes | bytearray | memoryview) -> Self:
        """Decode a big-endian socket body (without the 4-byte CMD for requests)."""
        buf = bytes(data)
        layout = cls.LAYOUT
        what = cls.describe()
        if layout.has_result and len(buf) >= _RESULT_SIZE:
            result = int.from_bytes(buf[:_RESULT_SIZE], "big")
            if result:
                allowed = sorted({_RESULT_SIZE, layout.header_size})
                if len(buf) not in allowed:
                    raise MalformedMessage(
                        what,
                        "socket",
                        f"error response of {len(buf)} bytes, expected " + " or ".join(str(n) for n in allowed),
                        actual=len(buf),
                        expected=_RESULT_SIZE,
                    )
                return cls(tpm_result=result)  # type: ignore[call-arg]
        if len(buf) < layout.header_size:
            raise MalformedMessage(
                what,
                "socket",
                f"got {len(buf)} bytes, need at least {layout.header_size}",
                actual=len(buf),
                expected=layout.header_size,
            )
        wanted = cls.socket_wanted(buf)
        if len(buf) < wanted or (cls.SOCKET_EXACT and len(buf) != wanted):
            raise MalformedMessage(
                what,
                "socket",
                f"got {len(buf)} bytes, expected {wanted}",
                actual=len(buf),
                expected=wanted,
            )
        return cls(**layout.decode(buf[:wanted], ">", ioctl=False, what=what))


@dataclass(frozen=True)
class ResultPart(Part):
    """A response half starting with ``u32 tpm_result`` (a :class:`~ioctl_defs.PtmResult`)."""

    tpm_result: int = 0


class PayloadPart:
    """Mixin for halves with a ``length`` + array pair: ``length`` follows the data."""

    LAYOUT: ClassVar[Layout]

    @property
    def length(self) -> int:
        payload = self.LAYOUT.payload
        assert payload is not None
        return len(getattr(self, payload.name))


@dataclass(frozen=True)
class CStruct:
    """A tpm_ioctl.h struct: the union of a request and a response half."""

    name: str
    request: type[Part]
    response: type[Part]

    def __post_init__(self) -> None:
        for half, part in (("req", self.request), ("resp", self.response)):
            if "c_struct" in part.__dict__:
                raise TypeError(f"{part.__name__} already belongs to {part.c_struct.name}")
            attrs = {f.name for f in fields(part)}  # type: ignore[arg-type]
            described = {f.name for f in part.LAYOUT.value_fields}
            if attrs != described:
                raise TypeError(f"{part.__name__} attributes {attrs} do not match its layout {described}")
            part.c_struct = self
            part.half = half

    def ioctl_size(self, abi: Abi | None = None) -> int:
        """``sizeof`` the union under ``abi``: larger half, rounded to its alignment."""
        abi = resolve_abi(abi)
        size = max(self.request.LAYOUT.ioctl_size, self.response.LAYOUT.ioctl_size)
        align = max(self.request.LAYOUT.alignment(abi), self.response.LAYOUT.alignment(abi))
        return -(-size // align) * align
