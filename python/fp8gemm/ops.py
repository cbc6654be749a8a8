"""Quantization, the linear forward, GEMM on pre-quantized inputs, layouts.

Every function takes numpy arrays (host) or torch tensors (CPU or CUDA) and
returns results of the same kind on the same device. Inputs are used in
place (zero-copy): their rows must be contiguous; the row stride is passed to
the library as the leading dimension.

Activation scales are returned and accepted as a logical [M, ceil(K/128)]
array whose strides say the layout: row-major (``scale[m, g]`` at
``m * ld + g``) or M-major (at ``g * ld + m``, i.e. the transpose of a
row-major [G, M] array: what ``As.t().contiguous().t()`` gives in torch).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _lib
from ._arrays import (
    HOST,
    Array,
    DTypeLike,
    Matrix,
    as_matrix,
    check_contiguous,
    check_same_device,
    check_shape,
    describe,
    empty,
    empty_bytes,
    empty_matrix,
    parse_float_dtype,
)
from .context import Context, default_context
from .enums import (
    FLOAT_DTYPES,
    DType,
    LayoutLike,
    ScaleLayout,
    ScaleLayoutLike,
    parse_layout,
    parse_scale_layout,
)
from .errors import InvalidArgumentError
from .weight import Weight, blocks

# --------------------------------------------------------------------------
# Scale arrays
# --------------------------------------------------------------------------


def empty_scales(like: Array, M: int, groups: int, layout: ScaleLayout) -> Any:
    """A float32 [M, groups] array whose strides are those of ``layout``."""
    if layout is ScaleLayout.ROW:
        return empty(like, (M, groups), DType.F32)
    return empty(like, (groups, M), DType.F32).T  # M-major: g * M + m


def describe_scales(
    scales: Any, M: int, groups: int, requested: Optional[ScaleLayout]
) -> tuple[Array, ScaleLayout, int]:
    """Reads the layout and leading dimension of an activation scale array.

    The array is the logical [M, groups]; its strides decide the layout:
    (ld, 1) is row-major and (1, ld) is M-major. Where both readings address
    the same memory (M == 1 or groups == 1) either is correct and the
    requested one (default row-major) is used. A requested layout that the
    strides contradict is an error, never a silent misread.
    """
    array = describe(scales, "x_scale", (DType.F32,))
    check_shape(array, (M, groups))
    row_stride, col_stride = array.strides
    row_ok = (col_stride == 1 or groups == 1) and (row_stride >= groups or M == 1)
    m_major_ok = (row_stride == 1 or M == 1) and (col_stride >= M or groups == 1)
    if requested is None:
        requested = ScaleLayout.ROW if row_ok else ScaleLayout.M_MAJOR
    if requested is ScaleLayout.ROW and row_ok:
        return array, ScaleLayout.ROW, max(row_stride if M > 1 else groups, groups)
    if requested is ScaleLayout.M_MAJOR and m_major_ok:
        return array, ScaleLayout.M_MAJOR, max(col_stride if groups > 1 else M, M)
    described = "row-major" if row_ok else "M-major" if m_major_ok else "neither layout"
    wanted = "row-major (strides (ld >= G, 1))" if requested is ScaleLayout.ROW else (
        "M-major (strides (1, ld >= M))"
    )
    raise InvalidArgumentError(
        f"x_scale: shape [{M}, {groups}] with strides {list(array.strides)} (elements) is "
        f"{described}, but scale_layout asks for {wanted}"
    )


# --------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------


def _context_for(device: Any, context: Optional[Context]) -> Context:
    return context if context is not None else default_context(device)


def quantize_activations(
    x: Any,
    scale_layout: ScaleLayoutLike = "row",
    *,
    context: Optional[Context] = None,
) -> tuple[Any, Any]:
    """Quantizes activations x [M, K] 1x128 (per token, per 128 values of K).

    ``s[m, g] = max(amax(x[m, 128g:128g+128]), 1e-10) / 448`` and
    ``xq = saturate(round(x / s))``. K must be a multiple of 16.

    Returns:
        ``(xq, scale)``: xq [M, K] e4m3fn (numpy: uint8 bytes; torch:
        float8_e4m3fn), scale float32 [M, ceil(K/128)] in ``scale_layout``
        ("row" or "m_major", told by its strides).
    """
    layout = parse_scale_layout(scale_layout)
    x_matrix = as_matrix(describe(x, "x", FLOAT_DTYPES))
    M, K = x_matrix.rows, x_matrix.cols
    groups = blocks(K)
    like = x_matrix.array
    xq = empty(like, (M, K), DType.E4M3FN)
    scale = empty_scales(like, M, groups, layout)
    if M == 0:
        return xq, scale
    scale_array = describe(scale, "x_scale", (DType.F32,))
    scale_ld = M if layout is ScaleLayout.M_MAJOR else groups
    xq_pointer = describe(xq, "xq", (DType.E4M3FN,)).pointer
    ctx = _context_for(like.device, context)
    ctx.run(
        like.device,
        lambda: _lib.call(
            _lib.lib.fp8gemm_quantize_activations,
            ctx.handle,
            M,
            K,
            int(x_matrix.array.dtype),
            x_matrix.pointer,
            x_matrix.ld,
            xq_pointer,
            K,
            scale_array.pointer,
            int(layout),
            scale_ld,
        ),
    )
    return xq, scale


def quantize_weight(w: Any, *, context: Optional[Context] = None) -> tuple[Any, Any]:
    """Quantizes a weight w [N, K] 128x128 (DeepSeek-V3 style).

    Returns:
        ``(wq, weight_scale_inv)``: wq [N, K] e4m3fn plain (numpy: uint8;
        torch: float8_e4m3fn) and float32 [ceil(N/128), ceil(K/128)] with
        ``w ~= wq * weight_scale_inv[n // 128, k // 128]``.
    """
    w_matrix = as_matrix(describe(w, "w", FLOAT_DTYPES))
    N, K = w_matrix.rows, w_matrix.cols
    like = w_matrix.array
    wq = empty(like, (N, K), DType.E4M3FN)
    scale_inv = empty(like, (blocks(N), blocks(K)), DType.F32)
    if N == 0:
        return wq, scale_inv
    wq_pointer = describe(wq, "wq", (DType.E4M3FN,)).pointer
    scale_pointer = describe(scale_inv, "weight_scale_inv", (DType.F32,)).pointer
    ctx = _context_for(like.device, context)
    ctx.run(
        like.device,
        lambda: _lib.call(
            _lib.lib.fp8gemm_quantize_weight,
            ctx.handle,
            N,
            K,
            int(w_matrix.array.dtype),
            w_matrix.pointer,
            w_matrix.ld,
            wq_pointer,
            scale_pointer,
        ),
    )
    return wq, scale_inv


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------


def _output(
    out: Any, like: Array, shape: tuple[int, ...], code: DType
) -> tuple[Any, Matrix]:
    """The output array (given or new) and its rows."""
    if out is None:
        matrix = empty_matrix(like, shape, code, "out")
        return matrix.array.obj, matrix
    out_array = describe(out, "out", FLOAT_DTYPES, writable=True)
    if out_array.dtype is not code:
        raise InvalidArgumentError(
            f"out: dtype {out_array.obj.dtype} does not match out_dtype {code.name.lower()}"
        )
    check_shape(out_array, shape)
    if out_array.device != like.device:
        raise InvalidArgumentError(f"out is on {out_array.device}, the input on {like.device}")
    return out, as_matrix(out_array, collapse_leading=True)


def _workspace(weight: Weight, like: Array, M: int) -> tuple[Any, int, int]:
    """A workspace from torch's caching allocator for CUDA tensors (so that a
    forward does no allocation of its own, also under CUDA graph capture);
    none for host arrays (the library takes host memory itself)."""
    if not like.device.is_cuda:
        return None, 0, 0
    nbytes = weight.workspace_size(M)
    buffer = empty_bytes(like, nbytes)
    return buffer, buffer.data_ptr(), nbytes


def _add_bias(y32: Any, bias: Any, like: Array) -> None:
    """y32 += bias (float32 [..., N] += [N]), in y32's framework."""
    bias_array = describe(bias, "bias", FLOAT_DTYPES)
    if len(bias_array.shape) != 1 or bias_array.shape[0] != y32.shape[-1]:
        raise InvalidArgumentError(
            f"bias: shape {list(bias_array.shape)} does not match [N] = [{y32.shape[-1]}]"
        )
    if bias_array.is_torch != like.is_torch or bias_array.device != like.device:
        raise InvalidArgumentError(
            f"bias: must be a {'torch tensor' if like.is_torch else 'numpy array'} on "
            f"{like.device} like x"
        )
    if like.is_torch:
        y32 += bias_array.obj.to(y32.dtype)
    else:
        y32 += bias_array.obj.astype(np.float32)


