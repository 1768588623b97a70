"""``vtpm-cuse-install-units``: install the systemd unit template and the udev rule.

The unit in the package (``data/systemd/vtpm-cuse@.service``) names its programs as
``@VTPM_CUSE@`` / ``@VTPM_SETUP@``; installing replaces them with the absolute paths of
the installed console scripts (found next to the running Python, or on $PATH), because
systemd needs absolute ExecStart paths and a virtualenv's are not known in advance.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

__all__ = ["main", "render_unit"]

UNIT_NAME = "vtpm-cuse@.service"
UDEV_RULE = "60-vtpm-cuse.rules"
PROGRAMS = {"@VTPM_CUSE@": "vtpm-cuse", "@VTPM_SETUP@": "vtpm-setup"}


class InstallError(Exception):
    pass


def _data(*parts: str) -> str:
    return resources.files("vtpm_cuse").joinpath("data", *parts).read_text()


def find_program(name: str) -> Path:
    """The installed console script ``name``: beside this Python first, then on $PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside.absolute()
    found = shutil.which(name)
    if found is None:
        raise InstallError(f"cannot find the program '{name}' (is vtpm-cuse installed?)")
    return Path(found).absolute()


def render_unit(programs: dict[str, Path] | None = None) -> str:
    text = _data("systemd", UNIT_NAME)
    for marker, name in PROGRAMS.items():
        path = (programs or {}).get(name) or find_program(name)
        text = text.replace(marker, str(path))
    return text


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vtpm-cuse-install-units", description=__doc__.splitlines()[0])
    p.add_argument("--unit-dir", default="/etc/systemd/system", help="where the unit goes")
    p.add_argument("--udev-dir", default="/etc/udev/rules.d", help="where the udev rule goes")
    args = p.parse_args(argv)
    try:
        unit = render_unit()
        for directory, name, text in (
            (args.unit_dir, UNIT_NAME, unit),
            (args.udev_dir, UDEV_RULE, _data("udev", UDEV_RULE)),
        ):
            target = Path(directory) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"installed {target}")
    except (InstallError, OSError) as e:
        print(f"vtpm-cuse-install-units: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
