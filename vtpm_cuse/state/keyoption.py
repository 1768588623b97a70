"""``--key`` and ``--migration-key`` option values and the keys they point at.

Accepted forms (spec §2.12, swtpm's src/swtpm/common.c and key.c)::

    file=<path>|fd=<fd>[,mode=<mode>][,format=hex|binary][,remove[=true|false]]
    pwdfile=<path>|pwdfd=<fd>[,mode=<mode>][,remove[=true|false]][,kdf=sha512|pbkdf2]

``mode`` is one of ``aes-cbc``, ``aes-128-cbc`` (default), ``aes-256-cbc``,
``aes-128-gcm``, ``aes-256-gcm``. **The mode only selects the key length**
(128 or 256 bits): this TPM always encrypts with AES-GCM
(:mod:`vtpm_cuse.state.crypto`). The CBC names are accepted so that existing
swtpm command lines (libvirt passes ``mode=aes-256-cbc``) keep working with
the same key files.

Key material rules, as in swtpm:

* ``format=hex`` (default): optional ``0x``, then exactly 32 (128-bit mode) or
  64 (256-bit mode) hex digits, optionally followed by whitespace (e.g. the
  newline ``echo`` adds). Anything else after the digits is refused (swtpm
  ignores text after the first whitespace; we do not).
* ``format=binary``: the raw key, 16 or 32 bytes and not longer than the
  mode's key length; the AES variant follows the actual length (a 16-byte file
  with ``mode=aes-256-cbc`` gives AES-128).
* passphrase (``pwdfile``/``pwdfd``): the whole content, trailing newline
  included, goes through the KDF to a key of the mode's length.
  ``kdf=pbkdf2`` (default) is PBKDF2-HMAC-SHA512 with salt ``"swtpm"`` and
  1000 iterations; ``kdf=sha512`` takes the first bytes of SHA-512(content).
  An empty passphrase is refused (swtpm accepts it; it is never intended).

``fd=``/``pwdfd=`` descriptors are read to EOF and closed, as in swtpm.
``remove`` unlinks a ``file=``/``pwdfile=`` after a successful read and has no
effect on descriptors. Deliberately stricter than swtpm: exactly one of
file/fd/pwdfile/pwdfd must be given, and ``format`` / ``kdf`` are refused
where they have no meaning, instead of being silently ignored.

Every problem raises :class:`~vtpm_cuse.state.errors.KeyOptionError` with a
one-line message naming the offending value; key bytes never appear in
messages, logs or reprs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import Enum

from .crypto import KEY_SIZES, StateKey
from .errors import KeyOptionError
from .optionstring import parse_bool, parse_option_string

__all__ = [
    "KeyMode",
    "KeyFormat",
    "Kdf",
    "KeySource",
    "KeyOption",
    "PBKDF2_SALT",
    "PBKDF2_ITERATIONS",
    "parse_key_option",
    "load_key_option",
    "parse_hex_key",
    "parse_binary_key",
    "derive_passphrase_key",
]

PBKDF2_SALT = b"swtpm"
PBKDF2_ITERATIONS = 1000

#: More than any valid key file can hold ("0x" + 64 digits + whitespace);
#: reading stops there so a wrong path (say, a disk image) is not slurped.
_MAX_KEY_FILE = 4096
#: Upper bound for passphrase files.
_MAX_PASSPHRASE = 1 << 20

_OPTION_NAMES = ("file", "fd", "pwdfile", "pwdfd", "mode", "format", "remove", "kdf")
_WHITESPACE = b" \t\n\v\f\r"  # C isspace() in the "C" locale
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


class KeyMode(Enum):
    """``mode=`` values; they select the key length only (we always use GCM)."""

    AES_CBC = "aes-cbc"
    AES_128_CBC = "aes-128-cbc"
    AES_256_CBC = "aes-256-cbc"
    AES_128_GCM = "aes-128-gcm"
    AES_256_GCM = "aes-256-gcm"

    @property
    def key_size(self) -> int:
        """Key length in bytes this mode asks for."""
        return 32 if "256" in self.value else 16


class KeyFormat(Enum):
    HEX = "hex"
    BINARY = "binary"


class Kdf(Enum):
    PBKDF2 = "pbkdf2"
    SHA512 = "sha512"


class KeySource(Enum):
    """Where the key (or passphrase) comes from; the value is the option name."""

    FILE = "file"
    FD = "fd"
    PWDFILE = "pwdfile"
    PWDFD = "pwdfd"

    @property
    def is_passphrase(self) -> bool:
        return self in (KeySource.PWDFILE, KeySource.PWDFD)

    @property
    def is_fd(self) -> bool:
        return self in (KeySource.FD, KeySource.PWDFD)


@dataclass(frozen=True)
class KeyOption:
    """A parsed ``--key``/``--migration-key`` value. Holds no key material:
    :meth:`load` reads it."""

    source: KeySource
    #: path for FILE/PWDFILE, descriptor number for FD/PWDFD
    location: str | int
    mode: KeyMode = KeyMode.AES_128_CBC
    format: KeyFormat = KeyFormat.HEX
    kdf: Kdf = Kdf.PBKDF2
    remove: bool = False
    #: option name used in error messages
    option: str = "--key"

    def describe(self) -> str:
        """Human name of the source, e.g. ``file '/etc/key'`` or ``fd 5``."""
        if self.source.is_fd:
            return f"{self.source.value} {self.location}"
        return f"{self.source.value} {str(self.location)!r}"

    def load(self) -> StateKey:
        """Read the key (or passphrase) and turn it into a :class:`StateKey`.

        A descriptor is closed afterwards whether or not reading succeeded;
        ``remove`` unlinks a file only after success.
        """
        limit = _MAX_PASSPHRASE if self.source.is_passphrase else _MAX_KEY_FILE
        raw = self._read(limit)
        what = f"{self.option}: {self.describe()}"
        if self.source.is_passphrase:
            material = derive_passphrase_key(raw, self.mode.key_size, self.kdf, what=what)
        elif self.format is KeyFormat.HEX:
            material = parse_hex_key(raw, self.mode, what=what)
        else:
            material = parse_binary_key(raw, self.mode, what=what)
        key = StateKey(material)
        if self.remove and not self.source.is_fd:
            try:
                os.unlink(self.location)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise KeyOptionError(f"{what}: cannot remove after reading: {exc.strerror}") from exc
        return key

    def _read(self, limit: int) -> bytes:
        what = f"{self.option}: {self.describe()}"
        if self.source.is_fd:
            fd = int(self.location)
            try:
                return _read_fd(fd, limit, what)
            finally:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            fd = os.open(str(self.location), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise KeyOptionError(f"{what}: cannot open: {exc.strerror}") from exc
        try:
            return _read_fd(fd, limit, what)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return (
            f"KeyOption({self.describe()}, mode={self.mode.value}, "
            f"format={self.format.value}, kdf={self.kdf.value}, remove={self.remove})"
        )


def _read_fd(fd: int, limit: int, what: str) -> bytes:
    """Read to EOF, refusing more than ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, min(65536, limit + 1 - total))
        except InterruptedError:  # pragma: no cover - PEP 475 retries already
            continue
        except OSError as exc:
            raise KeyOptionError(f"{what}: cannot read: {exc.strerror}") from exc
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise KeyOptionError(f"{what}: more than {limit} bytes; not a key file")


