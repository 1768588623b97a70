"""Manufacture a TPM 2.0 state directory, as swtpm_setup does for swtpm.

The engine runs in this process (:class:`~.driver.InProcessTpm`); the sequence and the
log lines follow swtpm_setup 0.7-0.10 for a TPM 2:

1. TPM2_Startup(CLEAR) on a fresh engine (``--reconfigure``: on the stored state),
2. optionally a storage primary key at 0x81000001 (``--create-spk``),
3. the RSA EK then the ECC EK (``--createek``), each made persistent; a non-standard
   (``--allow-signing``) EK's template is written to its template index,
4. their certificates, and after the RSA one the platform certificate, each written to
   its NV index and, with ``--lock-nvram``, write-locked for good (TPMA_NV_WRITEDEFINE),
5. TPM2_PCR_Allocate of ``--pcr-banks`` (effective from the next power-on),
6. TPM2_Shutdown(CLEAR) and the permanent state written to ``tpm2-00.permall``.
"""

from __future__ import annotations

import datetime
import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .. import localca
from ..state import DirectoryStore, StateError, StateKey, StateKind
from ..tpm import types as T
from ..tpm.algorithms import HASHES
from ..tpm.constants import (
    IMPLEMENTATION_PCR,
    MAX_NV_BUFFER_SIZE,
    TPM_ALG,
    TPM_CAP,
    TPM_CC,
    TPM_ECC_CURVE,
    TPM_PT,
    TPM_RH,
    TPM_SU,
    TPMA_OBJECT,
)
from ..tpm.engine import Engine
from .config import DEFAULT_PLATFORM, load_setup_config
from .driver import InProcessTpm, TpmCommandError
from .ek import EK_CERT_NV_ATTRIBUTES, PLATFORM_CERT_INDEX, EkKind, EkSpec, ek_spec, ek_template

__all__ = ["SetupError", "SetupLog", "SetupRequest", "StateExists", "bank_names", "manufacture"]

#: swtpm_setup's storage primary key handle (--create-spk).
SPK_HANDLE = 0x81000001
#: PCR bank names as swtpm_setup spells them, to hash algorithm ids.
BANKS = {"sha1": TPM_ALG.SHA1, "sha256": TPM_ALG.SHA256, "sha384": TPM_ALG.SHA384, "sha512": TPM_ALG.SHA512}
if TPM_ALG.SM3_256 in HASHES:
    BANKS["sm3-256"] = TPM_ALG.SM3_256


class SetupError(Exception):
    """Manufacturing failed; the message is the log line."""


class StateExists(SetupError):
    """State exists and neither --overwrite nor --not-overwrite was given."""


class SetupLog:
    """swtpm_setup's log: appended to ``--logfile``, else info to stdout and errors to stderr."""

    def __init__(self, path: Path | None, out: Callable[[str], None], err: Callable[[str], None]) -> None:
        self.path = path
        self._out = out
        self._err = err

    def _write(self, line: str, fallback: Callable[[str], None]) -> None:
        if self.path is None:
            fallback(line)
            return
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def info(self, line: str) -> None:
        self._write(line, self._out)

    def error(self, line: str) -> None:
        self._write(line, self._err)


@dataclass(frozen=True)
class SetupRequest:
    state_dir: Path
    vmid: str | None = None
    create_ek: bool = False
    ek_cert: bool = False
    platform_cert: bool = False
    lock_nvram: bool = False
    create_spk: bool = False
    ecc_spk: bool = False
    allow_signing: bool = False
    decryption: bool = False
    rsa_keysize: int = 2048
    pcr_banks: str = "sha256"
    overwrite: bool = False
    not_overwrite: bool = False
    reconfigure: bool = False
    write_ek_cert_files: Path | None = None
    display: bool = False
    file_key: StateKey | None = None
    state_mode: int = 0o600
    #: None: the configuration's defaults (:func:`.config.load_setup_config`).
    localca: localca.LocalCaConfig | None = None
    platform: localca.PlatformInfo | None = None


def bank_names() -> list[str]:
    return [name for name, alg in BANKS.items() if alg in HASHES]


