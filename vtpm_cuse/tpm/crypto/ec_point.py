"""Affine point addition on the NIST prime curves, for public data only.

``cryptography`` multiplies points ([k]G, [k]Q via ECDH and :func:`~..asymmetric.multiply`)
but cannot add two of them, which EC-Schnorr verification needs ([s]G - [e]Q).  The
addition here is the textbook affine formula (SEC 1, 2.2.1) on Python integers: it is
*not* constant time, so it is only ever given public values (a verifier's points).  Every
input and output point is checked to lie on the curve y^2 = x^3 + ax + b (mod p), with p
and a from :data:`~..asymmetric.DOMAINS` and b derived from ``cryptography``'s generator.
"""

from __future__ import annotations

import dataclasses
import functools

from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["AffinePoint", "PointNotOnCurve", "add", "generator", "on_curve"]


class PointNotOnCurve(ValueError):
    """A point that does not satisfy the curve equation."""


@dataclasses.dataclass(frozen=True)
class AffinePoint:
    """A finite point (x, y); :func:`add` answers ``None`` for the point at infinity."""

    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class _CurveEquation:
    p: int
    a: int
    b: int


@functools.cache
def _equation(curve_id: int) -> _CurveEquation:
    from ..asymmetric import DOMAINS

    domain = DOMAINS[curve_id]
    g = generator(curve_id)
    b = (g.y * g.y - g.x**3 - domain.a * g.x) % domain.p
    return _CurveEquation(domain.p, domain.a % domain.p, b)


@functools.cache
def generator(curve_id: int) -> AffinePoint:
    """G of the curve, as ``cryptography`` has it ([1]G)."""
    from ..keys import CURVES

    numbers = ec.derive_private_key(1, CURVES[curve_id].curve()).public_key().public_numbers()
    return AffinePoint(numbers.x, numbers.y)


def on_curve(curve_id: int, point: AffinePoint) -> bool:
    eq = _equation(curve_id)
    if not (0 <= point.x < eq.p and 0 <= point.y < eq.p):
        return False
    return (point.y * point.y - point.x**3 - eq.a * point.x - eq.b) % eq.p == 0


def _checked(curve_id: int, point: AffinePoint) -> AffinePoint:
    if not on_curve(curve_id, point):
        raise PointNotOnCurve(f"({point.x:#x}, {point.y:#x}) is not a point of curve 0x{curve_id:04x}")
    return point


def add(curve_id: int, first: AffinePoint, second: AffinePoint) -> AffinePoint | None:
    """first + second, or ``None`` for the point at infinity (second = -first).

    Both points are checked to be on the curve; so is the sum, which guards the formula.
    """
    eq = _equation(curve_id)
    _checked(curve_id, first)
    _checked(curve_id, second)
    if first.x == second.x:
        if (first.y + second.y) % eq.p == 0:
            return None
        slope = (3 * first.x * first.x + eq.a) * pow(2 * first.y, -1, eq.p) % eq.p
    else:
        slope = (second.y - first.y) * pow(second.x - first.x, -1, eq.p) % eq.p
    x = (slope * slope - first.x - second.x) % eq.p
    y = (slope * (first.x - x) - first.y) % eq.p
    return _checked(curve_id, AffinePoint(x, y))
