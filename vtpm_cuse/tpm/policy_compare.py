"""The TPM_EO comparisons of TPM2_PolicyNV, PolicyCounterTimer and PolicyCapability.

operandA is the TPM's data (NV contents, TPMS_TIME_INFO, a capability value) taken at
``offset`` for as many octets as operandB has; both are big-endian integers of that
length, signed (two's complement) or unsigned as the operation says.
"""

from __future__ import annotations

import hmac
import operator
from collections.abc import Callable

from .constants import TPM_EO
from .errors import TPM_RC, TpmError

_ORDERINGS: dict[int, tuple[bool, Callable[[int, int], bool]]] = {
    TPM_EO.SIGNED_GT: (True, operator.gt),
    TPM_EO.UNSIGNED_GT: (False, operator.gt),
    TPM_EO.SIGNED_LT: (True, operator.lt),
    TPM_EO.UNSIGNED_LT: (False, operator.lt),
    TPM_EO.SIGNED_GE: (True, operator.ge),
    TPM_EO.UNSIGNED_GE: (False, operator.ge),
    TPM_EO.SIGNED_LE: (True, operator.le),
    TPM_EO.UNSIGNED_LE: (False, operator.le),
}


def condition_holds(operation: int, operand_a: bytes, operand_b: bytes) -> bool:
    """Whether ``operandA <operation> operandB`` (equal lengths; the caller cut operandA)."""
    if len(operand_a) != len(operand_b):
        raise ValueError(f"operands of {len(operand_a)} and {len(operand_b)} octets")
    if operation == TPM_EO.EQ:
        return hmac.compare_digest(operand_a, operand_b)
    if operation == TPM_EO.NEQ:
        return not hmac.compare_digest(operand_a, operand_b)
    a, b = int.from_bytes(operand_a, "big"), int.from_bytes(operand_b, "big")
    if operation == TPM_EO.BITSET:
        return a & b == b
    if operation == TPM_EO.BITCLEAR:
        return a & b == 0
    if operation not in _ORDERINGS:
        raise TpmError(TPM_RC.VALUE, f"operation 0x{operation:04x}", at="operation")
    signed, compare = _ORDERINGS[operation]
    if signed:
        a = int.from_bytes(operand_a, "big", signed=True)
        b = int.from_bytes(operand_b, "big", signed=True)
    return compare(a, b)


def require_condition(data: bytes, offset: int, operand_b: bytes, operation: int) -> None:
    """The checks every comparison assertion makes on the TPM's ``data``: offset inside it
    (TPM_RC_VALUE at offset), operandB not longer than what follows (TPM_RC_SIZE at operandB),
    and the comparison true (TPM_RC_POLICY)."""
    if offset > len(data):
        raise TpmError(TPM_RC.VALUE, f"offset {offset} beyond the {len(data)} octets compared", at="offset")
    if len(data) - offset < len(operand_b):
        raise TpmError(
            TPM_RC.SIZE, f"{len(operand_b)} octets of operandB at offset {offset} of {len(data)}", at="operandB"
        )
    if not condition_holds(operation, data[offset : offset + len(operand_b)], operand_b):
        raise TpmError(TPM_RC.POLICY, f"condition 0x{operation:04x} is false")
