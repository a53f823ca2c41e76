"""Shared model scaffolding, written once for every family (DESIGN.md "Models and checkpoints").

A family supplies a config class and a ``build_mixer(config, layer_idx)`` function; everything else
is here:

* :class:`Block`: ``attn_norm → attn → (+residual) → mlp_norm → mlp (GatedMLP) → (+residual)``; the
  layers listed in ``config.attn`` get softmax :class:`~flactl.layers.Attention` instead.
* :class:`FlactlPreTrainedModel`: fla's weight init, gradient checkpointing.
* :class:`FlactlModel`: embeddings, blocks, final norm; unpads an ``attention_mask`` ONCE at entry
  (the blocks then see ``[1, total, h]`` + ``cu_seqlens``) and re-pads the output.
* :class:`FlactlForCausalLM`: lm_head, labels shifted inside, fused CE / fused linear CE, ``logits_to_keep``,
  ``generate`` with :class:`~flactl.models.cache.Cache`.

State-dict keys equal fla's: ``model.embeddings.weight``, ``model.layers.{i}.{attn_norm,attn,mlp_norm,mlp}``,
``model.norm.weight``, ``lm_head.weight`` (Mamba-style families rename via class attributes).
"""
from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from flactl.layers._deps import GatedMLP, RMSNorm, cross_entropy_losses
from flactl.layers.attn import Attention
from flactl.layers.utils import build_seq_context

from .cache import Cache

try:  # transformers >= 5 guarded init functions (skip tensors already loaded from a checkpoint)
    from transformers import initialization as hf_init
except ImportError:  # pragma: no cover
    hf_init = nn.init


def build_attention(config, layer_idx: int) -> Optional[nn.Module]:
    """Softmax attention for a hybrid layer listed in ``config.attn``, else None."""
    spec = config.attn_spec(layer_idx)
    if spec is None:
        return None
    return Attention(hidden_size=config.hidden_size, num_heads=spec["num_heads"], num_kv_heads=spec["num_kv_heads"],
                     qkv_bias=spec["qkv_bias"], window_size=spec["window_size"], rope_theta=spec["rope_theta"],
                     max_position_embeddings=config.max_position_embeddings, norm_eps=config.norm_eps,
                     layer_idx=layer_idx)


class Block(nn.Module):
    """Pre-norm residual block (fla's ``XBlock``). ``build_mixer(config, layer_idx)`` makes the family layer."""

    def __init__(self, config, layer_idx: int, build_mixer: Callable):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.attn_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = build_attention(config, layer_idx) or build_mixer(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = GatedMLP(hidden_size=config.hidden_size, hidden_ratio=config.hidden_ratio,
                            intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
                            fuse_swiglu=config.fuse_swiglu)

    def forward(self, hidden_states, past_key_values=None, use_cache=False, seq_ctx=None, **kwargs):
        residual = hidden_states
        h = self.attn_norm(hidden_states)
        h, _, past_key_values = self.attn(h, past_key_values=past_key_values, use_cache=use_cache,
                                          seq_ctx=seq_ctx, **kwargs)
        # fused residual add + norm (one pass; returns the new residual stream too), like fla's blocks
        h, residual = self.mlp_norm(h, residual, prenorm=True)
        h = self.mlp(h)
        return residual + h


class FlactlPreTrainedModel(PreTrainedModel):
    """Weight init like fla's: normal(0, initializer_range) for Linear/Conv1d/Embedding, zero biases,
    ones for norms; a layer's own parameters (decay logits, dt_bias, ...) through its
    ``init_extra_parameters(init)`` method. Optional prenorm-residual rescale of ``o_proj``/``down_proj``."""

    config_class = None
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Block"]
    _supports_cache_class = True
    _is_stateful = True

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:  # generate must not build a DynamicCache for us
        return False

    def _init_weights(self, module):
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            hf_init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                hf_init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            hf_init.normal_(module.weight, mean=0.0, std=std)
        elif "Norm" in type(module).__name__:
            if getattr(module, "weight", None) is not None:
                hf_init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                hf_init.zeros_(module.bias)
        if hasattr(module, "init_extra_parameters"):
            module.init_extra_parameters(hf_init)
        strategy = getattr(self.config, "prenorm_residual_strategy", None)
        if getattr(self.config, "rescale_prenorm_residual", False):
            strategy = "rescale"
        if strategy is not None:
            for name in ("o_proj", "down_proj", "out_proj"):
                sub = getattr(module, name, None)
                if isinstance(sub, nn.Linear) and not getattr(sub.weight, "_is_hf_initialized", False):
                    if strategy == "zero":
                        hf_init.zeros_(sub.weight)
                    else:
                        hf_init.kaiming_uniform_(sub.weight, a=math.sqrt(5))
                        with torch.no_grad():
                            sub.weight /= math.sqrt(2 * self.config.num_hidden_layers)


class FlactlModel(FlactlPreTrainedModel):
    """Embeddings → blocks → final norm. Family subclasses set ``build_mixer`` (staticmethod) and
    optionally ``block_class``, ``final_norm_name``, or override ``layer_kwargs``."""

    build_mixer: Callable = None
    block_class = Block
    final_norm_name = "norm"

    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        mixer = type(self).build_mixer
        self.layers = nn.ModuleList([self.block_class(config, i, mixer) for i in range(config.num_hidden_layers)])
        setattr(self, self.final_norm_name, RMSNorm(config.hidden_size, eps=config.norm_eps))
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def layer_kwargs(self, layer_idx: int) -> dict:
        """Extra per-layer keyword arguments (e.g. HGRN's lower bounds)."""
        return {}

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None,
                use_cache=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                cu_seqlens=None, **kwargs):
        if output_attentions:
            warnings.warn("output_attentions is not supported by flactl models; returning None", stacklevel=2)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        use_cache = use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False  # a checkpointed block is replayed in backward; it must not write the cache twice
        hidden = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = hidden.shape[:2]
        if past_key_values is not None and not isinstance(past_key_values, Cache):
            if isinstance(past_key_values, (tuple, list)):
                past_key_values = Cache.from_legacy_cache(past_key_values)
            elif past_key_values.get_seq_length() == 0:
                past_key_values = None  # an empty cache of another kind (e.g. DynamicCache): use ours
            else:
                raise ValueError(f"past_key_values must be a flactl Cache, got {type(past_key_values).__name__}")
        if use_cache and past_key_values is None:
            past_key_values = Cache()
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
        ctx = build_seq_context(B, T, hidden.device, attention_mask, cu_seqlens, past_len)
        hidden = ctx.unpad(hidden)

        all_hidden = []
        for i, block in enumerate(self.layers):
            if output_hidden_states:
                all_hidden.append(ctx.pad(hidden))
            kw = dict(past_key_values=past_key_values if use_cache or past_len else None, use_cache=use_cache,
                      seq_ctx=ctx, **self.layer_kwargs(i))
            if self.gradient_checkpointing and self.training:
                hidden = self._gradient_checkpointing_func(partial(block.__call__, **kw), hidden)
            else:
                hidden = block(hidden, **kw)
        hidden = getattr(self, self.final_norm_name)(hidden)
        hidden = ctx.pad(hidden)
        if output_hidden_states:
            all_hidden.append(hidden)
        out = BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=past_key_values if use_cache else None,
                                      hidden_states=tuple(all_hidden) if output_hidden_states else None,
                                      attentions=None)
        return out if return_dict else out.to_tuple()


