"""Wrong arguments raise fp8gemm errors whose messages say what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

import fp8gemm


@pytest.fixture(scope="module")
def weight():
    rng = np.random.default_rng(1)
    wq, scale_inv = fp8gemm.quantize_weight(rng.standard_normal((64, 256)).astype(np.float32))
    return fp8gemm.Weight(wq, scale_inv)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(2).standard_normal((8, 256)).astype(np.float32)


def test_bad_activation_dtype(weight, x) -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match=r"x: dtype float64 is not supported"):
        fp8gemm.linear(x.astype(np.float64), weight)
    with pytest.raises(fp8gemm.InvalidArgumentError, match=r"x: dtype int32"):
        fp8gemm.quantize_activations(x.astype(np.int32))


def test_bad_output_dtype(weight, x) -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="out_dtype 'int8' is not"):
        fp8gemm.linear(x, weight, out_dtype="int8")


def test_non_contiguous_rows(weight, x) -> None:
    wide = np.repeat(x, 2, axis=1)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="rows must be contiguous"):
        fp8gemm.linear(wide[:, ::2], weight)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="rows must be contiguous"):
        fp8gemm.quantize_activations(np.asfortranarray(x))


def test_leading_axes_that_cannot_be_rows(weight) -> None:
    x3 = np.zeros((4, 6, 256), dtype=np.float32)[:, ::2, :]  # fine: uniform row stride 512
    fp8gemm.linear(x3, weight)
    uneven = np.zeros((4, 6, 256), dtype=np.float32).transpose(1, 0, 2)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="cannot be viewed as rows"):
        fp8gemm.linear(uneven, weight)


def test_wrong_inner_dimension(weight) -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="does not match the weight's K = 256"):
        fp8gemm.linear(np.zeros((3, 128), dtype=np.float32), weight)


def test_k_not_a_multiple_of_16_is_refused_by_the_library() -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="K=40 must be a multiple of 16"):
        fp8gemm.quantize_activations(np.ones((2, 40), dtype=np.float32))


def test_weight_with_wrong_scale_shape() -> None:
    wq = np.zeros((200, 256), dtype=np.uint8)
    expected = r"scale_inv: shape \[1, 2\] does not match the expected \[2, 2\]"
    with pytest.raises(fp8gemm.InvalidArgumentError, match=expected):
        fp8gemm.Weight(wq, np.ones((1, 2), dtype=np.float32))


def test_weight_with_non_positive_scale_names_the_block() -> None:
    scale_inv = np.ones((2, 2), dtype=np.float32)
    scale_inv[1, 0] = 0.0
    with pytest.raises(fp8gemm.InvalidArgumentError, match=r"scale_inv\[1\]\[0\] = 0 must be finite and > 0"):
        fp8gemm.Weight(np.zeros((200, 256), dtype=np.uint8), scale_inv)


def test_weight_with_nan_codes_is_refused() -> None:
    wq = np.zeros((16, 32), dtype=np.uint8)
    wq[3, 4] = 0x7F
    with pytest.raises(fp8gemm.InvalidArgumentError):
        fp8gemm.Weight(wq, np.ones((1, 1), dtype=np.float32))


def test_weight_bytes_must_be_dense() -> None:
    wq = np.zeros((16, 64), dtype=np.uint8)[:, :32]
    with pytest.raises(fp8gemm.InvalidArgumentError, match="wq: must be contiguous"):
        fp8gemm.Weight(wq, np.ones((1, 1), dtype=np.float32))


def test_weight_bytes_must_be_fp8() -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="wq: dtype float32"):
        fp8gemm.Weight(np.zeros((16, 32), dtype=np.float32), np.ones((1, 1), dtype=np.float32))


def test_in_place_weight_needs_a_writable_buffer() -> None:
    wq = np.zeros((16, 32), dtype=np.uint8)
    wq.flags.writeable = False
    with pytest.raises(fp8gemm.InvalidArgumentError, match="read-only"):
        fp8gemm.Weight.create_in_place(wq, np.ones((1, 1), dtype=np.float32))


def test_bias_of_the_wrong_length(weight) -> None:
    wq = np.zeros((64, 256), dtype=np.uint8)
    with pytest.raises(fp8gemm.InvalidArgumentError, match=r"bias: shape \[63\]"):
        fp8gemm.Weight(wq, np.ones((1, 2), dtype=np.float32), np.zeros(63, dtype=np.float32))


def test_scale_layout_that_the_strides_contradict(weight, x) -> None:
    xq, row_scale = fp8gemm.quantize_activations(x, "row")
    with pytest.raises(fp8gemm.InvalidArgumentError, match="is row-major, but scale_layout asks for M-major"):
        fp8gemm.gemm(xq, row_scale, weight, scale_layout="m_major")
    _, m_major_scale = fp8gemm.quantize_activations(x, "m_major")
    with pytest.raises(fp8gemm.InvalidArgumentError, match="is M-major, but scale_layout asks for row-major"):
        fp8gemm.gemm(xq, m_major_scale, weight, scale_layout="row")
    with pytest.raises(fp8gemm.InvalidArgumentError, match=r"x_scale: shape \[8, 1\] does not match"):
        fp8gemm.gemm(xq, row_scale[:, :1], weight)


def test_out_of_the_wrong_shape_or_dtype(weight, x) -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match=r"out: shape \[8, 63\]"):
        fp8gemm.linear(x, weight, out=np.empty((8, 63), dtype=np.float32))
    with pytest.raises(fp8gemm.InvalidArgumentError, match="out: dtype float16 does not match out_dtype f32"):
        fp8gemm.linear(x, weight, out=np.empty((8, 64), dtype=np.float16))


def test_unknown_layout_and_scale_layout_names(weight, x) -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="layout 'tiled' is not one of"):
        fp8gemm.shuffle(np.zeros((16, 32), np.uint8), "tiled")
    with pytest.raises(fp8gemm.InvalidArgumentError, match="'columns' is not 'row' or 'm_major'"):
        fp8gemm.quantize_activations(x, "columns")
