"""The WebSocket protocol of `/v1/stream`: push reasoning chunks, receive judged steps.

One stream per connection, JSON text frames both ways.

Client to server:
    {"type": "start", "profile": "strict", "context": {"domain": "healthcare"}, "stream_id": "run-7"}
        optional, first; every field optional
    {"type": "chunk", "text": "Step 1: read the fi"}        any number
    {"type": "end"}                                          the stream is complete: the last step is judged

Server to client:
    {"type": "step", "step": {...}}        a `ReleasedStep`, as soon as it is judged; `step.output` may be shown
    {"type": "end", "steps": 4, "blocked": false}    after the client's end, or right after a blocking step
    {"type": "error", "error": {"type": "invalid_request", "message": "..."}}    a bad message or profile

After `end` or `error` the server closes the connection (1000 after `end`, 1008 after `error`); frames a client
sends after a block are not read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from safepath.errors import InvalidRequest, UnknownProfile
from safepath.profiles import SafetyProfile
from safepath.streaming.holdback import HoldbackLookup
from safepath.streaming.sessions import AsyncStreamSession
from safepath.streaming.state import AsyncJudge, ReleasedStep


class StartMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["start"]
    profile: str | None = Field(default=None, description="Safety profile; the default when absent.")
    context: dict[str, str] | None = Field(default=None, description="Context for contextual rules.")
    stream_id: str | None = Field(default=None, min_length=1, max_length=100, description="Prefix of request ids.")


class ChunkMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["chunk"]
    text: str


class EndMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["end"]


ClientMessage = Annotated[StartMessage | ChunkMessage | EndMessage, Field(discriminator="type")]
_CLIENT = TypeAdapter(ClientMessage)


class StepReply(BaseModel):
    type: Literal["step"] = "step"
    step: ReleasedStep


class EndReply(BaseModel):
    type: Literal["end"] = "end"
    steps: int
    blocked: bool


class ErrorInfo(BaseModel):
    type: str
    message: str


class ErrorReply(BaseModel):
    type: Literal["error"] = "error"
    error: ErrorInfo


Reply = StepReply | EndReply | ErrorReply


class StreamProtocol:
    """One connection's state: client frames in, reply frames out. Knows nothing of sockets.

    Args:
        judge: Async batch judge for the session.
        profile_for: Profile by name (None: the default); raises UnknownProfile.
        holdback_for: The profile's rule holdback (`safepath.streaming.holdbacks`), so that no step leaves while a
            rule match may still run past it; None only for judges without rule stages.
    """

    def __init__(
        self,
        judge: AsyncJudge,
        profile_for: Callable[[str | None], SafetyProfile],
        *,
        holdback_for: HoldbackLookup | None = None,
    ) -> None:
        self._judge = judge
        self._profile_for = profile_for
        self._holdback_for = holdback_for
        self._session: AsyncStreamSession | None = None
        self.closed = False

    async def receive(self, frame: str | bytes) -> list[Reply]:
        """Handle one client frame; `closed` is True once the conversation is over."""
        if self.closed:
            return []
        try:
            message = _CLIENT.validate_json(frame)
            if isinstance(message, StartMessage):
                if self._session is not None:
                    raise InvalidRequest("`start` must be the first message")
                self._session = self._start(message)
                return []
            session = self._session or self._start(StartMessage(type="start"))
            self._session = session
            if isinstance(message, ChunkMessage):
                steps = await session.feed(message.text)
            else:
                steps = await session.finish()
        except (ValidationError, InvalidRequest, UnknownProfile) as exc:
            self.closed = True
            kind = "unknown_profile" if isinstance(exc, UnknownProfile) else "invalid_request"
            text = f"invalid message: {exc.errors(include_input=False, include_url=False)}" if isinstance(
                exc, ValidationError) else str(exc)
            return [ErrorReply(error=ErrorInfo(type=kind, message=text[:500]))]
        replies: list[Reply] = [StepReply(step=s) for s in steps]
        if session.blocked or isinstance(message, EndMessage):
            self.closed = True
            replies.append(EndReply(steps=len(session.released), blocked=session.blocked))
        return replies

    def _start(self, message: StartMessage) -> AsyncStreamSession:
        profile = self._profile_for(message.profile)
        holdback = self._holdback_for(profile) if self._holdback_for else None
        return AsyncStreamSession(
            self._judge, profile, context=message.context, stream_id=message.stream_id, holdback=holdback
        )
