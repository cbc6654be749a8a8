"""The C API's enums, and parsing of the names Python callers use for them."""

from __future__ import annotations

from enum import IntEnum
from typing import Union

from .errors import InvalidArgumentError


class DType(IntEnum):
    """``fp8gemm_dtype``."""

    F32 = 0
    BF16 = 1
    F16 = 2
    E4M3FN = 3
    E4M3FNUZ = 4

    @property
    def itemsize(self) -> int:
        return 4 if self is DType.F32 else 2 if self in (DType.BF16, DType.F16) else 1


#: Element types of activations, outputs and biases.
FLOAT_DTYPES = (DType.F32, DType.BF16, DType.F16)


class Layout(IntEnum):
    """``fp8gemm_layout``: the byte order of an e4m3 weight [N, K]."""

    PLAIN = 0
    PRESHUFFLED_CPU = 1
    PRESHUFFLED_SM90 = 2
    AITER16X16 = 3

    @property
    def label(self) -> str:
        """The library's name for the layout ("plain", "aiter16x16", ...)."""
        return self.name.lower()


class ScaleLayout(IntEnum):
    """``fp8gemm_scale_layout``: where scale(m, g) of an activation lives.

    ROW: at ``m * ld + g``; M_MAJOR: at ``g * ld + m``.
    """

    ROW = 0
    M_MAJOR = 1


class Backend(IntEnum):
    """``fp8gemm_backend``."""

    CPU = 0
    CUDA = 1
    AUTO = 2


class Memory(IntEnum):
    """``fp8gemm_memory``."""

    HOST = 0
    DEVICE = 1


class CopyKind(IntEnum):
    HOST_TO_BACKEND = 0
    BACKEND_TO_HOST = 1
    BACKEND_TO_BACKEND = 2


LayoutLike = Union[Layout, str, int]
ScaleLayoutLike = Union[ScaleLayout, str, int]
BackendLike = Union[Backend, str, int]

_LAYOUT_NAMES = {layout.label: layout for layout in Layout}
_SCALE_LAYOUT_NAMES = {
    "row": ScaleLayout.ROW,
    "row_major": ScaleLayout.ROW,
    "m_major": ScaleLayout.M_MAJOR,
}
_BACKEND_NAMES = {backend.name.lower(): backend for backend in Backend}


def parse_layout(value: LayoutLike, what: str = "layout") -> Layout:
    """A :class:`Layout` from itself, its name, or its integer value.

    "preshuffled" is refused here: its meaning depends on a backend (use
    :meth:`fp8gemm.Context.preshuffled_layout`).
    """
    if isinstance(value, Layout):
        return value
    if isinstance(value, str):
        try:
            return _LAYOUT_NAMES[value.lower()]
        except KeyError:
            extra = (
                " ('preshuffled' depends on the backend: use context.preshuffled_layout)"
                if value.lower() == "preshuffled"
                else ""
            )
            raise InvalidArgumentError(
                f"{what} '{value}' is not one of {', '.join(_LAYOUT_NAMES)}{extra}"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Layout(value)
        except ValueError:
            pass
    raise InvalidArgumentError(f"{what} {value!r} is not a layout ({', '.join(_LAYOUT_NAMES)})")


def parse_scale_layout(value: ScaleLayoutLike, what: str = "scale_layout") -> ScaleLayout:
    """A :class:`ScaleLayout` from itself, "row" / "row_major" / "m_major", or 0 / 1."""
    if isinstance(value, ScaleLayout):
        return value
    if isinstance(value, str) and value.lower() in _SCALE_LAYOUT_NAMES:
        return _SCALE_LAYOUT_NAMES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return ScaleLayout(value)
    raise InvalidArgumentError(f"{what} {value!r} is not 'row' or 'm_major'")


def parse_backend(value: BackendLike) -> Backend:
    """A :class:`Backend` from itself, "cpu" / "cuda" / "auto", or its value."""
    if isinstance(value, Backend):
        return value
    if isinstance(value, str) and value.lower() in _BACKEND_NAMES:
        return _BACKEND_NAMES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Backend(value)
        except ValueError:
            pass
    raise InvalidArgumentError(f"backend {value!r} is not 'cpu', 'cuda' or 'auto'")
