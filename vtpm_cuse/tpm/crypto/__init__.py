"""Cryptographic building blocks the TPM specification defines itself.

The primitives (hashes, HMAC, AES, RSA, ECC) come from hashlib and
``cryptography``; what lives here is what Part 1 specifies on top of them:
the key derivation functions (:mod:`.kdf`), the deterministic random stream
primary keys are generated from, and the prime search for RSA keys
(:mod:`.primes`), which is written in Python so that it can be cancelled.
"""
