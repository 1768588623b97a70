"""Numeric constants of the TPM 2.0 Library specification, Part 2 (Structures).

Every number the engine puts on the wire is named here, once.  The values are
facts of the specification; grouping follows Part 2's tables so a reader can
check them side by side.
"""

from __future__ import annotations

import enum

from .limits import DEFAULT_OBJECT_SLOTS as DEFAULT_OBJECT_SLOTS  # re-exported: the engine reads them here
from .limits import MAX_LOADED_OBJECTS as MAX_LOADED_OBJECTS
from .limits import MAX_LOCALITY


class TPM_ST(enum.IntEnum):
    """Structure tags (Part 2, table TPM_ST)."""

    RSP_COMMAND = 0x00C4
    NULL = 0x8000
    NO_SESSIONS = 0x8001
    SESSIONS = 0x8002
    ATTEST_NV = 0x8014
    ATTEST_COMMAND_AUDIT = 0x8015
    ATTEST_SESSION_AUDIT = 0x8016
    ATTEST_CERTIFY = 0x8017
    ATTEST_QUOTE = 0x8018
    ATTEST_TIME = 0x8019
    ATTEST_CREATION = 0x801A
    ATTEST_NV_DIGEST = 0x801C
    CREATION = 0x8021
    VERIFIED = 0x8022
    AUTH_SECRET = 0x8023
    HASHCHECK = 0x8024
    AUTH_SIGNED = 0x8025
    FU_MANIFEST = 0x8029


class TPM_SU(enum.IntEnum):
    """Startup / shutdown types."""

    CLEAR = 0x0000
    STATE = 0x0001


class TPM_SE(enum.IntEnum):
    """Session types."""

    HMAC = 0x00
    POLICY = 0x01
    TRIAL = 0x03


class TPM_ALG(enum.IntEnum):
    """Algorithm identifiers (TCG Algorithm Registry)."""

    ERROR = 0x0000
    RSA = 0x0001
    TDES = 0x0003
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    MGF1 = 0x0007
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    SHA3_256 = 0x0027
    SHA3_384 = 0x0028
    SHA3_512 = 0x0029
    CMAC = 0x003F
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


class TPM_ECC_CURVE(enum.IntEnum):
    NONE = 0x0000
    NIST_P192 = 0x0001
    NIST_P224 = 0x0002
    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005
    BN_P256 = 0x0010
    BN_P638 = 0x0011
    SM2_P256 = 0x0020


