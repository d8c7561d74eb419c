"""Filter reasoning while it is being written: chunks in, judged steps out, each as soon as it is known.

A reasoning model writes its chain of thought token by token; holding it all back until the end would make the
filter useless for anything interactive. So text is buffered only to the next step boundary (safepath.segment):
every step of the buffer but the last is complete, and the last is complete at the end of the stream. Each batch
of completed steps is judged as one small trace made of the step released just before them (context: the safety
model reads "step [SEP] previous step") and the new steps, so the cost per step stays constant however long the
stream runs. Detections on the context step are ignored; it was judged when it was released.

A step is complete when the next one begins, but it is released only when no rule match can still run past the
judged text (`holdback.RuleHoldback`): the rule stage matches over the whole trace, so "I will disable the audit",
a step of its own before a blank line, is one match with the "logging so the operators cannot see" that follows it.
The window that releases a step therefore reaches far enough to hold every rule match starting in it, judging the
text after its last step as context where needed. The promise: a stream never releases as written a step that the
whole-trace filter would redact or block, nor a step after one it would block, and a trace the whole-trace filter
blocks blocks the stream (the streams' property tests compare the two under the shipped rules). That promise is
exact for the rule stage and the segmenter. The learned stages see less here than in the whole trace: a window gives
them the step before its steps as context (the whole trace gives the safety model more steps before, the task's
first step, and a lexical reading and the trace pass over the whole trace), so a model can judge a step differently
streamed, either way.
The safety stage's `other_languages` also tells the language per window: a short window of English full of names
can count as another language (its scores then raised a little), and one of another language with fewer than
`min_letters` letters as English.
The cost, measured by benchmarks/streaming_holdback.py on the dev traces: a few percent of steps wait a few words.
A match left open for `HOLD_LIMIT_CHARS` is text built to stall the stream: the rest is held whole until the end.

Released steps do not depend on where the chunks were cut, and are cut as the whole-trace segmenter cuts them (the
property tests check prose, lists, markers and multi-byte text): a step is complete once the next one begins, except
after an inline code span's opening backtick, whose closing one could still join the sentences after it into one
step; those steps wait for the backtick or the end of the line (`segment.unsettled_from`).

Per step the verdict is the strongest action of its detections (thresholds, rule and category caps and the model's
overrules already applied by `pipeline.decide`). The trace-level rule `block_redacted_fraction` is applied to the
steps judged so far, so at every release the stream so far carries the verdict the whole-trace filter would give
that text. A block (or a failed stage under a fail-closed profile) releases the profile's block marker and ends
the stream: nothing after it is judged or released.

Every released step records `delay_ms`, from the arrival of the chunk holding its last character to its release:
the wait for the next step to show the boundary, plus its judgement (`judge_ms`).

The core is sans-IO: `StreamState` takes text and judgements and gives judge requests and released steps; it never
calls a filter. `StreamSession` drives it with `SafePathFilter.filter_batch`; `AsyncStreamSession` with any async
batch judge (`SafePathFilter.afilter_batch`, the Ray ingress's service). `protocol.py` is the WebSocket protocol of
`/v1/stream` around an `AsyncStreamSession` (served by safepath/proxy/app.py and the Ray ingress).
"""

from safepath.streaming.holdback import HoldbackLookup, RuleHoldback, holdback_for, holdbacks
from safepath.streaming.sessions import AsyncStreamSession, StreamSession, adrive, astream, drive, stream
from safepath.streaming.state import (
    MAX_WINDOW_STEPS,
    AsyncJudge,
    Judging,
    ReleasedStep,
    StreamState,
    SyncJudge,
    Window,
)

__all__ = [
    "MAX_WINDOW_STEPS",
    "AsyncJudge",
    "AsyncStreamSession",
    "HoldbackLookup",
    "Judging",
    "ReleasedStep",
    "RuleHoldback",
    "StreamSession",
    "StreamState",
    "SyncJudge",
    "Window",
    "adrive",
    "astream",
    "drive",
    "holdback_for",
    "holdbacks",
    "stream",
]
