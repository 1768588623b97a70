"""Known-answer vectors for seed-derived RSA keys: they must never change.

A primary key is a deterministic function of its hierarchy's seed and the
template, and users' state depends on the exact key (an EK certificate
certifies one modulus).  These vectors were recorded from the pure-Python
prime search before it was made faster; every later implementation must
derive the same primes from the same stream, draw for draw.

* ``RSA_PRIMES``: :func:`rsa_primes` over fixed :class:`KdfStream` inputs --
  SHA-256 of p || q and how many requests the search made of the stream (the
  draws after it, such as seedValue, depend on that count).
* ``PRIMARY_KEYS``: TPM2_CreatePrimary on an engine whose RNG (and so whose
  seeds) is a fixed function -- SHA-256 of the public area, of the stored
  prime and of seedValue -- for the owner, endorsement (the TCG EK template)
  and platform hierarchies.  Each is asked twice, so a repeated (cached)
  CreatePrimary is checked too.

Run ``python tests/test_key_derivation_vectors.py`` to print the current values.
"""

from __future__ import annotations

import hashlib
from math import gcd

import pytest

from support.object_templates import FIXED_TPM, create_primary_cmd, rsa_template
from support.tpm_client import Response, command, u32
from vtpm_cuse.tpm.constants import TPM_ALG, TPM_CC, TPM_RH
from vtpm_cuse.tpm.crypto.kdf import KdfStream
from vtpm_cuse.tpm.crypto.primes import random_prime, rsa_primes
from vtpm_cuse.tpm.engine import Engine

STARTUP_CLEAR = bytes.fromhex("80010000000c000001440000")
LABEL = b"Primary Object Creation"

# The TCG EK Credential Profile's RSA-2048 template (L-1): fixedTPM, fixedParent,
# sensitiveDataOrigin, adminWithPolicy, restricted, decrypt; PolicySecret(TPM_RH_ENDORSEMENT).
EK_ATTRS = FIXED_TPM | (1 << 4) | (1 << 5) | (1 << 7) | (1 << 16) | (1 << 17)
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")


def deterministic_random(seed: bytes):
    counter = [0]

    def random(n: int) -> bytes:
        out = b""
        while len(out) < n:
            counter[0] += 1
            out += hashlib.sha256(seed + counter[0].to_bytes(8, "big")).digest()
        return out[:n]

    return random


# (hash, key, contextU, contextV, key bits, exponent) -> (sha256(p || q), stream requests)
PRIMES_INPUTS = {
    "sha256-1024-a": (TPM_ALG.SHA256, bytes(range(32)), b"template-a", b"", 1024, 65537),
    "sha256-1024-b": (TPM_ALG.SHA256, b"\xff" * 64, b"template-b", b"data", 1024, 65537),
    "sha1-1024": (TPM_ALG.SHA1, b"seed", b"", b"", 1024, 65537),
    "sha256-2048-a": (TPM_ALG.SHA256, bytes(range(64)), b"template-a", b"", 2048, 65537),
    "sha384-2048": (TPM_ALG.SHA384, bytes(range(48)), b"template-c", b"x", 2048, 65537),
    "sha256-2048-e": (TPM_ALG.SHA256, b"other seed", b"template-d", b"", 2048, 65539),
    "sha256-3072-a": (TPM_ALG.SHA256, bytes(range(64)), b"template-a", b"", 3072, 65537),
    "sha512-3072": (TPM_ALG.SHA512, b"\x5a" * 64, b"template-e", b"", 3072, 65537),
}

RSA_PRIMES = {
    "sha256-1024-a": ("d92ec89c6d34a7f4d0aab931ff36aa8fcceb9c89bedde565a08100047e3aee8b", 21),
    "sha256-1024-b": ("a97fafcf298150790a3b95c6ee0481d441c9802ab7ea865effcaae3135d44f0e", 88),
    "sha1-1024": ("e84c472836921b0a90ffe5aecd11f0f5a53c096f229dec383e13bb58b8580b69", 63),
    "sha256-2048-a": ("ab102c52eec5019f9db54db9cf0b2ce190b82539a9bea544bcbc3378e93395ce", 189),
    "sha384-2048": ("1d51a2c9d8a1a4e391ee54323ab94154ee458d2f4bfb65fa59bb30130a41f009", 25),
    "sha256-2048-e": ("425c9b71a72d78b728b7eb4f461a28605c20a7a90f9fd1e6c4a2efe27e8ab207", 46),
    "sha256-3072-a": ("c4872ed9d9a6998f541c6e8df7d9df72ce3fe95b5b3ff600aa9deddd8510f6b0", 129),
    "sha512-3072": ("2016da4d07c7e46e5053bb8cc9bb334772d5ac2613d6d6af3122a2ff937bcfd0", 77),
}

