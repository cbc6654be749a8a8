"""Weight handles: an e4m3 weight [N, K] with its block scales, prepared once.

At creation the library validates the weight, asks the context's tuned
table for the layout (plain or the backend's preshuffled order), reorders the
bytes once and records the layout in the handle; every forward reads it
from there. The handle is read-only afterwards: many threads may run
forwards on it at once.
"""

from __future__ import annotations

import ctypes
from typing import Any, Optional

import numpy as np

from . import _lib
from ._arrays import (
    HOST,
    Array,
    check_contiguous,
    check_same_device,
    check_shape,
    describe,
)
from .context import Context, default_context
from .enums import FLOAT_DTYPES, Backend, DType, Layout, LayoutLike, Memory, parse_layout
from .errors import InvalidArgumentError


def blocks(extent: int) -> int:
    """Number of 128-wide blocks covering ``extent``."""
    return (extent + _lib.BLOCK - 1) // _lib.BLOCK


def _resolve_target(context: Context, target_layout: Optional[LayoutLike]) -> int:
    if target_layout is None:
        return _lib.LAYOUT_AUTO
    if isinstance(target_layout, str) and target_layout.lower() == "preshuffled":
        return int(context.preshuffled_layout)
    return int(parse_layout(target_layout, "target_layout"))


