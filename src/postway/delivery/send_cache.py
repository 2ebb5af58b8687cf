"""What this process remembers between sends: who a token belongs to, and what an identity's
send context is. Only a hint that saves reads: the group commit reads both again inside its
write transaction before anything is stored (see `group_commit`), so a token revoked or an
identity changed a moment ago is honoured however old the entry."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

from postway.delivery.submit import SendContext
from postway.store.users import TokenOwner

K = TypeVar("K")
V = TypeVar("V")


class _Expiring(Generic[K, V]):
    """A dict whose entries are forgotten after `ttl` seconds, cleared when it reaches `size`."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._items: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if time.monotonic() - item[0] > self.ttl:
            del self._items[key]
            return None
        return item[1]

    def put(self, key: K, value: V) -> None:
        if len(self._items) >= self.size:
            self._items.clear()  # rare; entries come back with the next read
        self._items[key] = (time.monotonic(), value)

    def drop(self, key: K) -> None:
        self._items.pop(key, None)


class SendCache:
    # A token's entry also decides whether a large body is read before the group commit
    # refuses it, so it is kept for less time than a context.
    def __init__(self, token_ttl: float = 10.0, context_ttl: float = 60.0) -> None:
        self.owners: _Expiring[str, TokenOwner] = _Expiring(token_ttl, 10_000)
        self.contexts: _Expiring[tuple[str, str], SendContext] = _Expiring(context_ttl, 10_000)
