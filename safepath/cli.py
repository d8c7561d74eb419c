"""The `safepath` command line: filter a trace, evaluate a dataset, check rule files, list profiles.

Exit codes: 0 success, 1 a check failed (`rules check`), 2 unusable input, 3 a bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from safepath.detectors.rules import load_rule_file
from safepath.detectors.semantic import load_semantic_rules
from safepath.errors import ConfigError, InvalidRequest, UnknownProfile
from safepath.evaluation import evaluate, format_report, load_dataset
from safepath.filter import SafePathFilter
from safepath.profiles import load_profiles
from safepath.settings import RuntimeSettings

EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_BAD_CONFIG = 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CliError as exc:
        print(f"safepath: error: {exc}", file=sys.stderr)
        return exc.code
    except (InvalidRequest, UnknownProfile) as exc:
        print(f"safepath: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ConfigError as exc:
        print(f"safepath: configuration error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safepath", description="Judge LLM reasoning traces before they leave the sandbox.")
    parser.add_argument("--profiles", type=Path, help="profiles file (default: $SAFEPATH_CONFIG_DIR/profiles.yaml)")
    commands = parser.add_subparsers(dest="command", required=True)

    filt = commands.add_parser("filter", help="filter one trace; prints the result as JSON")
    filt.add_argument("text", nargs="?", help="the reasoning text (default: read --file or standard input)")
    filt.add_argument("-f", "--file", type=Path, help="read the reasoning text from this file")
    filt.add_argument("-p", "--profile", help="safety profile (default: the profiles file's default)")
    filt.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE", help="context entry, repeatable")
    filt.add_argument("--request-id", help="request id to report (default: generated)")
    filt.add_argument("--compact", action="store_true", help="one-line JSON")
    filt.set_defaults(handler=_cmd_filter)

    ev = commands.add_parser("eval", help="evaluate a labelled JSONL dataset")
    ev.add_argument("dataset", type=Path)
    ev.add_argument("-p", "--profile", help="safety profile (default: the profiles file's default)")
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.set_defaults(handler=_cmd_eval)

    rules = commands.add_parser("rules", help="rule file tools")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_commands.add_parser(
        "check", help="validate rule files (default: the keyword/regex and semantic rule files the profiles use)"
    )
    check.add_argument("files", nargs="*", type=Path)
    check.set_defaults(handler=_cmd_rules_check)

    prof = commands.add_parser("profiles", help="print the loaded profiles as JSON")
    prof.set_defaults(handler=_cmd_profiles)
    return parser


def _cmd_filter(args: argparse.Namespace) -> int:
    text = _read_text(args.text, args.file)
    safepath_filter = SafePathFilter(profiles=args.profiles)
    result = safepath_filter.filter(
        text, _parse_context(args.context), profile=args.profile, request_id=args.request_id
    )
    print(result.model_dump_json(indent=None if args.compact else 2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    examples = load_dataset(args.dataset)
    safepath_filter = SafePathFilter(profiles=args.profiles)
    report = evaluate(safepath_filter, examples, profile=args.profile, dataset=str(args.dataset))
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0


def _cmd_rules_check(args: argparse.Namespace) -> int:
    checks = [(path, load_rule_file) for path in args.files]
    if not checks:
        profiles = load_profiles(args.profiles or RuntimeSettings().profiles_path)
        loaders = {"rules": load_rule_file, "semantic": load_semantic_rules}
        paths = {
            profiles.base_dir / s.options["rules_file"]: loaders[s.type]
            for s in profiles.stages.values()
            if s.type in loaders and "rules_file" in s.options
        }
        checks = sorted(paths.items())
    failed = False
    for path, load in checks:
        try:
            rule_file = load(path)
        except ConfigError as exc:
            print(f"FAIL {exc}", file=sys.stderr)
            failed = True
        else:
            print(f"ok   {path}: {len(rule_file.rules)} rules, version {rule_file.version}")
    return EXIT_CHECK_FAILED if failed else 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    profiles = load_profiles(args.profiles or RuntimeSettings().profiles_path)
    print(profiles.model_dump_json(indent=2))
    return 0


def _read_text(text: str | None, file: Path | None) -> str:
    if text is not None and file is not None:
        raise CliError("give the text as an argument or with --file, not both", EXIT_BAD_INPUT)
    if text is not None:
        # argv arrives decoded with surrogateescape: undecodable bytes show up as lone surrogates.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CliError(f"the text argument is not valid UTF-8 (at character {exc.start})", EXIT_BAD_INPUT) from None
        return text
    if file is not None:
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
        source = str(file)
    else:
        raw = sys.stdin.buffer.read()
        source = "standard input"
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{source} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}", EXIT_BAD_INPUT) from None


def _parse_context(pairs: Sequence[str]) -> dict[str, str] | None:
    context = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"--context takes KEY=VALUE, got {pair!r}", EXIT_BAD_INPUT)
        context[key.strip()] = value.strip()
    return context or None


if __name__ == "__main__":
    sys.exit(main())
