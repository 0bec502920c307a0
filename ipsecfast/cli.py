"""The ``ipsecfast`` command line (argparse). Errors print a message and exit non-zero;
no traceback reaches the user."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from .exceptions import ConfigError, IpsecError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(quiet=args.quiet)


def _load_config(path: str) -> Config:
    from .config import parse_config

    with open(path, encoding="utf-8") as fh:
        return parse_config(fh.read(), source=path)


def _config_errors(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a ConfigError as IOS does (the caret under the bad token, so no prefix)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return 2

    return run


@_config_errors
def _cmd_show(args: argparse.Namespace) -> int:
    from .show import show

    config = _load_config(args.config)
    sys.stdout.write(show(config, " ".join(args.words)))
    return 0


@_config_errors
def _cmd_check(args: argparse.Namespace) -> int:
    from .check import check_config, check_pair, exit_status, findings_json, format_findings

    config = _load_config(args.config)
    if args.peer_config:
        findings = check_pair(config, _load_config(args.peer_config))
    else:
        findings = check_config(config)
    sys.stdout.write(findings_json(findings) if args.json else format_findings(findings))
    return exit_status(findings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipsecfast", description="IPsec data plane with Cisco IOS crypto-map semantics"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the built-in demonstration")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser(
        "show", help="an IOS show command over a configuration",
        description="Print what IOS would for: crypto map [interface I | tag M], "
        "crypto dynamic-map [tag M], crypto ipsec transform-set [tag T], crypto isakmp "
        "policy, access-lists [N], running-config.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="IOS configuration file")
    p.add_argument("words", nargs="+", metavar="WORD", help="the show command, e.g. crypto map")
    p.set_defaults(func=_cmd_show)
    p = sub.add_parser(
        "check", help="lint a crypto map configuration (and its peer's)",
        description="Findings with severity, line and reason. Exit status 0 clean (or only "
        "info), 1 warnings, 2 errors or a configuration that does not load.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="IOS configuration file")
    p.add_argument("--peer-config", metavar="FILE2",
                   help="the other IPsec peer's configuration: check how the two fit")
    p.add_argument("--json", action="store_true", help="findings as JSON")
    p.set_defaults(func=_cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except IpsecError as err:
        print(f"ipsecfast: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"ipsecfast: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
