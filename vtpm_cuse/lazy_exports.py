"""Package attributes loaded on first use (PEP 562), for packages whose ``__init__``
must stay cheap: importing a leaf module, or parsing options before the daemon's
sockets listen, should not import the whole package (and ``cryptography``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, defined_in: Mapping[str, str], exported: list[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` for ``package``: a name of
    ``defined_in`` (public name -> relative module) is imported from its module when
    first looked up; any other name is an AttributeError naming it."""

    def module_getattr(name: str) -> Any:
        if name not in defined_in:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(defined_in[name], package), name)

    def module_dir() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exported})

    return module_getattr, module_dir
