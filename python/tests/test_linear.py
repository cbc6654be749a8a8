"""The forward: linear and gemm against each other, the library's oracle, and
a float64 numpy reference on the same quantized data."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fp8gemm
from reference_model import dequantize_activations, dequantize_weight, relative_error

# Odd N, K with a partial last group, M across 16-row tile boundaries.
N_ODD, K_ODD = 200, 272
M_VALUES = [1, 2, 3, 15, 16, 17, 31, 33, 55, 56, 57, 64, 65, 100, 129, 257]


def make_weight(rng, N, K, *, bias=False, **kwargs):
    w = rng.standard_normal((N, K)).astype(np.float32)
    wq, scale_inv = fp8gemm.quantize_weight(w)
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    return fp8gemm.Weight(wq, scale_inv, b, **kwargs), wq, scale_inv, b


def numpy_reference(x, wq, scale_inv, bias=None):
    """float64 y from the dequantized activations (quantized by the library,
    checked against the formula in test_quantize) and weight."""
    xq, x_scale = fp8gemm.quantize_activations(x)
    y = dequantize_activations(xq, x_scale) @ dequantize_weight(wq, scale_inv).T
    return y + bias if bias is not None else y


@pytest.fixture(scope="module")
def odd_weight():
    rng = np.random.default_rng(7)
    return make_weight(rng, N_ODD, K_ODD, bias=True)


@pytest.mark.parametrize("M", M_VALUES)
def test_linear_matches_float64_reference_at_every_m(odd_weight, M) -> None:
    weight, wq, scale_inv, bias = odd_weight
    x = np.random.default_rng(M).standard_normal((M, K_ODD)).astype(np.float32)
    y = fp8gemm.linear(x, weight)
    assert y.shape == (M, N_ODD) and y.dtype == np.float32
    # fp32 accumulation on the CPU: about 1e-6 (REFERENCE section 2).
    assert relative_error(y, numpy_reference(x, wq, scale_inv, bias)) < 2e-5


@pytest.mark.parametrize("M", [1, 17, 64, 129])
@pytest.mark.parametrize("scale_layout", ["row", "m_major"])
def test_linear_and_gemm_on_the_same_quantized_data_are_bit_equal(odd_weight, M, scale_layout) -> None:
    weight = odd_weight[0]
    x = np.random.default_rng(M).standard_normal((M, K_ODD)).astype(np.float32)
    xq, x_scale = fp8gemm.quantize_activations(x, scale_layout)
    assert np.array_equal(fp8gemm.gemm(xq, x_scale, weight), fp8gemm.linear(x, weight))


def test_gemm_matches_the_library_oracle(odd_weight) -> None:
    weight, wq, scale_inv, bias = odd_weight
    x = np.random.default_rng(3).standard_normal((41, K_ODD)).astype(np.float32)
    xq, x_scale = fp8gemm.quantize_activations(x, "m_major")
    oracle = fp8gemm.gemm_reference(xq, x_scale, wq, scale_inv, bias=bias)
    assert relative_error(fp8gemm.gemm(xq, x_scale, weight), oracle) < 2e-5


def test_plain_and_preshuffled_weights_give_the_same_result(rng) -> None:
    w = rng.standard_normal((96, 512)).astype(np.float32)
    wq, scale_inv = fp8gemm.quantize_weight(w)
    plain = fp8gemm.Weight(wq, scale_inv, target_layout="plain")
    shuffled = fp8gemm.Weight(wq, scale_inv, target_layout="preshuffled")
    assert plain.layout is fp8gemm.Layout.PLAIN
    assert shuffled.layout is fp8gemm.default_context().preshuffled_layout
    for M in (1, 16, 70):
        x = rng.standard_normal((M, 512)).astype(np.float32)
        y_plain, y_shuffled = fp8gemm.linear(x, plain), fp8gemm.linear(x, shuffled)
        assert relative_error(y_shuffled, y_plain) < 1e-6


@pytest.mark.parametrize("out_dtype", ["float32", "float16", "bfloat16"])
def test_output_dtypes_round_the_float32_result(odd_weight, out_dtype) -> None:
    if out_dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        numpy_type = ml_dtypes.bfloat16
    else:
        numpy_type = np.dtype(out_dtype)
    weight = odd_weight[0]
    x = np.random.default_rng(5).standard_normal((9, K_ODD)).astype(np.float32)
    y32 = fp8gemm.linear(x, weight)
    y = fp8gemm.linear(x, weight, out_dtype=out_dtype)
    assert y.dtype == numpy_type
    assert np.array_equal(y, y32.astype(numpy_type))


def test_output_dtype_defaults_to_the_input_dtype(odd_weight) -> None:
    weight = odd_weight[0]
    x = np.random.default_rng(5).standard_normal((4, K_ODD)).astype(np.float16)
    assert fp8gemm.linear(x, weight).dtype == np.float16


def test_leading_axes_are_rows(odd_weight) -> None:
    weight = odd_weight[0]
    x = np.random.default_rng(11).standard_normal((2, 3, 5, K_ODD)).astype(np.float32)
    y = fp8gemm.linear(x, weight)
    assert y.shape == (2, 3, 5, N_ODD)
    assert np.array_equal(y.reshape(30, N_ODD), fp8gemm.linear(x.reshape(30, K_ODD), weight))


def test_strided_input_and_output_rows_are_used_in_place(odd_weight) -> None:
    weight = odd_weight[0]
    rng = np.random.default_rng(12)
    x_storage = rng.standard_normal((8, K_ODD + 48)).astype(np.float32)
    x = x_storage[:, 32 : 32 + K_ODD]
    out_storage = np.full((8, N_ODD + 24), -7.0, dtype=np.float32)
    out = out_storage[:, :N_ODD]
    result = fp8gemm.linear(x, weight, out=out)
    assert result is out
    assert np.array_equal(out, fp8gemm.linear(np.ascontiguousarray(x), weight))
    assert (out_storage[:, N_ODD:] == -7.0).all()  # the gap between rows is untouched


def test_an_explicit_bias_is_added_once_in_float32(rng) -> None:
    weight, wq, scale_inv, _ = make_weight(rng, 64, 256)
    bias = rng.standard_normal(64).astype(np.float32)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    with_bias = fp8gemm.linear(x, weight, bias)
    assert np.allclose(with_bias, fp8gemm.linear(x, weight) + bias, rtol=0, atol=1e-5)
    own = fp8gemm.Weight(wq, scale_inv, bias)
    assert np.allclose(fp8gemm.linear(x, own), with_bias, rtol=1e-6, atol=1e-6)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="own bias"):
        fp8gemm.linear(x, own, bias)


def test_empty_batch_gives_an_empty_result(odd_weight) -> None:
    y = fp8gemm.linear(np.zeros((0, K_ODD), dtype=np.float32), odd_weight[0])
    assert y.shape == (0, N_ODD)


def test_in_place_weight_reorders_the_callers_buffer_once(rng) -> None:
    w = rng.standard_normal((64, 256)).astype(np.float32)
    wq, scale_inv = fp8gemm.quantize_weight(w)
    original = wq.copy()
    weight = fp8gemm.Weight.create_in_place(wq, scale_inv, target_layout="preshuffled")
    assert weight.layout is fp8gemm.Layout.PRESHUFFLED_CPU
    assert weight.data_ptr == wq.ctypes.data  # computes from the caller's bytes
    assert np.array_equal(wq, fp8gemm.shuffle(original, weight.layout))
    assert np.array_equal(weight.export("plain"), original)
    copy = fp8gemm.Weight(original, scale_inv, target_layout="plain")
    x = rng.standard_normal((3, 256)).astype(np.float32)
    assert relative_error(fp8gemm.linear(x, weight), fp8gemm.linear(x, copy)) < 1e-6
    # Handing the shuffled buffer over again with its layout does not reshuffle it.
    again = fp8gemm.Weight.create_in_place(wq, scale_inv, layout=weight.layout,
                                           target_layout="preshuffled")
    assert np.array_equal(wq, fp8gemm.shuffle(original, weight.layout))
    assert np.array_equal(fp8gemm.linear(x, again), fp8gemm.linear(x, weight))


def test_weight_created_from_a_preshuffled_buffer(rng) -> None:
    weight, wq, scale_inv, _ = make_weight(rng, 48, 128, target_layout="plain")
    shuffled = fp8gemm.shuffle(wq, "aiter16x16")
    from_aiter = fp8gemm.Weight(shuffled, scale_inv, layout="aiter16x16", target_layout="plain")
    assert np.array_equal(from_aiter.export("plain"), wq)
    assert np.array_equal(from_aiter.export("aiter16x16"), shuffled)
    x = rng.standard_normal((4, 128)).astype(np.float32)
    assert np.array_equal(fp8gemm.linear(x, from_aiter), fp8gemm.linear(x, weight))


def test_concurrent_forwards_on_one_weight(odd_weight) -> None:
    weight = odd_weight[0]
    inputs = [np.random.default_rng(i).standard_normal((33, K_ODD)).astype(np.float32) for i in range(4)]
    expected = [fp8gemm.linear(x, weight) for x in inputs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(5):
                results[i] = fp8gemm.linear(inputs[i], weight)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(4):
        assert np.array_equal(results[i], expected[i])


def test_weight_handle_properties_and_close(rng) -> None:
    weight, wq, scale_inv, bias = make_weight(rng, 40, 160, bias=True)
    assert (weight.N, weight.K) == (40, 160) and weight.shape == (40, 160)
    assert weight.has_bias and np.array_equal(weight.bias, bias)
    assert np.array_equal(weight.scale_inv, scale_inv)
    assert weight.backend is fp8gemm.Backend.CPU
    assert weight.workspace_size(10) > 0
    assert "N=40" in repr(weight)
    weight.close()
    with pytest.raises(fp8gemm.InvalidArgumentError, match="closed"):
        fp8gemm.linear(np.zeros((1, 160), np.float32), weight)


def test_ml_dtypes_float8_arrays_are_taken_like_uint8_bytes(rng) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    weight, wq, scale_inv, _ = make_weight(rng, 64, 256)
    typed = fp8gemm.Weight(wq.view(ml_dtypes.float8_e4m3fn), scale_inv)
    x = rng.standard_normal((6, 256)).astype(np.float32)
    xq, x_scale = fp8gemm.quantize_activations(x)
    y_bytes = fp8gemm.gemm(xq, x_scale, weight)
    y_typed = fp8gemm.gemm(xq.view(ml_dtypes.float8_e4m3fn), x_scale, typed)
    assert np.array_equal(y_bytes, y_typed)
    # ml_dtypes' own decoding of the codes agrees with the reference model.
    assert np.array_equal(
        xq.view(ml_dtypes.float8_e4m3fn).astype(np.float64), dequantize_activations(xq, np.ones((6, 2)))
    )
