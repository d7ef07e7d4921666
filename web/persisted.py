"""Which document a request runs: as sent, found by its hash (Apollo's Automatic Persisted
Queries), or refused because a trusted-documents manifest does not hold it."""

from collections.abc import Mapping
from dataclasses import dataclass

from graphql import GraphQLError, GraphQLSyntaxError, OperationDefinitionNode, parse
from strawberry.http import GraphQLRequestData
from strawberry.types import ExecutionResult

from schema.operation_log import RequestLog
from services import auth, documents
from services.shared_redis import SharedRedis

# Apollo Client's persisted-query link recognises the not-found error by this exact message.
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_INVALID = "PERSISTED_QUERY_INVALID"
OPERATION_NOT_TRUSTED = "OPERATION_NOT_TRUSTED"


def _refusal(message: str, code: str) -> ExecutionResult:
    return ExecutionResult(data=None, errors=[GraphQLError(message, extensions={"code": code})])


@dataclass(frozen=True, slots=True)
class DocumentAdmission:
    persisted: documents.DocumentStore
    """Where registered persisted queries are kept (per process, or Redis)."""
    trusted: Mapping[str, str] | None
    """The trusted-documents manifest; when set, only ADMINs may run or register others."""

    @classmethod
    def kept_in(
        cls, shared: SharedRedis | None, *, trusted: Mapping[str, str] | None
    ) -> "DocumentAdmission":
        """Persisted queries in Redis, shared by every process, or else in this one's."""
        store = (
            documents.MemoryDocumentStore()
            if shared is None
            else documents.RedisDocumentStore(shared)
        )
        return cls(persisted=store, trusted=trusted)

    def admit(
        self, data: GraphQLRequestData, role: auth.Access, log: RequestLog
    ) -> str | ExecutionResult | None:
        """The document to run, or the refusal to send back instead."""
        document = data.query
        persisted = (data.extensions or {}).get("persistedQuery")
        may_register = self.trusted is None or role >= auth.Access.ADMIN
        if persisted is not None:
            key = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
            if not (isinstance(key, str) and documents.SHA256_HEX.fullmatch(key)):
                return _refusal(
                    "persistedQuery needs a sha256Hash in hex.", PERSISTED_QUERY_INVALID
                )
            if document is None:
                document = self.stored(data.extensions)
                if document is None:
                    log.persisted_query_misses += 1
                    return _refusal("PersistedQueryNotFound", PERSISTED_QUERY_NOT_FOUND)
                log.persisted_query_hits += 1
            elif documents.digest(document) != key:
                return _refusal("provided sha does not match query", PERSISTED_QUERY_INVALID)
            elif may_register:
                self.persisted.put(key, document)
        if may_register or document is None:
            return document
        # Only here is there a manifest (may_register holds without one) to check against.
        if documents.digest(document) not in (self.trusted or {}):
            return _refusal(
                "Only the operations in the trusted-documents manifest may run.",
                OPERATION_NOT_TRUSTED,
            )
        return document

    def stored(self, extensions: Mapping[str, object] | None) -> str | None:
        """The document a persisted query's hash names, if one is kept under it."""
        persisted = (extensions or {}).get("persistedQuery")
        key = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
        if not (isinstance(key, str) and documents.SHA256_HEX.fullmatch(key)):
            return None
        return (self.trusted or {}).get(key) or self.persisted.get(key)


def operation_names(manifest: Mapping[str, str]) -> set[str]:
    """The operation names the manifest's documents define (a document that does not parse
    defines none; it is refused when it runs)."""
    names: set[str] = set()
    for document in manifest.values():
        try:
            definitions = parse(document).definitions
        except GraphQLSyntaxError:
            continue
        names.update(
            definition.name.value
            for definition in definitions
            if isinstance(definition, OperationDefinitionNode) and definition.name is not None
        )
    return names
