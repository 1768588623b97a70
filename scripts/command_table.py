"""Print every command code of the Library specification revision we claim, as a markdown table:
name, code, whether vtpm-cuse implements it, whether libtpms (Debian's swtpm) does, and why
we leave it out where we do.

libtpms' list is asked at run time: ``swtpm socket --tpm2`` is started and answers
GetCapability(TPM_CAP_COMMANDS).  Ours comes from the same capability of our engine.

    .venv/bin/python scripts/command_table.py [--revision 159]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from support.swtpm_oracle import SwtpmOracle  # noqa: E402
from support.tpm_client import Response, command, u16, u32  # noqa: E402
from vtpm_cuse.tpm import types as T  # noqa: E402
from vtpm_cuse.tpm.constants import TPM_CAP, TPM_CC, TPMA_CC, TPMA_CC_COMMAND_INDEX_MASK  # noqa: E402
from vtpm_cuse.tpm.engine import Engine  # noqa: E402
from vtpm_cuse.tpm.properties import SPEC_REVISION  # noqa: E402
from vtpm_cuse.tpm.spec_commands import NOT_IMPLEMENTED, spec_commands  # noqa: E402

STARTUP_CLEAR = command(TPM_CC.Startup, u16(0))
PAGE = 64


def listed_commands(execute) -> set[int]:
    """Command codes a TPM reports in GetCapability(TPM_CAP_COMMANDS), following moreData."""
    codes: set[int] = set()
    start = 0
    while True:
        resp = Response(execute(command(TPM_CC.GetCapability, u32(TPM_CAP.COMMANDS) + u32(start) + u32(PAGE))))
        if resp.rc:
            raise RuntimeError(f"GetCapability(TPM_CAP_COMMANDS) answered 0x{resp.rc:x}")
        more, data = resp.params()[0], T.TPMS_CAPABILITY_DATA.unpack(resp.params()[1:]).data
        for attrs in data:
            codes.add((attrs & TPMA_CC_COMMAND_INDEX_MASK) | (attrs & TPMA_CC.V))
        if not more or not data:
            return codes
        start = max(codes) + 1


def libtpms_commands() -> set[int]:
    oracle = SwtpmOracle()
    try:
        oracle.execute(STARTUP_CLEAR)
        return listed_commands(oracle.execute)
    finally:
        oracle.close()


def our_commands() -> set[int]:
    engine = Engine()
    engine.execute(STARTUP_CLEAR)
    return listed_commands(engine.execute)


def table(revision: int, ours: set[int], libtpms: set[int], differences_only: bool = False) -> str:
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    lines = ["| command | code | ours | libtpms | why not ours |", "| --- | --- | --- | --- | --- |"]
    codes = sorted(spec_commands(revision))
    for code in codes:
        if differences_only and code in ours and code in libtpms:
            continue
        reason = "" if code in ours else NOT_IMPLEMENTED.get(code, "**not explained**")
        lines.append(
            f"| {TPM_CC(code).name} | 0x{code:08x} | {yes(code in ours)} | {yes(code in libtpms)} | {reason} |"
        )
    extra = sorted((ours | libtpms) - set(codes))
    for code in extra:
        name = TPM_CC(code).name if code in TPM_CC._value2member_map_ else "?"
        where = f"{name} (not in {revision / 100:.2f})"
        lines.append(f"| {where} | 0x{code:08x} | {yes(code in ours)} | {yes(code in libtpms)} | |")
    lines.append("")
    lines.append(
        f"{len(codes)} command codes in Library {revision / 100:.2f}: ours {len(ours & set(codes))}, "
        f"libtpms {len(libtpms & set(codes))}, both {len(ours & libtpms & set(codes))}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--revision", type=int, default=SPEC_REVISION, help="Library revision x 100 (e.g. 159)")
    parser.add_argument("--differences", action="store_true", help="only the commands that one of the two TPMs lacks")
    args = parser.parse_args()
    try:
        spec_commands(args.revision)
    except ValueError as exc:
        parser.error(str(exc))
    print(table(args.revision, our_commands(), libtpms_commands(), args.differences))
    return 0


if __name__ == "__main__":
    sys.exit(main())
