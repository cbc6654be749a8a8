"""Checkpoints in the safetensors format, through the library's reader and writer.

The reader maps a file, validates all of it (header, dtypes, shapes, that
the tensors tile the data section exactly) and hands out zero-copy,
read-only numpy views. The writer writes a whole file atomically.

fp8gemm's conventions (see ``include/fp8gemm.h``, "Checkpoints"): an FP8
block weight ``X`` is the tensors ``X.weight`` (F8_E4M3 [N, K]),
``X.weight_scale_inv`` (F32 [ceil(N/128), ceil(K/128)]) and optionally
``X.bias``; the metadata key ``fp8gemm.layout.X.weight`` records a byte order
other than plain.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Union

import numpy as np

from . import _lib
from ._arrays import (
    NUMPY_BFLOAT16,
    NUMPY_FLOAT8_E4M3FN,
    check_contiguous,
    describe_raw,
    torch_module,
)
from .context import Context, default_context
from .enums import Layout, LayoutLike, parse_layout
from .errors import InvalidArgumentError, UnsupportedError
from .weight import Weight

META_FORMAT = "fp8gemm.format"
FORMAT_BLOCK128 = "fp8_e4m3fn_block128"
META_BLOCK = "fp8gemm.block"
BLOCK128 = "128,128"
META_LAYOUT_PREFIX = "fp8gemm.layout."

PathLike = Union[str, "os.PathLike[str]"]


def _require_safetensors() -> None:
    if not _lib.HAS_SAFETENSORS:
        raise UnsupportedError(
            f"{_lib.LIBRARY_PATH} was built without the safetensors functions "
            "(fp8gemm_safetensors_*)"
        )


def _numpy_dtype_for(st_dtype: str) -> np.dtype:
    """The numpy dtype a tensor of a safetensors dtype is viewed as."""
    plain = {
        "BOOL": np.bool_,
        "U8": np.uint8,
        "I8": np.int8,
        "I16": np.int16,
        "U16": np.uint16,
        "F16": np.float16,
        "I32": np.int32,
        "U32": np.uint32,
        "F32": np.float32,
        "I64": np.int64,
        "U64": np.uint64,
        "F64": np.float64,
        # FP8 codes as bytes (view them as ml_dtypes.float8_* if wanted)
        "F8_E4M3": np.uint8,
        "F8_E5M2": np.uint8,
        "F8_E8M0": np.uint8,
    }
    if st_dtype == "BF16":
        return NUMPY_BFLOAT16 if NUMPY_BFLOAT16 is not None else np.dtype(np.uint16)
    return np.dtype(plain[st_dtype]).newbyteorder("<")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a file: its safetensors dtype name, shape and byte span."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # from the start of the data section
    nbytes: int


class _Mapping:
    """Owns an open ``fp8gemm_safetensors`` handle; views hold a reference, so
    the mapping outlives every array handed out."""

    def __init__(self, handle: int, source_bytes: Any) -> None:
        self.handle: Optional[int] = handle
        self._source_bytes = source_bytes  # open_memory: the bytes must outlive the handle

    def __del__(self) -> None:
        if self.handle is not None:
            try:
                _lib.lib.fp8gemm_safetensors_close(self.handle)
            except Exception:
                pass
            self.handle = None


class _ArrayInterface:
    """Exposes a span of the mapping to numpy (``__array_interface__``) while
    keeping the mapping alive."""

    def __init__(self, mapping: _Mapping, pointer: int, nbytes: int) -> None:
        self._mapping = mapping
        self.__array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (pointer, True),  # read-only
            "version": 3,
        }


class SafetensorsFile:
    """An open, validated safetensors file (``fp8gemm_safetensors``).

    Args:
        source: a path, or the file's bytes (``bytes``/``bytearray``/numpy
            uint8), which are kept referenced while open.
    """

    def __init__(self, source: Union[PathLike, bytes, bytearray, memoryview, np.ndarray]) -> None:
        _require_safetensors()
        handle = ctypes.c_void_p()
        if isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
            buffer = np.frombuffer(source, dtype=np.uint8) if not isinstance(source, np.ndarray) else source
            if buffer.dtype != np.uint8 or not buffer.flags.c_contiguous:
                raise InvalidArgumentError("source: in-memory files must be contiguous uint8 bytes")
            pointer = buffer.ctypes.data if buffer.size else ctypes.addressof(ctypes.c_char())
            _lib.call(
                _lib.lib.fp8gemm_safetensors_open_memory, pointer, buffer.size, ctypes.byref(handle)
            )
            self.path: Optional[str] = None
            self._mapping: Optional[_Mapping] = _Mapping(_lib.handle_value(handle), buffer)
        else:
            path = os.fspath(source)
            _lib.call(_lib.lib.fp8gemm_safetensors_open, os.fsencode(path), ctypes.byref(handle))
            self.path = path
            self._mapping = _Mapping(_lib.handle_value(handle), None)

    # -- lifetime ----------------------------------------------------------

    @property
    def handle(self) -> int:
        if self._mapping is None or self._mapping.handle is None:
            raise InvalidArgumentError("the safetensors file is closed")
        return self._mapping.handle

    def close(self) -> None:
        """Closes the file. Arrays handed out stay valid: the mapping goes
        away when the last of them does."""
        self._mapping = None

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- tensors --------------------------------------------------------------

    def __len__(self) -> int:
        return int(_lib.lib.fp8gemm_safetensors_count(self.handle))

    def _view(self, index: int) -> _lib.TensorView:
        view = _lib.TensorView()
        _lib.call(_lib.lib.fp8gemm_safetensors_tensor, self.handle, index, ctypes.byref(view))
        return view

    def _find(self, name: str) -> _lib.TensorView:
        view = _lib.TensorView()
        _lib.call(_lib.lib.fp8gemm_safetensors_find, self.handle, name.encode(), ctypes.byref(view))
        return view

    @staticmethod
    def _info(view: _lib.TensorView) -> TensorInfo:
        return TensorInfo(
            name=view.name.decode(),
            dtype=_lib.lib.fp8gemm_st_dtype_name(view.dtype).decode(),
            shape=tuple(int(view.shape[i]) for i in range(view.rank)),
            offset=int(view.offset),
            nbytes=int(view.bytes),
        )

    def tensors(self) -> list[TensorInfo]:
        """All tensors, in file order."""
        return [self._info(self._view(i)) for i in range(len(self))]

    def keys(self) -> list[str]:
        return [info.name for info in self.tensors()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(
            _lib.lib.fp8gemm_safetensors_contains(self.handle, name.encode())
        )

    def info(self, name: str) -> TensorInfo:
        return self._info(self._find(name))

    def array(self, name: str) -> np.ndarray:
        """A read-only, zero-copy numpy view of a tensor (FP8 as uint8 codes;
        BF16 as ml_dtypes.bfloat16 when available, else uint16). The view
        may be unaligned (the format does not align tensors)."""
        view = self._find(name)
        info = self._info(view)
        dtype = _numpy_dtype_for(info.dtype)
        assert self._mapping is not None
        if info.nbytes:
            raw = np.asarray(_ArrayInterface(self._mapping, view.data, info.nbytes))
        else:
            raw = np.empty((0,), dtype=np.uint8)
        return raw.view(dtype).reshape(info.shape)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.array(name)

    # -- metadata -------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, str]:
        """The ``__metadata__`` entries, in file order."""
        entries: dict[str, str] = {}
        for index in range(int(_lib.lib.fp8gemm_safetensors_metadata_count(self.handle))):
            key, value = ctypes.c_char_p(), ctypes.c_char_p()
            _lib.call(
                _lib.lib.fp8gemm_safetensors_metadata_at,
                self.handle,
                index,
                ctypes.byref(key),
                ctypes.byref(value),
            )
            entries[(key.value or b"").decode()] = (value.value or b"").decode()
        return entries

    def layout(self, tensor_name: str) -> Layout:
        """The layout recorded for a weight tensor (plain when none is)."""
        layout = ctypes.c_int()
        _lib.call(
            _lib.lib.fp8gemm_safetensors_tensor_layout,
            self.handle,
            tensor_name.encode(),
            ctypes.byref(layout),
        )
        return Layout(layout.value)

    # -- weights -------------------------------------------------------------

    def weight(self, name: str, *, context: Optional[Context] = None) -> Weight:
        """Creates a :class:`Weight` from ``name.weight``, ``name.weight_scale_inv``
        and ``name.bias`` (when present), read in the recorded layout and put
        in the one the context's tuned table picks."""
        context = context if context is not None else default_context()
        handle = ctypes.c_void_p()
        _lib.call(
            _lib.lib.fp8gemm_weight_create_from_safetensors,
            context.handle,
            self.handle,
            name.encode(),
            ctypes.byref(handle),
        )
        bias_name = f"{name}.bias"
        bias = np.array(self.array(bias_name), dtype=np.float32) if bias_name in self else None
        scale_inv = np.array(self.array(f"{name}.weight_scale_inv"), dtype=np.float32)
        return Weight._from_handle(
            _lib.handle_value(handle), context, scale_inv, bias, keepalive=None
        )

    def weight_names(self) -> list[str]:
        """Names X for which the file has ``X.weight`` (F8_E4M3) and
        ``X.weight_scale_inv``."""
        names = []
        for info in self.tensors():
            if info.name.endswith(".weight") and info.dtype == "F8_E4M3":
                base = info.name[: -len(".weight")]
                if f"{base}.weight_scale_inv" in self:
                    names.append(base)
        return names


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

