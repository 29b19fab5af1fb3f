"""The `medsynth` command line: parses options, calls the library, prints. No logic lives here."""

from __future__ import annotations

import os
import sys

import click

from orchestrator.common.errors import Interrupted


class _Group(click.Group):
    """What is not a MedsynthError (click prints those itself, see errors.py): an OSError that escaped the specific
    messages becomes 'error: <path>: <reason>' (exit 1); Interrupted (a stop signal, see
    errors.stop_signals_raise) 'error: interrupted (SIGTERM): <what was cleaned up>', exit 128 + signal."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except BrokenPipeError:  # `medsynth ... | head`: the reader left; no error of ours, no traceback at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except OSError as exc:  # last resort: a user's path the code did not expect to fail, in one line
            paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
            reason = " ".join(str(exc.strerror or exc).split())
            click.echo(f"error: {paths}: {reason}" if paths else f"error: {reason}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="medsynth")
def main() -> None:
    """medsynth: ISIC dermoscopy archives -> SDXL LoRA runs on kohya-ss sd-scripts.

    Typical use: `medsynth dataset build` then `medsynth train` (both read ./medsynth.toml).
    """


from orchestrator.cli.dataset import dataset  # noqa: E402

main.add_command(dataset)

from orchestrator.cli.train import train  # noqa: E402  (registered after the group is defined)

main.add_command(train)

from orchestrator.cli.review import review  # noqa: E402

main.add_command(review)

from orchestrator.cli.sweep import sweep  # noqa: E402

main.add_command(sweep)

from orchestrator.cli.evaluate import evaluate  # noqa: E402

main.add_command(evaluate)

from orchestrator.cli.generate import generate  # noqa: E402

main.add_command(generate)

from orchestrator.cli.reader_study import reader_study  # noqa: E402

main.add_command(reader_study)

from orchestrator.cli.benchmark import benchmark  # noqa: E402

main.add_command(benchmark)

if __name__ == "__main__":
    main()
