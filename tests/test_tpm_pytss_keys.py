"""The key-use commands through tpm2-pytss's ESAPI against a running ``vtpm-cuse socket``.

tpm2-pytss marshals every command and unmarshals every response with tpm2-tss's own C
code (and checks the response HMACs of its sessions), not with ours; every result is then
checked outside the TPM: signatures with ``cryptography``, HMACs with Python's ``hmac``,
encryption by round trips and by the same operation done in software.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 43 keeps CFB among the "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB

from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_RC, TPM2_RH, TPM2_SE, TPM2_ST, TPMA_SESSION
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.types import (
    TPM2B_ECC_POINT,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMS_ECC_POINT,
    TPMS_SENSITIVE_CREATE,
    TPMT_RSA_DECRYPT,
    TPMT_SIG_SCHEME,
    TPMT_SIGNATURE,
    TPMT_TK_HASHCHECK,
)
from tpm2_pytss.utils import make_credential

from support.pytss_esys import module_esys_fixtures

STORAGE = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda"
SIGNING = "sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"
DECRYPTING = "decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth"
CALLER_KEY = "fixedtpm|fixedparent|userwithauth"  # the caller supplies the sensitive data
DIGEST = hashlib.sha256(b"signed through tpm2-pytss").digest()
HMAC_KEY = b"an HMAC key the test knows, 32B"
AES_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
SECRET = b"sealed through ESAPI"


daemon, esys = module_esys_fixtures()


@pytest.fixture
def flush(esys):
    """Flush every handle passed to it at the end of the test."""
    handles: list[ESYS_TR] = []

    def keep(handle: ESYS_TR) -> ESYS_TR:
        handles.append(handle)
        return handle

    yield keep
    for handle in reversed(handles):
        esys.flush_context(handle)


def sensitive(auth: bytes = b"", data: bytes = b"") -> TPM2B_SENSITIVE_CREATE:
    return TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=auth, data=data))


@pytest.fixture(scope="module")
def srk(esys):
    """An ECC P-256 storage primary under the owner hierarchy."""
    template = TPM2B_PUBLIC.parse("ecc256:aes128cfb", objectAttributes=STORAGE)
    handle, public, _, _, _ = esys.create_primary(sensitive(), template, ESYS_TR.OWNER)
    yield handle, public
    esys.flush_context(handle)


def child(esys, flush, parent: ESYS_TR, spec: str, attrs: str, auth: bytes = b"", data: bytes = b""):
    """Create and load ``spec`` under ``parent``: (handle, TPM2B_PUBLIC)."""
    template = TPM2B_PUBLIC.parse(spec, objectAttributes=attrs)
    private, public, _, _, _ = esys.create(parent, sensitive(auth, data), template)
    handle = flush(esys.load(parent, private, public))
    if auth:
        esys.tr_set_auth(handle, auth)
    return handle, public


def rsa_key(public: TPM2B_PUBLIC) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(public.to_pem())
    assert isinstance(key, rsa.RSAPublicKey)
    return key


def ecc_key(public: TPM2B_PUBLIC) -> ec.EllipticCurvePublicKey:
    point = public.publicArea.unique.ecc
    x, y = int.from_bytes(bytes(point.x), "big"), int.from_bytes(bytes(point.y), "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()  # raises if off the curve


def scheme(alg: int, hash_alg: int = TPM2_ALG.SHA256) -> TPMT_SIG_SCHEME:
    s = TPMT_SIG_SCHEME(scheme=alg)
    s.details.any.hashAlg = hash_alg
    return s


def null_ticket() -> TPMT_TK_HASHCHECK:
    return TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)


def rc_of(exc: TSS2_Exception) -> int:
    """The TPM's response code without the handle/parameter/session number."""
    rc = int(exc.rc) & 0xFFFF
    return rc & 0xBF if rc & 0x80 else rc


# --- primaries -----------------------------------------------------------------------------


