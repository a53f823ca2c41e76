"""The accelerate-based trainer behind ``flactl train`` (see docs/training.md).

Modules: ``recipe`` (TOML schema and validation), ``presets`` (named model configs), ``tokenizer``
(built-in byte-level tokenizer), ``synthetic`` (generated corpora), ``data`` (sources, online
tokenisation, packing with cu_seqlens, sharding, resumable position), ``model`` (Auto-class model
building), ``loop`` (the training loop), ``checkpoint`` (atomic checkpoints, resume, HF export),
``metrics`` (progress, log.jsonl, trackers), ``flops`` (architecture-aware FLOPs for MFU).
Nothing heavy is imported here.
"""