class TPM_CC(enum.IntEnum):
    """Command codes (Part 2, table TPM_CC)."""

    NV_UndefineSpaceSpecial = 0x011F
    EvictControl = 0x0120
    HierarchyControl = 0x0121
    NV_UndefineSpace = 0x0122
    ChangeEPS = 0x0124
    ChangePPS = 0x0125
    Clear = 0x0126
    ClearControl = 0x0127
    ClockSet = 0x0128
    HierarchyChangeAuth = 0x0129
    NV_DefineSpace = 0x012A
    PCR_Allocate = 0x012B
    PCR_SetAuthPolicy = 0x012C
    PP_Commands = 0x012D
    SetPrimaryPolicy = 0x012E
    FieldUpgradeStart = 0x012F
    ClockRateAdjust = 0x0130
    CreatePrimary = 0x0131
    NV_GlobalWriteLock = 0x0132
    GetCommandAuditDigest = 0x0133
    NV_Increment = 0x0134
    NV_SetBits = 0x0135
    NV_Extend = 0x0136
    NV_Write = 0x0137
    NV_WriteLock = 0x0138
    DictionaryAttackLockReset = 0x0139
    DictionaryAttackParameters = 0x013A
    NV_ChangeAuth = 0x013B
    PCR_Event = 0x013C
    PCR_Reset = 0x013D
    SequenceComplete = 0x013E
    SetAlgorithmSet = 0x013F
    SetCommandCodeAuditStatus = 0x0140
    FieldUpgradeData = 0x0141
    IncrementalSelfTest = 0x0142
    SelfTest = 0x0143
    Startup = 0x0144
    Shutdown = 0x0145
    StirRandom = 0x0146
    ActivateCredential = 0x0147
    Certify = 0x0148
    PolicyNV = 0x0149
    CertifyCreation = 0x014A
    Duplicate = 0x014B
    GetTime = 0x014C
    GetSessionAuditDigest = 0x014D
    NV_Read = 0x014E
    NV_ReadLock = 0x014F
    ObjectChangeAuth = 0x0150
    PolicySecret = 0x0151
    Rewrap = 0x0152
    Create = 0x0153
    ECDH_ZGen = 0x0154
    HMAC = 0x0155
    MAC = 0x0155  # TPM2_MAC (1.59) took over TPM2_HMAC's code; an alias of HMAC
    Import = 0x0156
    Load = 0x0157
    Quote = 0x0158
    RSA_Decrypt = 0x0159
    HMAC_Start = 0x015B
    MAC_Start = 0x015B  # TPM2_MAC_Start, an alias of HMAC_Start
    SequenceUpdate = 0x015C
    Sign = 0x015D
    Unseal = 0x015E
    PolicySigned = 0x0160
    ContextLoad = 0x0161
    ContextSave = 0x0162
    ECDH_KeyGen = 0x0163
    EncryptDecrypt = 0x0164
    FlushContext = 0x0165
    LoadExternal = 0x0167
    MakeCredential = 0x0168
    NV_ReadPublic = 0x0169
    PolicyAuthorize = 0x016A
    PolicyAuthValue = 0x016B
    PolicyCommandCode = 0x016C
    PolicyCounterTimer = 0x016D
    PolicyCpHash = 0x016E
    PolicyLocality = 0x016F
    PolicyNameHash = 0x0170
    PolicyOR = 0x0171
    PolicyTicket = 0x0172
    ReadPublic = 0x0173
    RSA_Encrypt = 0x0174
    StartAuthSession = 0x0176
    VerifySignature = 0x0177
    ECC_Parameters = 0x0178
    FirmwareRead = 0x0179
    GetCapability = 0x017A
    GetRandom = 0x017B
    GetTestResult = 0x017C
    Hash = 0x017D
    PCR_Read = 0x017E
    PolicyPCR = 0x017F
    PolicyRestart = 0x0180
    ReadClock = 0x0181
    PCR_Extend = 0x0182
    PCR_SetAuthValue = 0x0183
    NV_Certify = 0x0184
    EventSequenceComplete = 0x0185
    HashSequenceStart = 0x0186
    PolicyPhysicalPresence = 0x0187
    PolicyDuplicationSelect = 0x0188
    PolicyGetDigest = 0x0189
    TestParms = 0x018A
    Commit = 0x018B
    PolicyPassword = 0x018C
    ZGen_2Phase = 0x018D
    EC_Ephemeral = 0x018E
    PolicyNvWritten = 0x018F
    PolicyTemplate = 0x0190
    CreateLoaded = 0x0191
    PolicyAuthorizeNV = 0x0192
    EncryptDecrypt2 = 0x0193
    AC_GetCapability = 0x0194
    AC_Send = 0x0195
    Policy_AC_SendSelect = 0x0196
    CertifyX509 = 0x0197
    ACT_SetTimeout = 0x0198
    ECC_Encrypt = 0x0199
    ECC_Decrypt = 0x019A
    #: TPM 2.0 Library 1.83 additions (Part 2, TPM_CC).
    PolicyCapability = 0x019B
    PolicyParameters = 0x019C
    NV_DefineSpace2 = 0x019D
    NV_ReadPublic2 = 0x019E
    SetCapability = 0x019F
    ReadOnlyControl = 0x01A0
    PolicyTransportSPDM = 0x01A1
    #: The TCG's vendor test command (TPMA_CC.V set; Part 3, "Vendor Specific").
    Vendor_TCG_Test = 0x20000000


#: swtpm's vendor command that sets the locality through the data channel.
TPM2_CC_SET_LOCALITY = 0x20001000


class TPM_CAP(enum.IntEnum):
    ALGS = 0x00000000
    HANDLES = 0x00000001
    COMMANDS = 0x00000002
    PP_COMMANDS = 0x00000003
    AUDIT_COMMANDS = 0x00000004
    PCRS = 0x00000005
    TPM_PROPERTIES = 0x00000006
    PCR_PROPERTIES = 0x00000007
    ECC_CURVES = 0x00000008
    AUTH_POLICIES = 0x00000009
    ACT = 0x0000000A
    VENDOR_PROPERTY = 0x00000100


