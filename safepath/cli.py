"""The `safepath` command line: filter a trace, evaluate a dataset, check rule files, list profiles, audit trail.

Exit codes: 0 success, 1 a check failed (`rules check`), 2 unusable input (empty, over the profile's
max_content_chars, not UTF-8, bad arguments), 3 a bad configuration (profiles, rules, the audit database's
path), 4 the audit database did not answer, 141 standard output closed early (`safepath ... | head`; 128 + SIGPIPE,
what a shell reports for a process a closed pipe kills).

`filter` checks its input before it loads any model (seconds), so bad input fails at once. It reads at most
4 x max_content_chars + 1 bytes of standard input or --file (UTF-8 takes at most 4 bytes a character) and
refuses more without reading on.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from safepath.detectors.rules import load_rule_file
from safepath.detectors.semantic import load_semantic_rules
from safepath.errors import ConfigError, ContentTooLarge, EmptyContent, InvalidRequest, ModelLoadError, UnknownProfile
from safepath.evaluation import evaluate, format_report, load_dataset, measuring
from safepath.filter import SafePathFilter
from safepath.profiles import ProfileSet, load_profiles
from safepath.settings import RuntimeSettings

EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_BAD_CONFIG = 1, 2, 3
EXIT_UNAVAILABLE = 4
EXIT_BROKEN_PIPE = 141
UTF8_MAX_BYTES_PER_CHAR = 4


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except OutputClosed:
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    except CliError as exc:
        print(f"safepath: error: {exc}", file=sys.stderr)
        return exc.code
    except (InvalidRequest, UnknownProfile) as exc:
        print(f"safepath: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ConfigError, ModelLoadError) as exc:  # a missing model file is the installation's fault, not the input's
        print(f"safepath: configuration error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except ValidationError as exc:
        if exc.title != RuntimeSettings.__name__:
            raise
        # a SAFEPATH_* variable out of range (SAFEPATH_RATE_LIMIT_PER_MINUTE=0, say): name it, no traceback
        problems = "; ".join(f"SAFEPATH_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"safepath: configuration error: {problems}", file=sys.stderr)
        return EXIT_BAD_CONFIG


class OutputClosed(Exception):
    """Standard output's reader went away (`safepath ... | head`)."""


def _out(text: str) -> None:
    """Print to standard output and flush, so a closed pipe shows here (and only a closed standard output counts
    as one: a BrokenPipeError from a socket elsewhere stays the error it is)."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed() from None


def _drop_stdout() -> None:
    """Point standard output at /dev/null after a BrokenPipeError, so the interpreter's final flush of what is
    still buffered does not fail again (the Python docs' note on SIGPIPE, in the signal module's page)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # stdout is not a file (tests capture it)
        pass


