"""The ``flactl`` command-line app.

One module per subcommand, each defining one typed function whose docstring is its help text.
Nothing heavy (torch, triton, transformers) is imported at module level here or in the command
modules, so ``flactl --help`` is instant and keeps working when torch or Triton is broken.
Each command module registers itself by calling ``register(app)``.
"""
from __future__ import annotations

import importlib
import typer

from flactl import __version__

app = typer.Typer(
    name="flactl",
    help="Linear-attention language models: kernels, models, train / generate / eval / bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Subcommand modules, in the order shown by --help. A module is listed only once it really works.
COMMAND_MODULES = [
    "check_env",
    "train",
    "init",
    "generate",
    "eval",
    "bench",
    "convert",
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"flactl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """flactl: the lifecycle of linear-attention language models from one command line."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"flactl.commands.{_name}").register(app)


def main() -> None:  # console-script entry point
    app()
