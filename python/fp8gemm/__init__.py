"""fp8gemm: FP8 block-scaled GEMM (DeepSeek-V3 "W8A8 block FP8") for Python.

A thin ctypes binding of libfp8gemm's C API (``include/fp8gemm.h``) for
numpy arrays and torch tensors (CPU and CUDA), zero-copy::

    import fp8gemm
    wq, scale_inv = fp8gemm.quantize_weight(w)          # w [N, K] float
    weight = fp8gemm.Weight(wq, scale_inv, bias)        # prepared once
    y = fp8gemm.linear(x, weight)                       # x [..., K] -> y [..., N]

For torch models, ``fp8gemm.torch.FP8Linear.from_linear(nn.Linear)`` is a
drop-in module backed by the custom op ``torch.ops.fp8gemm.linear``.
"""

from __future__ import annotations

from ._lib import BLOCK, HAS_SAFETENSORS, LIBRARY_PATH, version
from .context import Context, backend_available, default_context
from .enums import Backend, DType, Layout, ScaleLayout
from .errors import (
    BackendError,
    Error,
    InternalError,
    InvalidArgumentError,
    IOError_,
    LayoutMismatchError,
    LibraryNotFoundError,
    NoDeviceError,
    OutOfMemoryError,
    ParseError,
    Status,
    UnsupportedError,
)
from .ops import (
    check_layout,
    e4m3fn_from_float32,
    e4m3fn_to_float32,
    gemm,
    gemm_reference,
    layout_offset,
    linear,
    quantize_activations,
    quantize_weight,
    shuffle,
    unshuffle,
)
from .tuning import tune
from .weight import Weight

__version__ = "0.1.0"

__all__ = [
    "BLOCK",
    "Backend",
    "BackendError",
    "Context",
    "DType",
    "Error",
    "HAS_SAFETENSORS",
    "IOError_",
    "InternalError",
    "InvalidArgumentError",
    "LIBRARY_PATH",
    "Layout",
    "LayoutMismatchError",
    "LibraryNotFoundError",
    "NoDeviceError",
    "OutOfMemoryError",
    "ParseError",
    "ScaleLayout",
    "Status",
    "UnsupportedError",
    "Weight",
    "backend_available",
    "check_layout",
    "default_context",
    "e4m3fn_from_float32",
    "e4m3fn_to_float32",
    "gemm",
    "gemm_reference",
    "layout_offset",
    "linear",
    "quantize_activations",
    "quantize_weight",
    "shuffle",
    "tune",
    "unshuffle",
    "version",
]
