"""The ``ipsecfast`` command line (argparse). Errors print a message and exit non-zero;
no traceback reaches the user."""

from __future__ import annotations

import argparse
import sys

from .exceptions import IpsecError


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(quiet=args.quiet)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipsecfast", description="IPsec data plane with Cisco IOS crypto-map semantics"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the built-in demonstration")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    p.set_defaults(func=_cmd_demo)
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
