"""How far a stream may be released without a rule match still running on past the text received so far.

The rule stage matches each rule over the whole trace (and over its folded, rot13, reversed and decoded views), so a
match may start in one step and end several steps later: "I will disable the audit\\n\\nlogging so the operators
cannot see" is one match that starts in a step the segmenter has already closed. A stream that released that step as
soon as the next one began would let out text the whole-trace filter withholds.

`RuleHoldback` answers the question exactly, for the rules as written: given the text received (cut at the end of a
word), the earliest offset from which some rule could still match if more text arrived. It compiles each rule into
the regular language of its matches' prefixes (every string that some continuation turns into a match) and looks for
one that runs to the end of the text. Steps before that offset can be judged and released: every match starting in
them ends inside the text seen, so the window judging them sees it whole. Steps from it on wait for more text, or for
the end of the stream. Benign text rarely ends in the beginning of a rule's phrase, so the wait is rare and short.

The prefix language over-approximates where it cannot be exact (assertions at the cut are taken to hold; context
conditions on rules are ignored): that can only hold text longer, never release it early.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from weakref import WeakKeyDictionary

import re2

from safepath.detectors.rules import RuleDetector, load_rule_file
from safepath.profiles import ProfileSet, SafetyProfile
from safepath.text.normalize import views

logger = logging.getLogger(__name__)

_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}
_ASSERTIONS = {
    sre.AT_BOUNDARY: r"\b",
    sre.AT_NON_BOUNDARY: r"\B",
    sre.AT_BEGINNING: "(?m:^)",
    sre.AT_END: "(?m:$)",
    sre.AT_BEGINNING_STRING: r"\A",
    sre.AT_END_STRING: r"\z",
}
# Read backwards, an assertion about what comes before becomes one about what comes after.
_MIRRORED = {
    sre.AT_BEGINNING: sre.AT_END,
    sre.AT_END: sre.AT_BEGINNING,
    sre.AT_BEGINNING_STRING: sre.AT_END_STRING,
    sre.AT_END_STRING: sre.AT_BEGINNING_STRING,
}
_FLAGS = ((2, "i"), (8, "m"), (16, "s"))  # re.IGNORECASE, re.MULTILINE, re.DOTALL
_SINGLE = frozenset({sre.LITERAL, sre.NOT_LITERAL, sre.IN, sre.ANY, sre.AT})


def _char(code: int) -> str:
    ch = chr(code)
    return ch if ch.isalnum() or ch == "_" else f"\\x{{{code:x}}}"


def _flagged(add: int, remove: int, body: str) -> str:
    on = "".join(letter for bit, letter in _FLAGS if add & bit)
    off = "".join(letter for bit, letter in _FLAGS if remove & bit)
    return f"(?{on}{'-' + off if off else ''}:{body})" if on or off else f"(?:{body})"


class _Writer:
    """Writes a parsed pattern back out in RE2 syntax: as it is, or as the language of its prefixes.

    With `backwards`, both describe the pattern read from its end, which is what the rule finds in the reversed view.
    """

    def __init__(self, *, backwards: bool) -> None:
        self.backwards = backwards

    def exact(self, items: Sequence[tuple]) -> str:
        ordered = reversed(items) if self.backwards else items
        return "".join(self._item(op, av) for op, av in ordered)

    def prefixes(self, items: Sequence[tuple]) -> str:
        """Every string that some continuation extends into a match of `items` (the empty string included)."""
        ordered = list(reversed(items) if self.backwards else items)
        tail = ""  # built from the end, so nesting stays one level per item
        for op, av in reversed(ordered):
            partial = "" if op in _SINGLE else self._item_prefixes(op, av)
            whole = self._item(op, av) + tail
            tail = f"(?:{partial}|{whole})" if partial else f"(?:{whole})?"
        return tail

    def _item_prefixes(self, op, av) -> str:
        if op is sre.BRANCH:
            return "(?:" + "|".join(self.prefixes(branch) for branch in av[1]) + ")"
        if op is sre.SUBPATTERN:
            _group, add, remove, body = av
            return _flagged(add, remove, self.prefixes(body))
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            _low, high, body = av
            if high == 0:
                return ""
            whole = self.exact(body)
            head = f"(?:{whole})*" if high == sre.MAXREPEAT else (f"(?:{whole}){{0,{high - 1}}}" if high > 1 else "")
            return head + f"(?:{self.prefixes(body)})"
        raise ValueError(f"unsupported regex construct {op}")

    def _item(self, op, av) -> str:
        if op is sre.LITERAL:
            return _char(av)
        if op is sre.NOT_LITERAL:
            return f"[^{_char(av)}]"
        if op is sre.ANY:
            return "."
        if op is sre.IN:
            return self._class(av)
        if op is sre.AT:
            return _ASSERTIONS[_MIRRORED.get(av, av) if self.backwards else av]
        if op is sre.BRANCH:
            return "(?:" + "|".join(self.exact(branch) for branch in av[1]) + ")"
        if op is sre.SUBPATTERN:
            _group, add, remove, body = av
            return _flagged(add, remove, self.exact(body))
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            low, high, body = av
            bound = f"{{{low},}}" if high == sre.MAXREPEAT else f"{{{low},{high}}}"
            return f"(?:{self.exact(body)}){bound}"  # laziness does not change the language
        raise ValueError(f"unsupported regex construct {op}")

    @staticmethod
    def _class(items) -> str:
        parts = []
        for op, av in items:
            if op is sre.NEGATE:
                parts.insert(0, "^")
            elif op is sre.LITERAL:
                parts.append(_char(av))
            elif op is sre.RANGE:
                parts.append(f"{_char(av[0])}-{_char(av[1])}")
            elif op is sre.CATEGORY:
                parts.append(_CATEGORIES[av])
            else:
                raise ValueError(f"unsupported character class item {op}")
        return "[" + "".join(parts) + "]"


_RULES_PER_PATTERN = 10  # RE2 compiles one huge alternation slowly (~10 s for 170 rules); ten at a time, ~0.6 s


def _parse(pattern: str):
    """The pattern's syntax tree; raises for RE2 syntax Python's parser reads differently or not at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # "possible nested set": a POSIX class such as [[:alpha:]]
        return sre_parse.parse(pattern)