def _now() -> str:
    return datetime.datetime.now().astimezone().strftime("%a %d %b %Y %I:%M:%S %p %Z")


def _identity() -> str:
    """``user:group`` of this process, numeric where the name is unknown (swtpm_setup's log)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    try:
        group = grp.getgrgid(os.getgid()).gr_name
    except KeyError:
        group = str(os.getgid())
    return f"{user}:{group}"


def tpm_info(tpm: InProcessTpm) -> localca.TpmInfo:
    """The EK certificate's TPM fields, from the fixed properties the TPM reports
    (TPM2_GetCapability), formatted as swtpm_setup passes them to its CA."""
    reply = tpm.call(
        TPM_CC.GetCapability, capability=TPM_CAP.TPM_PROPERTIES, property=TPM_PT.FAMILY_INDICATOR, propertyCount=64
    )
    props = {p.property: p.value for p in reply.fields.capabilityData.data}
    vendor = (TPM_PT.VENDOR_STRING_1, TPM_PT.VENDOR_STRING_2, TPM_PT.VENDOR_STRING_3, TPM_PT.VENDOR_STRING_4)
    model = b"".join(props[p].to_bytes(4, "big") for p in vendor).rstrip(b"\0").decode(errors="replace")
    family = props[TPM_PT.FAMILY_INDICATOR].to_bytes(4, "big").rstrip(b"\0").decode(errors="replace")
    return localca.TpmInfo(
        manufacturer=f"id:{props[TPM_PT.MANUFACTURER]:08X}",
        model=model,
        version=f"id:{props[TPM_PT.FIRMWARE_VERSION_1]:08X}",
        spec_family=family,
        spec_level=props[TPM_PT.LEVEL],
        spec_revision=props[TPM_PT.REVISION],
    )


def public_key_of(area) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The ``cryptography`` key of an RSA or NIST P-384 TPMT_PUBLIC."""
    if area.type == TPM_ALG.RSA:
        exponent = area.parameters.exponent or 65537
        return rsa.RSAPublicNumbers(exponent, int.from_bytes(area.unique, "big")).public_key()
    x, y = (int.from_bytes(c, "big") for c in (area.unique.x, area.unique.y))
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP384R1()).public_key()


def _key_description(spec: EkSpec) -> str:
    return {EkKind.RSA2048: "rsa2048", EkKind.RSA3072: "rsa3072", EkKind.ECC384: "secp384r1"}[spec.kind]


