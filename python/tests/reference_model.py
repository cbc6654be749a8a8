"""An independent numpy model of the number formats, for the tests.

Nothing here calls the library: the values the tests compare against are
computed from the format definitions (REFERENCE.md sections 1 and 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

E4M3_MAX = 448.0
SCALE_EPS = 1e-10


# --------------------------------------------------------------------------
# e4m3fn, from its definition
# --------------------------------------------------------------------------


def e4m3fn_value(code: int) -> float:
    """The value of an e4m3fn code: 1 sign, 4 exponent bits (bias 7), 3 mantissa
    bits; exponent 0 is subnormal (m/8 * 2^-6); S.1111.111 is NaN."""
    sign = -1.0 if code & 0x80 else 1.0
    exponent = (code >> 3) & 0xF
    mantissa = code & 0x7
    if exponent == 0xF and mantissa == 0x7:
        return float("nan")
    if exponent == 0:
        return sign * mantissa / 8.0 * 2.0**-6
    return sign * (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7)


E4M3FN_VALUES = np.array([e4m3fn_value(code) for code in range(256)], dtype=np.float64)


def decode(codes: Any) -> np.ndarray:
    """float64 values of e4m3fn bytes (numpy uint8 / float8 or a torch tensor)."""
    if hasattr(codes, "detach"):
        import torch

        codes = codes.detach().cpu().view(torch.uint8).numpy()
    return E4M3FN_VALUES[np.asarray(codes).view(np.uint8)]


def assert_nearest_codes(codes: Any, targets: np.ndarray) -> None:
    """Each code must decode to a value nearest its target among all finite
    e4m3fn values (ties either way; 1e-6 relative slack for the target's own
    rounding in float32)."""
    finite = E4M3FN_VALUES[np.isfinite(E4M3FN_VALUES)]
    targets = np.asarray(targets, dtype=np.float64).ravel()
    values = decode(codes).ravel()
    best = np.abs(finite[None, :] - targets[:, None]).min(axis=1)
    got = np.abs(values - targets)
    bad = got > best + 1e-6 * np.abs(targets) + 1e-30
    assert not bad.any(), (
        f"{bad.sum()} codes are not nearest: targets {targets[bad][:5]}, got {values[bad][:5]}"
    )


def reference_activation_scales(x: np.ndarray) -> np.ndarray:
    """s[m, g] = max(amax(x[m, 128g:128g+128]), 1e-10) / 448 in float32."""
    M, K = x.shape
    groups = -(-K // 128)
    scales = np.empty((M, groups), dtype=np.float32)
    for g in range(groups):
        amax = np.abs(x[:, 128 * g : 128 * (g + 1)].astype(np.float32)).max(axis=1)
        scales[:, g] = np.maximum(amax, np.float32(SCALE_EPS)) / np.float32(E4M3_MAX)
    return scales


def dequantize_activations(xq: Any, scales: Any) -> np.ndarray:
    """float64 x[m, k] = value(xq[m, k]) * s[m, k // 128]."""
    values = decode(xq)
    scales = np.asarray(scales.detach().cpu() if hasattr(scales, "detach") else scales, dtype=np.float64)
    return values * np.repeat(scales, 128, axis=1)[:, : values.shape[1]]


def dequantize_weight(wq: Any, scale_inv: Any) -> np.ndarray:
    """float64 W[n, k] = value(wq[n, k]) * scale_inv[n // 128, k // 128]."""
    values = decode(wq)
    if hasattr(scale_inv, "detach"):
        scale_inv = scale_inv.detach().cpu().numpy()
    full = np.repeat(np.repeat(np.asarray(scale_inv, dtype=np.float64), 128, 0), 128, 1)
    return values * full[: values.shape[0], : values.shape[1]]


def relative_error(got: Any, expected: Any) -> float:
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    return float(np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-300))


def to_float64(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):
        import torch

        return array.detach().cpu().to(torch.float64).numpy()
    return np.asarray(array, dtype=np.float64)
