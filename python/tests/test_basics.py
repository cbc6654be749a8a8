"""Loading, errors, contexts and the FP8 codec."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fp8gemm
from reference_model import E4M3FN_VALUES



def test_version_matches_the_header() -> None:
    assert fp8gemm.version() == "0.1.0"


def test_library_comes_from_fp8gemm_library_when_set() -> None:
    if "FP8GEMM_LIBRARY" not in os.environ:
        pytest.skip("FP8GEMM_LIBRARY is not set (library found by the package or the loader)")
    assert os.path.samefile(fp8gemm.LIBRARY_PATH, os.environ["FP8GEMM_LIBRARY"])


def test_a_missing_library_is_reported_with_what_was_tried(tmp_path) -> None:
    missing = tmp_path / "libnothing.so"
    env = dict(os.environ, FP8GEMM_LIBRARY=str(missing))
    completed = subprocess.run(
        [sys.executable, "-c", "import fp8gemm"], env=env, capture_output=True, text=True
    )
    assert completed.returncode != 0
    assert "LibraryNotFoundError" in completed.stderr
    assert str(missing) in completed.stderr


def test_errors_carry_status_and_library_message() -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError) as caught:
        fp8gemm.Context("cpu", num_threads=-3)
    error = caught.value
    assert error.status == fp8gemm.Status.INVALID_ARGUMENT
    assert "num_threads=-3" in str(error)
    assert isinstance(error, fp8gemm.Error) and isinstance(error, ValueError)


def test_io_errors_are_oserrors_with_the_message(tmp_path) -> None:
    with pytest.raises(fp8gemm.IOError_) as caught:
        fp8gemm.Context("cpu", tuned_table=tmp_path / "no-such-table.csv")
    assert isinstance(caught.value, OSError)
    assert "no-such-table.csv" in str(caught.value)
    assert caught.value.status == fp8gemm.Status.IO


def test_tuned_table_parse_errors_name_the_line(tmp_path) -> None:
    table = tmp_path / "table.csv"
    table.write_text(
        "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us\n"
        "cpu,*,abc,512,plain,k,0,,,\n"
    )
    with pytest.raises(fp8gemm.ParseError, match=r"table\.csv:2: N 'abc'"):
        fp8gemm.Context("cpu", tuned_table=table)


def test_tuned_table_decides_the_layout(tmp_path) -> None:
    table = tmp_path / "table.csv"
    table.write_text(
        "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us\n"
        "cpu,*,256,512,plain,k,0,,,\n"
        "cpu,*,384,512,preshuffled,k,0,,,\n"
    )
    with fp8gemm.Context("cpu", tuned_table=table) as context:
        assert context.choose_layout(256, 512) is fp8gemm.Layout.PLAIN
        assert context.choose_layout(384, 512) is context.preshuffled_layout


def test_unknown_backend_and_layout_names_are_refused() -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="'tpu' is not"):
        fp8gemm.Context("tpu")
    with pytest.raises(fp8gemm.InvalidArgumentError, match="depends on the backend"):
        fp8gemm.check_layout("preshuffled", 128, 128)


def test_cpu_context_properties(cpu_context) -> None:
    assert cpu_context.backend is fp8gemm.Backend.CPU
    assert cpu_context.device_name in ("avx2", "generic")
    assert cpu_context.num_threads >= 1
    assert cpu_context.preshuffled_layout is fp8gemm.Layout.PRESHUFFLED_CPU
    assert fp8gemm.backend_available("cpu")


def test_cuda_context_without_cuda_is_a_no_device_error() -> None:
    if fp8gemm.backend_available("cuda"):
        pytest.skip("this library has a usable CUDA backend")
    with pytest.raises(fp8gemm.Error) as caught:
        fp8gemm.Context("cuda")
    assert caught.value.status in (fp8gemm.Status.NO_DEVICE, fp8gemm.Status.BACKEND)
    assert str(caught.value)


def test_closed_context_is_refused() -> None:
    context = fp8gemm.Context("cpu", num_threads=1)
    context.close()
    with pytest.raises(fp8gemm.InvalidArgumentError, match="closed"):
        _ = context.num_threads
    context.close()  # twice is fine


def test_e4m3fn_decode_matches_the_format_for_all_codes() -> None:
    decoded = fp8gemm.e4m3fn_to_float32(np.arange(256, dtype=np.uint8)).astype(np.float64)
    nan = np.isnan(E4M3FN_VALUES)
    assert np.array_equal(np.isnan(decoded), nan)
    assert np.array_equal(decoded[~nan], E4M3FN_VALUES[~nan])
    assert decoded[0x7E] == 448.0 and decoded[0x01] == 2.0**-9


def test_e4m3fn_encode_rounds_to_nearest_even_and_saturates() -> None:
    values = [0.0, 1.0, 1.0625, 1.1875, 448.0, 464.0, 1e9, -1e9, float("inf"), 2.0**-10]
    codes = fp8gemm.e4m3fn_from_float32(values)
    decoded = E4M3FN_VALUES[codes]
    # 1.0625 is halfway between 1.0 (even mantissa) and 1.125: to 1.0;
    # 1.1875 between 1.125 and 1.25 (even): to 1.25.
    assert list(decoded[:4]) == [0.0, 1.0, 1.0, 1.25]
    assert list(decoded[4:9]) == [448.0, 448.0, 448.0, -448.0, 448.0]
    assert decoded[9] == 0.0  # 2^-10 is halfway between 0 and 2^-9: to even (0)
    assert math.isnan(E4M3FN_VALUES[fp8gemm.e4m3fn_from_float32([float("nan")])[0]])


def test_e4m3fn_codec_agrees_with_ml_dtypes() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    codes = np.arange(256, dtype=np.uint8)
    theirs = codes.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
    ours = fp8gemm.e4m3fn_to_float32(codes)
    assert np.array_equal(np.isnan(theirs), np.isnan(ours))
    finite = ~np.isnan(ours)
    assert np.array_equal(theirs[finite], ours[finite])


def test_a_context_with_open_weights_refuses_to_close() -> None:
    context = fp8gemm.Context("cpu", num_threads=1)
    wq, scale_inv = fp8gemm.quantize_weight(np.ones((16, 32), dtype=np.float32), context=context)
    weight = fp8gemm.Weight(wq, scale_inv, context=context)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="1 open weight"):
        context.close()
    weight.close()
    context.close()


def test_auto_backend_resolves_to_a_concrete_one() -> None:
    with fp8gemm.Context("auto", num_threads=1) as context:
        expected = fp8gemm.Backend.CUDA if fp8gemm.backend_available("cuda") else fp8gemm.Backend.CPU
        assert context.backend is expected
