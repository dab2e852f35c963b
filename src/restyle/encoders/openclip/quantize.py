"""The int8 path for CPUs without native bfloat16: every matrix product of
both towers' transformer blocks (attention's projections included) made an
int8 dynamic-quantized linear layer (torch's ``quantize_dynamic``: int8
weights, activations quantized per batch, fbgemm's AVX2 kernels), the rest
left in fp32.

open_clip's attention is :class:`torch.nn.MultiheadAttention`, whose input
projection is a bare parameter and whose output projection is a class
``quantize_dynamic`` skips: each self-attention becomes :class:`_SelfAttention`,
the same arithmetic with two plain linear layers (sharing the weights, no
copy), before the blocks are quantized one at a time, so that the fp32
weights of a block are freed as its int8 ones are made and loading never
holds two copies of the model.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional

__all__ = ["quantize_int8"]

_QUIET = False


def quantize_int8(model: Any) -> Any:
    """``model`` (an open_clip model in fp32, eval mode) with its transformer
    blocks' linear layers made int8, in place; returned for convenience."""
    _quiet_torch_quantization()
    from torch.ao.quantization import quantize_dynamic

    for tower in (getattr(model, "visual", None), model):
        blocks = getattr(getattr(tower, "transformer", None), "resblocks", ())
        for block in blocks:
            attn = getattr(block, "attn", None)
            if (isinstance(attn, nn.MultiheadAttention) and not hasattr(block, "ln_1_kv")
                    and attn._qkv_same_embed_dim and attn.in_proj_weight is not None):
                block.attn = _SelfAttention(attn)
            for layer in block.modules():
                if isinstance(layer, nn.Linear) and layer.bias is not None:
                    # The int8 layer keeps the bias it is given: a copy of its
                    # own, not a view that would keep a mapped file in memory.
                    layer.bias = nn.Parameter(layer.bias.detach().clone(),
                                              requires_grad=False)
            quantize_dynamic(block, {nn.Linear}, dtype=torch.qint8,  # type: ignore[no-untyped-call]
                             inplace=True)
            fc = getattr(getattr(block, "mlp", None), "c_fc", None)
            if fc is not None:
                # open_clip reads the text tower's dtype from this layer's weight.
                fc.int8_original_dtype = torch.float32
    return model


def _quiet_torch_quantization() -> None:
    """Hold back, once and for good, only torch's own notices about the
    quantization API it still ships (a deprecation notice and one about
    creating quantized tensors): restyle uses that API knowingly, and a
    ``catch_warnings`` around the work would swap process-wide state under
    other threads."""
    global _QUIET
    if not _QUIET:
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, "
                                r"torch\.quantize_per_channel", category=UserWarning)
        _QUIET = True


class _SelfAttention(nn.Module):
    """:class:`torch.nn.MultiheadAttention`'s self-attention (the same weights,
    the same arithmetic) with its projections as plain linear layers, which
    dynamic quantization makes int8."""

    def __init__(self, attn: nn.MultiheadAttention) -> None:
        super().__init__()
        width = attn.embed_dim
        self.heads = attn.num_heads
        self.batch_first = attn.batch_first
        self.in_proj = nn.Linear(width, 3 * width, bias=attn.in_proj_bias is not None,
                                 device="meta")
        self.in_proj.weight = attn.in_proj_weight
        self.in_proj.bias = attn.in_proj_bias
        self.out_proj = nn.Linear(width, width, bias=attn.out_proj.bias is not None,
                                  device="meta")
        self.out_proj.weight = attn.out_proj.weight
        self.out_proj.bias = attn.out_proj.bias

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None,
                value: torch.Tensor | None = None, *, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        # Self-attention only: the block passes the same tensor three times.
        x = query if self.batch_first else query.transpose(0, 1)
        batch, length, width = x.shape
        qkv = self.in_proj(x).view(batch, length, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        return (out if self.batch_first else out.transpose(0, 1)), None
