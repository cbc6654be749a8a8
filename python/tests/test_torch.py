"""torch tensors on the CPU: zero-copy calls, the custom op, torch.compile,
and FP8Linear as a drop-in for nn.Linear in a small transformer block."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fp8gemm  # noqa: E402
import fp8gemm.torch as fp8torch  # noqa: E402
from reference_model import (  # noqa: E402
    dequantize_activations,
    dequantize_weight,
    relative_error,
    to_float64,
)

pytestmark = pytest.mark.torch


def quantized_weight(N, K, *, bias=True, seed=0, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(N, K, generator=generator)
    wq, scale_inv = fp8gemm.quantize_weight(w)
    b = torch.randn(N, generator=generator) if bias else None
    return fp8gemm.Weight(wq, scale_inv, b, **kwargs), wq, scale_inv, b


def test_quantization_returns_torch_fp8_tensors_matching_numpy() -> None:
    x = torch.randn(9, 272)
    xq, scale = fp8gemm.quantize_activations(x, "m_major")
    assert xq.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    assert scale.shape == (9, 3) and scale.stride() == (1, 9)  # M-major
    xq_np, scale_np = fp8gemm.quantize_activations(x.numpy(), "m_major")
    assert np.array_equal(xq.view(torch.uint8).numpy(), xq_np)
    assert np.array_equal(scale.numpy(), scale_np)
    # torch's own e4m3fn decoding agrees with the values the scales imply.
    wq, scale_inv = fp8gemm.quantize_weight(torch.randn(130, 256))
    assert np.array_equal(to_float64(wq.to(torch.float32)), dequantize_weight(wq, np.ones((2, 2))))


def test_linear_on_torch_tensors_equals_the_numpy_path() -> None:
    weight, wq, scale_inv, bias = quantized_weight(200, 272)
    x = torch.randn(33, 272)
    y = fp8gemm.linear(x, weight)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == (33, 200)
    assert np.array_equal(y.numpy(), fp8gemm.linear(x.numpy(), weight))


def test_linear_matches_float64_numpy_and_torch_fp32_references() -> None:
    weight, wq, scale_inv, bias = quantized_weight(200, 272)
    x = torch.randn(50, 272)
    y = fp8gemm.linear(x, weight)
    xq, x_scale = fp8gemm.quantize_activations(x)
    x_dequantized = dequantize_activations(xq, x_scale)
    w_dequantized = dequantize_weight(wq, scale_inv)
    reference64 = x_dequantized @ w_dequantized.T + bias.double().numpy()
    assert relative_error(y, reference64) < 2e-5
    reference32 = F.linear(
        torch.from_numpy(x_dequantized).float(), torch.from_numpy(w_dequantized).float(), bias
    )
    assert relative_error(y, reference32) < 2e-5
    # ... and the FP8 result stays near the unquantized fp32 product.
    unquantized_x = F.linear(x, torch.from_numpy(w_dequantized).float(), bias)
    assert relative_error(y, unquantized_x) < 0.1


def test_bfloat16_input_gives_bfloat16_output() -> None:
    weight, *_ = quantized_weight(64, 256, bias=False)
    x = torch.randn(5, 256).to(torch.bfloat16)
    y = fp8gemm.linear(x, weight)
    assert y.dtype == torch.bfloat16
    y32 = fp8gemm.linear(x, weight, out_dtype=torch.float32)
    assert torch.equal(y, y32.to(torch.bfloat16))


def test_output_is_written_in_place_into_out() -> None:
    weight, *_ = quantized_weight(64, 256)
    x = torch.randn(7, 256)
    storage = torch.zeros(7, 80)
    out = storage[:, :64]
    pointer = out.data_ptr()
    assert fp8gemm.linear(x, weight, out=out) is out
    assert out.data_ptr() == pointer
    assert torch.equal(out, fp8gemm.linear(x, weight))
    assert torch.count_nonzero(storage[:, 64:]) == 0


def test_weight_from_fp8_torch_tensors_and_in_place() -> None:
    weight, wq, scale_inv, bias = quantized_weight(96, 512, target_layout="plain")
    original = wq.clone()
    in_place = fp8gemm.Weight.create_in_place(wq, scale_inv, bias, target_layout="preshuffled")
    assert in_place.data_ptr == wq.data_ptr()
    assert not torch.equal(wq.view(torch.uint8), original.view(torch.uint8))
    assert np.array_equal(in_place.export("plain"), original.view(torch.uint8).numpy())
    x = torch.randn(4, 512)
    assert relative_error(fp8gemm.linear(x, in_place), fp8gemm.linear(x, weight)) < 1e-6


def test_strict_api_refuses_non_contiguous_and_wrong_dtype_tensors() -> None:
    weight, *_ = quantized_weight(64, 256)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="rows must be contiguous"):
        fp8gemm.linear(torch.randn(256, 6).t(), weight)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="dtype torch.int32"):
        fp8gemm.linear(torch.zeros(2, 256, dtype=torch.int32), weight)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="wq: dtype torch.float16"):
        fp8gemm.Weight(torch.zeros(16, 32, dtype=torch.float16), torch.ones(1, 1))


def test_custom_op_passes_torch_opcheck() -> None:
    weight, *_ = quantized_weight(64, 256)
    weight_id = fp8torch.register_weight(weight)
    for x, out_dtype in [(torch.randn(3, 256), None), (torch.randn(2, 5, 256), torch.bfloat16)]:
        torch.library.opcheck(torch.ops.fp8gemm.linear.default, (x, weight_id, out_dtype))


def test_custom_op_accepts_non_contiguous_input_like_nn_linear() -> None:
    weight, *_ = quantized_weight(64, 256)
    x = torch.randn(256, 6).t()
    assert torch.equal(fp8torch.linear(x, weight), fp8gemm.linear(x.contiguous(), weight))


def test_custom_op_refuses_an_unknown_weight_id() -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="no live weight has id"):
        torch.ops.fp8gemm.linear(torch.randn(1, 256), 10**9, None)


class TransformerBlock(nn.Module):
    """Pre-norm attention + MLP, every projection an nn.Linear."""

    def __init__(self, dim: int = 256, heads: int = 4, hidden: int = 512) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.classifier = nn.Linear(dim, 10)
        self.tiny = nn.Linear(10, 10)  # in_features % 16 != 0: stays nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(dim, dim=-1)
        split = lambda t: t.view(batch, tokens, self.heads, dim // self.heads).transpose(1, 2)  # noqa: E731
        attention = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
        x = x + self.proj(attention.transpose(1, 2).reshape(batch, tokens, dim))
        x = x + self.down(F.gelu(self.up(self.norm2(x))))
        return self.tiny(self.classifier(x))


def make_block(dtype=torch.float32):
    torch.manual_seed(0)
    return TransformerBlock().to(dtype).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8linear_drop_in_keeps_a_transformer_blocks_output(dtype) -> None:
    block = make_block(dtype)
    x = torch.randn(2, 24, 256, dtype=dtype)
    with torch.no_grad():
        expected = block(x)
        fp8torch.convert_linear_layers(block)
        assert isinstance(block.qkv, fp8torch.FP8Linear) and isinstance(block.down, fp8torch.FP8Linear)
        assert type(block.tiny) is nn.Linear
        got = block(x)
    assert got.dtype == dtype and got.shape == expected.shape
    error = relative_error(to_float64(got), to_float64(expected))
    # FP8 (3 mantissa bits) on weights and activations: a few percent.
    assert 1e-4 < error < 0.08, error


def test_fp8linear_from_linear_equals_the_functional_path() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(272, 200)
    layer = fp8torch.FP8Linear.from_linear(linear)
    assert (layer.in_features, layer.out_features) == (272, 200)
    assert "layout=" in repr(layer)
    wq, scale_inv = fp8gemm.quantize_weight(linear.weight.detach())
    reference = fp8gemm.Weight(wq, scale_inv, linear.bias.detach())
    x = torch.randn(3, 7, 272)
    with torch.inference_mode():
        assert torch.equal(layer(x), fp8gemm.linear(x, reference))


def test_torch_compile_traces_the_custom_op_with_its_fake_implementation() -> None:
    block = fp8torch.convert_linear_layers(make_block())
    x = torch.randn(2, 16, 256)
    with torch.no_grad():
        eager = block(x)
        compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
        assert torch.equal(compiled(x), eager)
        # Another batch size: traced again or dynamically, still exact.
        x2 = torch.randn(3, 9, 256)
        assert torch.equal(compiled(x2), block(x2))


def test_weights_are_freed_with_their_module() -> None:
    import gc
    import weakref

    layer = fp8torch.FP8Linear.from_linear(nn.Linear(64, 32))
    handle = weakref.ref(layer.fp8_weight)
    weight_id = layer.weight_id
    del layer
    gc.collect()
    assert handle() is None
    with pytest.raises(fp8gemm.InvalidArgumentError, match="no live weight"):
        torch.ops.fp8gemm.linear(torch.randn(1, 64), weight_id, None)


def test_eager_calls_skip_the_dispatcher_but_tracing_sees_the_op() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    layer = fp8torch.FP8Linear.from_linear(nn.Linear(256, 64))
    x = torch.randn(5, 256)
    with torch.no_grad():
        assert torch.equal(layer(x), torch.ops.fp8gemm.linear(x, layer.weight_id, None))
        graph = make_fx(layer)(x)  # a dispatch mode is active: the op must be called
    targets = [node.target for node in graph.graph.nodes if node.op == "call_function"]
    assert torch.ops.fp8gemm.linear.default in targets
    with FakeTensorMode() as mode:  # fake tensors reach the fake implementation
        fake = layer(mode.from_tensor(x).to(torch.bfloat16))
    assert fake.shape == (5, 64) and fake.dtype == torch.bfloat16


def test_deepcopy_shares_the_read_only_handle_and_pickling_is_refused() -> None:
    import copy
    import pickle

    block = fp8torch.convert_linear_layers(make_block())
    twin = copy.deepcopy(block)
    assert twin.qkv.fp8_weight is block.qkv.fp8_weight
    x = torch.randn(1, 4, 256)
    with torch.no_grad():
        assert torch.equal(twin(x), block(x))
    del block
    with torch.no_grad():
        twin(x)  # the shared handle is still alive
    with pytest.raises(TypeError, match="save_weights"):
        pickle.dumps(twin.qkv.fp8_weight)
