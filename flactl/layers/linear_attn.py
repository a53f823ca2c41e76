"""Linear attention with a feature map (Katharopoulos et al., 2020 and follow-ups):

    S_t = S_{t-1} + phi(k_t) v_t^T,   o_t = phi(q_t)^T S_t * K^-1/2   [/ (K^-1/2 phi(q_t) · sum_{s<=t} phi(k_s))]

Feature maps: identity, elu (elu+1), relu, hedgehog (softmax(±Wx), doubles K), t2r (relu(Wx)),
dpfp (Schlag et al., K' = 2·nu·K), elementwise_product (Hadamard: (W1 x) ⊙ (W2 x)). The optional
normalisation keeps its running key sum in the cache (``recurrent_state = (S, z)``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._deps import RMSNorm, _real, linear_op
from .base import RecurrentMixer
from .utils import document_ids, segment_cumsum


class HedgehogFeatureMap(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.layer = nn.Linear(head_dim, head_dim)
        self.init_extra_parameters(nn.init)

    @torch.no_grad()
    def init_extra_parameters(self, init):
        if not getattr(self.layer.weight, "_is_hf_initialized", False):
            self.layer.weight.copy_(torch.eye(self.layer.weight.shape[0]))
            self.layer.bias.zero_()

    def forward(self, x):
        x = self.layer(x)
        return torch.cat([F.softmax(x, -1), F.softmax(-x, -1)], -1)


class T2RFeatureMap(nn.Module):
    def __init__(self, head_dim: int, dot_dim: Optional[int] = None, bias: bool = False):
        super().__init__()
        self.layer = nn.Linear(head_dim, dot_dim or head_dim, bias=bias)

    def forward(self, x):
        return F.relu(self.layer(x))


class HadamardFeatureMap(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.layer1 = nn.Linear(head_dim, head_dim)
        self.layer2 = nn.Linear(head_dim, head_dim)

    def forward(self, x):
        return self.layer1(x) * self.layer2(x)


class DPFPFeatureMap(nn.Module):
    def __init__(self, head_dim: int, nu: int = 4):
        super().__init__()
        self.nu = nu

    def forward(self, x):
        x = torch.cat([F.relu(x), F.relu(-x)], -1)
        rolled = torch.cat([x.roll(shifts=j, dims=-1) for j in range(1, self.nu + 1)], -1)
        return torch.cat([x] * self.nu, -1) * rolled


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def make_feature_map(name: str, head_dim: int) -> nn.Module:
    maps = {"hedgehog": lambda: HedgehogFeatureMap(head_dim), "t2r": lambda: T2RFeatureMap(head_dim),
            "elementwise_product": lambda: HadamardFeatureMap(head_dim), "dpfp": lambda: DPFPFeatureMap(head_dim),
            "elu": lambda: _Fn(lambda x: F.elu(x) + 1), "relu": lambda: _Fn(F.relu),
            "identity": lambda: _Fn(lambda x: x)}
    if name not in maps:
        raise ValueError(f"feature_map must be one of {sorted(maps)}, got {name!r}")
    return maps[name]()


class LinearAttention(RecurrentMixer):
    """Linear attention token mixer.

    Args (fla's names/defaults): mode='chunk', hidden_size=1024, expand_k=1.0, expand_v=1.0, num_heads=8,
    num_kv_heads=None, feature_map='elementwise_product', tie_feature_map_qk=False, output_norm='rmsnorm'
    (or 'identity'), norm_q=False, norm_k=False, do_feature_map_norm=False, elementwise_affine=True,
    norm_eps=1e-5, layer_idx=None.
    """

    def __init__(self, mode: str = "chunk", hidden_size: int = 1024, expand_k: float = 1.0, expand_v: float = 1.0,
                 num_heads: int = 8, num_kv_heads: Optional[int] = None, feature_map: str = "elementwise_product",
                 tie_feature_map_qk: bool = False, output_norm: str = "rmsnorm", norm_q: bool = False,
                 norm_k: bool = False, do_feature_map_norm: bool = False, elementwise_affine: bool = True,
                 norm_eps: float = 1e-5, layer_idx: Optional[int] = None, **kwargs):
        super().__init__()
        self.mode = "chunk" if mode == "fused_chunk" else mode
        self.layer_idx = layer_idx
        self.build_heads(hidden_size, num_heads, num_kv_heads, expand_k, expand_v)
        self.norm_q, self.norm_k, self.do_feature_map_norm = norm_q, norm_k, do_feature_map_norm
        self.feature_map_q = make_feature_map(feature_map, self.head_k_dim)
        self.feature_map_k = self.feature_map_q if tie_feature_map_qk else make_feature_map(feature_map, self.head_k_dim)
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim_per_group, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim_per_group, bias=False)
        if output_norm == "rmsnorm":
            self.norm = RMSNorm(self.head_v_dim, elementwise_affine=elementwise_affine, eps=norm_eps)
        elif output_norm == "identity":
            self.norm = nn.Identity()
        else:
            raise ValueError(f"output_norm must be 'rmsnorm' or 'identity', got {output_norm!r}")
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)

    def mix(self, x: torch.Tensor, cu: Optional[torch.Tensor], state: dict, mode: str, use_cache: bool, **kwargs):
        lead = x.shape[:2]
        q = self.feature_map_q(self.q_proj(x).view(*lead, self.num_heads, self.head_k_dim))
        k = self.feature_map_k(self.k_proj(x).view(*lead, self.num_kv_heads, self.head_k_dim))
        v = self.v_proj(x).view(*lead, self.num_kv_heads, self.head_v_dim)
        if self.norm_q:
            q = q / (q.sum(-1, keepdim=True) + 1e-4)
        if self.norm_k:
            k = k / (k.sum(-1, keepdim=True) + 1e-4)
        if self.num_kv_groups > 1:
            k, v = k.repeat_interleave(self.num_kv_groups, dim=2), v.repeat_interleave(self.num_kv_groups, dim=2)
        cached = state.get("recurrent_state")
        h0, z0 = (cached if isinstance(cached, tuple) else (cached, None))
        fn = _real("flactl.ops.linear_attn", f"{mode}_linear_attn")
        kw = dict(initial_state=h0, output_final_state=use_cache, cu_seqlens=cu)
        o, ht = fn(q, k, v, **kw) if fn is not None else linear_op(mode, q, k, v, **kw)
        zt = None
        if self.do_feature_map_norm:
            o, zt = self._normalize(q, k, o, z0, cu)
        states = dict(recurrent_state=(ht, zt) if self.do_feature_map_norm else ht)
        o = self.norm(o)
        o = self.o_proj(o.reshape(*lead, self.value_dim))
        return o, states

    @staticmethod
    def _normalize(q, k, o, z0, cu):
        """o / (K^-1/2 q · (z0 + running key sum within the sequence)); returns (o, final key sums [N,H,K])."""
        B, T = k.shape[:2]
        if cu is not None:
            kc = segment_cumsum(k, cu)
            if z0 is not None:
                kc = kc + z0[document_ids(cu, T, k.device)].unsqueeze(0)
            last = (cu[1:] - 1).clamp_min(0)
            zt = kc[0, last]
        else:
            kc = k.float().cumsum(1)
            if z0 is not None:
                kc = kc + z0[:, None]
            zt = kc[:, -1]
        den = (q.float() * q.shape[-1] ** -0.5 * kc).sum(-1, keepdim=True)
        return (o.float() / (den + 1e-10)).to(o.dtype), zt