def parse_hex_key(raw: bytes, mode: KeyMode, *, what: str = "key") -> bytes:
    """Decode a hex key file's content for ``mode`` (rules in the module doc)."""
    text = raw[2:] if raw.startswith(b"0x") else raw
    end = 0
    while end < len(text) and text[end] not in _WHITESPACE:
        end += 1
    digits, rest = text[:end], text[end:]
    if not digits or any(c not in _HEX_DIGITS for c in digits):
        raise KeyOptionError(f"{what}: not a hex key (expected 32 or 64 hex digits)")
    if rest.strip(_WHITESPACE):
        raise KeyOptionError(f"{what}: unexpected text after the hex key")
    wanted = 2 * mode.key_size
    if len(digits) != wanted:
        raise KeyOptionError(f"{what}: hex key has {len(digits)} digits; mode={mode.value} needs {wanted}")
    return bytes.fromhex(digits.decode("ascii"))


def parse_binary_key(raw: bytes, mode: KeyMode, *, what: str = "key") -> bytes:
    """Check a binary key file's content for ``mode``."""
    if len(raw) not in KEY_SIZES or len(raw) > mode.key_size:
        raise KeyOptionError(
            f"{what}: binary key is {len(raw)} bytes; mode={mode.value} takes "
            + ("16 bytes" if mode.key_size == 16 else "16 or 32 bytes")
        )
    return raw


