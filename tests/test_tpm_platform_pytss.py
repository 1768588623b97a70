"""The PCR-auth and platform commands through tpm2-pytss's ESAPI against a running
``vtpm-cuse socket --physical-presence`` (the option as a user gives it), and the same
capabilities through Debian's ``tpm2_getcap``.

tpm2-tss marshals the commands, unmarshals the responses and checks the session HMACs
with its own C code.  (tpm2-pytss and tpm2-tools 5.4 have no NV_DefineSpace2 /
NV_ReadPublic2; tests/test_tpm_nv_public2.py covers those with command bytes.)
"""

from __future__ import annotations

import hashlib
import subprocess

import pytest
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_CC, TPM2_PT, TPM2_RC
from tpm2_pytss.TSS2_Exception import TSS2_Exception
from tpm2_pytss.types import TPML_CC

from support.pytss_esys import module_esys_fixtures

POLICY = hashlib.sha256(b"a policy for PCRs 20-22").digest()


daemon, esys = module_esys_fixtures("--physical-presence")


def rc_of(call) -> int:
    with pytest.raises(TSS2_Exception) as info:
        call()
    rc = info.value.error & 0xFFFF  # without the TSS layer
    return rc & ~0xF00 if rc & 0x80 else rc  # a format-one code without its handle/session/parameter number


def test_pcr_set_auth_value_through_esapi(esys):
    """The group's authValue authorizes every PCR of it, PCR_SetAuthValue included."""
    esys.pcr_set_auth_value(ESYS_TR.PCR20, b"pcr password")
    esys.tr_set_auth(ESYS_TR.PCR21, b"wrong")
    assert rc_of(lambda: esys.pcr_set_auth_value(ESYS_TR.PCR21, b"")) == TPM2_RC.BAD_AUTH
    esys.tr_set_auth(ESYS_TR.PCR21, b"pcr password")
    esys.pcr_set_auth_value(ESYS_TR.PCR21, b"")
    esys.tr_set_auth(ESYS_TR.PCR21, b"")
    esys.pcr_set_auth_value(ESYS_TR.PCR22, b"")  # empty again
    assert rc_of(lambda: esys.pcr_set_auth_value(ESYS_TR.PCR16, b"x")) == TPM2_RC.VALUE


def test_pcr_set_auth_policy_and_the_group_capabilities(esys):
    esys.pcr_set_auth_policy(POLICY, TPM2_ALG.SHA256, ESYS_TR.PCR22)
    for tag in (0x13, 0x14):  # TPM_PT_PCR_POLICY, TPM_PT_PCR_AUTH
        _, data = esys.get_capability(TPM2_CAP.PCR_PROPERTIES, tag, 1)
        selection = data.data.pcrProperties.pcrProperty[0]
        assert selection.tag == tag
        assert bytes(selection.pcrSelect)[: selection.sizeofSelect] == b"\x00\x00\x70"  # PCRs 20-22
    # A PCR of the group now needs a policy session: a password is TPM_RC_AUTH_TYPE.
    assert rc_of(lambda: esys.pcr_set_auth_value(ESYS_TR.PCR20, b"x")) == TPM2_RC.AUTH_TYPE
    esys.pcr_set_auth_policy(b"", TPM2_ALG.NULL, ESYS_TR.PCR22)
    esys.tr_set_auth(ESYS_TR.PCR20, b"")  # (ESAPI remembered the value it set on PCR 20 before)
    esys.pcr_set_auth_value(ESYS_TR.PCR20, b"")


def test_pp_commands_through_esapi_with_presence_asserted(esys):
    esys.pp_commands(TPML_CC([TPM2_CC.ClockSet]), TPML_CC([]), session1=ESYS_TR.PASSWORD)
    _, data = esys.get_capability(TPM2_CAP.PP_COMMANDS, 0, 16)
    assert list(data.data.ppCommands) == [TPM2_CC.ClockSet, TPM2_CC.PP_Commands]
    esys.clock_set(1 << 40, auth=ESYS_TR.PLATFORM)  # listed, and presence is asserted
    esys.pp_commands(TPML_CC([]), TPML_CC([TPM2_CC.ClockSet]), session1=ESYS_TR.PASSWORD)
    _, data = esys.get_capability(TPM2_CAP.PP_COMMANDS, 0, 16)
    assert list(data.data.ppCommands) == [TPM2_CC.PP_Commands]


def test_set_algorithm_set_and_vendor_test_through_esapi(esys):
    esys.set_algorithm_set(3)
    _, data = esys.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT.ALGORITHM_SET, 1)
    prop = data.data.tpmProperties.tpmProperty[0]
    assert (prop.property, prop.value) == (TPM2_PT.ALGORITHM_SET, 3)
    assert bytes(esys.vendor_tcg_test(b"echo me")) == b"echo me"


def test_field_upgrade_is_command_code_through_esapi(esys):
    assert rc_of(lambda: esys.firmware_read(0)) == TPM2_RC.COMMAND_CODE


def test_tpm2_getcap_reads_the_same_tables(daemon, esys):
    tcti = f"swtpm:host=127.0.0.1,port={daemon.data_port}"
    commands = subprocess.run(["tpm2_getcap", "-T", tcti, "commands"], capture_output=True, text=True, check=True)
    assert "TPM2_CC_PP_Commands" in commands.stdout and "TPM2_CC_PCR_SetAuthValue" in commands.stdout
    assert "TPM2_CC_Vendor_TCG_Test" in commands.stdout or "0x20000000" in commands.stdout
    fixed = subprocess.run(["tpm2_getcap", "-T", tcti, "properties-fixed"], capture_output=True, text=True, check=True)
    assert "TPM2_PT_REVISION:\n  raw: 0xB7" in fixed.stdout  # 1.83