class Manufacturer:
    """One manufacturing run over an engine."""

    def __init__(self, request: SetupRequest, log: SetupLog, engine: Engine) -> None:
        self.req = request
        self.log = log
        self.tpm = InProcessTpm(engine)
        self._ca: localca.LocalCa | None = None

    @property
    def ca(self) -> localca.LocalCa:
        if self._ca is None:
            self._ca = localca.LocalCa.open(self.req.localca or load_setup_config(None).localca)
        return self._ca

    def run(self) -> None:
        self.tpm.call(TPM_CC.Startup, startupType=TPM_SU.CLEAR)
        if not self.req.reconfigure:
            if self.req.create_spk:
                self.create_spk()
            if self.req.create_ek:
                rsa_kind = EkKind.RSA2048 if self.req.rsa_keysize == 2048 else EkKind.RSA3072
                self.create_ek(ek_spec(rsa_kind), with_platform_cert=self.req.platform_cert)
                self.create_ek(ek_spec(EkKind.ECC384), with_platform_cert=False)
        self.activate_pcr_banks()
        self.tpm.call(TPM_CC.Shutdown, shutdownType=TPM_SU.CLEAR)

    # --- keys ---------------------------------------------------------------------------
    def _create_primary(self, hierarchy: int, template) -> tuple[int, object]:
        reply = self.tpm.call(
            TPM_CC.CreatePrimary,
            hierarchy,
            inSensitive=T.TPMS_SENSITIVE_CREATE(userAuth=b"", data=b""),
            inPublic=template,
            outsideInfo=b"",
            creationPCR=[],
        )
        return reply.handles[0], reply.fields.outPublic

    def _persist(self, transient: int, persistent: int) -> None:
        self.tpm.call(TPM_CC.EvictControl, TPM_RH.OWNER, transient, persistentHandle=persistent)
        self.tpm.call(TPM_CC.FlushContext, flushHandle=transient)

    def create_spk(self) -> None:
        attrs = (
            TPMA_OBJECT.fixedTPM
            | TPMA_OBJECT.fixedParent
            | TPMA_OBJECT.sensitiveDataOrigin
            | TPMA_OBJECT.userWithAuth
            | TPMA_OBJECT.noDA
            | TPMA_OBJECT.restricted
            | TPMA_OBJECT.decrypt
        )
        aes = T.TPMT_SYM_DEF_OBJECT_PLUS(algorithm=TPM_ALG.AES, keyBits=128, mode=TPM_ALG.CFB)
        if self.req.ecc_spk:
            params = T.TPMS_ECC_PARMS(
                symmetric=aes,
                scheme=T.TPMT_ECC_SCHEME(scheme=TPM_ALG.NULL, details=None),
                curveID=TPM_ECC_CURVE.NIST_P256,
                kdf=T.TPMT_KDF_SCHEME(scheme=TPM_ALG.NULL, details=None),
            )
            unique, alg, what = T.TPMS_ECC_POINT(x=b"", y=b""), TPM_ALG.ECC, "ECC"
        else:
            params = T.TPMS_RSA_PARMS(
                symmetric=aes,
                scheme=T.TPMT_RSA_SCHEME(scheme=TPM_ALG.NULL, details=None),
                keyBits=self.req.rsa_keysize,
                exponent=0,
            )
            unique, alg, what = b"", TPM_ALG.RSA, f"RSA {self.req.rsa_keysize}"
        template = T.TPMT_PUBLIC(
            type=alg,
            nameAlg=TPM_ALG.SHA256,
            objectAttributes=int(attrs),
            authPolicy=b"",
            parameters=params,
            unique=unique,
        )
        handle, _ = self._create_primary(TPM_RH.OWNER, template)
        self._persist(handle, SPK_HANDLE)
        self.log.info(f"Successfully created {what} storage primary key with handle 0x{SPK_HANDLE:x}.")

    def create_ek(self, spec: EkSpec, *, with_platform_cert: bool) -> None:
        nonstandard = self.req.allow_signing
        template = ek_template(spec, allow_signing=nonstandard, decryption=self.req.decryption)
        handle, public = self._create_primary(TPM_RH.ENDORSEMENT, template)
        self._persist(handle, spec.handle)
        label = spec.kind.value
        self.log.info(f"Successfully created {label} EK with handle 0x{spec.handle:x}.")
        if nonstandard:
            self.write_nv(spec.template_index, T.TPMT_PUBLIC.pack(template))
            self.log.info(f"Successfully created NVRAM area 0x{spec.template_index:x} for {label} EK template.")
        if not self.req.ek_cert and not with_platform_cert:
            return
        key = public_key_of(public)
        subject = self.req.vmid or "unknown"
        certs: list[tuple[int, bytes, str]] = []
        if self.req.ek_cert:
            cert = self.ca.issue_ek_cert(key, subject, tpm_info(self.tpm), signing=nonstandard)
            self.log.info("Successfully created EK certificate locally.")
            certs.append((spec.cert_index, cert, f"{label} EK certificate"))
            if self.req.write_ek_cert_files is not None:
                self._write_cert_file(f"ek-{_key_description(spec)}.crt", cert)
        if with_platform_cert:
            cert = self.ca.issue_platform_cert(key, subject, self.req.platform or DEFAULT_PLATFORM)
            self.log.info("Successfully created platform certificate locally.")
            certs.append((PLATFORM_CERT_INDEX, cert, "platform certificate"))
        for index, cert, what in certs:
            self.write_nv(index, cert)
            self.log.info(f"Successfully created NVRAM area 0x{index:x} for {what}.")

    def _write_cert_file(self, name: str, cert: bytes) -> None:
        path = self.req.write_ek_cert_files / name
        path.write_bytes(cert)

    # --- NV -------------------------------------------------------------------------------
    def write_nv(self, index: int, data: bytes) -> None:
        """Define a platform index of exactly ``len(data)`` bytes, write it, lock it if asked."""
        public = T.TPMS_NV_PUBLIC(
            nvIndex=index,
            nameAlg=TPM_ALG.SHA256,
            attributes=int(EK_CERT_NV_ATTRIBUTES),
            authPolicy=b"",
            dataSize=len(data),
        )
        self.tpm.call(TPM_CC.NV_DefineSpace, TPM_RH.PLATFORM, auth=b"", publicInfo=public)
        for offset in range(0, len(data), MAX_NV_BUFFER_SIZE):
            chunk = data[offset : offset + MAX_NV_BUFFER_SIZE]
            self.tpm.call(TPM_CC.NV_Write, TPM_RH.PLATFORM, index, data=chunk, offset=offset)
        if self.req.lock_nvram:
            self.tpm.call(TPM_CC.NV_WriteLock, TPM_RH.PLATFORM, index)

    # --- PCR banks ------------------------------------------------------------------------
    def activate_pcr_banks(self) -> None:
        if self.req.pcr_banks.strip() == "-":
            return
        wanted = [b.strip() for b in self.req.pcr_banks.split(",") if b.strip()]
        available = bank_names()
        unknown = [b for b in wanted if b not in available]
        if unknown or not wanted:
            raise SetupError(
                f"Unsupported PCR bank(s) {','.join(unknown) or '(none)'}; available: {','.join(available)}"
            )
        all_pcrs = bytes([0xFF] * (IMPLEMENTATION_PCR // 8))
        selection = [
            T.TPMS_PCR_SELECTION(hash=BANKS[name], pcrSelect=all_pcrs if name in wanted else bytes(len(all_pcrs)))
            for name in available
        ]
        reply = self.tpm.call(TPM_CC.PCR_Allocate, TPM_RH.PLATFORM, pcrAllocation=selection)
        if not reply.fields.allocationSuccess:
            raise SetupError(f"TPM2_PCR_Allocate refused the PCR banks {','.join(wanted)}")
        active = [name for name in available if name in wanted]
        self.log.info(f"Successfully activated PCR banks {','.join(active)} among {','.join(available)}.")


def manufacture(request: SetupRequest, log: SetupLog) -> bool:
    """Author the state in ``request.state_dir``; False when existing state was kept
    (``--not-overwrite``).  Raises :class:`SetupError` (already logged) on failure."""
    state_dir = request.state_dir
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise SetupError(f"Cannot create TPM state directory {state_dir}: {e.strerror}") from None
    store = DirectoryStore(state_dir, mode=request.state_mode, file_key=request.file_key)
    exists = store.exists(StateKind.PERMANENT)
    if request.reconfigure:
        if not exists:
            raise SetupError(f"Cannot reconfigure: no TPM state in {state_dir}.")
    elif exists:
        if request.not_overwrite:
            log.info("Not overwriting existing state file.")
            return False
        if not request.overwrite:
            raise StateExists(f"Found existing TPM state '{store.path_for(StateKind.PERMANENT)}'.")
    what = "reconfiguration" if request.reconfigure else "manufacturing"
    log.info(f"Starting vTPM {what} as {_identity()} @ {_now()}")
    try:
        with store:
            store.lock()
            if request.reconfigure:
                engine = Engine.from_blobs(store.load(StateKind.PERMANENT))
            else:
                for kind in StateKind:
                    store.delete(kind)
                engine = Engine()
            Manufacturer(request, log, engine).run()
            store.store(StateKind.PERMANENT, engine.permanent_blob())
    except TpmCommandError as e:
        raise SetupError(f"{e}. Authoring the TPM state failed.") from None
    except localca.LocalCaError as e:
        raise SetupError(f"{e}. Authoring the TPM state failed.") from None
    except StateError as e:
        raise SetupError(f"{e}. Authoring the TPM state failed.") from None
    except OSError as e:
        raise SetupError(f"{e.strerror}: {e.filename}. Authoring the TPM state failed.") from None
    log.info("Successfully authored TPM state.")
    log.info(f"Ending vTPM {what} @ {_now()}")
    return True
