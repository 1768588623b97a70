"""Credential structures (Part 2, clause 12.4: TPMS_ID_OBJECT, TPM2B_ID_OBJECT).

A credential blob is kept as the octets of its TPMS_ID_OBJECT (integrityHMAC as a
TPM2B_DIGEST, then encIdentity without a size of its own): the encrypted part's
length is whatever follows the HMAC, so it is parsed by
:func:`~vtpm_cuse.tpm.protection.credential_to_secret`, not unmarshalled here.
The duplication commands need no new structure: their blobs are TPM2B_PRIVATE and
their seeds TPM2B_ENCRYPTED_SECRET.
"""

from __future__ import annotations

from ..constants import MAX_DIGEST_SIZE
from ..marshal import Sized

__all__ = ["MAX_ID_OBJECT_SIZE", "TPM2B_ID_OBJECT"]

#: sizeof(TPMS_ID_OBJECT): two TPM2B_DIGESTs (integrityHMAC and encIdentity).
MAX_ID_OBJECT_SIZE = 2 * (2 + MAX_DIGEST_SIZE)
TPM2B_ID_OBJECT = Sized("TPM2B_ID_OBJECT", MAX_ID_OBJECT_SIZE)
