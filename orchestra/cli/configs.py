"""``orchestra config example [NAME]``: print an example configuration.

The examples are the repository's ``configs/*.toml``, shipped in the package as
``orchestra/configs/`` (package data; a symlink to ``configs/`` in the source tree), so a
``pipx install`` without the repository still has them:
``orchestra config example > ~/.config/orchestra/orchestra.toml``.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from importlib.resources.abc import Traversable

from orchestra.cli.exits import EXIT_OK, EXIT_USAGE

DEFAULT_EXAMPLE = "orchestra"
"""The example printed when none is named: owned mode on the CPU with the small model."""


def examples() -> dict[str, Traversable]:
    """The example configurations by name (the file name without ``.toml``), sorted."""
    folder = resources.files("orchestra") / "configs"
    found = {
        entry.name.removesuffix(".toml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    }
    return dict(sorted(found.items()))


def add_config_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config example`` to the command line."""
    config = commands.add_parser("config", help="print an example configuration")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    example = actions.add_parser(
        "example",
        help="print an example configuration file to stdout",
        description=(
            "Print one of the example configurations shipped with orchestra, every key "
            "with its default and what it does: orchestra (owned mode, CPU, the small "
            "model; the default), attached (a llama-server you run yourself), cuda (a GPU "
            "box), models, replicas. For example: orchestra config example > orchestra.toml"
        ),
    )
    example.add_argument("name", nargs="?", default=DEFAULT_EXAMPLE, metavar="NAME")
    example.add_argument("--list", action="store_true", help="list the examples' names")


def run_config_command(args: argparse.Namespace) -> int:
    """Run ``config example``; its exit status."""
    found = examples()
    if args.list:
        print("\n".join(found))
        return EXIT_OK
    if args.name not in found:
        print(
            f"orchestra config example: no example {args.name!r} (there are: "
            + ", ".join(found)
            + ")",
            file=sys.stderr,
        )
        return EXIT_USAGE
    sys.stdout.write(found[args.name].read_text(encoding="utf-8"))
    return EXIT_OK
