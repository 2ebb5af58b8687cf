"""One exception hierarchy; messages say what to fix. HTTP codes are chosen at the web edge."""

from __future__ import annotations


class PostwayError(Exception):
    """Base of every error Postway raises on purpose."""


class InvalidInput(PostwayError):
    """The caller sent something malformed; the message names the field and the fix."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(PostwayError):
    """The object does not exist, or belongs to someone else (the two are not told apart)."""


class Forbidden(PostwayError):
    """The caller is known but may not do this."""


class AuthenticationFailed(PostwayError):
    """Missing, unknown or revoked credentials."""


class Conflict(PostwayError):
    """The request clashes with the current state (e.g. an address already in use)."""


class RateLimited(PostwayError):
    """Too many attempts of something limited; `retry_after` is how many seconds to wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class TooLarge(InvalidInput):
    """The message exceeds the configured size limit."""


class ChannelError(PostwayError):
    """A delivery channel could not do its work; `step` says which step failed."""

    def __init__(self, message: str, step: str = "unknown") -> None:
        super().__init__(message)
        self.step = step


class NotStored(PostwayError):
    """The database refused to store something the checks accepted (a constraint, a trigger):
    the request is answered 500 and nothing of it was kept."""


class Unavailable(PostwayError):
    """The database cannot be reached or written now; nothing was stored. Answered 503 with
    `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