_NUMPY_TO_ST = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "U8",
    np.dtype(np.int8): "I8",
    np.dtype(np.int16): "I16",
    np.dtype(np.uint16): "U16",
    np.dtype(np.float16): "F16",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint32): "U32",
    np.dtype(np.float32): "F32",
    np.dtype(np.int64): "I64",
    np.dtype(np.uint64): "U64",
    np.dtype(np.float64): "F64",
}


def _st_dtype_of(array: Any) -> str:
    torch = torch_module()
    if torch is not None and isinstance(array, torch.Tensor):
        table = {
            torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16",
            torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32",
            torch.float32: "F32", torch.int64: "I64", torch.float64: "F64",
            torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
        }
        if array.dtype in table:
            return table[array.dtype]
        raise InvalidArgumentError(f"dtype {array.dtype} has no safetensors name")
    dtype = np.asarray(array).dtype
    if NUMPY_BFLOAT16 is not None and dtype == NUMPY_BFLOAT16:
        return "BF16"
    if NUMPY_FLOAT8_E4M3FN is not None and dtype == NUMPY_FLOAT8_E4M3FN:
        return "F8_E4M3"
    if dtype.str[0] == ">":
        raise InvalidArgumentError(f"dtype {dtype} is big-endian; safetensors is little-endian")
    if dtype.newbyteorder("=") in _NUMPY_TO_ST:
        return _NUMPY_TO_ST[dtype.newbyteorder("=")]
    raise InvalidArgumentError(f"dtype {dtype} has no safetensors name")


