"""PyTorch integration: the custom op ``torch.ops.fp8gemm.linear`` and ``FP8Linear``.

The op is registered with ``torch.library.custom_op`` and a fake (meta)
implementation, so it works under ``torch.compile`` (an opaque node of known
output shape) and inside CUDA graph capture: it allocates its output and the
library's workspace from torch's caching allocator, runs on torch's current
stream, and the library's forward neither allocates nor synchronizes when
handed a workspace.

Weights are referred to from the op by an integer id (a torch op schema
cannot carry an opaque handle): :func:`register_weight` gives it, and the op
finds the :class:`fp8gemm.Weight` again through a registry holding weak
references (the module or caller keeps the weight alive).

Example::

    import torch, fp8gemm.torch as fp8torch
    model = fp8torch.convert_linear_layers(model)      # nn.Linear -> FP8Linear
    y = torch.compile(model)(x)
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any, Callable, Optional

import torch
from torch import nn

from . import ops
from ._arrays import describe, as_matrix
from .context import Context
from .enums import FLOAT_DTYPES, LayoutLike
from .errors import InvalidArgumentError
from .weight import Weight

__all__ = ["FP8Linear", "convert_linear_layers", "linear", "register_weight"]

_registry: "weakref.WeakValueDictionary[int, Weight]" = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()
_ids = itertools.count(1)


def register_weight(weight: Weight) -> int:
    """The id under which ``torch.ops.fp8gemm.linear`` finds ``weight`` (the same
    id every time for one weight). The registry does not keep it alive."""
    with _registry_lock:
        weight_id = getattr(weight, "_torch_op_id", None)
        if weight_id is None:
            weight_id = next(_ids)
            weight._torch_op_id = weight_id  # type: ignore[attr-defined]
            _registry[weight_id] = weight
        return weight_id


def _lookup(weight_id: int) -> Weight:
    weight = _registry.get(int(weight_id))
    if weight is None:
        raise InvalidArgumentError(
            f"fp8gemm::linear: no live weight has id {weight_id} (it was freed, or never "
            f"registered with fp8gemm.torch.register_weight)"
        )
    return weight


def _rows_are_viewable(x: torch.Tensor) -> bool:
    try:
        as_matrix(describe(x, "x", FLOAT_DTYPES), collapse_leading=True)
        return True
    except InvalidArgumentError:
        return False


def _linear_impl(x: torch.Tensor, weight_id: int, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
    """``quantize_1x128(x) @ W^T + bias`` for the registered weight ``weight_id``."""
    weight = _lookup(weight_id)
    if not x.is_contiguous() and not _rows_are_viewable(x):
        # nn.Linear accepts any strides; so does its drop-in (one copy).
        x = x.contiguous()
    return ops.linear(x, weight, out_dtype=out_dtype)


@torch.library.custom_op("fp8gemm::linear", mutates_args=())
def _linear_op(x: torch.Tensor, weight_id: int, out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``quantize_1x128(x) @ W^T + bias`` for the registered weight ``weight_id``."""
    return _linear_impl(x, weight_id, out_dtype)


@_linear_op.register_fake
def _linear_fake(
    x: torch.Tensor, weight_id: int, out_dtype: Optional[torch.dtype] = None
) -> torch.Tensor:
    weight = _lookup(weight_id)
    if x.shape[-1] != weight.K:
        raise InvalidArgumentError(
            f"x: last dimension {x.shape[-1]} does not match the weight's K = {weight.K}"
        )
    return x.new_empty((*x.shape[:-1], weight.N), dtype=out_dtype or x.dtype)


_dispatch_stack_depth: Optional[Callable[[], int]] = getattr(torch._C, "_len_torch_dispatch_stack", None)


