"""Zero-copy views of numpy arrays and torch tensors for the C library.

The library reads matrices as a base pointer, a shape and a row stride
("leading dimension", in elements), with unit stride inside a row. This module
turns an array into exactly that, or refuses it with an
:class:`~fp8gemm.InvalidArgumentError` that says what is wrong (dtype, device,
rank, shape, a stride that is not 1 inside rows, a negative stride, a
misaligned pointer). Nothing is ever copied here: an array that cannot be
described is refused, never silently made contiguous.

Arrays stay referenced by the :class:`Matrix` describing them, so their memory
lives at least as long as the description.

torch is imported lazily: the package works without it.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import numpy as np

from .enums import FLOAT_DTYPES, DType
from .errors import InvalidArgumentError

# --------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """Where an array lives: the host, or one CUDA device."""

    kind: str  # "cpu" or "cuda"
    index: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_cuda else "cpu"


HOST = Device("cpu")
_CUDA_DEVICES: dict[int, Device] = {}


def cuda_device(index: int) -> Device:
    """The (shared) Device for a CUDA ordinal."""
    device = _CUDA_DEVICES.get(index)
    if device is None:
        device = _CUDA_DEVICES.setdefault(index, Device("cuda", index))
    return device

# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------

try:  # ml_dtypes gives numpy bfloat16 and float8 types; optional
    import ml_dtypes as _ml_dtypes

    NUMPY_BFLOAT16: Optional[np.dtype] = np.dtype(_ml_dtypes.bfloat16)
    NUMPY_FLOAT8_E4M3FN: Optional[np.dtype] = np.dtype(_ml_dtypes.float8_e4m3fn)
    NUMPY_FLOAT8_E4M3FNUZ: Optional[np.dtype] = np.dtype(_ml_dtypes.float8_e4m3fnuz)
except ImportError:  # pragma: no cover - depends on the environment
    NUMPY_BFLOAT16 = NUMPY_FLOAT8_E4M3FN = NUMPY_FLOAT8_E4M3FNUZ = None


def torch_module() -> Any:
    """torch if it is imported already (never imports it: no array of it can
    exist otherwise)."""
    return sys.modules.get("torch")


def is_torch_tensor(obj: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(obj, torch.Tensor)


def _numpy_dtype_code(dtype: np.dtype) -> Optional[DType]:
    if not dtype.isnative and dtype.itemsize > 1:
        return None
    if dtype == np.float32:
        return DType.F32
    if dtype == np.float16:
        return DType.F16
    if dtype == np.uint8:
        return DType.E4M3FN  # raw e4m3fn bytes
    if NUMPY_BFLOAT16 is not None:
        if dtype == NUMPY_BFLOAT16:
            return DType.BF16
        if dtype == NUMPY_FLOAT8_E4M3FN:
            return DType.E4M3FN
        if dtype == NUMPY_FLOAT8_E4M3FNUZ:
            return DType.E4M3FNUZ
    return None


_TORCH_DTYPE_CODES: dict[Any, DType] = {}
_TORCH_DTYPES: dict[DType, Any] = {}


def _torch_dtype_code(dtype: Any) -> Optional[DType]:
    if not _TORCH_DTYPE_CODES:  # built once torch is there
        torch = torch_module()
        _TORCH_DTYPE_CODES.update(
            {
                torch.float32: DType.F32,
                torch.float16: DType.F16,
                torch.bfloat16: DType.BF16,
                torch.uint8: DType.E4M3FN,  # raw e4m3fn bytes
                torch.float8_e4m3fn: DType.E4M3FN,
                torch.float8_e4m3fnuz: DType.E4M3FNUZ,
            }
        )
        _TORCH_DTYPES.update(
            {
                DType.F32: torch.float32,
                DType.F16: torch.float16,
                DType.BF16: torch.bfloat16,
                DType.E4M3FN: torch.float8_e4m3fn,
                DType.E4M3FNUZ: torch.float8_e4m3fnuz,
            }
        )
    return _TORCH_DTYPE_CODES.get(dtype)


DTypeLike = Union[DType, str, np.dtype, type, Any]

_DTYPE_NAMES = {
    "f32": DType.F32,
    "float32": DType.F32,
    "float": DType.F32,
    "bf16": DType.BF16,
    "bfloat16": DType.BF16,
    "f16": DType.F16,
    "float16": DType.F16,
    "half": DType.F16,
}


def parse_float_dtype(value: DTypeLike, what: str = "out_dtype") -> DType:
    """f32 / bf16 / f16 from a :class:`DType`, a name ("bf16", "float32"),
    a numpy dtype or a torch dtype."""
    code: Optional[DType] = None
    if isinstance(value, DType):
        code = value
    elif isinstance(value, str):
        code = _DTYPE_NAMES.get(value.lower())
    elif torch_module() is not None and isinstance(value, torch_module().dtype):
        code = _torch_dtype_code(value)
    else:
        try:
            code = _numpy_dtype_code(np.dtype(value))
        except TypeError:
            code = None
    if code not in FLOAT_DTYPES:
        raise InvalidArgumentError(f"{what} {value!r} is not float32, bfloat16 or float16")
    return code


def numpy_dtype(code: DType) -> np.dtype:
    """The numpy dtype holding elements of ``code`` (e4m3 as uint8 bytes)."""
    if code is DType.F32:
        return np.dtype(np.float32)
    if code is DType.F16:
        return np.dtype(np.float16)
    if code is DType.BF16:
        if NUMPY_BFLOAT16 is None:
            raise InvalidArgumentError(
                "bfloat16 numpy arrays need the ml_dtypes package (pip install ml_dtypes); "
                "ask for out_dtype='float32' or 'float16' instead"
            )
        return NUMPY_BFLOAT16
    return np.dtype(np.uint8)


def torch_dtype(code: DType) -> Any:
    _torch_dtype_code(None)  # builds the table
    return _TORCH_DTYPES[code]


# --------------------------------------------------------------------------
# Array descriptions
# --------------------------------------------------------------------------


@dataclass
class Array:
    """An array as the library sees it: pointer, shape, strides in elements."""

    obj: Any  # the numpy array or torch tensor (kept alive)
    is_torch: bool
    pointer: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    dtype: DType
    device: Device
    what: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def describe(
    obj: Any,
    what: str,
    allowed: Sequence[DType],
    *,
    writable: bool = False,
) -> Array:
    """Describes a numpy array or torch tensor; refuses other dtypes.

    Objects that are neither (lists, scalars) are converted with
    ``numpy.asarray`` unless ``writable`` is asked (an output must be a real
    array the caller holds).
    """
    if is_torch_tensor(obj):
        return _describe_torch(obj, what, allowed, writable)
    if not isinstance(obj, np.ndarray):
        if writable:
            raise InvalidArgumentError(
                f"{what}: expected a numpy array or torch tensor, got {type(obj).__name__}"
            )
        obj = np.asarray(obj)
    return _describe_numpy(obj, what, allowed, writable)


def _allowed_names(allowed: Sequence[DType]) -> str:
    names = {
        DType.F32: "float32",
        DType.BF16: "bfloat16",
        DType.F16: "float16",
        DType.E4M3FN: "float8_e4m3fn (or uint8 bytes)",
        DType.E4M3FNUZ: "float8_e4m3fnuz",
    }
    return ", ".join(names[a] for a in allowed)


def _describe_numpy(array: np.ndarray, what: str, allowed: Sequence[DType], writable: bool) -> Array:
    code = _numpy_dtype_code(array.dtype)
    if code is None or code not in allowed:
        raise InvalidArgumentError(
            f"{what}: dtype {array.dtype} is not supported here (expected {_allowed_names(allowed)})"
        )
    if writable and not array.flags.writeable:
        raise InvalidArgumentError(f"{what}: the array is read-only")
    itemsize = array.dtype.itemsize
    strides: list[int] = []
    for axis, stride in enumerate(array.strides):
        if stride % itemsize != 0:
            raise InvalidArgumentError(
                f"{what}: stride {stride} bytes of axis {axis} is not a multiple of the "
                f"element size {itemsize}"
            )
        strides.append(stride // itemsize)
    pointer = array.__array_interface__["data"][0]
    if array.size and pointer % itemsize != 0:
        raise InvalidArgumentError(f"{what}: data pointer {pointer:#x} is not aligned to {itemsize} bytes")
    return Array(array, False, pointer, tuple(array.shape), tuple(strides), code, HOST, what)


def _describe_torch(tensor: Any, what: str, allowed: Sequence[DType], writable: bool) -> Array:
    code = _torch_dtype_code(tensor.dtype)
    if code is None or code not in allowed:
        raise InvalidArgumentError(
            f"{what}: dtype {tensor.dtype} is not supported here (expected {_allowed_names(allowed)})"
        )
    if tensor.is_cuda:
        device = cuda_device(tensor.get_device())
    elif tensor.is_cpu:
        device = HOST
    else:
        raise InvalidArgumentError(f"{what}: tensors on device '{tensor.device}' are not supported")
    if writable and tensor.requires_grad:
        raise InvalidArgumentError(f"{what}: an output must not require grad")
    pointer = tensor.data_ptr()
    itemsize = tensor.element_size()
    if pointer % itemsize != 0 and tensor.numel():
        raise InvalidArgumentError(f"{what}: data pointer {pointer:#x} is not aligned to {itemsize} bytes")
    return Array(tensor, True, pointer, tuple(tensor.shape), tuple(tensor.stride()), code, device, what)


# --------------------------------------------------------------------------
# Matrices: rows of contiguous elements, one row stride
# --------------------------------------------------------------------------


@dataclass
class Matrix:
    """A 2-D view [rows, cols] with unit stride along cols and row stride ``ld``.

    ``array.shape`` may have more than 2 dimensions (leading ones collapsed
    into rows, which requires them to be evenly spaced).
    """

    array: Array
    rows: int
    cols: int
    ld: int

    @property
    def pointer(self) -> int:
        return self.array.pointer


def as_matrix(array: Array, *, collapse_leading: bool = False) -> Matrix:
    """The rows of an array: 2-D, or N-D with ``collapse_leading``.

    Requires stride 1 along the last axis and a uniform, non-negative row
    stride of at least the row length.
    """
    shape, strides, what = array.shape, array.strides, array.what
    if len(shape) == 2 and shape[0] > 1 and shape[1] > 1 and strides[1] == 1 and strides[0] >= shape[1]:
        return Matrix(array, shape[0], shape[1], strides[0])  # the common case, checked
    if len(shape) < 1 or (len(shape) != 2 and not collapse_leading):
        raise InvalidArgumentError(f"{what}: expected a 2-D array [rows, cols], got shape {list(shape)}")
    cols = shape[-1]
    if 0 in shape:  # empty: nothing is read or written, strides do not matter
        return Matrix(array, math.prod(shape[:-1]), cols, max(cols, 1))
    if cols > 1 and strides[-1] != 1:
        raise InvalidArgumentError(
            f"{what}: rows must be contiguous (stride 1 along the last axis), got strides "
            f"{list(strides)} (in elements); pass a contiguous array (.contiguous() / "
            f"numpy.ascontiguousarray)"
        )
    # Collapse the leading axes into one: each must step by the next one's
    # extent times its stride (axes of extent 1 step by anything).
    rows = 1
    ld: Optional[int] = None
    for axis in range(len(shape) - 2, -1, -1):
        extent, stride = shape[axis], strides[axis]
        if extent == 1:
            continue
        if stride < 0:
            raise InvalidArgumentError(f"{what}: negative stride {stride} on axis {axis}")
        if ld is None:
            ld = stride
        elif stride != ld * rows:
            raise InvalidArgumentError(
                f"{what}: the leading axes of shape {list(shape)} with strides {list(strides)} "
                f"cannot be viewed as rows with one row stride; pass a contiguous array"
            )
        rows *= extent
    if ld is None or rows <= 1:
        ld = cols
    if rows > 1 and ld < cols:
        raise InvalidArgumentError(
            f"{what}: row stride {ld} is smaller than the row length {cols} (rows overlap)"
        )
    return Matrix(array, rows, cols, max(ld, 1))


def check_contiguous(array: "Array | RawArray") -> None:
    """Refuses an array that is not dense row-major (C order)."""
    expected = 1
    for axis in range(len(array.shape) - 1, -1, -1):
        extent, stride = array.shape[axis], array.strides[axis]
        if extent != 1 and stride != expected:
            raise InvalidArgumentError(
                f"{array.what}: must be contiguous (row-major, no gaps): shape "
                f"{list(array.shape)}, strides {list(array.strides)} in elements; "
                f"pass .contiguous() / numpy.ascontiguousarray(...)"
            )
        expected *= extent


def check_shape(array: Array, expected: Sequence[int]) -> None:
    if tuple(array.shape) != tuple(expected):
        raise InvalidArgumentError(
            f"{array.what}: shape {list(array.shape)} does not match the expected {list(expected)}"
        )


def check_same_device(arrays: Sequence[Array]) -> Device:
    devices = {a.device for a in arrays}
    if len(devices) > 1:
        listing = ", ".join(f"{a.what} on {a.device}" for a in arrays)
        raise InvalidArgumentError(f"arrays must be on one device: {listing}")
    return arrays[0].device


# --------------------------------------------------------------------------
# Allocation of results in the caller's framework
# --------------------------------------------------------------------------


def empty(like: Array, shape: Sequence[int], code: DType) -> Any:
    """An uninitialized array of ``shape`` and ``code`` in the framework and on
    the device of ``like`` (torch: from torch's caching allocator)."""
    if like.is_torch:  # (new_empty: like's device without a torch.device object)
        return like.obj.new_empty(tuple(shape), dtype=torch_dtype(code))
    return np.empty(tuple(shape), dtype=numpy_dtype(code))


def empty_matrix(like: Array, shape: Sequence[int], code: DType, what: str) -> Matrix:
    """A new dense array (as :func:`empty`) described as rows of its last
    axis, without re-checking what was just allocated."""
    obj = empty(like, shape, code)
    cols = shape[-1]
    rows = math.prod(shape[:-1])
    pointer = obj.data_ptr() if like.is_torch else obj.__array_interface__["data"][0]
    ndim = len(shape)
    strides = tuple(math.prod(shape[axis + 1 :]) for axis in range(ndim))
    array = Array(obj, like.is_torch, pointer, tuple(shape), strides, code, like.device, what)
    return Matrix(array, rows, cols, max(cols, 1))


def empty_bytes(like: Array, nbytes: int) -> Any:
    """A workspace of ``nbytes`` bytes beside ``like`` (torch only; numpy
    callers let the library allocate)."""
    return like.obj.new_empty((nbytes,), dtype=torch_module().uint8)


@dataclass
class RawArray:
    """Any array's memory, whatever its element type (for file I/O)."""

    obj: Any
    pointer: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]  # in elements
    itemsize: int
    device: Device
    what: str


def describe_raw(obj: Any, what: str) -> RawArray:
    """Describes a numpy array or torch tensor of any element type."""
    if is_torch_tensor(obj):
        device = HOST if obj.is_cpu else Device(obj.device.type, obj.device.index or 0)
        return RawArray(obj, obj.data_ptr(), tuple(obj.shape), tuple(obj.stride()),
                        obj.element_size(), device, what)
    array = np.asarray(obj)
    itemsize = array.dtype.itemsize
    strides = tuple(s // itemsize for s in array.strides)
    if any(s % itemsize for s in array.strides):
        raise InvalidArgumentError(f"{what}: strides {array.strides} are not whole elements")
    return RawArray(array, array.__array_interface__["data"][0], tuple(array.shape), strides,
                    itemsize, HOST, what)
