"""Exceptions raised by safepath. Every public function either returns its result or raises one of these.

    SafePathError
    ├── InvalidRequest            the caller's input is unusable (HTTP 4xx)
    │   ├── EmptyContent
    │   └── ContentTooLarge
    ├── ConfigError               a shipped or user config file is wrong (fails at load time)
    │   ├── RuleFileError         names the file, the rule and the problem
    │   └── ProfileError
    ├── UnknownProfile            a request named a profile that is not loaded
    └── StageError                a stage could not produce detections
        ├── StageTimeout
        └── ModelLoadError        a model file is missing or corrupt; names the file
"""

from __future__ import annotations


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