class TPM_EO(enum.IntEnum):
    """Arithmetic and bit comparisons of PolicyNV, PolicyCounterTimer and PolicyCapability (Part 2, 6.8)."""

    EQ = 0x0000
    NEQ = 0x0001
    SIGNED_GT = 0x0002
    UNSIGNED_GT = 0x0003
    SIGNED_LT = 0x0004
    UNSIGNED_LT = 0x0005
    SIGNED_GE = 0x0006
    UNSIGNED_GE = 0x0007
    SIGNED_LE = 0x0008
    UNSIGNED_LE = 0x0009
    BITSET = 0x000A
    BITCLEAR = 0x000B


PT_FIXED = 0x100
PT_VAR = 0x200


class TPM_PT(enum.IntEnum):
    """TPM properties reported by GetCapability(TPM_CAP_TPM_PROPERTIES)."""

    NONE = 0x00000000
    FAMILY_INDICATOR = PT_FIXED + 0
    LEVEL = PT_FIXED + 1
    REVISION = PT_FIXED + 2
    DAY_OF_YEAR = PT_FIXED + 3
    YEAR = PT_FIXED + 4
    MANUFACTURER = PT_FIXED + 5
    VENDOR_STRING_1 = PT_FIXED + 6
    VENDOR_STRING_2 = PT_FIXED + 7
    VENDOR_STRING_3 = PT_FIXED + 8
    VENDOR_STRING_4 = PT_FIXED + 9
    VENDOR_TPM_TYPE = PT_FIXED + 10
    FIRMWARE_VERSION_1 = PT_FIXED + 11
    FIRMWARE_VERSION_2 = PT_FIXED + 12
    INPUT_BUFFER = PT_FIXED + 13
    HR_TRANSIENT_MIN = PT_FIXED + 14
    HR_PERSISTENT_MIN = PT_FIXED + 15
    HR_LOADED_MIN = PT_FIXED + 16
    ACTIVE_SESSIONS_MAX = PT_FIXED + 17
    PCR_COUNT = PT_FIXED + 18
    PCR_SELECT_MIN = PT_FIXED + 19
    CONTEXT_GAP_MAX = PT_FIXED + 20
    NV_COUNTERS_MAX = PT_FIXED + 22
    NV_INDEX_MAX = PT_FIXED + 23
    MEMORY = PT_FIXED + 24
    CLOCK_UPDATE = PT_FIXED + 25
    CONTEXT_HASH = PT_FIXED + 26
    CONTEXT_SYM = PT_FIXED + 27
    CONTEXT_SYM_SIZE = PT_FIXED + 28
    ORDERLY_COUNT = PT_FIXED + 29
    MAX_COMMAND_SIZE = PT_FIXED + 30
    MAX_RESPONSE_SIZE = PT_FIXED + 31
    MAX_DIGEST = PT_FIXED + 32
    MAX_OBJECT_CONTEXT = PT_FIXED + 33
    MAX_SESSION_CONTEXT = PT_FIXED + 34
    PS_FAMILY_INDICATOR = PT_FIXED + 35
    PS_LEVEL = PT_FIXED + 36
    PS_REVISION = PT_FIXED + 37
    PS_DAY_OF_YEAR = PT_FIXED + 38
    PS_YEAR = PT_FIXED + 39
    SPLIT_MAX = PT_FIXED + 40
    TOTAL_COMMANDS = PT_FIXED + 41
    LIBRARY_COMMANDS = PT_FIXED + 42
    VENDOR_COMMANDS = PT_FIXED + 43
    NV_BUFFER_MAX = PT_FIXED + 44
    MODES = PT_FIXED + 45
    MAX_CAP_BUFFER = PT_FIXED + 46
    PERMANENT = PT_VAR + 0
    STARTUP_CLEAR = PT_VAR + 1
    HR_NV_INDEX = PT_VAR + 2
    HR_LOADED = PT_VAR + 3
    HR_LOADED_AVAIL = PT_VAR + 4
    HR_ACTIVE = PT_VAR + 5
    HR_ACTIVE_AVAIL = PT_VAR + 6
    HR_TRANSIENT_AVAIL = PT_VAR + 7
    HR_PERSISTENT = PT_VAR + 8
    HR_PERSISTENT_AVAIL = PT_VAR + 9
    NV_COUNTERS = PT_VAR + 10
    NV_COUNTERS_AVAIL = PT_VAR + 11
    ALGORITHM_SET = PT_VAR + 12
    LOADED_CURVES = PT_VAR + 13
    LOCKOUT_COUNTER = PT_VAR + 14
    MAX_AUTH_FAIL = PT_VAR + 15
    LOCKOUT_INTERVAL = PT_VAR + 16
    LOCKOUT_RECOVERY = PT_VAR + 17
    NV_WRITE_RECOVERY = PT_VAR + 18
    AUDIT_COUNTER_0 = PT_VAR + 19
    AUDIT_COUNTER_1 = PT_VAR + 20


