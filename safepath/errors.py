"""Exceptions raised by safepath. Every public function either returns its result or raises one of these.

    SafePathError
    ├── InvalidRequest            the caller's input is unusable (HTTP 4xx)
    │   ├── EmptyContent
    │   └── ContentTooLarge
    ├── ConfigError               a shipped or user config file is wrong (fails at load time)
    │   ├── RuleFileError         names the file, the rule and the problem
    │   └── ProfileError
    ├── UnknownProfile            a request named a profile that is not loaded
    ├── StageError                a stage could not produce detections
    │   ├── StageTimeout
    │   ├── ModelLoadError        a model file is missing or corrupt; names the file
    │   └── StageUnavailable      (the client) the server answered 503: a stage failed under a fail-closed profile
    ├── AuditUnavailable          the audit database could not answer (HTTP 503 for the query endpoint)
    └── ProxyError                an OpenAI-style error answer with an HTTP status (the proxy, the client wrappers)
        ├── UpstreamError         the upstream failed, timed out or answered something not OpenAI-shaped
        ├── UpstreamStatus        the upstream answered a non-2xx status; its body passes on
        └── ReasoningBlocked      a step blocked under `on_block: fail` (400)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safepath.types import FilterResult


class SafePathError(Exception):
    """Base of every error safepath raises on purpose."""

    def __reduce__(self) -> tuple:
        # Subclasses take other constructor arguments than their message, which default exception pickling passes
        # back to __init__. Rebuild without __init__ instead, so errors cross processes (Ray Serve handles,
        # multiprocessing) with their message and fields intact.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: type[SafePathError], args: tuple, state: dict) -> SafePathError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidRequest(SafePathError, ValueError):
    """The request cannot be filtered as given."""


class EmptyContent(InvalidRequest):
    def __init__(self) -> None:
        super().__init__("content is empty: there is no reasoning text to filter")


class ContentTooLarge(InvalidRequest):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"content is {size} characters, over the limit of {limit}")
        self.size = size
        self.limit = limit


class ConfigError(SafePathError):
    """A configuration file is missing or invalid."""


class RuleFileError(ConfigError):
    def __init__(self, path: object, problem: str, *, rule: str | None = None) -> None:
        where = f"{path}: rule {rule!r}" if rule else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.rule = rule
        self.problem = problem


class ProfileError(ConfigError):
    pass


class UnknownProfile(SafePathError, KeyError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown profile {self.name!r}; known profiles: {', '.join(self.known)}"


class StageError(SafePathError):
    """A stage failed; the profile's fail_mode decides what the request gets."""


class StageTimeout(StageError):
    pass


class ModelLoadError(StageError):
    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)


class StageUnavailable(StageError):
    """The server answered 503: a stage failed under a fail-closed profile. `results` holds the blocked answers."""

    def __init__(self, message: str, results: list[FilterResult], failed_stages: list[str]) -> None:
        super().__init__(message)
        self.results = results
        self.failed_stages = failed_stages


class AuditUnavailable(SafePathError):
    """The audit database could not answer (HTTP 503 for the query endpoint)."""


class ProxyError(SafePathError):
    """An answer the proxy gives instead of the upstream's: an OpenAI-style error with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}


class UpstreamError(ProxyError):
    """The upstream failed, timed out, or answered something that is not the OpenAI format."""


class UpstreamStatus(ProxyError):
    """The upstream answered a non-2xx status; `payload` is its error body (already scrubbed of credentials)."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
        super().__init__(status, str(error.get("message") or f"upstream answered {status}"),
                         type=str(error.get("type") or "upstream_error"), code=error.get("code"))
        self.payload = payload

    def body(self) -> dict[str, Any]:
        return self.payload


class ReasoningBlocked(ProxyError):
    """A step blocked under `on_block: fail`."""

    def __init__(self, categories: tuple[str, ...]) -> None:
        what = ", ".join(categories) or "a failed safety stage"
        super().__init__(400, f"the model's reasoning was blocked by CoT SafePath ({what})",
                         type="content_filter", code="reasoning_blocked")
