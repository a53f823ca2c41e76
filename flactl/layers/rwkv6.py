"""RWKV6 "Finch" time mixing (Peng et al., 2024, "Eagle and Finch: RWKV with Matrix-Valued States and
Dynamic Recurrence"), on ``flactl.ops.rwkv6`` (itself the GLA kernels with a one-token shift).

    delta_t = x_{t-1} - x_t                                   (token shift; cached across calls)
    m = x_bias + tanh(lerp(x, mu_x) W1) W2                    (five data-dependent lerp weights r,w,k,v,g)
    r,k,v,g = lerp_i(x) W_i,   w = -exp(lora_w(lerp_w(x)))    (lerp_i(x) = x + delta ⊙ m_i)
    S_t = diag(e^{w_t}) S_{t-1} + k_t^T v_t,   o_t = r_t (S_{t-1} + diag(u) k_t^T v_t)
    out = o_proj(GroupNorm_H(o) ⊙ swish(g))

Parameter names equal fla's ``RWKV6Attention`` (``x_proj.0.mu``, ``x_proj.0.linear``, ``x_proj.2``, ``x_bias``,
``{r,k,v,g}_proj.linear``, ``w_proj.linear.lora.{0,2}``, ``bonus``, ``g_norm``, ``o_proj``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from flactl.modules import GroupNorm, token_shift
from flactl.modules.activations import ACT2FN
from flactl.ops.rwkv6 import chunk_rwkv6, fused_recurrent_rwkv6

from .base import RecurrentMixer


class LoRA(nn.Module):
    """``lora = Sequential(Linear(in, r, bias=False), act, Linear(r, out, bias))`` (fla's key names)."""

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: int, bias: bool = True,
                 activation: Optional[str] = "tanh"):
        super().__init__()
        acts = {None: nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}
        if activation not in acts:
            raise ValueError(f"activation must be one of {list(acts)}, got {activation!r}")
        self.input_dim, self.output_dim, self.low_rank_dim = input_dim, output_dim, low_rank_dim
        self.lora = nn.Sequential(nn.Linear(input_dim, low_rank_dim, bias=False), acts[activation](),
                                  nn.Linear(low_rank_dim, output_dim, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


class LerpLinear(nn.Module):
    """``linear(x + delta ⊙ mu)`` with a learned static lerp weight ``mu [in]``."""

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: Optional[int] = None):
        super().__init__()
        self.input_dim, self.output_dim, self.low_rank_dim = input_dim, output_dim, low_rank_dim
        self.linear = (nn.Linear(input_dim, output_dim, bias=False) if low_rank_dim is None
                       else LoRA(input_dim, output_dim, low_rank_dim))
        self.mu = nn.Parameter(torch.zeros(input_dim))

    def forward(self, x: torch.Tensor, delta: Optional[torch.Tensor] = None,
                cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if delta is None:
            delta = token_shift(x, cu_seqlens)
        return self.linear(x + delta * self.mu)

    def init_extra_parameters(self, init):
        init.zeros_(self.mu)


class DDLerpLinear(nn.Module):
    """``linear(x + delta ⊙ mu)`` with a data-dependent lerp weight ``mu`` given per token."""

    def __init__(self, input_dim: int, output_dim: int, low_rank_dim: Optional[int] = None):
        super().__init__()
        self.input_dim, self.output_dim, self.low_rank_dim = input_dim, output_dim, low_rank_dim
        self.linear = (nn.Linear(input_dim, output_dim, bias=False) if low_rank_dim is None
                       else LoRA(input_dim, output_dim, low_rank_dim))

    def forward(self, x: torch.Tensor, mu: torch.Tensor, delta: Optional[torch.Tensor] = None,
                cu_seqlens: Optional[torch.Tensor] = None) -> torch.Tensor:
        if delta is None:
            delta = token_shift(x, cu_seqlens)
        return self.linear(x + delta * mu)


class RWKV6Attention(RecurrentMixer):
    """RWKV6 time-mixing layer.

    Args (fla's names and defaults): mode='chunk', hidden_size=1024, expand_k=0.5, expand_v=1.0, num_heads=4,
    gate_fn='swish', proj_low_rank_dim=32, gate_low_rank_dim=64, fuse_norm=True, elementwise_affine=True,
    norm_eps=1e-5, layer_idx=None.

    forward(hidden_states [B, T, h], attention_mask [B, T], past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cache: ``recurrent_state`` ``[N, H, K, V]`` float32 and
    ``conv_state`` = the last input token ``[N, h]`` (token shift).
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 0.5, expand_v: float = 1.0,
                 num_heads: int = 4, gate_fn: str = "swish", proj_low_rank_dim: int = 32,
                 gate_low_rank_dim: int = 64, fuse_norm: bool = True, elementwise_affine: Optional[bool] = True,
                 norm_eps: float = 1e-5, layer_idx: Optional[int] = None, **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.expand_k, self.expand_v = expand_k, expand_v
        self.proj_low_rank_dim, self.gate_low_rank_dim = proj_low_rank_dim, gate_low_rank_dim
        key_dim, value_dim = hidden_size * expand_k, hidden_size * expand_v
        self.key_dim, self.value_dim = round(key_dim), round(value_dim)
        if abs(key_dim - self.key_dim) > 1e-6 or abs(value_dim - self.value_dim) > 1e-6:
            raise ValueError(f"hidden_size * expand_k ({key_dim}) and hidden_size * expand_v ({value_dim}) "
                             "must be integers")
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"key_dim {self.key_dim} and value_dim {self.value_dim} must be divisible by "
                             f"num_heads {num_heads}")
        if gate_fn not in ACT2FN:
            raise ValueError(f"gate_fn must be one of {list(ACT2FN)}, got {gate_fn!r}")
        self.head_k_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads

        self.x_proj = nn.Sequential(LerpLinear(hidden_size, proj_low_rank_dim * 5), nn.Tanh(),
                                    nn.Linear(proj_low_rank_dim * 5, hidden_size, bias=False))
        self.x_bias = nn.Parameter(torch.zeros(5, hidden_size))
        self.r_proj = DDLerpLinear(hidden_size, self.key_dim)
        self.w_proj = DDLerpLinear(hidden_size, self.key_dim, low_rank_dim=gate_low_rank_dim)
        self.k_proj = DDLerpLinear(hidden_size, self.key_dim)
        self.v_proj = DDLerpLinear(hidden_size, self.value_dim)
        self.g_proj = DDLerpLinear(hidden_size, self.value_dim)
        self.bonus = nn.Parameter(torch.zeros(num_heads, self.head_k_dim))
        self.g_norm = GroupNorm(num_heads, self.value_dim, elementwise_affine=bool(elementwise_affine), bias=True,
                                eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        self.gate_fn = ACT2FN[gate_fn]

    def init_extra_parameters(self, init):
        init.zeros_(self.x_bias)
        init.zeros_(self.bonus)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        lead = x.shape[:2]
        delta, last = token_shift(x, cu, cache=state.get("conv_state"), output_cache=True)
        m = self.x_proj[0](x, delta).view(*lead, 5, self.proj_low_rank_dim)
        m = torch.einsum("btnr,hnr->btnh", self.x_proj[1](m),
                         self.x_proj[2].weight.view(self.hidden_size, 5, self.proj_low_rank_dim))
        mr, mw, mk, mv, mg = (m + self.x_bias).unbind(-2)
        r = self.r_proj(x, mr, delta).view(*lead, self.num_heads, self.head_k_dim)
        w = self.w_proj(x, mw, delta).view(*lead, self.num_heads, self.head_k_dim)
        k = self.k_proj(x, mk, delta).view(*lead, self.num_heads, self.head_k_dim)
        v = self.v_proj(x, mv, delta).view(*lead, self.num_heads, self.head_v_dim)
        g = self.g_proj(x, mg, delta)
        w = -torch.exp(w.float())
        op = chunk_rwkv6 if mode == "chunk" else fused_recurrent_rwkv6
        o, ht = op(r, k, v, w, self.bonus, scale=1.0, initial_state=state.get("recurrent_state"),
                   output_final_state=use_cache, cu_seqlens=cu)
        o = self.g_norm(o.reshape(*lead, self.value_dim)) * self.gate_fn(g)
        return self.o_proj(o), dict(recurrent_state=ht, conv_state=last if use_cache else None)
