"""GraphQL documents known by their SHA-256: Automatic Persisted Queries, and trusted
documents (a committed manifest of the only operations non-admin callers may run)."""

import contextlib
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Generic, Protocol, TypeVar

from services.shared_redis import RedisUnavailable, SharedRedis

K = TypeVar("K")
V = TypeVar("V")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Registered documents expire, so hashes nobody uses again do not accumulate.
REDIS_TTL_SECONDS = 7 * 24 * 3600


def digest(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


class DocumentStore(Protocol):
    def get(self, key: str) -> str | None: ...
    def put(self, key: str, document: str) -> None: ...


class Lru(Generic[K, V]):
    """The `capacity` most recently used entries, safe to share between threads."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


class MemoryDocumentStore(Lru[str, str]):
    """The most recently used documents of this process."""

    def __init__(self, capacity: int = 1000) -> None:
        super().__init__(capacity)


class RedisDocumentStore:
    """Shared by every worker; while Redis is unavailable, this process's own store
    answers (services.shared_redis decides when Redis is asked)."""

    def __init__(self, shared: SharedRedis, prefix: str = "userql:apq") -> None:
        self._shared = shared
        self._prefix = prefix
        self._local = MemoryDocumentStore()

    def get(self, key: str) -> str | None:
        name = f"{self._prefix}:{key}"
        try:
            value = self._shared.run(lambda client: client.get(name))
        except RedisUnavailable:
            return self._local.get(key)
        return None if value is None else bytes(value).decode()  # type: ignore[arg-type]

    def put(self, key: str, document: str) -> None:
        self._local.put(key, document)
        name = f"{self._prefix}:{key}"
        with contextlib.suppress(RedisUnavailable):  # kept in this process meanwhile
            self._shared.run(lambda client: client.set(name, document, ex=REDIS_TTL_SECONDS))


def check_manifest(manifest: Mapping[str, str]) -> dict[str, str]:
    """The manifest as {sha256: document}; ValueError when a key is not its document's hash."""
    for key, document in manifest.items():
        if not isinstance(document, str) or digest(document) != key:
            raise ValueError(f"entry {key[:16]}… is not the SHA-256 of its document")
    return dict(manifest)
