"""Mamba2 mixer (Dao & Gu, 2024), SSD computed with the scalar-decay (simple_gla) kernels.

Per head h with dt_t = softplus(dt_raw_t + dt_bias) and A = -exp(A_log):
    S_t = exp(A dt_t) S_{t-1} + B_t (dt_t x_t)^T        (S in R^{N x P}, N = state_size, P = head_dim)
    y_t = C_t^T S_t + D x_t
i.e. simple_gla with q = C, k = B, v = dt·x, g = A·dt and scale 1. x/B/C come through one depthwise
causal conv (+silu); the output is ``rmsnorm(y * silu(z)) * weight`` (gate before norm, grouped by
n_groups), then ``out_proj``. Parameter names equal fla's ``Mamba2`` (``in_proj, conv1d, dt_bias, A_log,
D, norm, out_proj``).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import ShortConvolution, linear_op
from .base import RecurrentMixer


class GatedRMSNorm(nn.Module):
    """``rmsnorm(x * silu(z))`` over groups of ``hidden_size // group_count`` channels, times ``weight``
    (Mamba2's gate-before-norm; ``norm_before_gate=True`` gives ``rmsnorm(x) * silu(z)``)."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, group_count: int = 1, norm_before_gate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps, self.group_count, self.norm_before_gate = eps, group_count, norm_before_gate

    def forward(self, x: torch.Tensor, z: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.float())
        xg = x.view(*x.shape[:-1], self.group_count, -1)
        xg = xg * torch.rsqrt(xg.pow(2).mean(-1, keepdim=True) + self.eps)
        y = xg.view_as(x) * self.weight.float()
        if z is not None and self.norm_before_gate:
            y = y * F.silu(z.float())
        return y.to(dtype)


class Mamba2(RecurrentMixer):
    """Mamba2 token mixer.

    Args (fla/HF names): hidden_size, num_heads (default expand*hidden/head_dim), head_dim=64, state_size=128,
    expand=2, n_groups=1, conv_kernel=4, use_conv_bias=True, use_bias=False, rms_norm=True,
    norm_before_gate=False, norm_eps=1e-5, chunk_size=256, time_step_min=1e-3, time_step_max=0.1,
    time_step_floor=1e-4, time_step_limit=(0, inf), A_init_range=(1, 16), layer_idx=None, mode='chunk'.

    forward(hidden_states [B, T, h], attention_mask, past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cached ``recurrent_state`` ``[N, H, state_size, head_dim]``.
    """

    def __init__(self, hidden_size: int = 2048, num_heads: Optional[int] = None, head_dim: int = 64,
                 state_size: int = 128, expand: int = 2, n_groups: int = 1, conv_kernel: int = 4,
                 use_conv_bias: bool = True, use_bias: bool = False, rms_norm: bool = True,
                 norm_before_gate: bool = False, norm_eps: float = 1e-5, chunk_size: int = 256,
                 time_step_min: float = 1e-3, time_step_max: float = 0.1, time_step_floor: float = 1e-4,
                 time_step_limit: Tuple[float, float] = (0.0, float("inf")),
                 A_init_range: Tuple[float, float] = (1.0, 16.0), layer_idx: Optional[int] = None,
                 mode: str = "chunk", **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.hidden_size, self.head_dim, self.ssm_state_size = hidden_size, head_dim, state_size
        self.intermediate_size = int(expand * hidden_size)
        self.num_heads = num_heads if num_heads is not None else self.intermediate_size // head_dim
        if self.num_heads * head_dim != self.intermediate_size:
            raise ValueError(f"num_heads ({self.num_heads}) * head_dim ({head_dim}) must equal expand * hidden_size "
                             f"({self.intermediate_size})")
        if self.num_heads % n_groups:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of n_groups ({n_groups})")
        self.n_groups, self.time_step_limit = n_groups, tuple(time_step_limit)
        self.time_step_min, self.time_step_max, self.time_step_floor = time_step_min, time_step_max, time_step_floor
        self.A_init_range = tuple(A_init_range)
        self.conv_dim = self.intermediate_size + 2 * n_groups * state_size
        self.in_proj = nn.Linear(hidden_size, self.intermediate_size + self.conv_dim + self.num_heads, bias=use_bias)
        self.conv1d = ShortConvolution(self.conv_dim, conv_kernel, bias=use_conv_bias, activation="silu")
        self.dt_bias = nn.Parameter(torch.empty(self.num_heads))
        self.A_log = nn.Parameter(torch.empty(self.num_heads))
        self.D = nn.Parameter(torch.empty(self.num_heads))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.init_extra_parameters(nn.init)
        self.norm = GatedRMSNorm(self.intermediate_size, eps=norm_eps, group_count=n_groups,
                                 norm_before_gate=norm_before_gate)
        self.out_proj = nn.Linear(self.intermediate_size, hidden_size, bias=use_bias)

    @torch.no_grad()
    def init_extra_parameters(self, init):
        """dt log-uniform in [time_step_min, time_step_max] → dt_bias = softplus^-1(dt); A ~ U(A_init_range)
        → A_log = log A; D = 1. Skips tensors already loaded (transformers' ``_is_hf_initialized``)."""
        copy = getattr(init, "copy_", None) or (lambda t, v: t.copy_(v))
        if not getattr(self.dt_bias, "_is_hf_initialized", False):
            lo, hi = math.log(self.time_step_min), math.log(self.time_step_max)
            dt = torch.exp(torch.rand_like(self.dt_bias, dtype=torch.float32) * (hi - lo) + lo)
            dt = dt.clamp_min(self.time_step_floor)
            copy(self.dt_bias, dt + torch.log(-torch.expm1(-dt)))
        if not getattr(self.A_log, "_is_hf_initialized", False):
            A = torch.empty_like(self.A_log, dtype=torch.float32).uniform_(*self.A_init_range)
            copy(self.A_log, A.log())
        if not getattr(self.D, "_is_hf_initialized", False):
            copy(self.D, torch.ones_like(self.D))

    def mix(self, x_in: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        zxbcdt = self.in_proj(x_in)
        z, xBC, dt = torch.split(zxbcdt, [self.intermediate_size, self.conv_dim, self.num_heads], dim=-1)
        (xBC,), conv_state = self.run_convs((self.conv1d,), (xBC,), state, use_cache, cu)
        gs = self.n_groups * self.ssm_state_size
        x, Bm, Cm = torch.split(xBC, [self.intermediate_size, gs, gs], dim=-1)
        lead = x_in.shape[:2]
        H, P, N, G = self.num_heads, self.head_dim, self.ssm_state_size, self.n_groups
        x = x.view(*lead, H, P)
        Bm = Bm.view(*lead, G, N).repeat_interleave(H // G, dim=2)
        Cm = Cm.view(*lead, G, N).repeat_interleave(H // G, dim=2)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if self.time_step_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.time_step_limit)
        g = -self.A_log.float().exp() * dt                       # [.., H] log decay
        v = (x.float() * dt[..., None]).to(x.dtype)
        h0 = state.get("recurrent_state")
        y, ht = linear_op(mode, Cm, Bm, v, g=g, scale=1.0, initial_state=h0, output_final_state=use_cache,
                          cu_seqlens=cu)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        y = y + x * self.D.to(x.dtype)[:, None]
        y = self.norm(y.reshape(*lead, self.intermediate_size), z)
        o = self.out_proj(y)
        return o, states
