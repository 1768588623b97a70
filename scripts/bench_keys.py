#!/usr/bin/env python3
"""Key generation time, in process: TPM2_CreatePrimary and TPM2_Create per key type.

The prime search runs in Python (so CANCEL_TPM_CMD can stop it between
candidates) with GMP's arithmetic (gmpy2), testing candidates on all cores at
once; RSA time varies a lot from key to key because the distance to the next
prime does, and with the load on the machine (libtpms uses one core).  Each round uses a different
template ``unique`` so every primary key is a new derivation; "CreatePrimary
RSA-2048 repeated" asks for the same key every time, which vtpm-cuse answers
from its cache of derived primaries (libtpms derives it again).  "CreatePrimary
RSA-2048 EK after ahead-derivation" is the TCG EK template on a new TPM whose
idle-time derivation (derive_ahead.py, on in the daemon) has finished, i.e. a
user's first tpm2_createek; libtpms derives the same template.  ``--swtpm``
adds Debian's swtpm (libtpms, C), measured over its socket, and the ratio of
the medians (ours / libtpms; below 1 is faster); each command goes to both TPMs
in turn, so both see the same load on a shared machine.
Usage: python scripts/bench_keys.py [--rounds N] [--swtpm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from support.object_templates import (  # noqa: E402
    NO_SYM,
    SIGNING,
    create_cmd,
    create_primary_cmd,
    ecc_template,
    rsa_template,
)
from support.tpm_client import command  # noqa: E402
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC  # noqa: E402
from vtpm_cuse.tpm.derive_ahead import WELL_KNOWN_PRIMARIES  # noqa: E402
from vtpm_cuse.tpm.engine import Engine  # noqa: E402

STARTUP = bytes.fromhex("80010000000c000001440000")


def primary_templates(i: int) -> dict:
    unique = i.to_bytes(4, "big")
    return {
        "CreatePrimary RSA-2048": rsa_template(unique=unique),
        "CreatePrimary ECC-P256": ecc_template(unique_x=unique),
        "CreatePrimary RSA-3072": rsa_template(bits=3072, unique=unique),
    }


CHILDREN = {
    "Create RSA-2048 child": rsa_template(SIGNING, sym=NO_SYM, scheme=TPM_ALG.RSASSA, hash_alg=TPM_ALG.SHA256),
    "Create ECC-P256 child": ecc_template(SIGNING, sym=NO_SYM, scheme=TPM_ALG.ECDSA, hash_alg=TPM_ALG.SHA256),
}


EK_AHEAD = "CreatePrimary RSA-2048 EK after ahead-derivation"


def _derived_ahead() -> Engine:
    """A started engine with fresh seeds whose ahead-derivation (derive_ahead.py) is done."""
    engine = Engine(derive_ahead=True)
    engine.execute(STARTUP)
    assert engine.wait_derived_ahead(120)
    return engine


def timed(tpm, cmd: bytes) -> tuple[float, bytes]:
    start = time.perf_counter()
    resp = tpm.execute(cmd)
    elapsed = time.perf_counter() - start
    assert resp[6:10] == b"\0\0\0\0", resp[6:10].hex()
    return elapsed, resp


def _in_turn(tpms: dict, i: int) -> list[tuple[str, object]]:
    """The TPMs, the first one first in even rounds and last in odd ones (no order bias)."""
    items = list(tpms.items())
    return items if i % 2 == 0 else items[::-1]


def bench(tpms: dict, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Times per TPM and label.  Every command goes to each TPM in turn, so on a loaded
    machine both see the same load and the ratio of their medians stays meaningful."""
    times: dict[str, dict[str, list[float]]] = {name: {} for name in tpms}

    def each(i: int, label: str, cmd: bytes, flush: bool = True) -> None:
        for name, tpm in _in_turn(tpms, i):
            elapsed, resp = timed(tpm, cmd)
            times[name].setdefault(label, []).append(elapsed)
            if flush:
                tpm.execute(command(TPM_CC.FlushContext, resp[10:14]))

    for i in range(rounds):
        for label, template in primary_templates(i).items():
            each(i, label, create_primary_cmd(template))
    repeated = create_primary_cmd(rsa_template(unique=b"repeated"))
    for tpm in tpms.values():
        tpm.execute(command(TPM_CC.FlushContext, timed(tpm, repeated)[1][10:14]))
    for i in range(rounds):
        each(i, "CreatePrimary RSA-2048 repeated", repeated)
    ek = create_primary_cmd(WELL_KNOWN_PRIMARIES[0].area, WELL_KNOWN_PRIMARIES[0].hierarchy)
    for i in range(rounds):
        for name, tpm in _in_turn(tpms, i):
            # Ours: a new TPM (new seeds) whose idle-time derivation has finished; libtpms derives.
            target = _derived_ahead() if isinstance(tpm, Engine) else tpm
            elapsed, resp = timed(target, ek)
            times[name].setdefault(EK_AHEAD, []).append(elapsed)
            target.execute(command(TPM_CC.FlushContext, resp[10:14]))
            if target is not tpm:
                target.close()
    srks = {name: timed(tpm, create_primary_cmd(rsa_template()))[1][10:14] for name, tpm in tpms.items()}
    for i in range(rounds):
        for label, template in CHILDREN.items():
            for name, tpm in _in_turn(tpms, i):
                times[name].setdefault(label, []).append(
                    timed(tpm, create_cmd(int.from_bytes(srks[name], "big"), template))[0]
                )
    for name, tpm in tpms.items():
        tpm.execute(command(TPM_CC.FlushContext, srks[name]))
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    print(f"\n{title}  (seconds: median / mean / min / max over {len(next(iter(times.values())))} keys)")
    for label, values in times.items():
        print(
            f"  {label:50s} {statistics.median(values):7.3f} {statistics.mean(values):7.3f} "
            f"{min(values):7.3f} {max(values):7.3f}"
        )


def compare(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> None:
    print("\nratio of medians, vtpm-cuse / libtpms (below 1: vtpm-cuse is faster)")
    for label, values in ours.items():
        mine, ref = statistics.median(values), statistics.median(theirs[label])
        print(f"  {label:50s} {mine:7.4f} / {ref:7.4f} = {mine / ref:7.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--swtpm", action="store_true", help="also time Debian's swtpm (libtpms)")
    args = parser.parse_args()
    engine = Engine()
    engine.execute(STARTUP)
    tpms: dict = {"vtpm-cuse engine, in process": engine}
    oracle = None
    if args.swtpm:
        from support.swtpm_oracle import SwtpmOracle

        oracle = SwtpmOracle()
        oracle.execute(STARTUP)
        tpms["swtpm (libtpms), over its socket"] = oracle
    try:
        times = bench(tpms, args.rounds)
    finally:
        if oracle is not None:
            oracle.close()
    for title, measured in times.items():
        report(title, measured)
    if oracle is not None:
        compare(*times.values())


if __name__ == "__main__":
    main()
