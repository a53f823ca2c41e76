"""LightNet (Qin et al., 2024, "You Only Scan Once: Efficient Multi-dimension Sequential Modeling with
LightNet"): linear attention whose keys are a softmax over the prefix, run on the GLA kernels.

    z_t = log(exp(z_{t-1}) + exp(x_t))       (running logsumexp of the key logits x = W_k x_t, per channel)
    k_t = exp(x_t - z_t),  gk_t = z_{t-1} - z_t  (0 at a sequence's first token without a cached z)
    S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T,   o_t = W_o (rmsnorm(q_t^T S_t K^-1/2) * swish(W_g2 W_g1 x_t))

with q_t = swish(W_q x_t). Unrolled, S_t = sum_s exp(x_s - z_t) v_s^T: the paper's "additive" decay,
where each key is normalised by the sum over the whole prefix, so the decay comes from the keys
themselves instead of a separate gate. While decoding, z of the last token is kept in the cache
(``ffn_state`` ``[N, 1, H, K]`` float32, fla's layout) next to the GLA state.

Varlen (``cu_seqlens``, also padding removed at the model entry) is supported: the running logsumexp
restarts at every sequence. Parameter names equal fla's ``LightNetAttention``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import FusedRMSNormGated, ShortConvolution, linear_op
from .base import RecurrentMixer
from .utils import document_ids


def normalise_keys(x: torch.Tensor, z0: Optional[torch.Tensor] = None, cu_seqlens: Optional[torch.Tensor] = None):
    """Key logits x ``[B, T, H, K]`` → (k = exp(x - z), log decay gk = z_prev - z, final z ``[N, 1, H, K]``).

    z is the cumulative logsumexp of x along time, started from ``z0`` (``[N, 1, H, K]``, or -inf when
    None), restarting per sequence with ``cu_seqlens`` (B = 1). k has x's dtype; gk and z are float32
    (float64 for float64 x).
    An empty sequence keeps its z0 (-inf without one).
    """
    B, T, H, K = x.shape
    xf = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 math (float64 stays float64)
    if cu_seqlens is None:
        rows, N, lens = xf, B, torch.full((B,), T, device=x.device, dtype=torch.long)
    else:
        # Lay the packed sequences out as right-padded rows [N, L, H, K]; -inf padding adds nothing to a
        # logsumexp, and only the real positions are read back.
        lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        N = lens.numel()
        seq_id = document_ids(cu_seqlens, T, x.device)
        pos = torch.arange(T, device=x.device) - cu_seqlens[seq_id]
        rows = xf.new_full((N, int(lens.max()) if N else 0, H, K), float("-inf"))
        rows = rows.index_put((seq_id, pos), xf[0])
    z = torch.logcumsumexp(rows, dim=1)
    start = z0.to(xf.dtype) if z0 is not None else z.new_full((N, 1, H, K), float("-inf"))
    if z0 is not None:
        z = torch.logaddexp(z, start)
    z_prev = torch.cat([start, z[:, :-1]], dim=1)
    # Nothing before the first token: its key is exp(0) = 1 and no decay applies (gk = 0, not -inf).
    gk = torch.where(torch.isneginf(z_prev), torch.zeros_like(z), z_prev - z)
    last = z.gather(1, (lens - 1).clamp_min(0).view(N, 1, 1, 1).expand(N, 1, H, K)) if z.shape[1] else start
    z_final = torch.where((lens > 0).view(N, 1, 1, 1), last, start)
    k = torch.exp(rows - z)
    if cu_seqlens is not None:
        k, gk = k[seq_id, pos].unsqueeze(0), gk[seq_id, pos].unsqueeze(0)
    return k.to(x.dtype), gk, z_final


class LightNetAttention(RecurrentMixer):
    """LightNet token mixer.

    Args (fla's names and defaults): mode='chunk', hidden_size=1024, num_heads=None, expand_ratio=128
    (key head dim; num_heads = hidden_size // expand_ratio when num_heads is None), use_short_conv=False,
    conv_size=4, conv_bias=False, gate_low_rank_dim=128, elementwise_affine=True, norm_eps=1e-5, layer_idx=None.

    forward(hidden_states [B, T, h], attention_mask [B, T], past_key_values, use_cache, cu_seqlens)
    → (o [B, T, h], None, past_key_values). Cache: ``recurrent_state`` ``[N, H, expand_ratio, h/H]``
    float32, ``ffn_state`` (running key normaliser) ``[N, 1, H, expand_ratio]`` float32, ``conv_state``.
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, num_heads: Optional[int] = None,
                 expand_ratio: Optional[int] = 128, use_short_conv: bool = False, conv_size: int = 4,
                 conv_bias: bool = False, gate_low_rank_dim: int = 128, elementwise_affine: Optional[bool] = True,
                 norm_eps: float = 1e-5, layer_idx: Optional[int] = None, **kwargs):
        super().__init__()
        self.mode, self.layer_idx = mode, layer_idx
        num_heads, expand_ratio = self.heads_from_expand_ratio(hidden_size, num_heads, expand_ratio)
        self.hidden_size, self.num_heads, self.expand_ratio = hidden_size, num_heads, expand_ratio
        self.key_dim, self.value_dim = num_heads * expand_ratio, hidden_size
        self.head_f_dim, self.head_i_dim = expand_ratio, hidden_size // num_heads
        self.gate_low_rank_dim = gate_low_rank_dim
        self.use_short_conv = use_short_conv
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        if use_short_conv:  # no activation inside LightNet's convs (fla), unlike build_qkv's
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation=None)
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size, bias=conv_bias, activation=None)
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size, bias=conv_bias, activation=None)
        self.g_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                    nn.Linear(gate_low_rank_dim, hidden_size, bias=False))
        # One RMSNorm over all heads together. fla applies it through its fused norm+gate+linear without
        # passing eps, so 1e-6 is in effect whatever norm_eps says; checkpoints were trained that way.
        self.g_norm = FusedRMSNormGated(hidden_size, elementwise_affine, eps=1e-6)
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        q, k, v, conv_state = self.project_qkv(x, state, use_cache, cu)
        lead = x.shape[:2]
        q = F.silu(q).view(*lead, self.num_heads, self.head_f_dim)
        k = k.view(*lead, self.num_heads, self.head_f_dim)
        v = v.view(*lead, self.num_heads, self.head_i_dim)
        z0 = state.get("ffn_state")
        k, gk, z_final = normalise_keys(k, z0, cu)
        h0 = state.get("recurrent_state")
        o, ht = linear_op(mode, q, k, v, gk=gk, initial_state=h0, output_final_state=use_cache, cu_seqlens=cu)
        states = dict(recurrent_state=ht, conv_state=conv_state,
                      ffn_state=z_final)
        o = self.g_norm(o.reshape(*lead, self.value_dim), self.g_proj(x))
        return self.o_proj(o), states