def test_create_primary_ecc_and_rsa_storage(esys, flush):
    for spec, check in (("ecc256:aes128cfb", ecc_key), ("rsa2048:aes128cfb", rsa_key)):
        template = TPM2B_PUBLIC.parse(spec, objectAttributes=STORAGE)
        first, public, creation_data, creation_hash, ticket = esys.create_primary(sensitive(), template)
        flush(first)
        key = check(public)
        if spec.startswith("rsa"):
            assert key.key_size == 2048 and key.public_numbers().e == 65537
        assert public.publicArea.nameAlg == TPM2_ALG.SHA256
        assert hashlib.sha256(creation_data.marshal()[2:]).digest() == bytes(creation_hash)
        assert ticket.tag == TPM2_ST.CREATION
        # A primary is derived from the hierarchy seed: the same template, the same key.
        second, again, _, _, _ = esys.create_primary(sensitive(), template)
        flush(second)
        assert again.marshal() == public.marshal()
        assert bytes(esys.tr_get_name(first)) == bytes(esys.tr_get_name(second)) == bytes(public.get_name())


# --- signing -------------------------------------------------------------------------------


def test_rsassa_sign_and_verify(esys, flush, srk):
    handle, public = child(esys, flush, srk[0], "rsa2048:rsassa-sha256", SIGNING)
    signature = esys.sign(handle, DIGEST, scheme(TPM2_ALG.RSASSA), null_ticket())
    assert signature.sigAlg == TPM2_ALG.RSASSA and signature.signature.rsassa.hash == TPM2_ALG.SHA256
    sig = bytes(signature.signature.rsassa.sig)
    rsa_key(public).verify(sig, DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    ticket = esys.verify_signature(handle, DIGEST, signature)
    assert ticket.tag == TPM2_ST.VERIFIED
    with pytest.raises(TSS2_Exception) as err:
        esys.verify_signature(handle, hashlib.sha256(b"other").digest(), signature)
    assert rc_of(err.value) == TPM2_RC.SIGNATURE


def test_ecdsa_sign_and_verify(esys, flush, srk):
    handle, public = child(esys, flush, srk[0], "ecc256:ecdsa-sha256", SIGNING)
    signature = esys.sign(handle, DIGEST, scheme(TPM2_ALG.ECDSA), null_ticket())
    assert signature.sigAlg == TPM2_ALG.ECDSA
    ecdsa = signature.signature.ecdsa
    r, s = int.from_bytes(bytes(ecdsa.signatureR), "big"), int.from_bytes(bytes(ecdsa.signatureS), "big")
    ecc_key(public).verify(encode_dss_signature(r, s), DIGEST, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert esys.verify_signature(handle, DIGEST, signature).tag == TPM2_ST.VERIFIED
    # A signature made outside with a key the TPM loads public-only verifies too.
    outside = ec.generate_private_key(ec.SECP256R1())
    pem = outside.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    loaded = flush(esys.load_external(TPM2B_PUBLIC.from_pem(pem, objectAttributes="sign|userwithauth")))
    r, s = decode_dss_signature(outside.sign(DIGEST, ec.ECDSA(Prehashed(hashes.SHA256()))))
    ecdsa.signatureR, ecdsa.signatureS = r.to_bytes(32, "big"), s.to_bytes(32, "big")
    assert esys.verify_signature(loaded, DIGEST, signature).tag == TPM2_ST.VERIFIED


def test_hmac_sign_verify_and_hmac(esys, flush, srk):
    handle, _ = child(esys, flush, srk[0], "hmac:sha256", CALLER_KEY + "|sign", data=HMAC_KEY)
    signature = esys.sign(handle, DIGEST, scheme(TPM2_ALG.HMAC), null_ticket())
    assert signature.sigAlg == TPM2_ALG.HMAC and signature.signature.hmac.hashAlg == TPM2_ALG.SHA256
    assert bytes(signature.signature.hmac.digest.sha256) == hmac.new(HMAC_KEY, DIGEST, "sha256").digest()
    assert esys.verify_signature(handle, DIGEST, signature).tag == TPM2_ST.VERIFIED
    data = b"HMAC'd through ESAPI" * 50
    assert bytes(esys.hmac(handle, data, TPM2_ALG.SHA256)) == hmac.new(HMAC_KEY, data, "sha256").digest()
    assert bytes(esys.hmac(handle, data, TPM2_ALG.NULL)) == hmac.new(HMAC_KEY, data, "sha256").digest()


def test_load_external_public_only_rsa_verifies_an_outside_signature(esys, flush):
    outside = rsa.generate_private_key(65537, 2048)
    pem = outside.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public = TPM2B_PUBLIC.from_pem(pem, objectAttributes="sign|userwithauth")
    handle = flush(esys.load_external(public, None, ESYS_TR.RH_OWNER))
    assert bytes(esys.tr_get_name(handle)) == bytes(public.get_name())
    read, name, _ = esys.read_public(handle)
    assert read.marshal() == public.marshal() and bytes(name) == bytes(public.get_name())
    sig = outside.sign(DIGEST, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
    signature = TPMT_SIGNATURE(sigAlg=TPM2_ALG.RSASSA)
    signature.signature.rsassa.hash = TPM2_ALG.SHA256
    signature.signature.rsassa.sig = sig
    assert esys.verify_signature(handle, DIGEST, signature).tag == TPM2_ST.VERIFIED


# --- asymmetric encryption -----------------------------------------------------------------


def oaep(hash_alg: int = TPM2_ALG.SHA256) -> TPMT_RSA_DECRYPT:
    s = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.OAEP)
    s.details.oaep.hashAlg = hash_alg
    return s


def test_rsa_oaep_encrypt_and_decrypt(esys, flush, srk):
    handle, public = child(esys, flush, srk[0], "rsa2048", DECRYPTING)
    message = b"a short secret for OAEP"
    label = b"label\0"  # Part 3 RSA_Encrypt: a label ends with its zero octet
    ciphertext = esys.rsa_encrypt(handle, message, oaep(), label)
    assert len(bytes(ciphertext)) == 256
    assert bytes(esys.rsa_decrypt(handle, ciphertext, oaep(), label)) == message
    # Encrypted outside, decrypted by the TPM.
    outside = rsa_key(public).encrypt(message, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), label))
    assert bytes(esys.rsa_decrypt(handle, outside, oaep(), label)) == message
    with pytest.raises(TSS2_Exception):
        esys.rsa_decrypt(handle, outside, oaep(), b"other label\0")
    # Without the terminating zero the label is refused: TPM_RC_VALUE.
    with pytest.raises(TSS2_Exception) as err:
        esys.rsa_encrypt(handle, message, oaep(), b"label")
    assert rc_of(err.value) == TPM2_RC.VALUE
    # RSAES-PKCS1-v1_5 (the key has no scheme, so the command may choose any): encrypted outside.
    pkcs = rsa_key(public).encrypt(message, padding.PKCS1v15())
    assert bytes(esys.rsa_decrypt(handle, pkcs, rsaes(), b"")) == message


