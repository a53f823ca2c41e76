"""Model directories and conversions: build/init configs (``build``), on-disk model directories
(``modeldir``), HF→flactl initialisation, trainer checkpoints → HF, safetensors dtype/resharding."""
