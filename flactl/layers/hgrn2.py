"""HGRN2 (Qin et al., 2024): HGRN with an outer-product state, run on the GLA kernels.

    f_t = lb + (1 - lb) sigmoid(W_f x_t)   (per head, expand_ratio channels)
    q_t = swish(W_q x_t),  k_t = 1 - f_t,  v_t = W_i x_t,  gk_t = log f_t
    S_t = diag(f_t) S_{t-1} + k_t v_t^T,   o_t = W_o rmsnorm(q_t^T S_t K^-1/2)

Parameter names equal fla's ``HGRN2Attention``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import RMSNorm, ShortConvolution, linear_op
from .base import RecurrentMixer


class HGRN2Attention(RecurrentMixer):
    """HGRN2 token mixer.

    Args: mode='chunk', hidden_size=1024, num_heads=None, expand_ratio=128 (num_heads = hidden/expand_ratio
    when num_heads is None), use_short_conv=False, conv_size=4, conv_bias=False, elementwise_affine=True,
    norm_eps=1e-5, layer_idx=None. Cached ``recurrent_state`` ``[N, H, expand_ratio, hidden/H]``.
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, num_heads: Optional[int] = None,
                 expand_ratio: Optional[int] = 128, use_short_conv: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, elementwise_affine: Optional[bool] = True, norm_eps: float = 1e-5,
                 layer_idx: Optional[int] = None, **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        self.hidden_size = hidden_size
        num_heads, expand_ratio = self.heads_from_expand_ratio(hidden_size, num_heads, expand_ratio)
        self.num_heads, self.expand_ratio = num_heads, expand_ratio
        self.forget_dim = num_heads * expand_ratio
        self.input_dim = hidden_size
        self.head_f_dim, self.head_i_dim = expand_ratio, hidden_size // num_heads
        self.use_short_conv = use_short_conv
        self.q_proj = nn.Linear(hidden_size, self.forget_dim, bias=False)
        self.f_proj = nn.Linear(hidden_size, self.forget_dim, bias=False)
        self.i_proj = nn.Linear(hidden_size, self.input_dim, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.forget_dim, conv_size, bias=conv_bias, activation=None)
            self.f_conv1d = ShortConvolution(self.forget_dim, conv_size, bias=conv_bias, activation=None)
            self.i_conv1d = ShortConvolution(self.input_dim, conv_size, bias=conv_bias, activation=None)
        # fla applies this norm through its fused norm+linear with the function's default eps (1e-5),
        # whatever norm_eps says; checkpoints trained with fla were trained that way, so match it
        # (norm_eps 1e-6 here gave logit differences of ~1e-2 against fla: scripts/cpu_fla_parity.py).
        self.g_norm = RMSNorm(hidden_size=self.hidden_size, elementwise_affine=elementwise_affine, eps=1e-5)
        self.o_proj = nn.Linear(self.input_dim, hidden_size, bias=False)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool,
            lower_bound: Optional[torch.Tensor] = None, **kwargs):
        q, f, i = self.q_proj(x), self.f_proj(x), self.i_proj(x)
        conv_state = None
        if self.use_short_conv:
            (q, f, i), conv_state = self.run_convs((self.q_conv1d, self.f_conv1d, self.i_conv1d), (q, f, i),
                                                   state, use_cache, cu)
        q = F.silu(q)
        if lower_bound is not None and self.layer_idx is not None and self.layer_idx > 0:
            lb = lower_bound.float()
            gate = lb + (1 - lb) * f.float().sigmoid()
            k, g = 1 - gate, gate.log()
        else:
            k, g = 1 - f.float().sigmoid(), F.logsigmoid(f.float())
        lead = x.shape[:2]
        q = q.view(*lead, self.num_heads, self.head_f_dim)
        k = k.to(q.dtype).view(*lead, self.num_heads, self.head_f_dim)
        g = g.view(*lead, self.num_heads, self.head_f_dim)
        i = i.view(*lead, self.num_heads, self.head_i_dim)
        h0 = state.get("recurrent_state")
        o, ht = linear_op(mode, q, k, i, gk=g, initial_state=h0, output_final_state=use_cache, cu_seqlens=cu)
        states = dict(recurrent_state=ht, conv_state=conv_state)
        o = self.o_proj(self.g_norm(o.reshape(*lead, self.input_dim)))
        return o, states
