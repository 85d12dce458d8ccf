"""The `mucode` command line: a thin layer over the library. Each command group lives in its own
module and is registered here; user mistakes become one-line errors (traceback with MUCODE_DEBUG=1)."""

from __future__ import annotations

import os
import sys

import click

from mucode import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mucode")
def app() -> None:
    """Multi-turn code generation from execution feedback."""


def _register() -> None:
    from mucode.cli import exec as exec_cmd
    from mucode.cli import generator as generator_cmd
    from mucode.cli import models as models_cmd
    from mucode.cli import problems as problems_cmd
    from mucode.cli import report as report_cmd
    from mucode.cli import rollout as rollout_cmd
    from mucode.cli import run as run_cmd
    from mucode.cli import search as search_cmd
    from mucode.cli import verifier as verifier_cmd

    app.add_command(problems_cmd.problems)
    app.add_command(exec_cmd.exec_command)
    app.add_command(models_cmd.models)
    app.add_command(rollout_cmd.rollout_command)
    app.add_command(search_cmd.search_command)
    app.add_command(search_cmd.solve_command)
    app.add_command(verifier_cmd.verifier)
    app.add_command(generator_cmd.generator)
    app.add_command(report_cmd.report_command)
    app.add_command(run_cmd.run_command)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        returned = app.main(args=argv, prog_name="mucode", standalone_mode=False)
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except (ValueError, FileNotFoundError, OSError) as err:
        if os.environ.get("MUCODE_DEBUG"):
            raise
        click.echo(f"Error: {err}", err=True)
        return 2
    return returned if isinstance(returned, int) else 0


if __name__ == "__main__":
    sys.exit(main())
