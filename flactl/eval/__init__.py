"""lm-evaluation-harness glue (harness.py), perplexity (ppl.py), generation helpers (generation.py) and bundled offline tasks (tasks/)."""