def _add_profiles_option(parser: argparse.ArgumentParser, *, subcommand: bool) -> None:
    # On a subcommand the default is SUPPRESS: argparse would otherwise overwrite a value given before the
    # subcommand with the subcommand's own default.
    parser.add_argument("--profiles", type=Path, default=argparse.SUPPRESS if subcommand else None,
                        help="profiles file (default: $SAFEPATH_CONFIG_DIR/profiles.yaml)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="safepath", description="Judge LLM reasoning traces before they leave the sandbox."
    )
    _add_profiles_option(parser, subcommand=False)
    commands = parser.add_subparsers(dest="command", required=True)

    filt = commands.add_parser("filter", help="filter one trace; prints the result as JSON")
    filt.add_argument("text", nargs="?", help="the reasoning text (default: read --file or standard input)")
    filt.add_argument("-f", "--file", type=Path, help="read the reasoning text from this file")
    filt.add_argument("-p", "--profile", help="safety profile (default: the profiles file's default)")
    filt.add_argument(
        "-c", "--context", action="append", default=[], metavar="KEY=VALUE", help="context entry, repeatable"
    )
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
    for sub in (filt, ev, check, prof):
        _add_profiles_option(sub, subcommand=True)

    audit = commands.add_parser("audit", help="audit trail tools")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    url_help = "audit database: sqlite:///path.db or postgresql://... (default: $SAFEPATH_AUDIT_URL)"
    query = audit_commands.add_parser("query", help="decisions and filter rates over a recent window")
    query.add_argument("--url", default=os.environ.get("SAFEPATH_AUDIT_URL"), help=url_help)
    query.add_argument("--since", default="24h", help="window length, e.g. 30m, 24h, 7d (default: 24h)")
    query.add_argument("--group-by", choices=("category", "verdict", "profile"), default="category")
    query.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    query.set_defaults(handler=_cmd_audit_query)
    retention = audit_commands.add_parser("retention", help="delete (or archive, then delete) old audit records")
    retention.add_argument("--url", default=os.environ.get("SAFEPATH_AUDIT_URL"), help=url_help)
    retention.add_argument("--keep-days", type=int, required=True, help="keep records from the last N days")
    retention.add_argument("--archive-dir", type=Path, help="first write the removed records here as gzip JSONL")
    retention.set_defaults(handler=_cmd_audit_retention)

    proxy = commands.add_parser(
        "proxy", help="serve an OpenAI-compatible proxy that filters the reasoning of an upstream server"
    )
    proxy.add_argument("--upstream", required=True, help="the upstream's OpenAI base URL, e.g. http://127.0.0.1:8001/v1")
    proxy.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    proxy.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    proxy.add_argument("--api-key-env", help="environment variable holding the upstream's API key, sent only for "
                       "callers that present one of SAFEPATH_API_KEYS (required with this option); other callers' "
                       "own Authorization goes upstream as sent")
    proxy.add_argument("-p", "--profile", help="safety profile (default: the profiles file's default)")
    proxy.add_argument("--filter", choices=["reasoning", "reasoning_and_answer"], default="reasoning",
                       help="what is judged (default: reasoning)")
    proxy.add_argument("--on-block", choices=["drop", "marker", "fail"], default="marker",
                       help="what a blocking step does (default: marker)")
    proxy.add_argument("--timeout-s", type=float, default=120.0, help="upstream connect/read timeout (default: 120)")
    proxy.add_argument("--content-starts-in-think", action="store_true",
                       help="content before </think> is reasoning (templates that open the think block in the prompt)")
    proxy.set_defaults(handler=_cmd_proxy)
    _add_profiles_option(proxy, subcommand=True)
    return parser


def _load_profiles(path: Path | None) -> ProfileSet:
    return load_profiles(path or RuntimeSettings().profiles_path)


