"""Behaviour of `safepath.segment.segment`: step boundaries per trace style, offsets, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safepath.segment import segment
from safepath.types import Step


def check_invariants(text: str, steps: tuple[Step, ...], max_step_chars: int = 1500) -> None:
    """What every caller (above all the redactor) relies on, whatever the input."""
    previous_end = 0
    for i, step in enumerate(steps):
        assert step.index == i
        assert text[step.start : step.end] == step.text
        assert step.text and step.text == step.text.strip()
        assert len(step.text) <= max_step_chars
        assert step.start >= previous_end
        previous_end = step.end
    covered = [False] * len(text)
    for step in steps:
        covered[step.start : step.end] = [True] * (step.end - step.start)
    leaked = [i for i, c in enumerate(text) if not c.isspace() and not covered[i]]
    assert not leaked, f"unsegmented characters at {leaked[:10]}"


def texts(text: str, **kwargs: int) -> list[str]:
    steps = segment(text, **kwargs)
    check_invariants(text, steps, kwargs.get("max_step_chars", 1500))
    return [s.text for s in steps]


# Explicit "Step N" markers, in the spellings models actually emit.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Step 1: Gather the inputs.\nStep 2: Compute the total.\nStep 3: Report the answer.",
            ["Step 1: Gather the inputs.", "Step 2: Compute the total.", "Step 3: Report the answer."],
        ),
        (
            "Step 1. Read the question carefully\nStep 2. Write the final answer down",
            ["Step 1. Read the question carefully", "Step 2. Write the final answer down"],
        ),
        (
            "STEP 1 - collect the data we need\nSTEP 2 - clean up the data set",
            ["STEP 1 - collect the data we need", "STEP 2 - clean up the data set"],
        ),
        (
            "**Step 1**: parse the request first\n**Step 2:** check the policy next",
            ["**Step 1**: parse the request first", "**Step 2:** check the policy next"],
        ),
        (
            # Continuation lines belong to their step; a marker always starts a new one.
            "Step 1: look at the\ninput closely and\nStep 2: decide what to do with it",
            ["Step 1: look at the\ninput closely and", "Step 2: decide what to do with it"],
        ),
        (
            # Sentences inside a step are still split, so one bad sentence is isolated.
            "Step 1: Mix the two powders. Then heat the mixture slowly.",
            ["Step 1: Mix the two powders.", "Then heat the mixture slowly."],
        ),
        (
            "We start here with the plan. Step 2: continue the work without pause",
            ["We start here with the plan.", "Step 2: continue the work without pause"],
        ),
        (
            "Do the first part now Step 2: do the second part",
            ["Do the first part now", "Step 2: do the second part"],
        ),
        (
            # Mid-line, only the canonical capitalisation counts as a marker.
            "as described in step 2: we keep going here",
            ["as described in step 2: we keep going here"],
        ),
    ],
)
def test_step_markers(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Agentic ReAct traces: every label at line start opens a step.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Thought: I need the current weather.\nAction: search[weather Paris]\n"
            "Observation: It is 18 degrees and sunny.\nThought: I can answer now.",
            [
                "Thought: I need the current weather.",
                "Action: search[weather Paris]",
                "Observation: It is 18 degrees and sunny.",
                "Thought: I can answer now.",
            ],
        ),
        (
            "Thought 1: find the capital city\nAction 1: lookup[France]\nObservation 1: Paris is the capital",
            ["Thought 1: find the capital city", "Action 1: lookup[France]", "Observation 1: Paris is the capital"],
        ),
        (
            "Action: run_tool\nAction Input: {\"path\": \"/tmp\"}\nFinal Answer: the directory is empty",
            ["Action: run_tool", "Action Input: {\"path\": \"/tmp\"}", "Final Answer: the directory is empty"],
        ),
        (
            "Thought: check the file system Action: list_dir[/etc]",
            ["Thought: check the file system", "Action: list_dir[/etc]"],
        ),
    ],
)
def test_react_labels(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Numbered and lettered lists: one step per item, continuation lines included.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "1. Preheat the oven to 200C\n2. Mix flour and water well\n3. Bake it for twenty minutes",
            ["1. Preheat the oven to 200C", "2. Mix flour and water well", "3. Bake it for twenty minutes"],
        ),
        (
            "1) open the settings page\n2) toggle the dark mode",
            ["1) open the settings page", "2) toggle the dark mode"],
        ),
        (
            "(1) choose a good name\n(2) register the domain",
            ["(1) choose a good name", "(2) register the domain"],
        ),
        (
            "a) the first option here\nb) the second option here",
            ["a) the first option here", "b) the second option here"],
        ),
        (
            "i. the first clause here\nii. the second clause here\niii. the third clause here",
            ["i. the first clause here", "ii. the second clause here", "iii. the third clause here"],
        ),
        (
            "1. Check the input values.\n   continued on this line.\n2. Validate the schema next",
            ["1. Check the input values.\n   continued on this line.", "2. Validate the schema next"],
        ),
        (
            "Plan:\n  1. read the whole file\n  2. patch the broken line",
            ["Plan:\n  1. read the whole file", "2. patch the broken line"],
        ),
    ],
)
def test_numbered_lists(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Inline enumerations: split before each number, never between the number and its item.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Plan: 1. Create the index. 2. Deduplicate. 3. Add the constraint.",
            ["Plan: 1. Create the index.", "2. Deduplicate.", "3. Add the constraint."],
        ),
        ("Done. 2. Next", ["Done.", "2. Next"]),
    ],
)
def test_inline_enumerations(text: str, expected: list[str]) -> None:
    assert texts(text, min_step_chars=1) == expected


# Bulleted lists, every common bullet character, nested items included.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- check the logs first\n- restart the service\n- verify it is healthy",
            ["- check the logs first", "- restart the service", "- verify it is healthy"],
        ),
        ("* first bullet item\n* second bullet item", ["* first bullet item", "* second bullet item"]),
        ("• first bullet item\n• second bullet item", ["• first bullet item", "• second bullet item"]),
        ("+ first bullet item\n+ second bullet item", ["+ first bullet item", "+ second bullet item"]),
        (
            "- outer item of the list\n  - nested item of the list\n    continuation of nested",
            ["- outer item of the list", "- nested item of the list\n    continuation of nested"],
        ),
        (
            # Not bullets: a rule, bold text, a negative number.
            "**Bold** text at the start\n---\n-5 degrees outside today",
            ["**Bold** text at the start\n---\n-5 degrees outside today"],
        ),
    ],
)
def test_bulleted_lists(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Paragraphs separated by blank lines, even when they lack punctuation.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "first paragraph without an end\n\nsecond paragraph without an end",
            ["first paragraph without an end", "second paragraph without an end"],
        ),
        (
            "first paragraph text here\n   \t \n\n\nsecond paragraph text here",
            ["first paragraph text here", "second paragraph text here"],
        ),
        (
            "a line of the paragraph\nthat wraps onto another line\n\nnext paragraph is here",
            ["a line of the paragraph\nthat wraps onto another line", "next paragraph is here"],
        ),
    ],
)
def test_paragraphs(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Free-flowing reasoning: sentence by sentence.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Okay, so the user wants a recipe. Hmm, but wait, is that safe? Let me think... "
            "Actually, it is fine!",
            [
                "Okay, so the user wants a recipe.",
                "Hmm, but wait, is that safe?",
                "Let me think...",
                "Actually, it is fine!",
            ],
        ),
        (
            "They asked about it twice. \"Should I answer?\" I wonder about that. 42 is the answer.",
            ["They asked about it twice.", "\"Should I answer?\"", "I wonder about that.", "42 is the answer."],
        ),
        (
            "He said \"stop right there.\" Then he left the room.",
            ["He said \"stop right there.\"", "Then he left the room."],
        ),
        (
            "I am not sure about this… Maybe the answer is simpler.",
            ["I am not sure about this…", "Maybe the answer is simpler."],
        ),
        (
            "Really?! That changes everything now. (Or does it really?) Let me check.",
            ["Really?! That changes everything now.", "(Or does it really?)", "Let me check."],
        ),
        (
            "The user wants to know this.\nThe next line starts fresh.",
            ["The user wants to know this.", "The next line starts fresh."],
        ),
    ],
)
def test_free_flowing_sentences(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Markdown headings are a line of their own; the body follows as its own step.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "## Analysis of the request\nThe user asks for help with taxes.",
            ["## Analysis of the request", "The user asks for help with taxes."],
        ),
        (
            "### Step 1\nRead the documents carefully first.\n### Step 2\nSummarise the findings briefly.",
            ["### Step 1\nRead the documents carefully first.", "### Step 2\nSummarise the findings briefly."],
        ),
        (
            # Never split inside a heading, even after "1.".
            "## 1. Setting up the project\nInstall the tools first.",
            ["## 1. Setting up the project", "Install the tools first."],
        ),
        ("#hashtag is not a heading at all", ["#hashtag is not a heading at all"]),
    ],
)
def test_headings(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Fenced code is one step: no sentence, marker or blank-line split inside it.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Here is the script to run:\n```python\nx = 1. Y = 2\n\nStep 1: not a marker\n- nor a bullet\n```\n"
            "After the code block. Next sentence here.",
            [
                "Here is the script to run:",
                "```python\nx = 1. Y = 2\n\nStep 1: not a marker\n- nor a bullet\n```",
                "After the code block.",
                "Next sentence here.",
            ],
        ),
        (
            # Unclosed fences run to the end, as markdown renders them.
            "Consider this snippet now.\n```\nrm -rf /tmp/x. Done.\n\nMore code here.",
            ["Consider this snippet now.", "```\nrm -rf /tmp/x. Done.\n\nMore code here."],
        ),
        (
            "First block of the trace:\n```\na = 1\n```\nsecond block of the trace:\n```\nb = 2\n```",
            ["First block of the trace:", "```\na = 1\n```", "second block of the trace:", "```\nb = 2\n```"],
        ),
        (
            "Use `os.remove(path). Then` to clean up the file. It works well.",
            ["Use `os.remove(path). Then` to clean up the file.", "It works well."],
        ),
    ],
)
def test_code_fences_and_spans(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Periods that do not end a sentence: abbreviations.
@pytest.mark.parametrize(
    "text",
    [
        "Use a strong acid, e.g. Hydrochloric acid in water.",
        "That is, i.e. The same thing as before.",
        "Bring apples, pears, etc. And then some more fruit.",
        "It is Python vs. Rust in this comparison.",
        "Ask Dr. Smith and Mr. Jones and Mrs. Brown and Ms. Lee today.",
        "The church on St. Mark street is old.",
        "The U.S. Government published the guidance.",
        "It takes approx. 5 minutes to finish the task.",
        "As shown in Fig. 3 the curve rises sharply.",
        "Item No. 7 is the one we want here.",
    ],
)
def test_no_split_at_abbreviations(text: str) -> None:
    assert texts(text) == [text]


# Periods that do not end a sentence: numbers, versions, files, identifiers, URLs, inner ellipses.
@pytest.mark.parametrize(
    "text",
    [
        "The value is 3.5 Percent higher than before.",
        "We need version v1.2.3 Or newer for this to work.",
        "Open config.yaml And change the port setting.",
        "Call os.path.join To build the path safely.",
        "See https://example.com/a.b?q=1&x=Y.Z For the full details.",
        "Visit www.example.org/Docs.Html for more information.",
        "Hmm... maybe it is fine after all, let me see.",
        "Wait! not so fast, we should check first.",
    ],
)
def test_no_split_inside_tokens(text: str) -> None:
    assert texts(text) == [text]


# Real sentence ends right after such tokens still split.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer was No. Then we moved on quickly.", ["The answer was No.", "Then we moved on quickly."]),
        ("Edit the file config.yaml. Then restart it.", ["Edit the file config.yaml.", "Then restart it."]),
        ("See https://example.com/page. It explains it.", ["See https://example.com/page.", "It explains it."]),
        ("The total comes to 3.5. Next we compute tax.", ["The total comes to 3.5.", "Next we compute tax."]),
        ("We counted 3. Then we stopped counting.", ["We counted 3.", "Then we stopped counting."]),
    ],
)
def test_split_after_tokens(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Fragments under min_step_chars join the next step (the previous one at the end).
@pytest.mark.parametrize(
    ("text", "kwargs", "expected"),
    [
        ("Hmm. Wait. The user might be testing me here.", {}, ["Hmm. Wait. The user might be testing me here."]),
        ("The user might be testing me here. Hmm.", {}, ["The user might be testing me here. Hmm."]),
        ("Hmm.\n\nThe user might be testing me.", {}, ["Hmm.\n\nThe user might be testing me."]),
        ("Hmm.", {}, ["Hmm."]),
        ("Hmm. Okay.", {}, ["Hmm. Okay."]),
        ("Hmm. Wait. Okay. So now. Let us go on.", {}, ["Hmm. Wait. Okay.", "So now. Let us go on."]),
        ("Hmm. Wait.", {"min_step_chars": 1}, ["Hmm.", "Wait."]),
        (
            "Short. This sentence is long enough.",
            {"max_step_chars": 20},
            ["Short.", "This sentence is", "long enough."],
        ),
    ],
)
def test_merge_short_fragments(text: str, kwargs: dict[str, int], expected: list[str]) -> None:
    assert texts(text, **kwargs) == expected


# Over-long steps are cut at the last whitespace before the limit, or hard-cut.
@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("aaaa bbbb cccc dddd", 10, ["aaaa bbbb", "cccc dddd"]),
        ("aaaa  \n bbbb", 8, ["aaaa", "bbbb"]),
        ("abcdefghijklmnopqrstuvwxy", 10, ["abcdefghij", "klmnopqrst", "uvwxy"]),
        ("```\nline one\nline two\n```", 15, ["```\nline one", "line two\n```"]),
    ],
)
def test_long_steps_are_cut(text: str, limit: int, expected: list[str]) -> None:
    assert texts(text, max_step_chars=limit, min_step_chars=1) == expected


def test_giant_paragraph_default_limit() -> None:
    text = " ".join(["word"] * 1000)
    steps = texts(text)
    assert [len(s) for s in steps] == [1499, 1499, 1499, 499]
    assert all(s.startswith("word") and s.endswith("word") for s in steps)


# Line endings and whitespace: CRLF, tabs, indentation.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "First paragraph is here.\r\n\r\nSecond paragraph is here.\r\nIt continues here.",
            ["First paragraph is here.", "Second paragraph is here.", "It continues here."],
        ),
        (
            "Step 1: open the file\r\nStep 2: read the file\r\n",
            ["Step 1: open the file", "Step 2: read the file"],
        ),
        (
            "```\r\ncode line one\r\n```\r\nText after the code.",
            ["```\r\ncode line one\r\n```", "Text after the code."],
        ),
        ("\t- tabbed bullet item\n\t- another bullet item", ["- tabbed bullet item", "- another bullet item"]),
        ("  \n\t Leading and trailing space.  \n ", ["Leading and trailing space."]),
    ],
)
def test_line_endings_and_whitespace(text: str, expected: list[str]) -> None:
    assert texts(text) == expected


# Unicode: CJK sentence punctuation needs no following space; other scripts split as usual.
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("这是第一句话。这是第二句话！这是第三句话？", ["这是第一句话。", "这是第二句话！", "这是第三句话？"]),
        ("彼は「行く。」と言った。次の文です。", ["彼は「行く。」", "と言った。", "次の文です。"]),
        ("Это первое предложение. Это второе предложение.", ["Это первое предложение.", "Это второе предложение."]),
        ("C'est la première phrase. Émile écrit la seconde.", ["C'est la première phrase.", "Émile écrit la seconde."]),
        # A lowercase letter after the period, in any script, continues the sentence.
        ("Das ist der erste Satz. über den zweiten.", ["Das ist der erste Satz. über den zweiten."]),
        ("Emoji here 🙂. 🙂 Is not a capital letter.", ["Emoji here 🙂. 🙂 Is not a capital letter."]),
    ],
)
def test_unicode(text: str, expected: list[str]) -> None:
    assert texts(text, min_step_chars=1) == expected


@pytest.mark.parametrize("text", ["", " ", "\n\n\n", "\t \r\n \u3000"])
def test_empty_and_whitespace_only(text: str) -> None:
    assert segment(text) == ()


def test_offsets_point_into_original() -> None:
    text = "  Intro sentence here.  \n\n  - bullet item text\n"
    steps = segment(text)
    assert [(s.index, s.start, s.end) for s in steps] == [(0, 2, 22), (1, 28, 46)]


@pytest.mark.parametrize("bad", [0, -5])
def test_rejects_non_positive_max(bad: int) -> None:
    with pytest.raises(ValueError):
        segment("text", max_step_chars=bad)


# Pieces that stress every rule at once, so that hypothesis finds their interactions.
_TOKENS = st.sampled_from(
    [
        "Step 1:", "**Step 2**", "Thought:", "Action:", "1.", "a)", "(3)", "- ", "* ", "•", "## ", "```",
        "`", "e.g.", "U.S.", "No.", "3.5", "config.yaml", "https://x.io/a.b", "...", "…", ".", "!", "?",
        "。", "」", "\"", "Word", "word", "Hmm.", " ", "  ", "\t", "\n", "\n\n", "\r\n", "\u3000", "\u2028",
    ]
)
_TRACES = st.one_of(st.text(), st.lists(st.one_of(_TOKENS, st.text(max_size=3)), max_size=60).map("".join))


@settings(max_examples=400, deadline=None)
@given(text=_TRACES, max_step_chars=st.integers(1, 60), min_step_chars=st.integers(0, 30))
def test_property_offsets_exact_and_nothing_dropped(text: str, max_step_chars: int, min_step_chars: int) -> None:
    steps = segment(text, max_step_chars=max_step_chars, min_step_chars=min_step_chars)
    check_invariants(text, steps, max_step_chars)


@settings(max_examples=200, deadline=None)
@given(text=_TRACES)
def test_property_default_limits(text: str) -> None:
    check_invariants(text, segment(text))


# Hostile inputs: each must return promptly (linear time) with sane steps.
@pytest.mark.parametrize(
    "text",
    [
        "a. " * 66_667,
        "A. " * 66_667,
        "x" * 200_000,
        "\n" * 100_000,
        "." * 200_000 + " a",
        "。" * 200_000,
        "```\n" * 50_000,
        "`a. B` " * 30_000,
        " " * 200_000 + "x",
        "- \n" * 66_000,
        " Step 1:" * 25_000,
        "e.g. " * 40_000,
        "." + "\"" * 200_000 + " A",
        "http://" * 30_000,
    ],
    ids=lambda t: repr(t[:8]),
)
def test_hostile_input_completes(text: str) -> None:
    steps = segment(text)
    check_invariants(text, steps)


def _free_flowing_trace() -> str:
    sentences = (
        "Okay, so the user wants to know how to configure the server. Hmm, but wait. Let me think... "
        "Actually, the config.yaml file (e.g. the one in /etc) controls it. Dr. Smith said version 3.5 works! "
        "Is that right? I think so, but let me double-check the os.path.join call first. "
    )
    return (sentences * 10)[:2000]


def _step_n_trace() -> str:
    lines = (f"Step {i}: Compute the intermediate value for part {i} and compare it to the last.\n" for i in range(40))
    return "".join(lines)[:2000]


# Benchmarks report timings for the record; they never assert one.
def test_benchmark_free_flowing_2000(benchmark) -> None:  # type: ignore[no-untyped-def]
    text = _free_flowing_trace()
    steps = benchmark(segment, text)
    assert len(text) == 2000 and len(steps) > 20


def test_benchmark_step_n_2000(benchmark) -> None:  # type: ignore[no-untyped-def]
    text = _step_n_trace()
    steps = benchmark(segment, text)
    assert len(text) == 2000 and all(s.text.startswith("Step ") for s in steps)