def linear(
    x: Any,
    weight: Weight,
    bias: Any = None,
    out_dtype: Optional[DTypeLike] = None,
    *,
    out: Any = None,
) -> Any:
    """``y = quantize_1x128(x) @ W^T + bias``: the forward of a linear layer.

    Args:
        x: [..., K] float32 / bfloat16 / float16, rows contiguous (leading
            axes are collapsed into rows when evenly spaced).
        weight: a :class:`Weight` on the context that computes for x's device.
        bias: None = the weight's own bias (if it was created with one). A bias
            given here is added in float32 before the output is rounded; it is
            refused when the weight already has one.
        out_dtype: float32 / bfloat16 / float16; None = x's dtype.
        out: optional output [..., N] (rows contiguous, may have a row stride).

    Returns:
        y [..., N] (``out`` when given).
    """
    x_array = describe(x, "x", FLOAT_DTYPES)
    x_matrix = as_matrix(x_array, collapse_leading=True)
    if x_matrix.cols != weight.K:
        raise InvalidArgumentError(
            f"x: last dimension {x_matrix.cols} does not match the weight's K = {weight.K}"
        )
    code = x_array.dtype if out_dtype is None else parse_float_dtype(out_dtype)
    if bias is not None and weight.has_bias:
        raise InvalidArgumentError(
            "bias: the weight was created with its own bias; pass bias=None to use it"
        )
    out_shape = tuple(x_array.shape[:-1]) + (weight.N,)
    # An explicit bias is added in float32, then rounded once.
    compute_code = DType.F32 if bias is not None and code is not DType.F32 else code
    if compute_code is code:
        result, y_matrix = _output(out, x_array, out_shape, code)
    else:
        result, y_matrix = _output(None, x_array, out_shape, compute_code)
    M = x_matrix.rows
    if M > 0:
        workspace, workspace_pointer, workspace_bytes = _workspace(weight, x_array, M)
        context = weight.context
        context_handle, weight_handle = context.handle, weight.handle
        context.run(
            x_array.device,
            lambda: _lib.check(
                _lib.lib.fp8gemm_linear(
                    context_handle,
                    weight_handle,
                    M,
                    x_array.dtype,
                    x_matrix.pointer,
                    x_matrix.ld,
                    compute_code,
                    y_matrix.pointer,
                    y_matrix.ld,
                    workspace_pointer or None,
                    workspace_bytes,
                )
            ),
        )
        del workspace  # (kept alive until the call was queued)
    if bias is None:
        return result
    _add_bias(result, bias, x_array)
    if compute_code is code:
        return result
    final, _ = _output(out, x_array, out_shape, code)
    if x_array.is_torch:
        final.copy_(result)
    else:
        final[...] = result.astype(final.dtype)
    return final