def _cmd_filter(args: argparse.Namespace) -> int:
    # Everything that can be wrong with the input is checked before the filter loads its models.
    profiles = _load_profiles(args.profiles)
    max_chars = profiles.get(args.profile).max_content_chars
    text = _read_text(args.text, args.file, max_chars)
    if not text.strip():
        raise CliError(str(EmptyContent()), EXIT_BAD_INPUT)
    if len(text) > max_chars:
        raise CliError(str(ContentTooLarge(len(text), max_chars)), EXIT_BAD_INPUT)
    context = _parse_context(args.context)
    with SafePathFilter(profiles=profiles) as safepath_filter:  # closing flushes an audit writer it opened
        result = safepath_filter.filter(text, context, profile=args.profile, request_id=args.request_id)
    _out(result.model_dump_json(indent=None if args.compact else 2))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    examples = load_dataset(args.dataset)
    profiles = _load_profiles(args.profiles)
    profiles.get(args.profile)  # an unknown profile fails before the models load
    with SafePathFilter(profiles=measuring(profiles)) as safepath_filter:
        report = evaluate(safepath_filter, examples, profile=args.profile, dataset=str(args.dataset))
    _out(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0


def _cmd_rules_check(args: argparse.Namespace) -> int:
    checks = [(path, load_rule_file) for path in args.files]
    if not checks:
        profiles = _load_profiles(args.profiles)
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
            _out(f"ok   {path}: {len(rule_file.rules)} rules, version {rule_file.version}")
    return EXIT_CHECK_FAILED if failed else 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    profiles = _load_profiles(args.profiles)
    _out(profiles.model_dump_json(indent=2))
    return 0


def _audit_backend(url: str | None):  # -> AuditBackend; imported here so the other commands never load it
    from safepath.audit import AuditSettings, open_backend

    if not url:
        raise CliError("give the audit database with --url or $SAFEPATH_AUDIT_URL", EXIT_BAD_INPUT)
    # Short one-off use: no connections kept beyond the command's own. Reading never creates a SQLite file: a
    # mistyped path is an error (exit 3), not an empty summary from a fresh database.
    return open_backend(AuditSettings(url=url, pool_min=1, pool_max=2), create=False)


def _with_audit_backend(url: str | None, action):  # action(AuditBackend) -> its answer
    """Run `action` on the backend the URL names, closing it after; an unreachable database exits 4."""
    from safepath.errors import AuditUnavailable

    backend = _audit_backend(url)
    try:
        return action(backend)
    except AuditUnavailable as exc:
        raise CliError(str(exc), EXIT_UNAVAILABLE) from None
    except OSError as exc:  # the archive folder (SQLite; PostgreSQL reports it as AuditUnavailable)
        raise CliError(f"cannot write the archive: {exc}", EXIT_BAD_INPUT) from None
    finally:
        backend.close()


def _cmd_audit_query(args: argparse.Namespace) -> int:
    from safepath.audit import format_summary, parse_since

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from None
    summary = _with_audit_backend(args.url, lambda backend: backend.query(since, args.group_by))
    _out(summary.model_dump_json(indent=2) if args.json else format_summary(summary))
    return 0


def _cmd_audit_retention(args: argparse.Namespace) -> int:
    if args.keep_days < 0:
        raise CliError("--keep-days must be 0 or more", EXIT_BAD_INPUT)
    cutoff = datetime.now(UTC) - timedelta(days=args.keep_days)
    removed = _with_audit_backend(args.url, lambda backend: backend.apply_retention(cutoff, args.archive_dir))
    where = f", archived under {args.archive_dir}" if args.archive_dir else ""
    _out(f"removed {removed} audit records older than {cutoff:%Y-%m-%d %H:%M} UTC{where}")
    return 0


def _cmd_proxy(args: argparse.Namespace) -> int:
    try:
        from safepath.proxy.app import serve
        from safepath.proxy.config import ProxyConfig
    except ImportError as exc:
        raise CliError(
            f"the proxy needs the `proxy` extra (pip install 'cot-safepath[proxy]'): {exc}", EXIT_BAD_CONFIG
        ) from None
    try:
        config = ProxyConfig(
            base_url=args.upstream, api_key_env=args.api_key_env, timeout_s=args.timeout_s, filter=args.filter,
            on_block=args.on_block, profile=args.profile, content_starts_in_think=args.content_starts_in_think,
        )
    except ValueError as exc:
        raise CliError(f"invalid proxy option: {exc}", EXIT_BAD_INPUT) from None
    serve(SafePathFilter(profiles=args.profiles), config, host=args.host, port=args.port)
    return 0


def _read_text(text: str | None, file: Path | None, max_chars: int) -> str:
    """The reasoning text from the argument, --file or standard input, reading at most what `max_chars` can
    take (`UTF8_MAX_BYTES_PER_CHAR` bytes a character) plus one byte."""
    if text is not None and file is not None:
        raise CliError("give the text as an argument or with --file, not both", EXIT_BAD_INPUT)
    if text is not None:
        # argv arrives decoded with surrogateescape: undecodable bytes show up as lone surrogates.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CliError(f"the text argument is not valid UTF-8 (at character {exc.start})", EXIT_BAD_INPUT) from None
        return text
    cap = max_chars * UTF8_MAX_BYTES_PER_CHAR
    if file is not None:
        try:
            with open(file, "rb") as f:
                raw = f.read(cap + 1)
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
        source = str(file)
    else:
        raw = sys.stdin.buffer.read(cap + 1)
        source = "standard input"
    if len(raw) > cap:
        raise CliError(f"{source} is over {cap} bytes, more than the profile's limit of {max_chars} characters "
                       f"can be", EXIT_BAD_INPUT)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{source} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}", EXIT_BAD_INPUT
        ) from None


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
