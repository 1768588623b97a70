#!/usr/bin/env python3
"""Key generation time, in process: TPM2_CreatePrimary and TPM2_Create per key type.

The prime search runs in Python (so CANCEL_TPM_CMD can stop it between
candidates) with GMP's arithmetic (gmpy2); RSA time varies a lot from key to
key because the distance to the next prime does.  Each round uses a different
template ``unique`` so every primary key is a new derivation; "CreatePrimary
RSA-2048 repeated" asks for the same key every time, which vtpm-cuse answers
from its cache of derived primaries (libtpms derives it again).  ``--swtpm``
adds Debian's swtpm (libtpms, C), measured over its socket, and the ratio of
the medians (ours / libtpms; below 1 is faster).
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
from support.tpm_client import command, u32  # noqa: E402
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC  # noqa: E402
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


def timed(tpm, cmd: bytes) -> tuple[float, bytes]:
    start = time.perf_counter()
    resp = tpm.execute(cmd)
    elapsed = time.perf_counter() - start
    assert resp[6:10] == b"\0\0\0\0", resp[6:10].hex()
    return elapsed, resp


def bench(tpm, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for i in range(rounds):
        for label, template in primary_templates(i).items():
            elapsed, resp = timed(tpm, create_primary_cmd(template))
            times.setdefault(label, []).append(elapsed)
            tpm.execute(command(TPM_CC.FlushContext, resp[10:14]))
    repeated = rsa_template(unique=b"repeated")
    tpm.execute(command(TPM_CC.FlushContext, timed(tpm, create_primary_cmd(repeated))[1][10:14]))
    for _ in range(rounds):
        elapsed, resp = timed(tpm, create_primary_cmd(repeated))
        times.setdefault("CreatePrimary RSA-2048 repeated", []).append(elapsed)
        tpm.execute(command(TPM_CC.FlushContext, resp[10:14]))
    _, resp = timed(tpm, create_primary_cmd(rsa_template()))
    srk = int.from_bytes(resp[10:14], "big")
    for _ in range(rounds):
        for label, template in CHILDREN.items():
            times.setdefault(label, []).append(timed(tpm, create_cmd(srk, template))[0])
    tpm.execute(command(TPM_CC.FlushContext, u32(srk)))
    return times


def report(title: str, times: dict[str, list[float]]) -> None:
    print(f"\n{title}  (seconds: median / mean / min / max over {len(next(iter(times.values())))} keys)")
    for label, values in times.items():
        print(
            f"  {label:34s} {statistics.median(values):7.3f} {statistics.mean(values):7.3f} "
            f"{min(values):7.3f} {max(values):7.3f}"
        )


def compare(ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> None:
    print("\nratio of medians, vtpm-cuse / libtpms (below 1: vtpm-cuse is faster)")
    for label, values in ours.items():
        mine, ref = statistics.median(values), statistics.median(theirs[label])
        print(f"  {label:34s} {mine:7.4f} / {ref:7.4f} = {mine / ref:7.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--swtpm", action="store_true", help="also time Debian's swtpm (libtpms)")
    args = parser.parse_args()
    engine = Engine()
    engine.execute(STARTUP)
    ours = bench(engine, args.rounds)
    report("vtpm-cuse engine, in process", ours)
    if args.swtpm:
        from support.swtpm_oracle import SwtpmOracle

        oracle = SwtpmOracle()
        try:
            oracle.execute(STARTUP)
            theirs = bench(oracle, args.rounds)
        finally:
            oracle.close()
        report("swtpm (libtpms), over its socket", theirs)
        compare(ours, theirs)


if __name__ == "__main__":
    main()
