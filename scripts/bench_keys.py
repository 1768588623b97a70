#!/usr/bin/env python3
"""Key generation time, in process: TPM2_CreatePrimary and TPM2_Create per key type.

Prime search is pure Python (so CANCEL_TPM_CMD can stop it), which makes RSA
the slow case; its time varies a lot from key to key because the distance to
the next prime does.  Each round uses a different template ``unique`` so every
primary key is a new one.  ``--swtpm`` adds Debian's swtpm (libtpms, C) for
scale, measured over its socket.
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
            f"  {label:26s} {statistics.median(values):7.3f} {statistics.mean(values):7.3f} "
            f"{min(values):7.3f} {max(values):7.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--swtpm", action="store_true", help="also time Debian's swtpm (libtpms)")
    args = parser.parse_args()
    engine = Engine()
    engine.execute(STARTUP)
    report("vtpm-cuse engine, in process", bench(engine, args.rounds))
    if args.swtpm:
        from support.swtpm_oracle import SwtpmOracle

        oracle = SwtpmOracle()
        try:
            oracle.execute(STARTUP)
            report("swtpm (libtpms), over its socket", bench(oracle, args.rounds))
        finally:
            oracle.close()


if __name__ == "__main__":
    main()
