"""Loading libfp8gemm and declaring its C API for ctypes.

This module mirrors ``include/fp8gemm.h``: the enums' values, the structs'
fields (in order) and every function's argument and result types. Nothing
here is compiled; the shared library is found at import time, in this order:

1. the path in the environment variable ``FP8GEMM_LIBRARY``;
2. a copy inside the package (``fp8gemm/lib/libfp8gemm.so*``), put there by
   ``pip install``;
3. the system loader (``libfp8gemm.so.0.1``, ``libfp8gemm.so``), i.e. a
   library installed with ``make install`` into a directory on the loader's
   path.

Every function returning an ``fp8gemm_status`` goes through :func:`check`,
which turns a non-zero status into the matching :class:`fp8gemm.Error`
carrying the library's per-thread message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import LibraryNotFoundError, error_for_status

PACKAGE_DIR = Path(__file__).resolve().parent


def package_dirs() -> list[Path]:
    """The package's folders: this one, and in an editable install (pip
    install -e) also the one in site-packages where the build put lib/ and
    bin/ (both are on the package's ``__path__``)."""
    package = sys.modules.get(__package__ or "fp8gemm")
    folders = [Path(p) for p in getattr(package, "__path__", [])]
    return folders if folders else [PACKAGE_DIR]

# --------------------------------------------------------------------------
# Constants of fp8gemm.h
# --------------------------------------------------------------------------

BLOCK = 128
LAYOUT_AUTO = -1
SIZE_MAX = ctypes.c_size_t(-1).value
ST_MAX_RANK = 16

size_t = ctypes.c_size_t
c_int = ctypes.c_int
c_void_p = ctypes.c_void_p
c_char_p = ctypes.c_char_p
c_float_p = ctypes.POINTER(ctypes.c_float)
c_double_p = ctypes.POINTER(ctypes.c_double)
c_uint8_p = ctypes.POINTER(ctypes.c_uint8)


class ContextOptions(ctypes.Structure):
    """``fp8gemm_context_options``."""

    _fields_ = [
        ("backend", c_int),
        ("num_threads", c_int),
        ("isa", c_char_p),
        ("cuda_device", c_int),
        ("cuda_stream", c_void_p),
        ("tuned_table_path", c_char_p),
    ]


class WeightDesc(ctypes.Structure):
    """``fp8gemm_weight_desc``."""

    _fields_ = [
        ("N", size_t),
        ("K", size_t),
        ("dtype", c_int),
        ("data", c_void_p),
        ("layout", c_int),
        ("memory", c_int),
        ("scale_inv", c_void_p),
        ("bias", c_void_p),
        ("bias_dtype", c_int),
        ("target_layout", c_int),
    ]


class TensorView(ctypes.Structure):
    """``fp8gemm_tensor_view`` (a tensor of an open safetensors file)."""

    _fields_ = [
        ("name", c_char_p),
        ("dtype", c_int),
        ("rank", size_t),
        ("shape", ctypes.POINTER(size_t)),
        ("elements", size_t),
        ("data", c_void_p),
        ("offset", size_t),
        ("bytes", size_t),
    ]


# fp8gemm_status (*fp8gemm_tensor_fill_fn)(void *user, void *dst, size_t bytes)
TENSOR_FILL_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, size_t)

# --------------------------------------------------------------------------
# Function prototypes: name -> (result type, argument types)
# --------------------------------------------------------------------------

_STATUS = c_int  # every fp8gemm_status result

