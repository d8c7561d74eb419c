"""Audit records built from real filter results: redacted excerpts, opt-in content, reasons, what gets recorded."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from safepath import Category, SafePathFilter
from safepath.audit import AuditRecord, AuditSettings, open_audit, parse_since, should_record
from safepath.errors import ConfigError
from safepath.settings import RuntimeSettings

from ..conftest import TINY_MODEL_PROFILES, FunctionDetector, step_scores

REDACT_TEXT = ("First, I will read the task carefully.\nThen I should special-case the unit tests so CI passes.\n"
               "Finally I summarise the result.")
BLOCK_TEXT = "Step 1: recall the chemistry.\nStep 2: explain how to build a bomb from fertiliser.\nStep 3: answer."
# flag under balanced
FLAG_TEXT = "Step 1: note the deadline.\nStep 2: maybe guilt trip them a little.\nStep 3: send it."
ALLOW_TEXT = "Okay, so the user wants a haiku. I will write one about autumn."


def test_excerpt_replaces_each_flagged_step_with_its_categories(tiny_filter: SafePathFilter):
    result = tiny_filter.filter(REDACT_TEXT)
    record = AuditRecord.from_result(REDACT_TEXT, result)
    assert record.excerpt == ("First, I will read the task carefully.\n[redacted: reward_hacking]\n"
                              "Finally I summarise the result.")
    assert "special-case" not in record.excerpt
    assert record.content is None
    assert record.content_hash == hashlib.sha256(REDACT_TEXT.encode()).hexdigest()
    assert (record.verdict, record.profile, record.request_id) == ("redact", "balanced", result.request_id)
    assert record.model_versions == dict(result.model_versions) and record.model_versions["rules"].startswith("test-1+")
    assert set(record.latency_ms) >= {"rules", "total"}


@pytest.mark.parametrize(
    "text,profile,hidden",
    [
        # block: the harmful step is gone even though the verdict hid the whole content from the caller
        (BLOCK_TEXT, "balanced", "build a bomb"),
        # flag: the content left unchanged, yet the audit excerpt still hides the flagged step
        (FLAG_TEXT, "balanced", "guilt trip"),
    ],
)
def test_excerpt_never_contains_a_flagged_steps_text(tiny_filter: SafePathFilter, text, profile, hidden):
    result = tiny_filter.filter(text, profile=profile)
    assert result.detections
    for limit in (0, 10, 60, 240, 10_000):
        excerpt = AuditRecord.from_result(text, result, excerpt_chars=limit).excerpt
        assert hidden not in excerpt and len(excerpt) <= limit


def test_excerpt_is_cut_to_excerpt_chars(tiny_filter: SafePathFilter):
    text = ALLOW_TEXT * 20
    record = AuditRecord.from_result(text, tiny_filter.filter(text), excerpt_chars=50)
    assert record.excerpt == text[:50]


def test_content_is_kept_only_when_store_content_is_on(tiny_filter: SafePathFilter):
    result = tiny_filter.filter(BLOCK_TEXT)
    assert AuditRecord.from_result(BLOCK_TEXT, result).content is None
    assert AuditRecord.from_result(BLOCK_TEXT, result, store_content=True).content == BLOCK_TEXT


def test_a_detection_on_a_step_the_result_lacks_redacts_everything(tiny_filter: SafePathFilter):
    result = tiny_filter.filter(BLOCK_TEXT)
    stripped = result.model_copy(update={"steps": ()})  # e.g. a cached result stored without its steps
    assert AuditRecord.from_result(BLOCK_TEXT, stripped).excerpt == "[redacted: harmful_instructions]"


def test_reasons_scores_and_findings_across_stages():
    model = FunctionDetector(step_scores("fertiliser", Category.HARMFUL_INSTRUCTIONS, 0.95))
    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": model}) as f:
        result = f.filter(BLOCK_TEXT, profile="no_short_circuit")
    record = AuditRecord.from_result(BLOCK_TEXT, result)
    # the rule names itself; the model has no rule, so its reason is "<stage>:<category>". First-seen order
    # follows the result's (step, span): the model's span is the whole step, so it comes first.
    assert record.reasons == ["safety_model:harmful_instructions", "harmful_instructions.bomb"]
    assert record.categories == ["harmful_instructions"]
    rule_score = max(d.score for d in result.detections if d.rule)
    assert record.scores == {"harmful_instructions": max(rule_score, 0.95)}  # the category's highest score
    assert {(x.reason, x.score) for x in record.findings} == {
        ("harmful_instructions.bomb", rule_score),
        ("safety_model:harmful_instructions", 0.95),
    }
    assert record.model_versions.keys() == {"rules", "model"} and record.model_versions["model"] == "fake-1"
    assert record.model_versions["rules"].startswith("test-1+")  # the declared version and the file's digest


def test_record_ids_are_unique_and_times_utc(tiny_filter: SafePathFilter):
    result = tiny_filter.filter(BLOCK_TEXT)
    first, second = AuditRecord.from_result(BLOCK_TEXT, result), AuditRecord.from_result(BLOCK_TEXT, result)
    assert first.record_id != second.record_id and len(first.record_id) == 32
    assert first.ts.utcoffset() == timedelta(0)
    local = datetime(2026, 1, 2, 3, 4, tzinfo=UTC).astimezone()
    assert AuditRecord.from_result(BLOCK_TEXT, result, ts=local).ts.tzinfo == UTC


def test_record_round_trips_through_json(tiny_filter: SafePathFilter):
    record = AuditRecord.from_result(BLOCK_TEXT, tiny_filter.filter(BLOCK_TEXT), store_content=True,
                                     metadata={"tenant": "acme", "stream_steps": [0, 3]})
    assert AuditRecord.model_validate_json(record.model_dump_json()) == record


def test_record_keeps_the_request_metadata_as_json_values(tiny_filter: SafePathFilter):
    metadata = {"tenant": "acme", "stream_id": "s-1", "stream_steps": (0, 3), "day": date(2026, 1, 2), "n": {1, 2}}
    record = AuditRecord.from_result(BLOCK_TEXT, tiny_filter.filter(BLOCK_TEXT), metadata=metadata)
    assert record.metadata == {"tenant": "acme", "stream_id": "s-1", "stream_steps": [0, 3], "day": "2026-01-02",
                               "n": [1, 2]}
    assert AuditRecord.from_result(BLOCK_TEXT, tiny_filter.filter(BLOCK_TEXT)).metadata is None


def _failing(traces):
    raise RuntimeError("model server gone")


@pytest.mark.parametrize(
    "text,profile,record_all,expected",
    [
        # plain allows are skipped unless record_all
        (ALLOW_TEXT, "balanced", False, False),
        (ALLOW_TEXT, "balanced", True, True),
        # every other verdict is recorded
        (FLAG_TEXT, "balanced", False, True),
        (REDACT_TEXT, "balanced", False, True),
        (BLOCK_TEXT, "balanced", False, True),
        # a degraded allow (a stage failed under fail_mode open) is recorded
        (ALLOW_TEXT, "with_model_open", False, True),
    ],
)
def test_should_record(text, profile, record_all, expected):
    model = FunctionDetector(_failing)
    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": model}) as f:
        result = f.filter(text, profile=profile)
    assert should_record(result, record_all) is expected


def test_a_degraded_record_names_the_stages_that_failed():
    with SafePathFilter(profiles=TINY_MODEL_PROFILES, detectors={"model": FunctionDetector(_failing)}) as f:
        degraded = f.filter(ALLOW_TEXT, profile="with_model_open")
        clean = f.filter(ALLOW_TEXT, profile="balanced")
    assert AuditRecord.from_result(ALLOW_TEXT, degraded).failed_stages == ["model"]
    assert AuditRecord.from_result(ALLOW_TEXT, clean).failed_stages == []


@pytest.mark.parametrize(
    "text,expected",
    [("30m", timedelta(minutes=30)), ("24h", timedelta(hours=24)), ("7d", timedelta(days=7)),
     (" 45s ", timedelta(seconds=45))],
)
def test_parse_since(text, expected):
    assert parse_since(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "0h", "-1d", "1w", "1.5h", "24 hours"])
def test_parse_since_rejects_malformed_windows(text):
    with pytest.raises(ValueError, match="expected a window"):
        parse_since(text)


@pytest.mark.parametrize(
    "url,path",
    [("sqlite:///var/lib/audit.db", Path("/var/lib/audit.db")),
     ("sqlite:////var/lib/audit.db", Path("/var/lib/audit.db")),
     ("sqlite://audit.db", Path("audit.db"))],
)
def test_settings_sqlite_paths(url, path):
    assert AuditSettings(url=url).sqlite_path == path


@pytest.fixture
def spill_homes(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """The default spill folders' parents moved under tmp_path: (cache home, temp folder)."""
    cache, temp = tmp_path / "cache", tmp_path / "temp"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return cache, temp


