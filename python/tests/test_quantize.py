"""Activation (1x128) and weight (128x128) quantization against the formulas."""

from __future__ import annotations

import numpy as np
import pytest

import fp8gemm
from reference_model import (
    E4M3_MAX,
    assert_nearest_codes,
    decode,
    dequantize_weight,
    reference_activation_scales,
)


@pytest.mark.parametrize("M, K", [(1, 16), (3, 128), (5, 272), (17, 640), (64, 2048)])
def test_activation_scales_and_codes_follow_the_formula(rng, M, K) -> None:
    x = (rng.standard_normal((M, K)) * rng.uniform(0.01, 100, size=(M, 1))).astype(np.float32)
    if K > 16:
        x[0, :16] = 0.0  # a zero run inside a group
    xq, scale = fp8gemm.quantize_activations(x)
    assert xq.dtype == np.uint8 and xq.shape == (M, K)
    assert scale.dtype == np.float32 and scale.shape == (M, -(-K // 128))
    np.testing.assert_allclose(scale, reference_activation_scales(x), rtol=2e-7, atol=0)
    per_element = np.repeat(scale.astype(np.float64), 128, axis=1)[:, :K]
    assert_nearest_codes(xq, x.astype(np.float64) / per_element)
    # Each group's largest magnitude lands on (or next to) +-448.
    assert np.abs(decode(xq)).max() == E4M3_MAX


def test_an_all_zero_group_gets_the_epsilon_scale(rng) -> None:
    x = np.zeros((2, 256), dtype=np.float32)
    x[1, 128:] = rng.standard_normal(128)
    xq, scale = fp8gemm.quantize_activations(x)
    assert scale[0, 0] == np.float32(1e-10) / np.float32(448)
    assert not decode(xq[0]).any()


def test_non_finite_input_gives_nan_scale_for_its_group_only() -> None:
    x = np.ones((2, 256), dtype=np.float32)
    x[1, 130] = np.inf
    _, scale = fp8gemm.quantize_activations(x)
    assert np.isnan(scale[1, 1])
    assert np.isfinite(scale[0]).all() and np.isfinite(scale[1, 0])


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_16_bit_inputs_quantize_like_their_float32_values(rng, dtype_name) -> None:
    if dtype_name == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = ml_dtypes.bfloat16
    else:
        dtype = np.float16
    x = rng.standard_normal((9, 384)).astype(dtype)
    xq, scale = fp8gemm.quantize_activations(x)
    xq32, scale32 = fp8gemm.quantize_activations(x.astype(np.float32))
    assert np.array_equal(xq, xq32) and np.array_equal(scale, scale32)


def test_m_major_scales_hold_the_same_values_with_m_major_strides(rng) -> None:
    x = rng.standard_normal((37, 528)).astype(np.float32)
    xq_row, scale_row = fp8gemm.quantize_activations(x, "row")
    xq_mm, scale_mm = fp8gemm.quantize_activations(x, scale_layout="m_major")
    assert np.array_equal(xq_row, xq_mm)
    assert np.array_equal(scale_row, scale_mm)
    groups = scale_mm.shape[1]
    assert scale_row.strides == (groups * 4, 4)
    assert scale_mm.strides == (4, 37 * 4)  # scale(m, g) at g * M + m
    # The memory itself is M-major: the base [G, M] array, row-major.
    assert np.array_equal(scale_mm.T.ravel(order="K"), scale_row.T.ravel())


def test_rows_with_a_stride_are_read_in_place(rng) -> None:
    base = rng.standard_normal((6, 400)).astype(np.float32)
    x = base[:, 16:272]  # row stride 400, 256 wide
    xq, scale = fp8gemm.quantize_activations(x)
    xq_copy, scale_copy = fp8gemm.quantize_activations(np.ascontiguousarray(x))
    assert np.array_equal(xq, xq_copy) and np.array_equal(scale, scale_copy)


@pytest.mark.parametrize("N, K", [(1, 16), (128, 128), (200, 272), (300, 1040)])
def test_weight_quantization_follows_the_block_formula(rng, N, K) -> None:
    w = (rng.standard_normal((N, K)) * np.exp(rng.uniform(-3, 3, size=(N, 1)))).astype(np.float32)
    wq, scale_inv = fp8gemm.quantize_weight(w)
    assert wq.shape == (N, K) and scale_inv.shape == (-(-N // 128), -(-K // 128))
    for bn in range(scale_inv.shape[0]):
        for bk in range(scale_inv.shape[1]):
            block = w[128 * bn : 128 * (bn + 1), 128 * bk : 128 * (bk + 1)]
            expected = np.float32(max(np.abs(block).max(), np.float32(1e-10))) / np.float32(448)
            assert scale_inv[bn, bk] == pytest.approx(expected, rel=2e-7)
    full = np.repeat(np.repeat(scale_inv.astype(np.float64), 128, 0), 128, 1)[:N, :K]
    assert_nearest_codes(wq, w.astype(np.float64) / full)
    # Dequantized, the weight is within e4m3's half-ulp (2^-4 relative) of w.
    error = np.abs(dequantize_weight(wq, scale_inv) - w)
    assert (error <= np.abs(w) * 2.0**-4 + full * 2.0**-9 + 1e-30).all()


def test_weight_quantization_refuses_non_finite_values() -> None:
    w = np.ones((16, 32), dtype=np.float32)
    w[3, 5] = np.nan
    with pytest.raises(fp8gemm.InvalidArgumentError):
        fp8gemm.quantize_weight(w)