_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    # status and errors
    "fp8gemm_status_string": (c_char_p, [c_int]),
    "fp8gemm_last_error": (c_char_p, []),
    "fp8gemm_version_string": (c_char_p, []),
    # types
    "fp8gemm_dtype_name": (c_char_p, [c_int]),
    "fp8gemm_dtype_size": (size_t, [c_int]),
    "fp8gemm_layout_name": (c_char_p, [c_int]),
    "fp8gemm_layout_from_name": (_STATUS, [c_char_p, ctypes.POINTER(c_int)]),
    "fp8gemm_backend_name": (c_char_p, [c_int]),
    "fp8gemm_backend_available": (c_int, [c_int]),
    # backend memory
    "fp8gemm_memory_alloc": (_STATUS, [c_void_p, size_t, ctypes.POINTER(c_void_p)]),
    "fp8gemm_memory_free": (None, [c_void_p, c_void_p]),
    "fp8gemm_memory_copy": (_STATUS, [c_void_p, c_void_p, c_void_p, size_t, c_int]),
    # codecs
    "fp8gemm_e4m3fn_from_float": (ctypes.c_uint8, [ctypes.c_float]),
    "fp8gemm_e4m3fn_to_float": (ctypes.c_float, [ctypes.c_uint8]),
    "fp8gemm_e4m3fnuz_from_float": (ctypes.c_uint8, [ctypes.c_float]),
    "fp8gemm_e4m3fnuz_to_float": (ctypes.c_float, [ctypes.c_uint8]),
    # context
    "fp8gemm_context_options_init": (None, [ctypes.POINTER(ContextOptions)]),
    "fp8gemm_context_create": (
        _STATUS,
        [ctypes.POINTER(ContextOptions), ctypes.POINTER(c_void_p)],
    ),
    "fp8gemm_context_destroy": (None, [c_void_p]),
    "fp8gemm_context_backend": (c_int, [c_void_p]),
    "fp8gemm_context_device": (c_char_p, [c_void_p]),
    "fp8gemm_context_num_threads": (c_int, [c_void_p]),
    "fp8gemm_context_preshuffled_layout": (c_int, [c_void_p]),
    "fp8gemm_context_set_stream": (_STATUS, [c_void_p, c_void_p]),
    "fp8gemm_context_synchronize": (_STATUS, [c_void_p]),
    "fp8gemm_context_choose_layout": (
        _STATUS,
        [c_void_p, size_t, size_t, ctypes.POINTER(c_int)],
    ),
    # quantization
    "fp8gemm_quantize_activations": (
        _STATUS,
        [c_void_p, size_t, size_t, c_int, c_void_p, size_t, c_void_p, size_t, c_void_p, c_int,
         size_t],
    ),
    "fp8gemm_quantize_weight": (
        _STATUS,
        [c_void_p, size_t, size_t, c_int, c_void_p, size_t, c_void_p, c_void_p],
    ),
    # layouts
    "fp8gemm_layout_check": (_STATUS, [c_int, size_t, size_t]),
    "fp8gemm_layout_offset": (size_t, [c_int, size_t, size_t, size_t, size_t]),
    "fp8gemm_shuffle": (_STATUS, [c_void_p, size_t, size_t, c_int, c_void_p, c_int, c_void_p]),
    # weights
    "fp8gemm_weight_desc_init": (None, [ctypes.POINTER(WeightDesc)]),
    "fp8gemm_weight_create": (
        _STATUS,
        [c_void_p, ctypes.POINTER(WeightDesc), ctypes.POINTER(c_void_p)],
    ),
    "fp8gemm_weight_create_in_place": (
        _STATUS,
        [c_void_p, ctypes.POINTER(WeightDesc), c_void_p, ctypes.POINTER(c_void_p)],
    ),
    "fp8gemm_weight_destroy": (None, [c_void_p]),
    "fp8gemm_weight_layout": (c_int, [c_void_p]),
    "fp8gemm_weight_n": (size_t, [c_void_p]),
    "fp8gemm_weight_k": (size_t, [c_void_p]),
    "fp8gemm_weight_backend": (c_int, [c_void_p]),
    "fp8gemm_weight_data": (c_void_p, [c_void_p]),
    "fp8gemm_weight_export": (_STATUS, [c_void_p, c_int, c_void_p]),
    # forward
    "fp8gemm_linear_workspace_size": (
        _STATUS,
        [c_void_p, c_void_p, size_t, ctypes.POINTER(size_t)],
    ),
    "fp8gemm_linear": (
        _STATUS,
        [c_void_p, c_void_p, size_t, c_int, c_void_p, size_t, c_int, c_void_p, size_t, c_void_p,
         size_t],
    ),
    "fp8gemm_gemm": (
        _STATUS,
        [c_void_p, c_void_p, size_t, c_void_p, size_t, c_void_p, c_int, size_t, c_int, c_void_p,
         size_t, c_void_p, size_t],
    ),
    "fp8gemm_gemm_reference": (
        _STATUS,
        [size_t, size_t, size_t, c_void_p, size_t, c_void_p, c_int, size_t, c_void_p, c_int,
         c_void_p, c_void_p, c_void_p, size_t],
    ),
}

