"""Symmetric block-cipher modes as TPM2_EncryptDecrypt uses them, with the IV chaining,
and the MACs of TPM2_MAC (HMAC, CMAC).

A caller encrypting a long message in several TPM2_EncryptDecrypt calls feeds
each call's ivOut into the next call's ivIn, so ivOut must be exactly the
state the mode carries into the next block (Part 3, TPM2_EncryptDecrypt;
Part 1, "Symmetric Encryption"):

* CBC and CFB: the last ciphertext block;
* CTR: the counter of the next block (ivIn plus the number of blocks, big-endian,
  modulo 2**128);
* OFB: the last keystream block;
* ECB: no IV at all (the Empty Buffer in and out).

For a CFB message that ends inside a block the next IV is the partial
ciphertext followed by the rest of the last keystream block (the state
OpenSSL's CFB-128 keeps, which is what libtpms returns); chaining across such
a call is not meaningful, but the value is deterministic and matches the
reference TPM as it is built by Debian.

Only ``cryptography`` primitives are used; keys never appear in a repr or log.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

try:  # cryptography >= 43 keeps CFB and OFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB, OFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB, OFB

from .algorithms import hash_alg
from .constants import TPM_ALG

#: AES block size in octets (the only block cipher this TPM implements).
AES_BLOCK_SIZE = 16
#: The counter of CTR mode is the whole block, incremented modulo 2**(8 * AES_BLOCK_SIZE).
_COUNTER_MODULUS = 1 << (8 * AES_BLOCK_SIZE)
#: Modes that need an input length that is a whole number of blocks.
BLOCK_ALIGNED_MODES = frozenset({TPM_ALG.CBC, TPM_ALG.ECB})


def iv_size(mode: int) -> int:
    """The size an ivIn must have for ``mode``: none for ECB, one block otherwise."""
    return 0 if mode == TPM_ALG.ECB else AES_BLOCK_SIZE


def _cipher_mode(mode: int, iv: bytes) -> modes.Mode:
    if mode == TPM_ALG.CFB:
        return CFB(iv)
    if mode == TPM_ALG.CBC:
        return modes.CBC(iv)
    if mode == TPM_ALG.CTR:
        return modes.CTR(iv)
    if mode == TPM_ALG.OFB:
        return OFB(iv)
    if mode == TPM_ALG.ECB:
        return modes.ECB()
    raise ValueError(f"mode 0x{mode:04x} is not a block-cipher mode")


def _run(key: bytes, mode: int, iv: bytes, data: bytes, decrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(key), _cipher_mode(mode, iv))
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(data) + ctx.finalize()


def _aes_block(key: bytes, block: bytes) -> bytes:
    """E_K(block): one raw AES block encryption."""
    return _run(key, TPM_ALG.ECB, b"", block, decrypt=False)


def _blocks(length: int) -> int:
    return -(-length // AES_BLOCK_SIZE)


def _next_iv(key: bytes, mode: int, iv: bytes, ciphertext: bytes) -> bytes:
    """The IV that continues the stream after ``ciphertext`` (see the module docstring)."""
    if mode == TPM_ALG.ECB:
        return b""
    if not ciphertext:
        return iv
    if mode == TPM_ALG.CTR:
        counter = (int.from_bytes(iv, "big") + _blocks(len(ciphertext))) % _COUNTER_MODULUS
        return counter.to_bytes(AES_BLOCK_SIZE, "big")
    if mode == TPM_ALG.OFB:
        # The keystream is the OFB encryption of zeros; its last whole block is the state.
        keystream = _run(key, TPM_ALG.OFB, iv, bytes(_blocks(len(ciphertext)) * AES_BLOCK_SIZE), decrypt=False)
        return keystream[-AES_BLOCK_SIZE:]
    tail = len(ciphertext) % AES_BLOCK_SIZE
    if tail == 0:  # CBC always, CFB on a block boundary
        return ciphertext[-AES_BLOCK_SIZE:]
    whole = ciphertext[:-tail]
    previous = whole[-AES_BLOCK_SIZE:] if whole else iv
    return ciphertext[-tail:] + _aes_block(key, previous)[tail:]


def encrypt_decrypt(key: bytes, mode: int, iv: bytes, data: bytes, decrypt: bool) -> tuple[bytes, bytes]:
    """(outData, ivOut) of one TPM2_EncryptDecrypt call.

    The caller has checked the IV size and, for CBC/ECB, the block alignment.
    """
    out = _run(key, mode, iv, data, decrypt) if data else b""
    ciphertext = data if decrypt else out
    return out, _next_iv(key, mode, iv, ciphertext)


class Cmac:
    """AES-CMAC (NIST SP 800-38B) with the update/digest interface of an ``hmac`` object.

    A MAC sequence (TPM2_MAC_Start) holds one, so HMAC and CMAC sequences are
    fed and finished the same way; ``digest`` leaves the state usable.
    """

    __slots__ = ("_mac",)

    def __init__(self, key: bytes, data: bytes = b"") -> None:
        self._mac = cmac.CMAC(algorithms.AES(bytes(key)))
        self._mac.update(bytes(data))

    def update(self, data: bytes) -> None:
        self._mac.update(bytes(data))

    def digest(self) -> bytes:
        return self._mac.copy().finalize()


def new_mac(alg: int, key: bytes, data: bytes = b""):
    """A MAC over ``data`` that can be fed more: CMAC for TPM_ALG_CMAC, else HMAC with hash ``alg``."""
    if alg == TPM_ALG.CMAC:
        return Cmac(key, data)
    return hmac.new(key, data, hash_alg(alg).hashlib_name)


def symmetric_unique(name_alg: int, seed_value: bytes, key: bytes) -> bytes:
    """The ``unique`` of a symmetric or keyed-hash object: H_nameAlg(seedValue || key).

    It names the key without revealing it; an object loaded from outside must carry
    exactly this value, or its public and private parts are not bound (TPM_RC_BINDING).
    """
    return hash_alg(name_alg).digest(seed_value + key)
