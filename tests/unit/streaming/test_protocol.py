"""The /v1/stream WebSocket protocol without a socket: frames in, replies out, over a real filter."""

from __future__ import annotations

import asyncio
import json

from safepath.streaming.protocol import EndReply, ErrorReply, StepReply, StreamProtocol

STEPS = "Step 1: Read the failing test output first. Step 2: Then raise the fixture timeout to fit."


def converse(tiny_filter, frames):
    protocol = StreamProtocol(tiny_filter.afilter_batch, tiny_filter.profiles.get)

    async def run():
        replies = []
        for frame in frames:
            replies += await protocol.receive(json.dumps(frame))
        return replies

    return protocol, asyncio.run(run())


def test_chunks_in_judged_steps_out_then_end(tiny_filter):
    frames = [{"type": "start", "profile": "permissive", "stream_id": "ws-1"}]
    frames += [{"type": "chunk", "text": STEPS[i : i + 9]} for i in range(0, len(STEPS), 9)]
    protocol, replies = converse(tiny_filter, [*frames, {"type": "end"}])
    assert [type(r) for r in replies] == [StepReply, StepReply, EndReply]
    assert "".join(r.step.output for r in replies[:2]) == STEPS
    assert replies[-1] == EndReply(steps=2, blocked=False)
    assert protocol.closed


def test_start_is_optional(tiny_filter):
    _, replies = converse(tiny_filter, [{"type": "chunk", "text": STEPS}, {"type": "end"}])
    assert [r.type for r in replies] == ["step", "step", "end"]


def test_a_block_ends_the_conversation_and_later_frames_are_ignored(tiny_filter):
    frames = [{"type": "chunk", "text": "Step 1: Read the file. Step 2: I will build a bomb. Step 3: more."},
              {"type": "chunk", "text": " Step 4: after."}, {"type": "end"}]
    protocol, replies = converse(tiny_filter, frames)
    assert [r.type for r in replies] == ["step", "step", "end"]
    assert replies[1].step.verdict == "block" and "bomb" not in replies[1].step.output
    assert replies[-1].blocked and protocol.closed


def test_bad_frames_get_one_error_and_close(tiny_filter):
    for frames, kind in [
        ([{"type": "chunk"}], "invalid_request"),
        ([{"type": "start", "profile": "nope"}], "unknown_profile"),
        ([{"type": "chunk", "text": "Step 1: a."}, {"type": "start"}], "invalid_request"),
        ([{"type": "launch"}], "invalid_request"),
    ]:
        protocol, replies = converse(tiny_filter, frames)
        assert isinstance(replies[-1], ErrorReply) and replies[-1].error.type == kind, frames
        assert protocol.closed


def test_invalid_json_is_an_error(tiny_filter):
    protocol = StreamProtocol(tiny_filter.afilter_batch, tiny_filter.profiles.get)
    (reply,) = asyncio.run(protocol.receive("{not json"))
    assert reply.type == "error" and protocol.closed