def derive_passphrase_key(passphrase: bytes, size: int, kdf: Kdf, *, what: str = "passphrase") -> bytes:
    """Turn passphrase file content into a ``size``-byte key with ``kdf``."""
    if not passphrase:
        raise KeyOptionError(f"{what}: passphrase is empty")
    if kdf is Kdf.PBKDF2:
        return hashlib.pbkdf2_hmac("sha512", passphrase, PBKDF2_SALT, PBKDF2_ITERATIONS, size)
    return hashlib.sha512(passphrase).digest()[:size]


def _parse_fd(value: str, name: str, option: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise KeyOptionError(f"{option}: {name}={value!r} is not a file descriptor number")
    return int(value)


def parse_key_option(value: str, option: str = "--key") -> KeyOption:
    """Parse a ``--key``/``--migration-key`` value without reading anything."""
    items = parse_option_string(value, _OPTION_NAMES, option=option, error=KeyOptionError)

    sources = [s for s in KeySource if s.value in items]
    if not sources:
        raise KeyOptionError(f"{option}: one of file=, fd=, pwdfile= or pwdfd= is required")
    if len(sources) > 1:
        given = " and ".join(f"{s.value}=" for s in sources)
        raise KeyOptionError(f"{option}: give only one key source, not {given}")
    source = sources[0]
    raw_location = items[source.value]
    if raw_location is None:
        raise KeyOptionError(f"{option}: {source.value} needs a value")
    location: str | int = _parse_fd(raw_location, source.value, option) if source.is_fd else raw_location

    mode = KeyMode.AES_128_CBC
    if "mode" in items:
        try:
            mode = KeyMode(items["mode"])
        except ValueError:
            names = ", ".join(m.value for m in KeyMode)
            raise KeyOptionError(f"{option}: unknown mode={items['mode']!r} (expected one of {names})") from None

    key_format = KeyFormat.HEX
    if "format" in items:
        if source.is_passphrase:
            raise KeyOptionError(f"{option}: format= applies to file=/fd= keys, not {source.value}=")
        try:
            key_format = KeyFormat(items["format"])
        except ValueError:
            raise KeyOptionError(f"{option}: unknown format={items['format']!r} (expected hex or binary)") from None

    kdf = Kdf.PBKDF2
    if "kdf" in items:
        if not source.is_passphrase:
            raise KeyOptionError(f"{option}: kdf= applies to pwdfile=/pwdfd=, not {source.value}=")
        try:
            kdf = Kdf(items["kdf"])
        except ValueError:
            raise KeyOptionError(f"{option}: unknown kdf={items['kdf']!r} (expected pbkdf2 or sha512)") from None

    remove = False
    if "remove" in items:
        remove = parse_bool(items["remove"], name="remove", option=option, error=KeyOptionError)

    return KeyOption(
        source=source,
        location=location,
        mode=mode,
        format=key_format,
        kdf=kdf,
        remove=remove,
        option=option,
    )


def load_key_option(value: str, option: str = "--key") -> StateKey:
    """Parse ``value`` and load the key it names (convenience for the CLI)."""
    return parse_key_option(value, option).load()
