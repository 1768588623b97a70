"""Primary keys derived ahead, so that a user's first TPM2_CreatePrimary is a cache hit.

Deriving an RSA primary key takes as long as its prime search; the keys real
users ask for first are few and known in advance (:data:`WELL_KNOWN_PRIMARIES`:
the TCG EK Credential Profile's low-range EKs, as ``tpm2_createek`` and
swtpm_setup create them, and the usual SRKs).  An :class:`AheadDeriver`
derives them for the engine's current seeds as soon as TPM2_Startup has run
and again whenever a seed changes, and offers each result to the engine's
:class:`~.keys.PrimaryCache`; a CreatePrimary that comes first derives the
key itself, with the same result.

Where the work runs, and why: a forked child process, niced.  A thread would
not do -- the prime search holds the GIL for its sieve and bookkeeping, and
measured against a Python-bound loop on another thread it halved that loop's
speed -- and a spawned interpreter cannot be had, because the daemon's default
seccomp filter kills the process on execve (cli/seccomp.py).  ``fork`` copies
the parent's memory, so no key material is sent anywhere; the child closes
every descriptor but its two pipes, derives, writes the results (public area,
seedValue, sensitive part) to one pipe and exits.  Reading EOF on the other
pipe -- the parent closed it, or died -- ends it at once, so it never
outlives its engine's process.  At most one job runs per engine; a newer seed
aborts the older job.  Key material is never logged.

Results are keyed by the seed digest they were derived from, and the cache
takes an offered result only in the engine's own thread and only while that
seed is still live (:meth:`~.keys.PrimaryCache.drop_retired`), so a key of a
seed replaced meanwhile (TPM2_Clear, ChangeEPS, ChangePPS) never enters it.
"""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

from .constants import TPM_ALG, TPM_ECC_CURVE, TPM_RH, TPMA_OBJECT
from .crypto.kdf import KdfStream
from .keys import CreatedObject, PrimaryCache, create_object, seed_digest
from .objects import object_name
from .types import (
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_RSA_PARMS,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_RSA_SCHEME,
    TPMT_SYM_DEF_OBJECT_PLUS,
)

__all__ = ["AheadDeriver", "AheadTemplate", "WELL_KNOWN_PRIMARIES"]

#: The label of every primary object's KDFa stream (Part 1, "Primary Object Creation").
PRIMARY_OBJECT_CREATION = b"Primary Object Creation"
#: How nice the child is: the commands of every TPM on the host come first.
CHILD_NICENESS = 10
#: A child that has not finished by then is killed (a job is a few seconds at most).
JOB_TIMEOUT = 120.0

#: TCG PolicyA, SHA-256: PolicySecret(TPM_RH_ENDORSEMENT) (EK Credential Profile, low range).
POLICY_A_SHA256 = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")
_AES128_CFB = TPMT_SYM_DEF_OBJECT_PLUS(algorithm=TPM_ALG.AES, keyBits=128, mode=TPM_ALG.CFB)
_STORAGE_KEY = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin
_STORAGE_KEY |= TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt
#: EK Credential Profile templates L-1 / L-2: admin by policy A only.
_EK_ATTRIBUTES = int(_STORAGE_KEY | TPMA_OBJECT.adminWithPolicy)
#: tpm2-tools' tpm2_createprimary default (5.4): user auth, no noDA.
_TOOLS_SRK_ATTRIBUTES = int(_STORAGE_KEY | TPMA_OBJECT.userWithAuth)
#: TCG Provisioning Guidance SRK: the EK template with user auth, noDA and no policy.
_GUIDANCE_SRK_ATTRIBUTES = int(_STORAGE_KEY | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.noDA)


@dataclasses.dataclass(frozen=True)
class AheadTemplate:
    """A primary key users create: where (``hierarchy``) and from which template."""

    name: str
    hierarchy: int
    area: Any  # TPMT_PUBLIC

    @property
    def template(self) -> bytes:
        """The template octets, as CreatePrimary's inPublic carries them (the cache's key)."""
        return TPMT_PUBLIC.pack(self.area)


def _rsa2048(attributes: int, policy: bytes, unique: bytes) -> Any:
    return TPMT_PUBLIC(
        type=TPM_ALG.RSA,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=attributes,
        authPolicy=policy,
        parameters=TPMS_RSA_PARMS(
            symmetric=_AES128_CFB, scheme=TPMT_RSA_SCHEME(scheme=TPM_ALG.NULL, details=None), keyBits=2048, exponent=0
        ),
        unique=unique,
    )