class TPM_PT_PCR(enum.IntEnum):
    """PCR properties reported by GetCapability(TPM_CAP_PCR_PROPERTIES)."""

    SAVE = 0x00
    EXTEND_L0 = 0x01
    RESET_L0 = 0x02
    EXTEND_L1 = 0x03
    RESET_L1 = 0x04
    EXTEND_L2 = 0x05
    RESET_L2 = 0x06
    EXTEND_L3 = 0x07
    RESET_L3 = 0x08
    EXTEND_L4 = 0x09
    RESET_L4 = 0x0A
    NO_INCREMENT = 0x11
    DRTM_RESET = 0x12
    POLICY = 0x13
    AUTH = 0x14


class TPM_HT(enum.IntEnum):
    """Handle types: the most significant octet of a handle."""

    PCR = 0x00
    NV_INDEX = 0x01
    HMAC_SESSION = 0x02
    POLICY_SESSION = 0x03
    PERMANENT = 0x40
    TRANSIENT = 0x80
    PERSISTENT = 0x81
    AC = 0x90


HR_SHIFT = 24
HR_HANDLE_MASK = 0x00FFFFFF
HR_PCR = TPM_HT.PCR << HR_SHIFT
HR_HMAC_SESSION = TPM_HT.HMAC_SESSION << HR_SHIFT
HR_POLICY_SESSION = TPM_HT.POLICY_SESSION << HR_SHIFT
HR_TRANSIENT = TPM_HT.TRANSIENT << HR_SHIFT
HR_PERSISTENT = TPM_HT.PERSISTENT << HR_SHIFT
HR_NV_INDEX = TPM_HT.NV_INDEX << HR_SHIFT
HR_PERMANENT = TPM_HT.PERMANENT << HR_SHIFT
#: Persistent handles the owner provisions (Part 3, TPM2_EvictControl) ...
PERSISTENT_OWNER_FIRST, PERSISTENT_OWNER_LAST = 0x81000000, 0x817FFFFF
#: ... and those the platform provisions.
PERSISTENT_PLATFORM_FIRST, PERSISTENT_PLATFORM_LAST = 0x81800000, 0x81FFFFFF


class TPM_RH(enum.IntEnum):
    """Permanent handles."""

    SRK = 0x40000000
    OWNER = 0x40000001
    REVOKE = 0x40000002
    TRANSPORT = 0x40000003
    OPERATOR = 0x40000004
    ADMIN = 0x40000005
    EK = 0x40000006
    NULL = 0x40000007
    UNASSIGNED = 0x40000008
    PW = 0x40000009  # TPM_RS_PW: the password session handle
    LOCKOUT = 0x4000000A
    ENDORSEMENT = 0x4000000B
    PLATFORM = 0x4000000C
    PLATFORM_NV = 0x4000000D


TPM_RS_PW = TPM_RH.PW


class TPMA_SESSION(enum.IntFlag):
    continueSession = 0x01
    auditExclusive = 0x02
    auditReset = 0x04
    decrypt = 0x20
    encrypt = 0x40
    audit = 0x80


class TPMA_OBJECT(enum.IntFlag):
    """Object attributes (Part 2, TPMA_OBJECT)."""

    fixedTPM = 1 << 1
    stClear = 1 << 2
    fixedParent = 1 << 4
    sensitiveDataOrigin = 1 << 5
    userWithAuth = 1 << 6
    adminWithPolicy = 1 << 7
    noDA = 1 << 10
    encryptedDuplication = 1 << 11
    restricted = 1 << 16
    decrypt = 1 << 17
    sign = 1 << 18
    x509sign = 1 << 19


class TPMA_NV(enum.IntFlag):
    """NV index attributes (Part 2, TPMA_NV); bits 4-7 are the TPM_NT field."""

    PPWRITE = 1 << 0
    OWNERWRITE = 1 << 1
    AUTHWRITE = 1 << 2
    POLICYWRITE = 1 << 3
    POLICY_DELETE = 1 << 10
    WRITELOCKED = 1 << 11
    WRITEALL = 1 << 12
    WRITEDEFINE = 1 << 13
    WRITE_STCLEAR = 1 << 14
    GLOBALLOCK = 1 << 15
    PPREAD = 1 << 16
    OWNERREAD = 1 << 17
    AUTHREAD = 1 << 18
    POLICYREAD = 1 << 19
    NO_DA = 1 << 25
    ORDERLY = 1 << 26
    CLEAR_STCLEAR = 1 << 27
    READLOCKED = 1 << 28
    WRITTEN = 1 << 29
    PLATFORMCREATE = 1 << 30
    READ_STCLEAR = 1 << 31


