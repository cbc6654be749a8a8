"""Checkpoint helpers over the library's safetensors reader and writer."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import fp8gemm

if not fp8gemm.HAS_SAFETENSORS:
    pytest.skip(f"{fp8gemm.LIBRARY_PATH} has no safetensors functions", allow_module_level=True)

from fp8gemm.safetensors import SafetensorsFile, load_weights, save_file, save_weights  # noqa: E402


def make_weight(rng, N, K, bias=True):
    wq, scale_inv = fp8gemm.quantize_weight(rng.standard_normal((N, K)).astype(np.float32))
    b = rng.standard_normal(N).astype(np.float32) if bias else None
    return fp8gemm.Weight(wq, scale_inv, b), wq, scale_inv, b


def test_write_then_read_tensors_and_metadata(tmp_path, rng) -> None:
    tensors = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": np.arange(7, dtype=np.int64),
        "c": rng.integers(0, 255, size=(4, 32), dtype=np.uint8),
        "scalar": np.array(2.5, dtype=np.float64),
    }
    path = tmp_path / "t.safetensors"
    save_file(path, tensors, {"who": "test"}, dtypes={"c": "F8_E4M3"})
    with SafetensorsFile(path) as file:
        assert file.keys() == ["a", "b", "c", "scalar"]
        assert len(file) == 4 and "a" in file and "z" not in file
        assert file.metadata == {"who": "test"}
        info = file.info("c")
        assert (info.dtype, info.shape, info.nbytes) == ("F8_E4M3", (4, 32), 128)
        for name, value in tensors.items():
            array = file[name]
            assert array.shape == value.shape and np.array_equal(array, value), name
            assert not array.flags.writeable


def test_views_outlive_the_closed_file(tmp_path, rng) -> None:
    value = rng.standard_normal((64, 64)).astype(np.float32)
    path = tmp_path / "t.safetensors"
    save_file(path, {"w": value})
    file = SafetensorsFile(path)
    view = file["w"]
    file.close()
    del file
    assert np.array_equal(view, value)  # the mapping lives as long as the view
    closed = SafetensorsFile(path)
    closed.close()
    with pytest.raises(fp8gemm.InvalidArgumentError, match="closed"):
        closed.keys()


def test_files_from_memory(tmp_path, rng) -> None:
    path = tmp_path / "t.safetensors"
    save_file(path, {"x": np.arange(10, dtype=np.float32)})
    with SafetensorsFile(path.read_bytes()) as file:
        assert np.array_equal(file["x"], np.arange(10, dtype=np.float32))


def test_malformed_files_raise_parse_errors_with_the_reason(tmp_path) -> None:
    path = tmp_path / "bad.safetensors"
    header = b'{"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}'
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
    with pytest.raises(fp8gemm.ParseError, match="'x'"):
        SafetensorsFile(path)
    with pytest.raises(fp8gemm.IOError_):
        SafetensorsFile(tmp_path / "missing.safetensors")


def test_weights_round_trip_through_a_checkpoint(tmp_path, rng) -> None:
    layer, wq, scale_inv, bias = make_weight(rng, 200, 272)
    other, *_ = make_weight(rng, 64, 128, bias=False)
    path = tmp_path / "model.safetensors"
    save_weights(path, {"layers.0.proj": layer, "layers.1.proj": other})
    with SafetensorsFile(path) as file:
        assert file.metadata["fp8gemm.format"] == "fp8_e4m3fn_block128"
        assert file.weight_names() == ["layers.0.proj", "layers.1.proj"]
        assert np.array_equal(file["layers.0.proj.weight"], wq)
        assert np.array_equal(file["layers.0.proj.weight_scale_inv"], scale_inv)
        assert np.array_equal(file["layers.0.proj.bias"], bias)
        assert "layers.1.proj.bias" not in file
    loaded = load_weights(path)
    x = rng.standard_normal((5, 272)).astype(np.float32)
    assert np.array_equal(fp8gemm.linear(x, loaded["layers.0.proj"]), fp8gemm.linear(x, layer))
    assert loaded["layers.0.proj"].has_bias and not loaded["layers.1.proj"].has_bias


def test_a_checkpoint_shuffled_for_amd_records_its_layout(tmp_path, rng) -> None:
    layer, wq, *_ = make_weight(rng, 64, 256)
    path = tmp_path / "aiter.safetensors"
    save_weights(path, {"proj": layer}, layout="aiter16x16")
    with SafetensorsFile(path) as file:
        assert file.metadata["fp8gemm.layout.proj.weight"] == "aiter16x16"
        assert file.layout("proj.weight") is fp8gemm.Layout.AITER16X16
        assert np.array_equal(file["proj.weight"], fp8gemm.shuffle(wq, "aiter16x16"))
        loaded = file.weight("proj")
    assert np.array_equal(loaded.export("plain"), wq)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    assert np.array_equal(fp8gemm.linear(x, loaded), fp8gemm.linear(x, layer))


def test_another_format_is_refused(tmp_path, rng) -> None:
    layer, *_ = make_weight(rng, 16, 32)
    path = tmp_path / "other.safetensors"
    save_weights(path, {"proj": layer}, metadata={"fp8gemm.block": "1,128"})
    with SafetensorsFile(path) as file, pytest.raises(fp8gemm.UnsupportedError, match="1,128"):
        file.weight("proj")


@pytest.mark.skipif(importlib.util.find_spec("safetensors") is None, reason="safetensors not installed")
def test_files_agree_with_the_safetensors_package(tmp_path, rng) -> None:
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file as their_save

    ours = {"w": rng.standard_normal((4, 8)).astype(np.float32), "i": np.arange(3, dtype=np.int32)}
    save_file(tmp_path / "ours.safetensors", ours, {"k": "v"})
    theirs = load_file(tmp_path / "ours.safetensors")
    assert all(np.array_equal(theirs[k], v) for k, v in ours.items())
    their_save(ours, tmp_path / "theirs.safetensors", metadata={"k": "v"})
    with SafetensorsFile(tmp_path / "theirs.safetensors") as file:
        assert file.metadata == {"k": "v"}
        assert all(np.array_equal(file[k], v) for k, v in ours.items())