# The checkpoint (safetensors) part of the API: wrapped when the loaded
# library exports it (see :data:`HAS_SAFETENSORS`).
_SAFETENSORS_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "fp8gemm_st_dtype_name": (c_char_p, [c_int]),
    "fp8gemm_st_dtype_size": (size_t, [c_int]),
    "fp8gemm_st_dtype_from_name": (_STATUS, [c_char_p, ctypes.POINTER(c_int)]),
    "fp8gemm_safetensors_open": (_STATUS, [c_char_p, ctypes.POINTER(c_void_p)]),
    "fp8gemm_safetensors_open_memory": (_STATUS, [c_void_p, size_t, ctypes.POINTER(c_void_p)]),
    "fp8gemm_safetensors_close": (None, [c_void_p]),
    "fp8gemm_safetensors_count": (size_t, [c_void_p]),
    "fp8gemm_safetensors_tensor": (_STATUS, [c_void_p, size_t, ctypes.POINTER(TensorView)]),
    "fp8gemm_safetensors_contains": (c_int, [c_void_p, c_char_p]),
    "fp8gemm_safetensors_find": (_STATUS, [c_void_p, c_char_p, ctypes.POINTER(TensorView)]),
    "fp8gemm_safetensors_metadata_count": (size_t, [c_void_p]),
    "fp8gemm_safetensors_metadata_at": (
        _STATUS,
        [c_void_p, size_t, ctypes.POINTER(c_char_p), ctypes.POINTER(c_char_p)],
    ),
    "fp8gemm_safetensors_metadata": (c_char_p, [c_void_p, c_char_p]),
    "fp8gemm_safetensors_tensor_layout": (_STATUS, [c_void_p, c_char_p, ctypes.POINTER(c_int)]),
    "fp8gemm_safetensors_writer_create": (_STATUS, [ctypes.POINTER(c_void_p)]),
    "fp8gemm_safetensors_writer_destroy": (None, [c_void_p]),
    "fp8gemm_safetensors_writer_set_metadata": (_STATUS, [c_void_p, c_char_p, c_char_p]),
    "fp8gemm_safetensors_writer_add": (
        _STATUS,
        [c_void_p, c_char_p, c_int, size_t, ctypes.POINTER(size_t), c_void_p],
    ),
    "fp8gemm_safetensors_writer_add_deferred": (
        _STATUS,
        [c_void_p, c_char_p, c_int, size_t, ctypes.POINTER(size_t), TENSOR_FILL_FN, c_void_p],
    ),
    "fp8gemm_safetensors_writer_write": (_STATUS, [c_void_p, c_char_p]),
    "fp8gemm_weight_create_from_safetensors": (
        _STATUS,
        [c_void_p, c_void_p, c_char_p, ctypes.POINTER(c_void_p)],
    ),
}


def _candidate_paths() -> list[str]:
    """The places looked at for the shared library, in order."""
    candidates: list[str] = []
    from_env = os.environ.get("FP8GEMM_LIBRARY")
    if from_env:
        return [from_env]  # an explicit choice is never silently replaced
    for folder in package_dirs():
        # libfp8gemm.so first, then the versioned names.
        by_length = sorted((folder / "lib").glob("libfp8gemm.so*"), key=lambda path: len(path.name))
        candidates.extend(str(path) for path in by_length)
    candidates.extend(["libfp8gemm.so.0.1", "libfp8gemm.so"])
    found = ctypes.util.find_library("fp8gemm")
    if found:
        candidates.append(found)
    return candidates


def _load() -> tuple[ctypes.CDLL, str]:
    failures: list[str] = []
    for candidate in _candidate_paths():
        try:
            return ctypes.CDLL(candidate), candidate
        except OSError as exc:
            failures.append(f"  {candidate}: {exc}")
    raise LibraryNotFoundError(
        "libfp8gemm could not be loaded. Set FP8GEMM_LIBRARY to the built library "
        "(e.g. build/libfp8gemm.so), install the package with pip (which builds it), "
        "or install the library where the system loader finds it. Tried:\n"
        + "\n".join(failures)
    )


lib, LIBRARY_PATH = _load()

for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    try:
        _function = getattr(lib, _name)
    except AttributeError as _exc:
        raise LibraryNotFoundError(
            f"{LIBRARY_PATH} does not export {_name}: it is older or newer than this package "
            f"(which follows include/fp8gemm.h {__name__})"
        ) from _exc
    _function.restype = _restype
    _function.argtypes = _argtypes

#: True when the loaded library has the safetensors functions.
HAS_SAFETENSORS = all(hasattr(lib, name) for name in _SAFETENSORS_PROTOTYPES)
if HAS_SAFETENSORS:
    for _name, (_restype, _argtypes) in _SAFETENSORS_PROTOTYPES.items():
        _function = getattr(lib, _name)
        _function.restype = _restype
        _function.argtypes = _argtypes


def last_error() -> str:
    """The library's message for the last failed call on this thread."""
    message = lib.fp8gemm_last_error()
    return message.decode("utf-8", "replace") if message else ""


def status_string(status: int) -> str:
    return lib.fp8gemm_status_string(status).decode()


def check(status: int, context: str = "") -> None:
    """Raises the :class:`fp8gemm.Error` subclass for a non-zero status.

    Must be called on the thread that made the failing call, before any
    other library call (the message is kept per thread).
    """
    if status != 0:
        message = last_error() or status_string(status)
        if context:
            message = f"{context}: {message}"
        raise error_for_status(status, message, status_string(status))


def call(function: Callable[..., int], *args: Any) -> None:
    """Calls a status-returning library function and raises on failure."""
    check(function(*args))


def handle_value(handle: ctypes.c_void_p) -> int:
    """The address a successful ``*_create``/``*_open`` wrote (never NULL)."""
    if not handle.value:
        raise error_for_status(9, "the library returned OK but no handle", "internal error")
    return int(handle.value)


def version() -> str:
    """The library's version string ("0.1.0")."""
    return lib.fp8gemm_version_string().decode()