#: TPMA_NV.TPM_NT: the index type, bits 4-7.
TPMA_NV_TPM_NT_SHIFT = 4
TPMA_NV_TPM_NT_MASK = 0xF << TPMA_NV_TPM_NT_SHIFT
#: TPMA_NV bits 8-9 and 20-24 are reserved and shall be clear.
TPMA_NV_RESERVED = (0x3 << 8) | (0x1F << 20)


class TPM_NT(enum.IntEnum):
    """The type of an NV index (Part 2, TPM_NT)."""

    ORDINARY = 0x0
    COUNTER = 0x1
    BITS = 0x2
    EXTEND = 0x4
    PIN_FAIL = 0x8
    PIN_PASS = 0x9


class TPMA_ALGORITHM(enum.IntFlag):
    asymmetric = 1 << 0
    symmetric = 1 << 1
    hash = 1 << 2
    object = 1 << 3
    signing = 1 << 8
    encrypting = 1 << 9
    method = 1 << 10


class TPMA_CC(enum.IntFlag):
    """Command attributes; commandIndex (bits 0-15) and cHandles (25-27) are fields."""

    nv = 1 << 22
    extensive = 1 << 23
    flushed = 1 << 24
    rHandle = 1 << 28
    V = 1 << 29


TPMA_CC_CHANDLES_SHIFT = 25

EXTENDED_LOCALITY_MIN = 32


def locality_attribute(locality: int) -> int:
    """TPMA_LOCALITY for one locality: a bit for 0-4, the value itself for an extended one."""
    return 1 << locality if locality <= MAX_LOCALITY else locality


#: TPMA_CC.commandIndex: the low 16 bits of the command code.
TPMA_CC_COMMAND_INDEX_MASK = 0xFFFF


class TPMA_PERMANENT(enum.IntFlag):
    ownerAuthSet = 1 << 0
    endorsementAuthSet = 1 << 1
    lockoutAuthSet = 1 << 2
    disableClear = 1 << 8
    inLockout = 1 << 9
    tpmGeneratedEPS = 1 << 10


class TPMA_STARTUP_CLEAR(enum.IntFlag):
    phEnable = 1 << 0
    shEnable = 1 << 1
    ehEnable = 1 << 2
    phEnableNV = 1 << 3
    orderly = 1 << 31


class TPMA_LOCALITY(enum.IntFlag):
    ZERO = 1 << 0
    ONE = 1 << 1
    TWO = 1 << 2
    THREE = 1 << 3
    FOUR = 1 << 4


class TPMA_MODES(enum.IntFlag):
    FIPS_140_2 = 1 << 0


# Implementation limits of this engine (reported through TPM_PT_* properties).
IMPLEMENTATION_PCR = 24
PCR_SELECT_MAX = (IMPLEMENTATION_PCR + 7) // 8
PCR_SELECT_MIN = 3
MAX_DIGEST_SIZE = 64
MAX_DIGEST_BUFFER = 1024
MAX_CONTEXT_SIZE = 2680
MAX_COMMAND_SIZE = 4096
MAX_RESPONSE_SIZE = 4096
MAX_CAP_BUFFER = 1024
MAX_SYM_DATA = 128
MAX_NV_BUFFER_SIZE = 1024
#: The largest ordinary NV index (TPM_PT_NV_INDEX_MAX), as libtpms.
MAX_NV_INDEX_SIZE = 2048
MAX_LOADED_SESSIONS = 3
MAX_ACTIVE_SESSIONS = 64
HASH_COUNT = 4
MAX_SESSION_NUMBER = 3
#: Dictionary-attack parameters of a new TPM and after TPM2_Clear (libtpms' defaults):
#: maxTries failures allowed, recoveryTime and lockoutRecovery in seconds.
DA_DEFAULT_MAX_TRIES = 3
DA_DEFAULT_RECOVERY_TIME = 1000
DA_DEFAULT_LOCKOUT_RECOVERY = 1000
