"""Contexts: a backend (CPU threads, or one CUDA device) and its tuned table.

A context is the only stateful object of the library. Forwards on one
context may run from several Python threads at once (the library releases
nothing shared between them; ctypes releases the GIL during each call).

On CUDA every call runs on torch's *current* stream of the data's device,
read at call time: the context's stream is switched (under a lock, so
threads with different current streams do not interleave a switch and a
launch) only when it changes.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from . import _lib
from ._arrays import HOST, Device, cuda_device, torch_module
from .enums import Backend, BackendLike, Layout, parse_backend
from .errors import InvalidArgumentError

T = TypeVar("T")


class Context:
    """An fp8gemm context (``fp8gemm_context``).

    Args:
        backend: "cpu", "cuda" or "auto" (CUDA when built in and a Hopper GPU
            is present, else the CPU).
        num_threads: CPU threads; 0 = ``FP8GEMM_NUM_THREADS`` or all cores.
        isa: CPU kernels to use ("avx2", "generic"); None = ``FP8GEMM_ISA``
            or the detected one.
        device: CUDA device ordinal.
        tuned_table: path of a tuned table CSV; None = ``FP8GEMM_TUNED`` or the
            table shipped in the library.

    A context is closed by :meth:`close`, by leaving a ``with`` block, or when
    it is garbage collected; weights created on it keep it alive.
    """

    def __init__(
        self,
        backend: BackendLike = "cpu",
        *,
        num_threads: int = 0,
        isa: Optional[str] = None,
        device: int = 0,
        tuned_table: Optional[Union[str, os.PathLike[str]]] = None,
    ) -> None:
        self._handle: Optional[int] = None
        # Weights created on this context (they must be closed before it).
        self._weights: "weakref.WeakSet[Any]" = weakref.WeakSet()
        options = _lib.ContextOptions()
        _lib.lib.fp8gemm_context_options_init(ctypes.byref(options))
        options.backend = int(parse_backend(backend))
        options.num_threads = int(num_threads)
        options.cuda_device = int(device)
        # The option strings stay referenced as long as the context lives.
        self._isa_bytes = isa.encode() if isa is not None else None
        self._table_bytes = os.fsencode(tuned_table) if tuned_table is not None else None
        options.isa = self._isa_bytes
        options.tuned_table_path = self._table_bytes
        handle = ctypes.c_void_p()
        _lib.call(_lib.lib.fp8gemm_context_create, ctypes.byref(options), ctypes.byref(handle))
        self._handle = _lib.handle_value(handle)
        self._lock = threading.Lock()
        self._stream: Optional[int] = None
        self.backend = Backend(_lib.lib.fp8gemm_context_backend(self._handle))
        self.device = cuda_device(int(device)) if self.backend is Backend.CUDA else HOST
        self.tuned_table = Path(tuned_table) if tuned_table is not None else None

    # -- lifetime ----------------------------------------------------------

    @property
    def handle(self) -> int:
        """The ``fp8gemm_context *`` (raises once closed)."""
        if self._handle is None:
            raise InvalidArgumentError("the context is closed")
        return self._handle

    def close(self) -> None:
        """Destroys the context. Weights created on it must be closed first
        (they hold a reference, so garbage collection never breaks this)."""
        open_weights = [w for w in list(self._weights) if w._handle is not None]
        if open_weights:
            raise InvalidArgumentError(
                f"the context still has {len(open_weights)} open weight(s): close them first"
            )
        if self._handle is not None:
            _lib.lib.fp8gemm_context_destroy(self._handle)
            self._handle = None

    def __copy__(self) -> "Context":
        return self  # one backend state, shared

    def __deepcopy__(self, memo: dict[int, Any]) -> "Context":
        return self

    def __reduce__(self) -> Any:
        raise TypeError("an fp8gemm.Context cannot be pickled")

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass

    # -- properties -----------------------------------------------------------

    @property
    def device_name(self) -> str:
        """"avx2" or "generic" on the CPU, the GPU's name on CUDA."""
        return _lib.lib.fp8gemm_context_device(self.handle).decode()

    @property
    def num_threads(self) -> int:
        return int(_lib.lib.fp8gemm_context_num_threads(self.handle))

    @property
    def preshuffled_layout(self) -> Layout:
        """What "preshuffled" means on this backend."""
        return Layout(_lib.lib.fp8gemm_context_preshuffled_layout(self.handle))

    def choose_layout(self, N: int, K: int) -> Layout:
        """The layout the tuned table assigns to a weight [N, K]."""
        layout = ctypes.c_int()
        _lib.call(
            _lib.lib.fp8gemm_context_choose_layout, self.handle, N, K, ctypes.byref(layout)
        )
        return Layout(layout.value)

    def synchronize(self) -> None:
        """Waits for all work queued on the context (no-op on the CPU)."""
        _lib.call(_lib.lib.fp8gemm_context_synchronize, self.handle)

    def __repr__(self) -> str:
        if self._handle is None:
            return "Context(closed)"
        return (
            f"Context(backend={self.backend.name.lower()!r}, device={self.device_name!r}, "
            f"threads={self.num_threads})"
        )

    # -- running calls ------------------------------------------------------

    def run(self, device: Device, call: Callable[[], T]) -> T:
        """Runs a library call on data that lives on ``device``.

        Checks that the data is where this context computes, and on CUDA
        points the context at torch's current stream of that device first.
        """
        if device is not self.device and device != self.device:
            raise InvalidArgumentError(
                f"the data is on {device} but the context computes on {self.device} "
                f"(backend {self.backend.name.lower()}); move the data or use a context "
                f"for {device}"
            )
        if self.backend is not Backend.CUDA:
            return call()
        stream = current_cuda_stream(device)
        with self._lock:
            if stream != self._stream:
                _lib.call(_lib.lib.fp8gemm_context_set_stream, self.handle, stream)
                self._stream = stream
            return call()


def current_cuda_stream(device: Device) -> int:
    """torch's current CUDA stream on ``device`` as a ``cudaStream_t`` value
    (0 when torch is not loaded: the default stream)."""
    global _get_raw_stream
    if _get_raw_stream is None:
        torch = torch_module()
        if torch is None:
            return 0
        # The raw pointer without a Stream object (what torch's Inductor
        # uses); the public API where that private function is missing.
        _get_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None) or (
            lambda index: torch.cuda.current_stream(index).cuda_stream
        )
    return int(_get_raw_stream(device.index))


_get_raw_stream: Optional[Callable[[int], int]] = None


_default_contexts: dict[Device, Context] = {}
_default_lock = threading.Lock()


def default_context(device: Device = HOST) -> Context:
    """The package's shared context for ``device``, created on first use.

    The CPU one uses all cores (or ``FP8GEMM_NUM_THREADS``); a CUDA one is
    bound to its device ordinal. Both read ``FP8GEMM_TUNED`` at creation.
    """
    with _default_lock:
        context = _default_contexts.get(device)
        if context is None:
            if device.is_cuda:
                context = Context("cuda", device=device.index)
            else:
                context = Context("cpu")
            _default_contexts[device] = context
        return context


def backend_available(backend: BackendLike) -> bool:
    """True when the backend is built into the loaded library and usable here."""
    return bool(_lib.lib.fp8gemm_backend_available(int(parse_backend(backend))))