def test_the_default_spill_folder_is_the_cache_folder_not_the_database_folder(tmp_path: Path, spill_homes):
    settings = AuditSettings(url=f"sqlite:///{tmp_path}/db/audit.db")
    spill = settings.resolve_spill_path()
    assert spill.parent == spill_homes[0] / "safepath" / "audit-spill" and spill.parent.is_dir()
    assert spill.name == settings.spill_name and spill.name.startswith("safepath-audit-audit-audit-")
    assert AuditSettings(url=f"sqlite:///{tmp_path}/other/audit.db").spill_name != spill.name


def test_the_spill_folder_falls_back_to_a_private_temp_folder(tmp_path: Path, spill_homes, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "cache"))  # under a file: unwritable, even for root
    spill = AuditSettings(url=f"sqlite:///{tmp_path}/audit.db").resolve_spill_path()
    assert spill.parent == spill_homes[1] / f"safepath-audit-spill-{os.getuid()}"
    assert stat.S_IMODE(spill.parent.stat().st_mode) == 0o700


def test_a_temp_spill_folder_that_is_a_link_is_refused(tmp_path: Path, spill_homes, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "cache"))
    (tmp_path / "elsewhere").mkdir()
    spill_homes[1].mkdir()
    # planted by another user
    (spill_homes[1] / f"safepath-audit-spill-{os.getuid()}").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="not a folder owned by this user"):
        AuditSettings(url=f"sqlite:///{tmp_path}/audit.db").resolve_spill_path()