def gemm(
    xq: Any,
    x_scale: Any,
    weight: Weight,
    scale_layout: Optional[ScaleLayoutLike] = None,
    out_dtype: DTypeLike = "float32",
    *,
    out: Any = None,
) -> Any:
    """``y = (xq * x_scale) @ W^T (+ the weight's bias)`` on pre-quantized input.

    Args:
        xq: e4m3fn [M, K] (uint8 or float8_e4m3fn), rows contiguous.
        x_scale: float32 [M, ceil(K/128)]; its strides tell its layout
            (row-major or M-major); converted by the library only when the
            kernel reads the other one.
        scale_layout: None = as the strides say; "row" or "m_major" to state
            it (a contradiction with the strides is an error).
        out_dtype: float32 (default), bfloat16 or float16.
        out: optional output [M, N].
    """
    xq_matrix = as_matrix(describe(xq, "xq", (DType.E4M3FN,)))
    M, K = xq_matrix.rows, xq_matrix.cols
    if K != weight.K:
        raise InvalidArgumentError(f"xq: K = {K} does not match the weight's K = {weight.K}")
    requested = None if scale_layout is None else parse_scale_layout(scale_layout)
    scale_array, layout, scale_ld = describe_scales(x_scale, M, blocks(K), requested)
    device = check_same_device([xq_matrix.array, scale_array])
    code = parse_float_dtype(out_dtype)
    result, y_matrix = _output(out, xq_matrix.array, (M, weight.N), code)
    if M == 0:
        return result
    workspace, workspace_pointer, workspace_bytes = _workspace(weight, xq_matrix.array, M)
    context = weight.context
    context.run(
        device,
        lambda: _lib.call(
            _lib.lib.fp8gemm_gemm,
            context.handle,
            weight.handle,
            M,
            xq_matrix.pointer,
            xq_matrix.ld,
            scale_array.pointer,
            int(layout),
            scale_ld,
            int(code),
            y_matrix.pointer,
            y_matrix.ld,
            workspace_pointer or None,
            workspace_bytes,
        ),
    )
    del workspace
    return result