def rsaes() -> TPMT_RSA_DECRYPT:
    return TPMT_RSA_DECRYPT(scheme=TPM2_ALG.RSAES)


def test_ecdh_key_gen_and_zgen(esys, flush, srk):
    handle, public = child(esys, flush, srk[0], "ecc256:ecdh-sha256", DECRYPTING)
    z_point, pub_point = esys.ecdh_key_gen(handle)
    assert bytes(esys.ecdh_zgen(handle, pub_point).point.x) == bytes(z_point.point.x)
    # The shared secret with an outside ephemeral key is the x of d_outside * Q_tpm.
    outside = ec.generate_private_key(ec.SECP256R1())
    shared = outside.exchange(ec.ECDH(), ecc_key(public))
    numbers = outside.public_key().public_numbers()
    point = TPM2B_ECC_POINT(TPMS_ECC_POINT(x=numbers.x.to_bytes(32, "big"), y=numbers.y.to_bytes(32, "big")))
    assert bytes(esys.ecdh_zgen(handle, point).point.x) == shared


# --- symmetric -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["ecc192", "ecc224"])
def test_ecdsa_on_the_small_nist_curves(esys, flush, spec):
    curve = {"ecc192": ec.SECP192R1(), "ecc224": ec.SECP224R1()}[spec]
    template = TPM2B_PUBLIC.parse(f"{spec}:ecdsa-sha256", objectAttributes=SIGNING)
    handle, public, _, _, _ = esys.create_primary(sensitive(), template, ESYS_TR.OWNER)
    flush(handle)
    point = public.publicArea.unique.ecc
    key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(bytes(point.x), "big"), int.from_bytes(bytes(point.y), "big"), curve
    ).public_key()
    signature = esys.sign(handle, DIGEST, scheme(TPM2_ALG.ECDSA), null_ticket())
    r, s = (
        int.from_bytes(bytes(v), "big")
        for v in (signature.signature.ecdsa.signatureR, signature.signature.ecdsa.signatureS)
    )
    key.verify(encode_dss_signature(r, s), DIGEST, ec.ECDSA(Prehashed(hashes.SHA256())))
    assert esys.verify_signature(handle, DIGEST, signature).tag == TPM2_ST.VERIFIED