class Weight:
    """A prepared FP8 block weight (``fp8gemm_weight``).

    Args:
        wq: e4m3fn bytes [N, K] (uint8 or float8_e4m3fn; numpy, or a torch
            tensor on the CPU or a CUDA device), dense row-major, in ``layout``.
        scale_inv: float32 [ceil(N/128), ceil(K/128)], dense, beside ``wq``.
        bias: optional [N] float32 / bfloat16 / float16, beside ``wq``; added
            by every forward.
        layout: the order ``wq`` is in: "plain" (as in checkpoints) or an
            already-shuffled layout.
        target_layout: None = the tuned table decides; "plain",
            "preshuffled" (this backend's), or an explicit layout name.
        context: where the weight computes; None = the package's default
            context for ``wq``'s device.

    The handle owns a copy of the bytes (uploaded once when ``wq`` is on the
    host and the context is CUDA). :meth:`create_in_place` reorders the
    caller's buffer instead, without a copy.
    """

    def __init__(
        self,
        wq: Any,
        scale_inv: Any,
        bias: Any = None,
        *,
        layout: LayoutLike = "plain",
        target_layout: Optional[LayoutLike] = None,
        context: Optional[Context] = None,
    ) -> None:
        self._handle: Optional[int] = None
        self._create(wq, scale_inv, bias, layout, target_layout, context, in_place=False)

    @classmethod
    def create_in_place(
        cls,
        wq: Any,
        scale_inv: Any,
        bias: Any = None,
        *,
        layout: LayoutLike = "plain",
        target_layout: Optional[LayoutLike] = None,
        context: Optional[Context] = None,
    ) -> "Weight":
        """Like the constructor, but ``wq`` itself is reordered into the target
        layout, once, and used by the handle (what the seed does at model load).

        ``wq`` must be writable memory of the context's backend (host memory for
        the CPU, device memory for CUDA); the handle keeps a reference to it.
        After this ``wq`` holds the bytes in :attr:`layout`. A buffer already in
        the target layout is used as is.
        """
        weight = cls.__new__(cls)
        weight._handle = None
        weight._create(wq, scale_inv, bias, layout, target_layout, context, in_place=True)
        return weight

    @classmethod
    def _from_handle(
        cls,
        handle: int,
        context: Context,
        scale_inv: np.ndarray,
        bias: Optional[np.ndarray],
        keepalive: Any,
    ) -> "Weight":
        """Wraps a handle the library created (e.g. from a checkpoint)."""
        weight = cls.__new__(cls)
        weight._handle = handle
        weight.context = context
        context._weights.add(weight)
        weight.scale_inv = scale_inv
        weight.bias = bias
        weight._keepalive = keepalive
        weight._read_shape()
        return weight

    def _create(
        self,
        wq: Any,
        scale_inv: Any,
        bias: Any,
        layout: LayoutLike,
        target_layout: Optional[LayoutLike],
        context: Optional[Context],
        in_place: bool,
    ) -> None:
        wq_array = describe(wq, "wq", (DType.E4M3FN,), writable=in_place)
        if len(wq_array.shape) != 2:
            raise InvalidArgumentError(f"wq: expected a 2-D array [N, K], got shape {list(wq_array.shape)}")
        N, K = wq_array.shape
        check_contiguous(wq_array)
        scale_array = describe(scale_inv, "scale_inv", (DType.F32,))
        check_shape(scale_array, (blocks(N), blocks(K)))
        check_contiguous(scale_array)
        arrays: list[Array] = [wq_array, scale_array]
        bias_array: Optional[Array] = None
        if bias is not None:
            bias_array = describe(bias, "bias", FLOAT_DTYPES)
            check_shape(bias_array, (N,))
            check_contiguous(bias_array)
            arrays.append(bias_array)
        device = check_same_device(arrays)
        if context is None:
            context = default_context(device)
        if device.is_cuda and context.device != device:
            raise InvalidArgumentError(
                f"wq is on {device} but the context computes on {context.device}"
            )

        desc = _lib.WeightDesc()
        _lib.lib.fp8gemm_weight_desc_init(ctypes.byref(desc))
        desc.N, desc.K = N, K
        desc.dtype = int(DType.E4M3FN)
        desc.data = wq_array.pointer
        desc.layout = int(parse_layout(layout))
        desc.memory = int(Memory.DEVICE if device.is_cuda else Memory.HOST)
        desc.scale_inv = scale_array.pointer
        if bias_array is not None:
            desc.bias = bias_array.pointer
            desc.bias_dtype = int(bias_array.dtype)
        desc.target_layout = _resolve_target(context, target_layout)

        handle = ctypes.c_void_p()

        def create() -> None:
            if in_place:
                _lib.call(
                    _lib.lib.fp8gemm_weight_create_in_place,
                    context.handle,
                    ctypes.byref(desc),
                    wq_array.pointer,
                    ctypes.byref(handle),
                )
            else:
                _lib.call(
                    _lib.lib.fp8gemm_weight_create,
                    context.handle,
                    ctypes.byref(desc),
                    ctypes.byref(handle),
                )

        if device.is_cuda or context.backend is Backend.CPU:
            context.run(device, create)
        else:  # host data uploaded to a CUDA context
            create()
        self._handle = _lib.handle_value(handle)
        self.context = context
        context._weights.add(self)
        #: host copy of the block scales [ceil(N/128), ceil(K/128)], float32
        self.scale_inv = _host_float32(scale_inv)
        #: host copy of the bias as float32 [N], or None
        self.bias = _host_float32(bias) if bias is not None else None
        # The in-place variant computes from the caller's buffer: keep it.
        self._keepalive = wq if in_place else None
        self._read_shape()

    def _read_shape(self) -> None:
        self.N = int(_lib.lib.fp8gemm_weight_n(self._handle))
        self.K = int(_lib.lib.fp8gemm_weight_k(self._handle))

    # -- lifetime ----------------------------------------------------------

    @property
    def handle(self) -> int:
        """The ``fp8gemm_weight *`` (raises once closed)."""
        if self._handle is None:
            raise InvalidArgumentError("the weight is closed")
        return self._handle

    def close(self) -> None:
        """Frees the handle (and its copy of the bytes)."""
        if self._handle is not None:
            _lib.lib.fp8gemm_weight_destroy(self._handle)
            self._handle = None
            self._keepalive = None

    def __copy__(self) -> "Weight":
        return self  # read-only after creation: copies share the handle

    def __deepcopy__(self, memo: dict[int, Any]) -> "Weight":
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            "an fp8gemm.Weight cannot be pickled (it holds backend memory); save it with "
            "fp8gemm.safetensors.save_weights"
        )

    def __enter__(self) -> "Weight":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- properties -----------------------------------------------------------

    @property
    def has_bias(self) -> bool:
        """True when every forward adds the weight's own bias."""
        return self.bias is not None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.N, self.K)

    @property
    def layout(self) -> Layout:
        """The layout the bytes are in (decided at creation)."""
        return Layout(_lib.lib.fp8gemm_weight_layout(self.handle))

    @property
    def backend(self) -> Backend:
        return Backend(_lib.lib.fp8gemm_weight_backend(self.handle))

    @property
    def device(self):  # -> Device
        return self.context.device

    @property
    def data_ptr(self) -> int:
        """Address of the bytes the kernels read (a device pointer on CUDA)."""
        return int(_lib.lib.fp8gemm_weight_data(self.handle) or 0)

    def export(self, layout: LayoutLike = "plain", out: Any = None) -> Any:
        """The weight's bytes in ``layout`` (bit-exact to what it came from),
        as a host uint8 array [N, K] (numpy), or written into ``out`` (a dense
        host numpy array or CPU torch tensor of N*K bytes)."""
        target = parse_layout(layout)
        if out is None:
            out = np.empty((self.N, self.K), dtype=np.uint8)
        out_array = describe(out, "out", (DType.E4M3FN,), writable=True)
        if out_array.device != HOST:
            raise InvalidArgumentError(f"out: must be host memory, got {out_array.device}")
        check_contiguous(out_array)
        if out_array.size != self.N * self.K:
            raise InvalidArgumentError(
                f"out: {out_array.size} bytes, expected N*K = {self.N * self.K}"
            )
        _lib.call(_lib.lib.fp8gemm_weight_export, self.handle, int(target), out_array.pointer)
        return out

    def workspace_size(self, M: int) -> int:
        """Workspace bytes that make a forward of ``M`` rows allocation-free."""
        cache: dict[int, int] = self.__dict__.setdefault("_workspace_sizes", {})
        cached = cache.get(M)
        if cached is not None:
            return cached
        size = ctypes.c_size_t()
        _lib.call(
            _lib.lib.fp8gemm_linear_workspace_size,
            self.context.handle,
            self.handle,
            M,
            ctypes.byref(size),
        )
        cache[M] = int(size.value)
        return cache[M]

    def __repr__(self) -> str:
        if self._handle is None:
            return "Weight(closed)"
        return (
            f"Weight(N={self.N}, K={self.K}, layout={self.layout.label!r}, "
            f"backend={self.backend.name.lower()!r}, bias={self.has_bias})"
        )


def _host_float32(array: Any) -> np.ndarray:
    """A host float32 numpy copy of a (small) numpy array or torch tensor."""
    if hasattr(array, "detach"):  # torch (numpy has no bfloat16 of its own)
        import torch

        return array.detach().to(device="cpu", dtype=torch.float32).numpy().copy()
    return np.array(array, dtype=np.float32, copy=True)
