"""Shared helpers for the lifecycle-command tests (init / generate / eval / bench / convert)."""
from __future__ import annotations

import os

from typer.testing import CliRunner

TINY = ["--hidden-size", "32", "--num-hidden-layers", "2", "--num-heads", "2", "--vocab-size", "260"]


def run_cli(*args, input=None, env=None):
    """Run ``flactl ARGS`` in-process; returns the click Result (exit_code, stdout, stderr)."""
    from flactl.commands import app

    env = {"FLACTL_OPS_BACKEND": "torch", **(env or {})}  # CPU: the models' torch path, not the interpreter
    return CliRunner().invoke(app, [str(a) for a in args], input=input, env=env, catch_exceptions=False)


def make_tiny(tmp, family="gla", *extra):
    out = os.path.join(str(tmp), f"tiny-{family}")
    r = run_cli("init", family, *TINY, *extra, "-o", out)
    assert r.exit_code == 0, r.output
    return out