def _ecc_p256_ek() -> Any:
    return TPMT_PUBLIC(
        type=TPM_ALG.ECC,
        nameAlg=TPM_ALG.SHA256,
        objectAttributes=_EK_ATTRIBUTES,
        authPolicy=POLICY_A_SHA256,
        parameters=TPMS_ECC_PARMS(
            symmetric=_AES128_CFB,
            scheme=TPMT_ECC_SCHEME(scheme=TPM_ALG.NULL, details=None),
            curveID=TPM_ECC_CURVE.NIST_P256,
            kdf=TPMT_KDF_SCHEME(scheme=TPM_ALG.NULL, details=None),
        ),
        unique=TPMS_ECC_POINT(x=bytes(32), y=bytes(32)),
    )


#: What is derived ahead, most asked-for first.  The templates are the octets
#: tpm2-tools 5.4 sends (tpm2_createek -G rsa / -G ecc, tpm2_createprimary -C o)
#: and swtpm_setup's RSA-2048 EK; their inSensitive.data is empty.
WELL_KNOWN_PRIMARIES: tuple[AheadTemplate, ...] = (
    AheadTemplate("EK RSA-2048 (L-1)", TPM_RH.ENDORSEMENT, _rsa2048(_EK_ATTRIBUTES, POLICY_A_SHA256, bytes(256))),
    AheadTemplate("SRK RSA-2048 (tpm2_createprimary)", TPM_RH.OWNER, _rsa2048(_TOOLS_SRK_ATTRIBUTES, b"", b"")),
    AheadTemplate(
        "SRK RSA-2048 (Provisioning Guidance)", TPM_RH.OWNER, _rsa2048(_GUIDANCE_SRK_ATTRIBUTES, b"", bytes(256))
    ),
    AheadTemplate("EK ECC-P256 (L-2)", TPM_RH.ENDORSEMENT, _ecc_p256_ek()),
)


def derive_primary(template: bytes, seed: bytes) -> CreatedObject:
    """The primary object of ``template`` (inSensitive.data empty) from ``seed``, as CreatePrimary derives it."""
    area = TPMT_PUBLIC.unpack(template)
    stream = KdfStream(area.nameAlg, seed, PRIMARY_OBJECT_CREATION, object_name(area.nameAlg, template), b"")
    return create_object(area, b"", b"", stream, lambda: None)


# --- the pipe's records: index, then public area, seedValue, sensitive (each length-prefixed) ------------

_HEAD = struct.Struct(">III")  # index, number of fields, total length of the fields


def _record(index: int, created: CreatedObject) -> bytes:
    fields = (TPMT_PUBLIC.pack(created.area), created.seed_value, created.sensitive)
    body = b"".join(struct.pack(">I", len(field)) + field for field in fields)
    return _HEAD.pack(index, len(fields), len(body)) + body


def _fields(body: bytes, count: int) -> list[bytes]:
    out, at = [], 0
    for _ in range(count):
        (size,) = struct.unpack_from(">I", body, at)
        out.append(body[at + 4 : at + 4 + size])
        at += 4 + size
    return out


# --- the child ---------------------------------------------------------------------------------------------


def _close_all_but(keep: Sequence[int]) -> None:
    """Close every descriptor of the (forked) child except ``keep``: sockets, the CUSE device and
    the state directory's lock stay the parent's alone, and a client's EOF is not delayed."""
    low = 0
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _child(jobs: Sequence[tuple[bytes, bytes]], out_fd: int, control_fd: int) -> None:
    """Derive each (template, seed) and write its record; never returns."""
    try:
        _close_all_but((out_fd, control_fd))
        os.nice(CHILD_NICENESS)
        # EOF (or anything) on the control pipe: the parent is done with us, or gone.
        threading.Thread(target=lambda: (os.read(control_fd, 1), os._exit(0)), daemon=True).start()
        for index, (template, seed) in enumerate(jobs):
            record = _record(index, derive_primary(template, seed))
            view = memoryview(record)
            while view:
                view = view[os.write(out_fd, view) :]
        os._exit(0)
    finally:
        os._exit(1)


