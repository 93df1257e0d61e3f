"""The command line: one --kebab-case option per setting, generated from settings.SETTINGS.

Options default to 'not given' (argparse.SUPPRESS) so config.py can tell an arg from a default. --help shows each
option's env var and default; secret settings have no default, so --help never shows a secret.
"""

from __future__ import annotations

import argparse
import difflib
import textwrap
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import ConfigError
from .settings import SETTINGS

_GROUPS = {
    "source": "source (where the model comes from)",
    "destination": "destination (where the model goes)",
    "registry": "Model Registry",
    "signing": "signing (sigstore)",
    "general": "job",
}

EPILOG = """\
Every option can also be given as its env var (shown in brackets). Precedence: args > env > .env file >
credentials files > defaults. Booleans take true/false, 1/0, yes/no. Exit codes: 0 done, 1 failed, 2 bad
configuration. --dry-run prints the resolved configuration (secrets as ***) and the preflight result as JSON.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Never split a word: an env var name broken over two lines cannot be copied."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # noqa: D401 - argparse's hook
        """Raise instead of printing usage, so __main__ reports it like any configuration problem."""
        if "unrecognized arguments" in message:
            words = message.split(":", 1)[1].split()
            known = [o for a in self._actions for o in a.option_strings]
            hints = []
            for w in (w for w in words if w.startswith("-")):
                close = difflib.get_close_matches(w.split("=", 1)[0], known, n=1)
                hints.append(f"{w.split('=', 1)[0]} (did you mean {close[0]}?)" if close else w.split("=", 1)[0])
            message = "unknown option " + ", ".join(hints) + "; see modelsync --help"
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="modelsync", usage="modelsync [--dry-run] [--OPTION VALUE ...]   (or MODEL_SYNC_* env vars)",
                     description="Move a model's files between S3, OCI registries, HTTP and "
                     "volumes, and register them in Kubeflow Model Registry.", epilog=EPILOG,
                     formatter_class=_Formatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"modelsync {__version__}")
    parser.add_argument("--dry-run", action="store_true",
                        help="resolve, validate and preflight the configuration; print it as JSON; move nothing")
    groups = {key: parser.add_argument_group(title) for key, title in _GROUPS.items()}
    for s in SETTINGS:
        default = f"; default: {s.default}" if s.default is not None else ""
        choices = f" {{{','.join(s.choices)}}}" if s.choices else ""
        flag = s.kind == "bool"  # '--sign' alone means true
        groups[s.group].add_argument(s.arg, dest=s.name, default=argparse.SUPPRESS,
                                     metavar="BOOL" if flag else s.kind.upper() if not s.choices else "X",
                                     help=f"{s.help}{choices} [{s.env}{default}]",
                                     nargs="?" if flag else None, const="true" if flag else None)
    return parser


def parse_args(argv: Sequence[str] | None) -> tuple[dict[str, str], bool]:
    """Settings given on the command line (name -> text) and whether --dry-run was asked for."""
    ns = vars(build_parser().parse_args(argv))
    dry_run = ns.pop("dry_run", False)
    return {k: v for k, v in ns.items()}, dry_run
