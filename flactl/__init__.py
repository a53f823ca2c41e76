"""flactl: linear-attention language models — kernels, HF models and a lifecycle CLI.

``import flactl`` registers every flactl model with transformers' Auto classes, so checkpoints
published for fla load with ``AutoModelForCausalLM.from_pretrained`` after this import.
The ``flactl`` command itself skips that import at start-up (``--help`` must be instant and
must work when torch is broken); the commands that need models import ``flactl.models``.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _launched_as_cli() -> bool:
    argv0 = _sys.argv[0] if _sys.argv else ""
    base = _os.path.basename(argv0)
    # `python -m flactl`: while runpy imports the package, argv[0] is still the literal "-m".
    return base in ("flactl", "flactl.exe") or argv0 == "-m" or argv0.endswith(_os.path.join("flactl", "__main__.py"))


if not _launched_as_cli():
    from flactl import models  # noqa: F401,E402  (registers Auto classes)