def _eager_direct_call_is_safe(x: Any) -> bool:
    """True when calling the op's implementation directly is what the dispatcher
    would do anyway: a plain tensor, not being compiled or traced (no dispatch
    mode: FakeTensor, make_fx, FunctionalTensor), no autograd to record.

    The dispatcher costs about 10 us per call in eager mode; serving loops
    call a linear hundreds of times per step."""
    return (
        not torch.compiler.is_compiling()  # first: Dynamo folds it and stops here
        and type(x) is torch.Tensor
        and _dispatch_stack_depth is not None
        and _dispatch_stack_depth() == 0
        and not (x.requires_grad and torch.is_grad_enabled())
    )


def _linear_by_id(x: torch.Tensor, weight_id: int, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
    if _eager_direct_call_is_safe(x):
        return _linear_impl(x, weight_id, out_dtype)  # what the op runs
    return torch.ops.fp8gemm.linear(x, weight_id, out_dtype)


def linear(x: torch.Tensor, weight: Weight, out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``fp8gemm.linear`` as the custom op ``torch.ops.fp8gemm.linear``
    (traceable by torch.compile; called without the dispatcher in plain eager
    mode, where the result is the same)."""
    return _linear_by_id(x, register_weight(weight), out_dtype)


class FP8Linear(nn.Module):
    """A linear layer computing with an FP8 block-scaled weight.

    Inference only (no gradients). The weight handle holds the prepared
    bytes, its block scales and its bias; the module has no parameters, so
    it stays on the device it was created for (create it from a layer that is
    already there: the forward refuses inputs on another device).

    Args:
        weight: the prepared :class:`fp8gemm.Weight`.
        out_dtype: output dtype; None = the input's.
    """

    def __init__(self, weight: Weight, out_dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.in_features = weight.K
        self.out_features = weight.N
        self.fp8_weight = weight
        self.weight_id = register_weight(weight)
        self.out_dtype = out_dtype

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        target_layout: Optional[LayoutLike] = None,
        context: Optional[Context] = None,
        out_dtype: Optional[torch.dtype] = None,
    ) -> "FP8Linear":
        """Quantizes ``linear.weight`` 128x128 and prepares the handle once.

        The quantized bytes are reordered in place into the layout the tuned
        table chooses (or ``target_layout``) and the handle computes from
        them: one copy of the weight, on ``linear``'s device.
        """
        with torch.no_grad():
            weight = linear.weight.detach()
            if weight.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                weight = weight.float()
            wq, scale_inv = ops.quantize_weight(weight.contiguous(), context=context)
            bias = linear.bias.detach().contiguous() if linear.bias is not None else None
            handle = Weight.create_in_place(
                wq, scale_inv, bias, target_layout=target_layout, context=context
            )
        return cls(handle, out_dtype=out_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear_by_id(x, self.weight_id, self.out_dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.fp8_weight.has_bias}, layout={self.fp8_weight.layout.label}, "
            f"device={self.fp8_weight.device}"
        )


def convert_linear_layers(
    module: nn.Module,
    *,
    should_convert: Optional[Callable[[str, nn.Linear], bool]] = None,
    **from_linear_args: Any,
) -> nn.Module:
    """Replaces the ``nn.Linear`` layers of ``module`` (in place) by
    :class:`FP8Linear` quantized from them, and returns ``module``.

    Layers whose in_features is not a multiple of 16 (which the library
    refuses) are kept, as are those for which ``should_convert(name, layer)``
    is false. ``from_linear_args`` go to :meth:`FP8Linear.from_linear`.
    """
    if isinstance(module, nn.Linear):
        raise InvalidArgumentError("convert_linear_layers: pass the model holding the layer")
    for name, child in list(module.named_modules()):
        for child_name, layer in list(child.named_children()):
            if not isinstance(layer, nn.Linear) or layer.in_features % 16 != 0:
                continue
            full_name = f"{name}.{child_name}" if name else child_name
            if should_convert is not None and not should_convert(full_name, layer):
                continue
            setattr(child, child_name, FP8Linear.from_linear(layer, **from_linear_args))
    return module