def gemm_reference(
    xq: Any,
    x_scale: Any,
    w: Any,
    weight_scale_inv: Any,
    *,
    w_layout: LayoutLike = "plain",
    bias: Any = None,
    scale_layout: Optional[ScaleLayoutLike] = None,
) -> np.ndarray:
    """The library's oracle: scalar, fp64 accumulation, on host numpy arrays.

    ``w`` is the weight's N*K bytes in ``w_layout`` ([N, K]); bias is
    float32 [N] or None. Returns float64 [M, N].
    """
    xq_matrix = as_matrix(describe(xq, "xq", (DType.E4M3FN,)))
    M, K = xq_matrix.rows, xq_matrix.cols
    scale_array, layout, scale_ld = describe_scales(
        x_scale, M, blocks(K), None if scale_layout is None else parse_scale_layout(scale_layout)
    )
    w_array = describe(w, "w", (DType.E4M3FN,))
    if len(w_array.shape) != 2 or w_array.shape[1] != K:
        raise InvalidArgumentError(f"w: shape {list(w_array.shape)} is not [N, K={K}]")
    check_contiguous(w_array)
    N = w_array.shape[0]
    ws_array = describe(weight_scale_inv, "weight_scale_inv", (DType.F32,))
    check_shape(ws_array, (blocks(N), blocks(K)))
    check_contiguous(ws_array)
    arrays = [xq_matrix.array, scale_array, w_array, ws_array]
    bias_pointer = None
    if bias is not None:
        bias_array = describe(bias, "bias", (DType.F32,))
        check_shape(bias_array, (N,))
        check_contiguous(bias_array)
        arrays.append(bias_array)
        bias_pointer = bias_array.pointer
    if check_same_device(arrays) != HOST:
        raise InvalidArgumentError("gemm_reference computes on host arrays only")
    y = np.empty((M, N), dtype=np.float64)
    _lib.call(
        _lib.lib.fp8gemm_gemm_reference,
        M,
        N,
        K,
        xq_matrix.pointer,
        xq_matrix.ld,
        scale_array.pointer,
        int(layout),
        scale_ld,
        w_array.pointer,
        int(parse_layout(w_layout, "w_layout")),
        ws_array.pointer,
        bias_pointer,
        y.ctypes.data,
        N,
    )
    return y


# --------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------