def test_encrypt_decrypt_2_with_an_aes_key(esys, flush, srk):
    handle, _ = child(esys, flush, srk[0], "aes128cfb", CALLER_KEY + "|sign|decrypt", data=AES_KEY)
    iv = bytes(range(16))
    data = b"encrypted by the TPM with a key the test knows" * 3
    ciphertext, iv_out = esys.encrypt_decrypt_2(handle, False, TPM2_ALG.CFB, iv, data)
    encryptor = Cipher(algorithms.AES(AES_KEY), CFB(iv)).encryptor()
    assert bytes(ciphertext) == encryptor.update(data) + encryptor.finalize()
    assert len(bytes(iv_out)) == 16
    plaintext, _ = esys.encrypt_decrypt_2(handle, True, TPM2_ALG.CFB, iv, ciphertext)
    assert bytes(plaintext) == data
    # Chained over two calls.
    first, chained = esys.encrypt_decrypt_2(handle, False, TPM2_ALG.CFB, iv, data[:32])
    second, _ = esys.encrypt_decrypt_2(handle, False, TPM2_ALG.CFB, chained, data[32:])
    assert bytes(first) + bytes(second) == bytes(ciphertext)


# --- sealed data ---------------------------------------------------------------------------


def test_sealed_object_unseals(esys, flush, srk):
    handle, public = child(esys, flush, srk[0], "keyedhash", CALLER_KEY + "|noda", auth=b"pw", data=SECRET)
    assert public.publicArea.type == TPM2_ALG.KEYEDHASH
    assert bytes(esys.unseal(handle)) == SECRET
    # Through a salted HMAC session with an encrypted response: tpm2-tss checks the response
    # HMAC and decrypts outData with its own KDFa and AES-CFB.
    session = esys.start_auth_session(srk[0], ESYS_TR.NONE, TPM2_SE.HMAC, "aes128cfb", TPM2_ALG.SHA256)
    esys.trsess_set_attributes(session, TPMA_SESSION.CONTINUESESSION | TPMA_SESSION.ENCRYPT)
    try:
        assert bytes(esys.unseal(handle, session1=session)) == SECRET
        assert bytes(esys.unseal(handle, session1=session)) == SECRET  # the session continues
    finally:
        esys.flush_context(session)
    esys.tr_set_auth(handle, b"wrong")
    with pytest.raises(TSS2_Exception) as err:
        esys.unseal(handle)
    assert rc_of(err.value) == TPM2_RC.BAD_AUTH


# --- credentials ---------------------------------------------------------------------------


def test_make_and_activate_credential(esys, flush, srk):
    ek_template = TPM2B_PUBLIC.parse("rsa2048:aes128cfb", objectAttributes=STORAGE)
    ek, ek_public, _, _, _ = esys.create_primary(sensitive(), ek_template, ESYS_TR.ENDORSEMENT)
    flush(ek)
    ak, ak_public = child(esys, flush, srk[0], "ecc256:ecdsa-sha256", SIGNING)
    ak_name = esys.tr_get_name(ak)
    assert bytes(ak_name) == bytes(ak_public.get_name())
    credential = b"the credential, 32 octets long!!"
    blob, secret = esys.make_credential(ek, credential, ak_name)
    assert bytes(esys.activate_credential(ak, ek, blob, secret)) == credential
    # The same from software (tpm2-pytss's own MakeCredential, from the EK's public area).
    blob, secret = make_credential(ek_public, b"made outside the TPM", ak_name)
    assert bytes(esys.activate_credential(ak, ek, blob, secret)) == b"made outside the TPM"
