"""swtpm's ``key=value,...`` option-value syntax (src/swtpm/options.c).

Used by ``--key``, ``--migration-key`` and ``--tpmstate`` here; the same
syntax serves ``--log``, ``--pid``, ``--ctrl`` ... so this module has no
state-specific knowledge and can move to a shared place later.

Rules, as in swtpm: items are separated by ``,`` (empty items are skipped);
an item is ``name=value`` with a non-empty value, or a bare ``name`` meaning
``name=true``; unknown names are errors. Deliberate differences, both to turn
silent misconfiguration into an error: a name given twice is refused (swtpm
uses the first), and a boolean must be true/false/1/0 (swtpm reads anything
else as false).
"""

from __future__ import annotations

from collections.abc import Collection

from .errors import OptionError

__all__ = ["parse_option_string", "parse_bool", "parse_mode"]


def parse_option_string(
    text: str,
    allowed: Collection[str],
    *,
    option: str,
    error: type[OptionError] = OptionError,
) -> dict[str, str | None]:
    """Split ``text`` into ``{name: value}``; a bare ``name`` maps to None.

    ``option`` (e.g. ``"--key"``) and the offending item appear in errors.
    """
    result: dict[str, str | None] = {}
    for item in text.split(","):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if name not in allowed:
            raise error(f"{option}: unknown option {item!r}")
        if sep and not value:
            raise error(f"{option}: empty value in {item!r}")
        if name in result:
            raise error(f"{option}: {name!r} given more than once")
        result[name] = value if sep else None
    return result


def parse_bool(value: str | None, *, name: str, option: str, error: type[OptionError] = OptionError) -> bool:
    """A bare flag (None) is true; otherwise true/false/1/0, any case."""
    if value is None:
        return True
    lowered = value.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise error(f"{option}: {name}={value!r} is not a boolean (use true or false)")


def parse_mode(value: str | None, *, name: str, option: str, error: type[OptionError] = OptionError) -> int:
    """An octal permission value such as ``0600`` (at most ``0777``)."""
    if value is None:
        raise error(f"{option}: {name} needs a value such as {name}=0600")
    digits = value[1:] if len(value) > 1 and value.startswith("0") else value
    if not digits or any(c not in "01234567" for c in digits):
        raise error(f"{option}: {name}={value!r} is not an octal mode")
    mode = int(digits, 8)
    if mode > 0o777:
        raise error(f"{option}: {name}={value!r} is outside 0000..0777")
    return mode
