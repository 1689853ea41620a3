"""``python -m asgire``: the asgire command line.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the chosen subcommand is imported, so
one that cannot be imported (``bench`` needs a working ``asgiref.sync``) never
stops the others, ``info`` above all, from running.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NamedTuple, Protocol, cast

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_USAGE = 2

#: name -> (module, one-line help, description shown by ``<name> --help``).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "info": (
        "asgire.info",
        "check that `import asgiref` runs asgire, and say how to fix it if not",
        "Print the asgire and Python versions, which installed distribution "
        "provides the `asgiref` import, whether upstream asgiref is installed "
        "too, and whether its files have replaced asgire's (by comparing the "
        "files on disk with the hashes in each distribution's RECORD). When "
        "they have, print the commands that repair the environment. "
        "Exit status: 0 when asgire is in place, 1 on a conflict, 2 on a "
        "usage error.",
    ),
    "bench": (
        "asgire.bench",
        "measure crossing and Local costs on this machine (about 10 s), or "
        "against upstream with --compare",
        "Time each kind of sync/async crossing (sync_to_async, async_to_sync) "
        "and Local access with the installed asgiref, showing progress on "
        "stderr, and print a table (or JSON with --json). With --compare, "
        "measure side by side with upstream asgiref 3.13.0 (about 25 s, after "
        "building upstream's throwaway environment) and print the ratio per workload. "
        "Exit status: 0 when every workload ran, 1 when one failed, 2 on a "
        "usage error.",
    ),
}

EPILOG = """\
exit status:
  0    success; for `info`, `import asgiref` runs asgire
  1    a problem was found: `info` detected a conflict, or a command failed
  2    usage error (unknown command or option)
  130  interrupted (Ctrl-C)

Run `python -m asgire <command> --help` for a command's options."""


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace) -> int: ...


def _version() -> str:
    try:
        return importlib.metadata.version("asgire")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


#: Options of ``python -m asgire`` itself, before the command.
TOP_LEVEL_OPTIONS = frozenset({"-h", "--help", "--version"})


def _chosen(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: the first word that is one."""
    return next((arg for arg in argv if arg in COMMANDS), None)


def _misuse(argv: Sequence[str]) -> str | None:
    """What is wrong with the shape of ``argv``, in the words argparse lacks:
    no command, an unknown one, or a command's options put before it."""
    chosen = _chosen(argv)
    if chosen is None:
        if TOP_LEVEL_OPTIONS.intersection(argv):
            return None  # help or version: argparse answers
        words = [arg for arg in argv if not arg.startswith("-")]
        if words:
            return f"unknown command {words[0]!r}"
        return "no command given" + (f" (with {shlex.join(argv)})" if argv else "")
    index = list(argv).index(chosen)
    stray = [arg for arg in argv[:index] if arg not in TOP_LEVEL_OPTIONS]
    if stray:
        reordered = shlex.join([chosen, *stray, *argv[index + 1 :]])
        return (
            f"{shlex.join(stray)}: a command's options go after it, as in "
            f"`python -m asgire {reordered}`"
        )
    return None


def _command_list() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        f"  {name:<{width}}  {summary}" for name, (_, summary, _) in COMMANDS.items()
    ]
    return "\n".join(["commands:", *lines])


class Cli(NamedTuple):
    parser: argparse.ArgumentParser
    #: Each command's own parser, for errors shown with that command's usage.
    command_parsers: dict[str, argparse.ArgumentParser]
    #: Why the chosen command could not be imported, if it could not.
    load_error: Exception | None


def build_parser(argv: Sequence[str]) -> Cli:
    """The parser for ``argv``, with the options of the command it names loaded."""
    parser = argparse.ArgumentParser(
        prog="python -m asgire",
        description="Tools for asgire, the drop-in replacement for asgiref.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"asgire {_version()}")
    subparsers = parser.add_subparsers(
        dest="command", metavar="<command>", title="commands", required=True
    )
    chosen = _chosen(argv)
    command_parsers: dict[str, argparse.ArgumentParser] = {}
    load_error: Exception | None = None
    command: Command | None = None
    for name, (module_name, summary, description) in COMMANDS.items():
        if name == chosen:
            try:
                command = cast(Command, importlib.import_module(module_name))
            except Exception as exc:
                load_error = exc
                description += f" UNAVAILABLE here: {_describe_error(module_name, exc)}"
        sub = subparsers.add_parser(name, help=summary, description=description)
        command_parsers[name] = sub
        if name == chosen and command is not None:
            command.add_arguments(sub)
            sub.set_defaults(handler=command.run)
    return Cli(parser, command_parsers, load_error)


def _describe_error(module_name: str, exc: Exception) -> str:
    return f"importing {module_name} failed with {type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, command_parsers, load_error = build_parser(argv)
    misuse = _misuse(argv)
    if misuse is not None:
        parser.print_usage(sys.stderr)
        print(
            f"{parser.prog}: error: {misuse}\n\n{_command_list()}\n\n"
            f"Run `{parser.prog} <command> --help` for a command's options.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        args, unknown = parser.parse_known_args(argv)
        # Report stray options against the command, with that command's usage;
        # when the command failed to load, its options are unknown anyway.
        if unknown and load_error is None:
            command_parsers[args.command].error(
                f"unrecognized arguments: {' '.join(unknown)}"
            )
    except SystemExit as exc:  # argparse: 0 for --help and --version, 2 on errors
        return EXIT_USAGE if exc.code else EXIT_OK
    if load_error is not None:
        module_name = COMMANDS[args.command][0]
        print(
            f"python -m asgire {args.command}: unavailable: "
            f"{_describe_error(module_name, load_error)}",
            file=sys.stderr,
        )
        return EXIT_PROBLEM
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, as shell tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PROBLEM


if __name__ == "__main__":
    sys.exit(main())
