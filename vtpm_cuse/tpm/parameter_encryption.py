"""Session-based parameter encryption (Part 1, clause 21).

Only the data octets of the first parameter are transformed, and only when
that parameter is a size-prefixed buffer; the size field stays in the clear
so the parameter area can still be unmarshalled.  Two schemes exist:

* AES in CFB mode, key and IV from
  KDFa(sessionAlg, sessionValue, "CFB", nonceNewer, nonceOlder, keyBits + blockBits);
* XOR obfuscation with the mask KDFa(sessionAlg, sessionValue, "XOR",
  nonceNewer, nonceOlder, 8 * size), which needs nothing but a hash.

For a command nonceNewer is the caller's nonce and nonceOlder the TPM's;
for a response the other way round.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from .constants import TPM_ALG
from .crypto.kdf import kdfa
from .errors import TPM_RC, TpmError

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

AES_BLOCK_BITS = 128


def _transform(
    symmetric: int,
    key_bits: int,
    auth_hash: int,
    key: bytes,
    data: bytes,
    nonce_newer: bytes,
    nonce_older: bytes,
    encrypt: bool,
) -> bytes:
    if not data:
        return data
    if symmetric == TPM_ALG.XOR:
        mask = kdfa(auth_hash, key, b"XOR", nonce_newer, nonce_older, 8 * len(data))
        return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(len(data), "big")
    if symmetric == TPM_ALG.AES:
        material = kdfa(auth_hash, key, b"CFB", nonce_newer, nonce_older, key_bits + AES_BLOCK_BITS)
        cipher = Cipher(algorithms.AES(material[: key_bits // 8]), CFB(material[key_bits // 8 :]))
        op = cipher.encryptor() if encrypt else cipher.decryptor()
        return op.update(data) + op.finalize()
    raise TpmError(TPM_RC.SYMMETRIC, f"no parameter encryption with algorithm 0x{symmetric:04x}")


def crypt_first_buffer(
    symmetric: int,
    key_bits: int,
    auth_hash: int,
    key: bytes,
    parameters: bytes,
    nonce_newer: bytes,
    nonce_older: bytes,
    encrypt: bool,
) -> bytes:
    """(De/en)crypt the data of the TPM2B that starts ``parameters``; the rest is unchanged.

    A parameter area too short for the size field is TPM_RC_INSUFFICIENT, a
    size beyond the area TPM_RC_SIZE (the caller adds the session number).
    """
    if len(parameters) < 2:
        raise TpmError(TPM_RC.INSUFFICIENT, "no room for the size of the encrypted parameter")
    size = int.from_bytes(parameters[:2], "big")
    if size > len(parameters) - 2:
        raise TpmError(TPM_RC.SIZE, f"encrypted parameter of {size} octets, {len(parameters) - 2} present")
    data = _transform(symmetric, key_bits, auth_hash, key, parameters[2 : 2 + size], nonce_newer, nonce_older, encrypt)
    return parameters[:2] + data + parameters[2 + size :]