# (engine seed, hierarchy, template) -> (sha256(public), sha256(prime), sha256(seedValue))
PRIMARY_INPUTS = {
    "owner-srk": (b"vectors-1", TPM_RH.OWNER, rsa_template()),
    "owner-unique": (b"vectors-1", TPM_RH.OWNER, rsa_template(unique=b"\x00\x00\x00\x07")),
    "owner-other-seed": (b"vectors-2", TPM_RH.OWNER, rsa_template()),
    "endorsement-ek": (
        b"vectors-1",
        TPM_RH.ENDORSEMENT,
        rsa_template(EK_ATTRS, policy=EK_POLICY, unique=bytes(256)),
    ),
    "platform": (b"vectors-3", TPM_RH.PLATFORM, rsa_template()),
}

PRIMARY_KEYS = {
    "owner-srk": (
        "94afd5ead0a7ff9e2a71e2ca9d525287e999ef7caf18e3198e6761af7df2b9c0",
        "0a2fa2854d27c3ee995ff4e739f0a284f11a0e29ade875eaa2a6860349eceb11",
        "0fa51edae5ce692622f9772ff758f3e48f38d126f5f99cf242f74a365ab18247",
    ),
    "owner-unique": (
        "3f29298a6e3ecf88e01eaf607b90d69621b85db374be6a5cd3049bf1103f399c",
        "a9150fa21464e363aeca1b95463ea0ab2a0bb307e1c2457e9289b1a8c9a6accf",
        "9dcb1542f4e7f48c99f8ed0bb2bd2450ee6778cebe09efd5684a93ebd4fad601",
    ),
    "owner-other-seed": (
        "b677e127b2333ed0b446b83498becaa2ee496f7ccee23747af797b8621b011e7",
        "d7950827b31868eeef204701f0c18c44f92c5a68de5d33a419feb7ca0f7be9dd",
        "c89eed26b9a57c9d47134a4ffda79b67871e6042532c23854ffc63d0f0558f44",
    ),
    "endorsement-ek": (
        "9c9e95f8c6f146471334e2a25e3cfab7a21441323aa71cb348f8cad56659d042",
        "3a883eff9de9498e1b951e83bba731add06490a615a98592724124a830790df1",
        "89ebc38f32ce9f54fe4276dd209cb409e85689287901c2e3eceefd870856f59c",
    ),
    "platform": (
        "d4335f1dd6e2633c2dc4a895341fb9abeab939c8bef01a14b039f67c4b80e47b",
        "6bb6d2c9bb3a8138ccd7c8e238d4be74d598688c7276600dbe1118b19dfa9966",
        "9612508930040b3951b6366eed5afef4553f238aa1168ffcb0ab2a935420ea2a",
    ),
}


def primes_vector(name: str) -> tuple[str, int]:
    alg, key, context_u, context_v, bits, exponent = PRIMES_INPUTS[name]
    stream = KdfStream(alg, key, LABEL, context_u, context_v)
    p, q = rsa_primes(bits, exponent, stream, lambda: None)
    assert p.bit_length() == q.bit_length() == bits // 2
    half = bits // 16
    return hashlib.sha256(p.to_bytes(half, "big") + q.to_bytes(half, "big")).hexdigest(), stream._requests


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def primary_vector(engine: Engine, hierarchy: int, template) -> tuple[str, str, str]:
    resp = Response(engine.execute(create_primary_cmd(template, hierarchy=hierarchy)))
    assert resp.rc == 0, hex(resp.rc)
    handle = int.from_bytes(resp.raw[10:14], "big")
    obj = engine.volatile.objects.loaded[handle]
    params = resp.params(1)
    assert params[2 : 2 + int.from_bytes(params[:2], "big")] == obj.public  # outPublic is the loaded object's
    engine.execute(command(TPM_CC.FlushContext, u32(handle)))
    return _sha(obj.public), _sha(obj.sensitive), _sha(obj.seed_value)


def fresh_engine(seed: bytes) -> Engine:
    engine = Engine(random=deterministic_random(seed))
    assert Response(engine.execute(STARTUP_CLEAR)).rc == 0
    return engine


@pytest.mark.parametrize("name", sorted(PRIMES_INPUTS))
def test_rsa_primes_known_answers(name):
    assert primes_vector(name) == RSA_PRIMES[name]


@pytest.mark.parametrize("name", sorted(PRIMARY_INPUTS))
def test_create_primary_known_answers(name):
    seed, hierarchy, template = PRIMARY_INPUTS[name]
    engine = fresh_engine(seed)
    assert primary_vector(engine, hierarchy, template) == PRIMARY_KEYS[name]
    # The same command again (a cache, if any, answers it) gives the same key.
    assert primary_vector(engine, hierarchy, template) == PRIMARY_KEYS[name]


def test_ek_modulus_is_pinned():
    """The EK's public area itself, not just its digest, for a reader comparing by eye."""
    seed, hierarchy, template = PRIMARY_INPUTS["endorsement-ek"]
    engine = fresh_engine(seed)
    resp = Response(engine.execute(create_primary_cmd(template, hierarchy=hierarchy)))
    obj = engine.volatile.objects.loaded[int.from_bytes(resp.raw[10:14], "big")]
    assert obj.area.unique.hex() == EK_MODULUS


