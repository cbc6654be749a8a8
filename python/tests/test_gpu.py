"""CUDA tensors (marked gpu: skipped without torch, a CUDA device, and a
libfp8gemm with a usable CUDA backend). Run on a Hopper machine with
``pytest -m gpu python/tests``."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fp8gemm  # noqa: E402
import fp8gemm.torch as fp8torch  # noqa: E402
from reference_model import (  # noqa: E402
    assert_nearest_codes,
    dequantize_activations,
    dequantize_weight,
    reference_activation_scales,
    relative_error,
    to_float64,
)

pytestmark = [pytest.mark.gpu, pytest.mark.torch]

N_ODD, K_ODD = 2112, 7168 // 4  # DeepSeek-V3's partial-block N, a shortened K
# Hopper FP8 tensor-core kernels against fp64 on the same quantized inputs:
# about 1e-3 (REFERENCE section 2); bf16 output rounding adds about 1e-3.
GPU_TOLERANCE = 5e-3


def cuda_weight(N, K, *, bias=True, seed=0, **kwargs):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(N, K, device="cuda", generator=generator)
    wq, scale_inv = fp8gemm.quantize_weight(w)
    b = torch.randn(N, device="cuda", generator=generator) if bias else None
    return fp8gemm.Weight(wq, scale_inv, b, **kwargs), wq, scale_inv, b


@pytest.fixture(scope="module")
def odd_weight():
    return cuda_weight(N_ODD, K_ODD)


def test_cuda_context_and_weight_layout(odd_weight) -> None:
    weight = odd_weight[0]
    context = fp8gemm.default_context(weight.device)
    assert context.backend is fp8gemm.Backend.CUDA
    assert context.preshuffled_layout is fp8gemm.Layout.PRESHUFFLED_SM90
    assert weight.backend is fp8gemm.Backend.CUDA
    assert weight.layout in (fp8gemm.Layout.PLAIN, fp8gemm.Layout.PRESHUFFLED_SM90)
    assert weight.layout is context.choose_layout(N_ODD, K_ODD)


def test_gpu_quantization_follows_the_formula() -> None:
    x = torch.randn(37, 1040, device="cuda") * 3
    xq, scale = fp8gemm.quantize_activations(x, "m_major")
    assert xq.device.type == "cuda" and scale.stride() == (1, 37)
    x_host = x.cpu().numpy()
    np.testing.assert_allclose(scale.cpu().numpy(), reference_activation_scales(x_host), rtol=2e-7)
    per_element = np.repeat(scale.cpu().double().numpy(), 128, axis=1)[:, :1040]
    assert_nearest_codes(xq, x_host.astype(np.float64) / per_element)


@pytest.mark.parametrize("M", [1, 2, 15, 16, 17, 56, 64, 65, 128, 129, 257, 1024])
def test_linear_matches_float64_reference(odd_weight, M) -> None:
    weight, wq, scale_inv, bias = odd_weight
    x = torch.randn(M, K_ODD, device="cuda", dtype=torch.bfloat16)
    y = fp8gemm.linear(x, weight)
    assert y.device == x.device and y.dtype == torch.bfloat16 and y.shape == (M, N_ODD)
    xq, x_scale = fp8gemm.quantize_activations(x)
    reference = (
        dequantize_activations(xq, x_scale) @ dequantize_weight(wq, scale_inv).T
        + bias.double().cpu().numpy()
    )
    assert not torch.isnan(y).any()
    assert relative_error(to_float64(y), reference) < GPU_TOLERANCE


@pytest.mark.parametrize("M", [1, 64, 300])
@pytest.mark.parametrize("scale_layout", ["row", "m_major"])
def test_gemm_on_the_same_quantized_data_agrees_with_linear(odd_weight, M, scale_layout) -> None:
    weight = odd_weight[0]
    x = torch.randn(M, K_ODD, device="cuda")
    xq, x_scale = fp8gemm.quantize_activations(x, scale_layout)
    y_gemm = fp8gemm.gemm(xq, x_scale, weight, out_dtype=torch.float32)
    y_linear = fp8gemm.linear(x, weight, out_dtype=torch.float32)
    assert relative_error(to_float64(y_gemm), to_float64(y_linear)) < 1e-5


def test_cuda_and_cpu_backends_agree_on_one_checkpoint(odd_weight) -> None:
    weight, wq, scale_inv, bias = odd_weight
    cpu_weight = fp8gemm.Weight(wq.cpu(), scale_inv.cpu(), bias.cpu())
    x = torch.randn(40, K_ODD)
    y_gpu = fp8gemm.linear(x.cuda(), weight).cpu()
    y_cpu = fp8gemm.linear(x, cpu_weight)
    assert relative_error(to_float64(y_gpu), to_float64(y_cpu)) < GPU_TOLERANCE


def test_weight_uploaded_from_host_and_exported_bit_exactly() -> None:
    w = torch.randn(256, 512)
    wq, scale_inv = fp8gemm.quantize_weight(w)
    with fp8gemm.Context("cuda") as context:
        uploaded = fp8gemm.Weight(wq, scale_inv, context=context, target_layout="preshuffled")
        assert uploaded.layout is fp8gemm.Layout.PRESHUFFLED_SM90
        assert np.array_equal(uploaded.export("plain"), wq.view(torch.uint8).numpy())
        uploaded.close()


def test_in_place_weight_on_the_device() -> None:
    weight, wq, scale_inv, bias = cuda_weight(256, 512, target_layout="plain")
    original = wq.clone()
    in_place = fp8gemm.Weight.create_in_place(wq, scale_inv, bias, target_layout="preshuffled")
    assert in_place.data_ptr == wq.data_ptr()
    assert np.array_equal(in_place.export("plain"), original.view(torch.uint8).cpu().numpy())
    x = torch.randn(8, 512, device="cuda")
    y_in_place, y_copy = fp8gemm.linear(x, in_place), fp8gemm.linear(x, weight)
    assert relative_error(to_float64(y_in_place), to_float64(y_copy)) < 1e-5


def test_calls_run_on_torchs_current_stream(odd_weight) -> None:
    weight = odd_weight[0]
    source = torch.randn(64, K_ODD, device="cuda")
    expected = fp8gemm.linear(source, weight)
    x = torch.zeros_like(source)
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # keeps the side stream busy for a while
        x.copy_(source)  # x is only ready after the sleep, on the side stream
        y = fp8gemm.linear(x, weight)  # must be queued behind the copy
    side.synchronize()
    assert torch.equal(y, expected)


def test_cuda_graph_capture_and_replay(odd_weight) -> None:
    weight = odd_weight[0]
    static_x = torch.randn(16, K_ODD, device="cuda", dtype=torch.bfloat16)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (allocator, lazy init) outside the capture
        fp8torch.linear(static_x, weight)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = fp8torch.linear(static_x, weight)
    for seed in range(3):
        generator = torch.Generator("cuda").manual_seed(seed)
        static_x.copy_(torch.randn(16, K_ODD, device="cuda", generator=generator))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_y, fp8gemm.linear(static_x, weight))


class MLPBlock(nn.Module):
    def __init__(self, dim: int = 1024, hidden: int = 2816) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(dim)
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.attention_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        x = x + self.down(F.silu(self.gate(h)) * self.up(h))
        return x + self.attention_out(self.norm(x))


def test_drop_in_on_the_gpu_with_torch_compile_and_cuda_graphs() -> None:
    torch.manual_seed(0)
    block = MLPBlock().cuda().to(torch.bfloat16).eval()
    x = torch.randn(4, 32, 1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        expected = block(x)
        fp8torch.convert_linear_layers(block)
        assert isinstance(block.gate, fp8torch.FP8Linear)
        eager = block(x)
        assert relative_error(to_float64(eager), to_float64(expected)) < 0.08
        compiled = torch.compile(block, mode="reduce-overhead", fullgraph=True)
        for _ in range(3):  # recorded into a CUDA graph after warm-up runs
            got = compiled(x)
        torch.cuda.synchronize()
    assert relative_error(to_float64(got), to_float64(eager)) < 1e-2


def test_device_mismatch_is_an_error_with_a_message() -> None:
    cpu_weight = fp8gemm.Weight(*fp8gemm.quantize_weight(torch.randn(64, 256)))
    message = "the data is on cuda:0 but the context computes on cpu"
    with pytest.raises(fp8gemm.InvalidArgumentError, match=message):
        fp8gemm.linear(torch.randn(2, 256, device="cuda"), cpu_weight)
    wq, scale_inv = fp8gemm.quantize_weight(torch.randn(64, 256, device="cuda"))
    with pytest.raises(fp8gemm.InvalidArgumentError, match="one device"):
        fp8gemm.Weight(wq, scale_inv.cpu())