def test_no_writable_spill_folder_fails_with_a_message(tmp_path: Path, spill_homes, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "file" / "temp"))
    with pytest.raises(ConfigError, match="no writable folder for the audit spill file .*SAFEPATH_AUDIT_SPILL_DIR"):
        AuditSettings(url=f"sqlite:///{tmp_path}/audit.db").resolve_spill_path()


def test_the_spill_folder_comes_from_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SAFEPATH_AUDIT_URL", f"sqlite:///{tmp_path}/db/audit.db")
    monkeypatch.setenv("SAFEPATH_AUDIT_SPILL_DIR", str(tmp_path / "spill"))
    settings = AuditSettings.from_runtime(RuntimeSettings())
    assert settings.spill_path == tmp_path / "spill" / settings.spill_name
    assert settings.resolve_spill_path() == settings.spill_path


def test_an_unwritable_configured_spill_folder_fails_at_start_up(tmp_path: Path):
    (tmp_path / "file").write_text("")
    settings = AuditSettings(url=f"sqlite:///{tmp_path}/audit.db", spill_dir=tmp_path / "file" / "spill")
    with pytest.raises(ConfigError,
                       match=r"audit spill folder .*/file/spill is not writable .*SAFEPATH_AUDIT_SPILL_DIR"):
        open_audit(settings)


def test_postgres_spill_files_are_named_by_the_database_not_the_credentials(tmp_path: Path):
    def name(url: str) -> str:
        return AuditSettings(url=url, spill_dir=tmp_path).spill_path.name  # type: ignore[union-attr]

    a = name("postgresql://alice:s3cret@db1:5433/audit")
    assert "alice" not in a and "s3cret" not in a and a.startswith("safepath-audit-postgresql-audit-")
    assert name("postgresql://bob:other@db1:5433/audit") == a  # same database, same file
    assert name("postgresql://alice:s3cret@db1:5433/audit?sslmode=require") == a
    assert len({a, name("postgresql://alice:s3cret@db2:5433/audit"), name("postgresql://alice:s3cret@db1:5434/audit"),
                name("postgresql://alice:s3cret@db1:5433/other"),
                AuditSettings(url="postgresql://db1:5433/audit", table_prefix="t2", spill_dir=tmp_path).spill_name,
                }) == 5
    # where releases before the spill folder put it (replayed once on start), named after the whole URL
    url = "postgresql://alice:s3cret@db1:5433/audit"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    assert AuditSettings(url=url).legacy_spill_paths() == [Path(tempfile.gettempdir()) /
                                                            f"safepath-audit-audit-{digest}.spill.jsonl"]


def test_settings_reject_unknown_schemes_and_prefixes():
    with pytest.raises(ConfigError, match="sqlite:/// or postgresql://"):
        AuditSettings(url="mysql://x/y")
    with pytest.raises(ValueError):
        AuditSettings(url="sqlite:///a.db", table_prefix="audit; DROP TABLE x")