def _compile(alternatives: list[str]) -> list[re2._Regexp]:
    options = re2.Options()
    # A prefix language is several times the size of its rule; under the 8 MiB default the lazy DFA runs out of
    # memory and RE2 falls back to its NFA (and logs it). The budget is a ceiling, filled only as states are met.
    options.max_mem = 64 << 20
    step = _RULES_PER_PATTERN
    return [
        re2.compile("(?:" + "|".join(alternatives[i : i + step]) + r")\z", options)
        for i in range(0, len(alternatives), step)
    ]


class RuleHoldback:
    """Where the text of a stream stops being safe to release, given the rules the rule stage matches.

    Args:
        patterns: `Rule.regex()` of every rule of every rule stage the stream's profile runs.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        forward, backward = [], []
        self.unreadable: list[str] = []
        for pattern in patterns:
            try:
                parsed = _parse(pattern)
                forward.append(_Writer(backwards=False).prefixes(parsed))
                backward.append(_Writer(backwards=True).prefixes(parsed))
            except (re.error, ValueError, FutureWarning):
                self.unreadable.append(pattern)
        if self.unreadable:
            # RE2 syntax Python's parser cannot read (\pL, \Q..\E, [[:alpha:]]): no prefix language, so nothing is
            # known to be safe before the stream ends. Held whole rather than guessed at.
            logger.warning("the streaming holdback cannot read %d rule pattern(s) (first: %.80s); streams under "
                           "these rules release their steps only at the end", len(self.unreadable), self.unreadable[0])
        self.rule_count = len(patterns)
        self._forward = _compile(forward)
        self._backward = _compile(backward)

    def open_from(self, text: str) -> int:
        """The earliest offset of `text` from which a rule match could still run past its end; len(text) if none.

        Each view the rule stage scans is searched for a prefix of a match that reaches the view's end, and its start
        mapped back to `text`. The reversed view's matches are the rules read backwards over the folded text.
        """
        if self.unreadable:
            return 0
        if not self._forward or not text:
            return len(text)
        earliest = len(text)
        for view in views(text):
            if view.kind == "reversed":
                continue  # searched below as the backward rules on the folded text, where it can grow
            earliest = min(earliest, self._open_start(self._forward, view, len(text)))
            if view.kind == "normalized":
                earliest = min(earliest, self._open_start(self._backward, view, len(text)))
        return earliest

    @staticmethod
    def _open_start(patterns: list[re2._Regexp], view, size: int) -> int:
        end = len(view.text)
        start = min((m.start() for p in patterns if (m := p.search(view.text)) is not None), default=end)
        return size if start >= end else view.to_original(start, end)[0]


def holdback_for(
    profiles: ProfileSet, profile: SafetyProfile, detectors: Mapping[str, object] | None = None
) -> RuleHoldback | None:
    """The holdback for a profile's rule stages; None when it runs none. Compiled once per set of rules.

    Args:
        profiles: The profiles file the profile comes from (its stage definitions and base directory).
        profile: The profile a stream is judged under.
        detectors: The filter's detectors by stage name, when in-process: a rule stage replaced by another
            `RuleDetector` is held back by the rules it really runs.
    """
    patterns: list[str] = []
    for name in profile.stages:
        detector = (detectors or {}).get(name)
        if isinstance(detector, RuleDetector):
            patterns.extend(_detector_patterns(detector))
        elif detector is None and profiles.stages[name].type == "rules":
            patterns.extend(_file_patterns(profiles.base_dir / profiles.stages[name].options["rules_file"]))
    return _compiled(tuple(patterns)) if patterns else None


HoldbackLookup = Callable[[SafetyProfile], "RuleHoldback | None"]


def holdbacks(profiles: ProfileSet, detectors: Mapping[str, object] | None = None) -> HoldbackLookup:
    """`holdback_for` with the profiles file (and detectors) bound: what proxies and stream endpoints take."""

    def lookup(profile: SafetyProfile) -> RuleHoldback | None:
        return holdback_for(profiles, profile, detectors)

    return lookup


# Sessions start often; the patterns are read once per detector and per version of a rules file (its mtime and size),
# and a detector's entry goes with it (a new detector at a recycled id must not inherit another's rules).
_BY_DETECTOR: WeakKeyDictionary[RuleDetector, tuple[str, ...]] = WeakKeyDictionary()


def _detector_patterns(detector: RuleDetector) -> tuple[str, ...]:
    if detector not in _BY_DETECTOR:
        _BY_DETECTOR[detector] = tuple(rule.regex() for rule in detector.rules)
    return _BY_DETECTOR[detector]


def _file_patterns(path: Path) -> tuple[str, ...]:
    stat = os.stat(path)
    return _patterns_of_file(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _patterns_of_file(path: str, _mtime_ns: int, _size: int) -> tuple[str, ...]:
    return tuple(rule.regex() for rule in load_rule_file(path).rules)


@lru_cache(maxsize=16)
def _compiled(patterns: tuple[str, ...]) -> RuleHoldback:
    return RuleHoldback(patterns)