def check_layout(layout: LayoutLike, N: int, K: int) -> None:
    """Raises :class:`~fp8gemm.InvalidArgumentError` (with the library's
    message) when a weight [N, K] cannot take ``layout``."""
    _lib.call(_lib.lib.fp8gemm_layout_check, int(parse_layout(layout)), N, K)


def layout_offset(layout: LayoutLike, N: int, K: int, n: int, k: int) -> int:
    """Byte offset of element (n, k) of a weight [N, K] stored in ``layout``.

    Raises when the shape does not fit the layout or (n, k) is outside.
    """
    code = parse_layout(layout)
    check_layout(code, N, K)
    if not (0 <= n < N and 0 <= k < K):
        raise InvalidArgumentError(f"(n, k) = ({n}, {k}) is outside the weight [{N}, {K}]")
    return int(_lib.lib.fp8gemm_layout_offset(int(code), N, K, n, k))


def shuffle(
    w: Any,
    layout: LayoutLike,
    *,
    from_layout: LayoutLike = "plain",
    out: Any = None,
    context: Optional[Context] = None,
) -> Any:
    """Reorders the bytes of a 1-byte weight [N, K] from ``from_layout`` into
    ``layout`` (in parallel on the context's backend).

    ``out`` may be ``w`` itself (in place); otherwise a new [N, K] array of
    the same kind is returned. A layout's shape rules are checked by the
    library (``aiter16x16`` needs N % 16 == 0 and K % 32 == 0).
    """
    w_array = describe(w, "w", (DType.E4M3FN,))
    if len(w_array.shape) != 2:
        raise InvalidArgumentError(f"w: expected a 2-D array [N, K], got shape {list(w_array.shape)}")
    check_contiguous(w_array)
    N, K = w_array.shape
    if out is None:
        out = empty(w_array, (N, K), DType.E4M3FN).view(w_array.obj.dtype)
    out_array = describe(out, "out", (DType.E4M3FN,), writable=True)
    check_shape(out_array, (N, K))
    check_contiguous(out_array)
    device = check_same_device([w_array, out_array])
    ctx = _context_for(device, context)
    source, target = int(parse_layout(from_layout, "from_layout")), int(parse_layout(layout))
    ctx.run(
        device,
        lambda: _lib.call(
            _lib.lib.fp8gemm_shuffle, ctx.handle, N, K, source, w_array.pointer, target,
            out_array.pointer,
        ),
    )
    return out


def unshuffle(
    w: Any, layout: LayoutLike, *, out: Any = None, context: Optional[Context] = None
) -> Any:
    """The inverse of :func:`shuffle`: bytes in ``layout`` back to plain."""
    return shuffle(w, "plain", from_layout=layout, out=out, context=context)


# --------------------------------------------------------------------------
# FP8 codecs
# --------------------------------------------------------------------------

_E4M3FN_TABLE: Optional[np.ndarray] = None


def e4m3fn_to_float32(codes: Any) -> np.ndarray:
    """Decodes e4m3fn bytes (numpy uint8 or float8_e4m3fn) into float32 with
    the library's codec (exact for all 256 codes)."""
    global _E4M3FN_TABLE
    if _E4M3FN_TABLE is None:
        _E4M3FN_TABLE = np.array(
            [_lib.lib.fp8gemm_e4m3fn_to_float(code) for code in range(256)], dtype=np.float32
        )
    array = np.asarray(codes)
    if array.dtype.itemsize != 1:
        raise InvalidArgumentError(f"codes: dtype {array.dtype} is not 1-byte e4m3fn")
    return _E4M3FN_TABLE[array.view(np.uint8)]


def e4m3fn_from_float32(values: Any) -> np.ndarray:
    """Encodes float values to e4m3fn bytes (round to nearest even, saturate
    to +-448, NaN stays NaN) with the library's scalar codec. For tests and
    small arrays: one call per element."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    encoded = np.fromiter(
        (_lib.lib.fp8gemm_e4m3fn_from_float(float(v)) for v in flat), dtype=np.uint8, count=flat.size
    )
    return encoded.reshape(np.shape(values))
