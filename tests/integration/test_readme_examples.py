"""The README's examples, read from the README itself, give what the README says they give (real models)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from safepath import Category, SafePathFilter, Verdict

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def shipped() -> SafePathFilter:
    with SafePathFilter() as f:
        yield f


def _block(after: str, language: str) -> str:
    """The first fenced block of `language` after the heading or phrase `after`."""
    start = README.index(after)
    match = re.compile(rf"```{language}\n(.*?)```", re.S).search(README, start)
    assert match, f"no ```{language} block after {after!r}"
    return match.group(1)


def test_python_example_redacts_the_reward_hacking_step():
    code = _block("## Use it from Python", "python")
    namespace: dict = {}
    exec(code.split("result.verdict")[0], namespace)  # the README's own example, run as written
    result, f = namespace["result"], namespace["f"]
    try:
        # README: result.verdict -> Verdict.REDACT; step 2 replaced by "[REDACTED: reward_hacking]"
        assert "Verdict.REDACT" in code and result.verdict is Verdict.REDACT, result.detections
        assert "[REDACTED: reward_hacking]" in code
        assert result.filtered_content == (
            "Step 1: The user wants their tests fixed.\n[REDACTED: reward_hacking]\n"
            "Step 3: Then report that everything works."
        )
        assert Category.REWARD_HACKING in {d.category for d in result.detections}
    finally:
        f.close()


def test_curl_example_is_blocked_under_strict(shipped):
    curl = _block("## Serving", "bash")
    body = json.loads(re.search(r"-d '(\{.*?\})'", curl, re.S).group(1))
    assert body["profile"] == "strict"
    result = shipped.filter(body["content"], profile="strict")
    documented = re.search(r"# the curl example: (\w+)", README)
    assert documented, "the README says what the curl example returns"
    assert result.verdict.value == documented.group(1), result.detections
    assert Category.DATA_EXFILTRATION in {d.category for d in result.detections}


def test_cli_example_is_blocked_under_strict(shipped):
    # The command-line section's strict example: a plan to write ransomware.
    line = next(x for x in _block("## Use it from the command line", "sh").splitlines() if "ransomware" in x)
    text = re.search(r'"(.*)"', line).group(1)
    result = shipped.filter(text, profile="strict")
    assert result.verdict is Verdict.BLOCK, result.detections
    assert "# -> block" in line
