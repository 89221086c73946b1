"""The ``swell`` command."""

from __future__ import annotations

import click

from swell import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="swell")
def cli() -> None:
    """Swell: serve models that scale with their traffic, down to zero and back."""


def _register() -> None:
    from swell.sim._cli import simulate

    cli.add_command(simulate)


def main() -> None:
    _register()
    cli()