def save_file(
    path: PathLike,
    tensors: Mapping[str, Any],
    metadata: Optional[Mapping[str, str]] = None,
    *,
    dtypes: Optional[Mapping[str, str]] = None,
) -> None:
    """Writes tensors (numpy arrays or CPU torch tensors, dense) and metadata
    to ``path`` atomically, in the given order.

    ``dtypes`` overrides the safetensors dtype name of some tensors, e.g.
    ``{"x.weight": "F8_E4M3"}`` for FP8 codes held as uint8.
    """
    _require_safetensors()
    dtypes = dict(dtypes or {})
    writer = ctypes.c_void_p()
    _lib.call(_lib.lib.fp8gemm_safetensors_writer_create, ctypes.byref(writer))
    keep: list[Any] = []  # arrays whose memory the writer reads at write time
    try:
        for key, value in (metadata or {}).items():
            _lib.call(
                _lib.lib.fp8gemm_safetensors_writer_set_metadata,
                writer,
                str(key).encode(),
                str(value).encode(),
            )
        for name, tensor in tensors.items():
            st_name = dtypes.pop(name, None) or _st_dtype_of(tensor)
            code = ctypes.c_int()
            _lib.call(_lib.lib.fp8gemm_st_dtype_from_name, st_name.encode(), ctypes.byref(code))
            array = describe_raw(tensor, f"tensors['{name}']")
            if array.device.is_cuda:
                raise InvalidArgumentError(f"tensors['{name}']: move it to the CPU first")
            check_contiguous(array)
            itemsize = int(_lib.lib.fp8gemm_st_dtype_size(code.value))
            if array.itemsize != itemsize:
                raise InvalidArgumentError(
                    f"tensors['{name}']: {array.itemsize}-byte elements cannot be written as "
                    f"{st_name} ({itemsize} bytes)"
                )
            shape = (ctypes.c_size_t * max(len(array.shape), 1))(*array.shape)
            keep.append(array.obj)
            _lib.call(
                _lib.lib.fp8gemm_safetensors_writer_add,
                writer,
                name.encode(),
                code.value,
                len(array.shape),
                shape,
                array.pointer or None,
            )
        if dtypes:
            raise InvalidArgumentError(f"dtypes: no tensors named {sorted(dtypes)}")
        _lib.call(_lib.lib.fp8gemm_safetensors_writer_write, writer, os.fsencode(os.fspath(path)))
    finally:
        _lib.lib.fp8gemm_safetensors_writer_destroy(writer)
        del keep


def save_weights(
    path: PathLike,
    weights: Mapping[str, Weight],
    *,
    layout: LayoutLike = "plain",
    metadata: Optional[Mapping[str, str]] = None,
) -> None:
    """Writes weights as an FP8 block checkpoint: for each name X,
    ``X.weight`` (exported in ``layout``, recorded in the metadata when not
    plain), ``X.weight_scale_inv`` and ``X.bias`` (float32) when it has one.
    """
    target = parse_layout(layout)
    tensors: dict[str, Any] = {}
    dtypes: dict[str, str] = {}
    meta = {META_FORMAT: FORMAT_BLOCK128, META_BLOCK: BLOCK128}
    meta.update(metadata or {})
    for name, weight in weights.items():
        tensors[f"{name}.weight"] = weight.export(target)
        dtypes[f"{name}.weight"] = "F8_E4M3"
        tensors[f"{name}.weight_scale_inv"] = np.ascontiguousarray(weight.scale_inv, dtype=np.float32)
        if weight.bias is not None:
            tensors[f"{name}.bias"] = np.ascontiguousarray(weight.bias, dtype=np.float32)
        if target is not Layout.PLAIN:
            meta[f"{META_LAYOUT_PREFIX}{name}.weight"] = target.label
    save_file(path, tensors, meta, dtypes=dtypes)


def load_weights(
    path: PathLike, *, context: Optional[Context] = None
) -> dict[str, Weight]:
    """Every FP8 block weight of a checkpoint, by name, as :class:`Weight`."""
    with SafetensorsFile(path) as file:
        return {name: file.weight(name, context=context) for name in file.weight_names()}
