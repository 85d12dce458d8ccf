"""The `mucode` command line: a thin layer over the library. Each command group lives in its own
module and is registered here; user mistakes become one-line errors (traceback with MUCODE_DEBUG=1)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from mucode import __version__


# Packages behind optional extras: a missing one is named with its install line.
EXTRAS = {
    "vllm": "vllm",
    "ray": "ray",
    "gymnasium": "rl",
    "openvino_genai": "openvino",
    "optimum": "openvino",
    "fastapi": "serve",
    "uvicorn": "serve",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mucode")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    envvar="MUCODE_VERBOSE",
    help="Also show library notices, warnings and loading bars (env: MUCODE_VERBOSE=1).",
)
def app(verbose: bool) -> None:
    """Multi-turn code generation from execution feedback."""
    configure_output(verbose)


def configure_output(verbose: bool) -> None:
    """Quiet by default: mucode's own notices, the libraries' deprecation warnings and loading bars
    only with --verbose; warnings and errors always."""
    logging.basicConfig(format="%(message)s", level=logging.WARNING)
    logging.getLogger("mucode").setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' weight-loading bar
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)


def _register() -> None:
    from mucode.cli import exec as exec_cmd
    from mucode.cli import export as export_cmd
    from mucode.cli import generator as generator_cmd
    from mucode.cli import models as models_cmd
    from mucode.cli import problems as problems_cmd
    from mucode.cli import report as report_cmd
    from mucode.cli import rollout as rollout_cmd
    from mucode.cli import run as run_cmd
    from mucode.cli import search as search_cmd
    from mucode.cli import serve as serve_cmd
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
    app.add_command(report_cmd.view_command)
    app.add_command(serve_cmd.serve_command)
    app.add_command(run_cmd.run_command)
    app.add_command(export_cmd.export_command)
    app.add_command(export_cmd.pass_at_k_command)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        returned = app.main(args=argv, prog_name="mucode", standalone_mode=False)
    except click.exceptions.Exit as stop:
        return stop.exit_code
    except click.ClickException as err:
        err.show()
        return 2 if err.exit_code == 1 else err.exit_code  # a user error: 1 means "tests failed" (exec, solve)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    except ModuleNotFoundError as err:
        if os.environ.get("MUCODE_DEBUG") or not err.name:
            raise
        package = err.name.split(".")[0]
        install = f"pip install 'mucode[{EXTRAS[package]}]'" if package in EXTRAS else f"pip install {package}"
        click.echo(f"Error: this command needs the {package} package, which is not installed: {install}", err=True)
        return 2
    except (ValueError, FileNotFoundError, OSError) as err:
        if os.environ.get("MUCODE_DEBUG"):
            raise
        click.echo(f"Error: {err}", err=True)
        return 2
    return returned if isinstance(returned, int) else 0


if __name__ == "__main__":
    sys.exit(main())