# --- the parent side -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Job:
    """One run of the child: what it derives, and how to stop it."""

    items: tuple[tuple[AheadTemplate, bytes], ...] = dataclasses.field(repr=False)  # (template, seed digest)
    seeds: tuple[bytes, ...] = dataclasses.field(repr=False)
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    forked: threading.Event = dataclasses.field(default_factory=threading.Event)
    aborted: bool = False
    pid: int | None = None
    control_fd: int | None = None


class AheadDeriver:
    """Derives :data:`WELL_KNOWN_PRIMARIES` ahead for one engine and offers them to its cache.

    The engine calls :meth:`follow` after each command with its current
    seeds; a change (the first TPM2_Startup included) starts a job.
    """

    def __init__(
        self,
        cache: PrimaryCache,
        templates: Sequence[AheadTemplate] = WELL_KNOWN_PRIMARIES,
        timeout: float = JOB_TIMEOUT,
    ) -> None:
        self._cache = cache
        self._templates = tuple(templates)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._job: _Job | None = None
        self._seen: dict[int, bytes] = {}
        self._closed = False

    def follow(self, seeds: dict[int, bytes]) -> None:
        """``seeds``: hierarchy -> its current seed.  Cheap when nothing changed (every command)."""
        if seeds == self._seen or self._closed:
            return
        self._seen = dict(seeds)
        items = tuple((t, seeds[t.hierarchy]) for t in self._templates if t.hierarchy in seeds)
        job = _Job(items=tuple((t, seed_digest(seed)) for t, seed in items), seeds=tuple(seed for _, seed in items))
        with self._lock:
            previous, self._job = self._job, job
        if previous is not None:
            self._abort(previous)
        threading.Thread(target=self._run, args=(job,), name="derive-ahead", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the current job (if any) finished within ``timeout`` -- for tests and benchmarks."""
        job = self._job
        return job is None or job.done.wait(timeout)

    def child_pid(self, timeout: float = 0) -> int | None:
        """The process id of the current job's child (running or finished), once forked -- for tests."""
        job = self._job
        if job is None or not job.forked.wait(timeout):
            return None
        return job.pid

    def close(self) -> None:
        """Stop the running job, if any; the child is gone when this returns."""
        self._closed = True
        with self._lock:
            job, self._job = self._job, None
        if job is not None:
            self._abort(job)
            job.done.wait(10)

    @staticmethod
    def _abort(job: _Job) -> None:
        with job.lock:
            job.aborted = True
            fd, job.control_fd = job.control_fd, None
        if fd is not None:
            os.close(fd)  # EOF: the child exits

    def _run(self, job: _Job) -> None:
        out_read, out_write = os.pipe()
        control_read, control_write = os.pipe()
        jobs = [(template.template, seed) for (template, _), seed in zip(job.items, job.seeds, strict=True)]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            _child(jobs, out_write, control_read)
        os.close(out_write)
        os.close(control_read)
        with job.lock:
            job.pid = pid
            job.forked.set()
            if job.aborted:
                os.close(control_write)
            else:
                job.control_fd = control_write
        try:
            self._collect(job, out_read)
        finally:
            os.close(out_read)
            self._abort(job)
            self._reap(pid)
            job.done.set()

    def _collect(self, job: _Job, fd: int) -> None:
        """Read the child's records and offer them, until EOF, an abort or the deadline."""
        deadline = time.monotonic() + self._timeout
        buffer = b""
        poller = select.poll()  # not select(): a busy daemon's descriptors may exceed FD_SETSIZE
        poller.register(fd, select.POLLIN)
        while not job.aborted:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk
            while len(buffer) >= _HEAD.size:
                index, count, size = _HEAD.unpack_from(buffer)
                if len(buffer) < _HEAD.size + size:
                    break
                public, seed_value, sensitive = _fields(buffer[_HEAD.size : _HEAD.size + size], count)
                buffer = buffer[_HEAD.size + size :]
                template, digest = job.items[index]
                created = CreatedObject(TPMT_PUBLIC.unpack(public), b"", seed_value, sensitive)
                if not job.aborted:
                    self._cache.offer(digest, template.template, b"", created)

    @staticmethod
    def _reap(pid: int) -> None:
        """Wait for our child; one that does not exit after EOF on its control pipe is killed."""
        for _ in range(100):
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