class FlactlForCausalLM(FlactlPreTrainedModel, GenerationMixin):
    """Causal LM head over a :class:`FlactlModel` (``model_class``). Labels are shifted inside."""

    model_class = None
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.base_model_prefix, self.model_class(config))
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.criterion = None
        self.post_init()

    @property
    def backbone_model(self):
        return getattr(self, self.base_model_prefix)

    def get_input_embeddings(self):
        return self.backbone_model.embeddings

    def set_input_embeddings(self, value):
        self.backbone_model.embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def _loss(self, hidden, logits, labels):
        """Mean next-token CE over non-ignored labels; ``labels`` are unshifted (shifted here)."""
        labels = labels.to(hidden.device)
        labels = torch.cat([labels[..., 1:], torch.full_like(labels[:, :1], -100)], dim=1)
        ce_cls, flce_cls = cross_entropy_losses()
        if self.config.fuse_linear_cross_entropy and flce_cls is not None:
            if self.criterion is None or not isinstance(self.criterion, flce_cls):
                self.criterion = flce_cls(use_l2warp=self.config.use_l2warp) if self.config.use_l2warp \
                    else flce_cls()
            return self.criterion(hidden, labels, self.lm_head.weight, self.lm_head.bias)
        if logits is None:
            logits = self.lm_head(hidden)
        if self.config.fuse_cross_entropy and ce_cls is not None and logits.is_cuda:
            if self.criterion is None or not isinstance(self.criterion, ce_cls):
                self.criterion = ce_cls(inplace_backward=True)
            return self.criterion(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.view(-1), ignore_index=-100)

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None, labels=None,
                use_cache=None, output_attentions=False, output_hidden_states=False, return_dict=True,
                logits_to_keep: int = 0, cu_seqlens=None, **kwargs):
        kwargs.pop("num_logits_to_keep", None)
        kwargs.pop("cache_position", None)
        kwargs.pop("position_ids", None)  # positions come from attention_mask / cache (left padding safe)
        out = self.backbone_model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                                  inputs_embeds=inputs_embeds, use_cache=use_cache,
                                  output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                  return_dict=True, cu_seqlens=cu_seqlens, **kwargs)
        hidden = out.last_hidden_state
        fuse_linear = self.config.fuse_linear_cross_entropy and labels is not None and self.training
        logits = None
        if not fuse_linear:
            h = hidden[:, -logits_to_keep:] if logits_to_keep else hidden
            logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = self._loss(hidden, logits if not logits_to_keep else None, labels)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=out.past_key_values,
                                        hidden_states=out.hidden_states, attentions=None)
        return result if return_dict else result.to_tuple()

