"""AES in CFB mode (full-block feedback), the TPM's one symmetric mode for protection:
private blobs, saved contexts, parameter encryption (Part 1, "Symmetric Encryption")."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB


def aes_cfb(key: bytes, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    """Encrypt (or decrypt) ``data`` with AES-CFB; no padding, any length."""
    cipher = Cipher(algorithms.AES(key), CFB(iv))
    worker = cipher.encryptor() if encrypt else cipher.decryptor()
    return worker.update(data) + worker.finalize()
