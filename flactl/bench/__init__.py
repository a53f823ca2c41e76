"""`flactl bench`: op registry (registry.py), providers incl. the optional fla peer (providers.py), runners for ops (runner.py), layers (layers.py) and models (model.py)."""