EK_MODULUS = (
    "c139d6c018c402ea70be971e81a38af79ca3e6f8fa3d71f573a77412b63a041159955f5000b27adcc6e88be25cbd8d0b"
    "ee96df56434959bd9aa606ac11e46a8ec6e35eeea4869f9ec366e2998f073be0f6ce437115a1c68b773cb7597528d4c3"
    "999b69def048b90ef1044b36165d170053bec8bcc9632d92049ebec1124e4084ea5e6f4d114939bce9bed824585afe12"
    "2d54704ef702d2db2ab6a6e3de116ff98acc331bf225448dfe4e746f0012fce530411541ce9fb499c84303c181108e76"
    "f546c7dfb1c2f630620f94c024d2eac58c4ce8991e7b3b27e0e46ae61502c041398b30eccfc1fd1cbf68aca977cf6716"
    "33901601e5b9997153347c76d7ca0c1d"
)


def _reference_random_prime(bits, exponent, random):
    """The search as it was when the vectors were recorded (Python integers, the original sieve)."""
    from vtpm_cuse.tpm.crypto.primes import SIEVE_PRIMES, miller_rabin_rounds

    def probable_prime(n, rounds):
        d, s = n - 1, 0
        while not d & 1:
            d, s = d >> 1, s + 1
        for _ in range(rounds):
            size = (n.bit_length() + 7) // 8 + 8
            x = pow(2 + int.from_bytes(random(size), "big") % (n - 3), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(s - 1):
                x = x * x % n
                if x == n - 1:
                    break
            else:
                return False
        return True

    window, rounds, top = max(1024, bits), miller_rabin_rounds(bits), 3 << (bits - 2)
    while True:
        start = int.from_bytes(random(bits // 8), "big") | top | 1
        alive = bytearray(b"\x01") * window
        for p in SIEVE_PRIMES:
            first = (-(start % p) * ((p + 1) >> 1)) % p
            alive[first::p] = bytes(len(range(first, window, p)))
        index = alive.find(1)
        while index >= 0:
            candidate = start + 2 * index
            if candidate.bit_length() != bits:
                break
            if gcd(candidate - 1, exponent) == 1 and probable_prime(candidate, rounds):
                return candidate
            index = alive.find(1, index + 1)


@pytest.mark.parametrize("bits", [64, 256, 512])
def test_random_prime_matches_the_reference_search(bits):
    """Many streams, small primes (so many candidates and windows): the same prime, the same draws."""
    for i in range(40):
        ours = KdfStream(TPM_ALG.SHA256, b"equivalence", LABEL, bits.to_bytes(2, "big"), i.to_bytes(4, "big"))
        ref = KdfStream(TPM_ALG.SHA256, b"equivalence", LABEL, bits.to_bytes(2, "big"), i.to_bytes(4, "big"))
        assert random_prime(bits, 65537, ours, lambda: None) == _reference_random_prime(bits, 65537, ref)
        assert ours._requests == ref._requests


def test_pure_python_arithmetic_gives_the_same_primes(monkeypatch):
    """Python's integers in place of GMP's: the same keys (only the arithmetic may change)."""
    from vtpm_cuse.tpm.crypto import primes

    expected = primes_vector("sha256-1024-a")
    monkeypatch.setattr(primes, "_mpz", int)
    monkeypatch.setattr(primes, "_powmod", pow)
    assert primes_vector("sha256-1024-a") == expected == RSA_PRIMES["sha256-1024-a"]


@pytest.mark.parametrize("cores", [1, 3])
def test_the_same_primes_on_any_number_of_cores(monkeypatch, cores):
    """Candidates are tested side by side, one per core: how many does not change the keys."""
    from vtpm_cuse.tpm.crypto import primes

    monkeypatch.setattr(primes, "_CORES", primes._Cores(cores))
    for name in ("sha256-1024-b", "sha256-2048-a"):
        assert primes_vector(name) == RSA_PRIMES[name]


def test_a_forked_child_searches_with_its_own_helpers():
    """The helper threads are the parent's; a forked child (which has none of them) must
    start its own instead of waiting for threads that do not exist in it."""
    import os
    import select
    import signal

    expected = primes_vector("sha256-1024-a")  # the helpers now exist in this process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.write(write, repr(primes_vector("sha256-1024-a")).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 60)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        assert ready, "the child's prime search did not finish"
        assert os.read(read, 4096).decode() == repr(expected)
    finally:
        os.close(read)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    print("RSA_PRIMES = {")
    for name in PRIMES_INPUTS:
        print(f"    {name!r}: {primes_vector(name)!r},")
    print("}")
    print("PRIMARY_KEYS = {")
    for name, (seed, hierarchy, template) in PRIMARY_INPUTS.items():
        print(f"    {name!r}: {primary_vector(fresh_engine(seed), hierarchy, template)!r},")
    print("}")
    seed, hierarchy, template = PRIMARY_INPUTS["endorsement-ek"]
    engine = fresh_engine(seed)
    resp = Response(engine.execute(create_primary_cmd(template, hierarchy=hierarchy)))
    print(
        "EK_MODULUS =", repr(engine.volatile.objects.loaded[int.from_bytes(resp.raw[10:14], "big")].area.unique.hex())
    )
