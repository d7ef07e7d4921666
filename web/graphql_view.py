"""The GraphQL view: body and media-type rules, context building, status mapping."""

import contextlib
import dataclasses
import functools
import json
import re
from collections.abc import Mapping
from typing import Any, cast

import orjson
from cross_web import FlaskHTTPRequestAdapter, SyncHTTPRequestAdapter
from cross_web import HTTPException as GraphQLHTTPException
from flask import Flask, Request, Response, g
from flask.typing import ResponseReturnValue
from flask_cors import CORS
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from strawberry.flask.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult

from resolvers.auth import needs_caller_row
from schema.context import Context
from schema.errors import INTERNAL, mask_unexpected
from schema.operation_log import RequestLog
from schema.root import UserqlSchema
from services import auth, idempotency
from services.audit import Actor, AuditTrail
from services.errors import DatabaseUnavailable, OutcomeUnknown, RequestTimedOut, Unauthenticated
from services.sessions import user_agent
from services.unit_of_work import RequestConnection, database_errors
from web.collaborators import Collaborators
from web.errors import CODE_BY_STATUS, RETRY_AFTER_SECONDS, json_error
from web.graphiql import graphiql_page
from web.request_log import current_globals, current_request

# A document that may hold a mutation holds the word as a whole word (so do some that hold
# none, in a string or a name: their reads then share the writers' connection, no harm done).
_MUTATION = re.compile(r"(?<![_0-9A-Za-z])mutation(?![_0-9A-Za-z])")

GRAPHQL_RESPONSE = "application/graphql-response+json"
# Headers a browser never sends on a simple cross-site request: their presence proves a
# CORS preflight happened (Apollo's csrfPrevention and the GraphQL-over-HTTP spec).
PREFLIGHT_HEADERS = (
    "GraphQL-Require-Preflight",
    "Apollo-Require-Preflight",
    "X-Apollo-Operation-Name",
)


def _wants_graphql_response() -> bool:
    """Whether the client asked for the GraphQL-over-HTTP media type by name; a missing
    Accept or */* keeps the older application/json behaviour."""
    # Most clients never name it: their Accept header need not be parsed.
    current = current_request()
    if GRAPHQL_RESPONSE not in current.headers.get("Accept", "").lower():
        return False
    accept = current.accept_mimetypes
    if not any(mime.lower() == GRAPHQL_RESPONSE and quality > 0 for mime, quality in accept):
        return False
    return accept.best_match([GRAPHQL_RESPONSE, "application/json"]) == GRAPHQL_RESPONSE


def _is_request_error(response: GraphQLHTTPResponse) -> bool:
    """Parse, validation, variable and limit failures: nothing was executed."""
    errors = cast(list[Mapping[str, object]], response.get("errors") or [])
    return response.get("data") is None and bool(errors) and all("path" not in e for e in errors)


class _JsonRequestAdapter(FlaskHTTPRequestAdapter):
    @property
    def body(self) -> str | bytes:
        request = self.request
        if request.content_length is None and (limit := request.max_content_length) is not None:
            return _chunked_body(request.environ, limit).decode()
        # Only JSON is accepted (see parse_http_body), and `request.data` would first set up
        # werkzeug's form parsing for it.
        body: bytes = request.get_data(parse_form_data=False)
        return body.decode()


def _chunked_body(environ: dict[str, Any], limit: int) -> bytes:
    """A body sent without Content-Length (chunked), refused when it is over the limit.

    Werkzeug stops reading such a body at the limit and hands on what it read, which would
    then be parsed as if it were the whole request."""
    if "wsgi.input_terminated" not in environ:
        return b""  # the server cannot tell where the body ends: none is read
    body: bytes = environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise GraphQLHTTPException(
            413, f"The request body is larger than this server accepts ({limit} bytes)."
        )
    return body


class UserqlGraphQLView(GraphQLView[Context, None]):
    """The only glue between HTTP and GraphQL."""

    request_adapter_class = _JsonRequestAdapter

    # A view per request (Flask's default, said here because _database relies on it).
    init_every_request = True

    def __init__(self, *, collaborators: Collaborators, **options: Any) -> None:
        super().__init__(**options)
        self._collaborators = collaborators
        self._database = RequestConnection(
            collaborators.databases.session_factory,
            collaborators.databases.reading_engine,
            AuditTrail(actor=self._actor, redact_email=collaborators.audit_redact_email),
            collaborators.databases.replica,
        )
        self._principal = auth.ANONYMOUS
        self._idempotency: tuple[str, str, str] | None = None
        """While the request holds its writes for an Idempotency-Key: whose key, the key,
        and the request's hash."""
        self._request_data: GraphQLRequestData | list[GraphQLRequestData] | None = None
        self._request_operations: list[tuple[str, str | None, Any]] | None = None

    def get_context(self, request: Request, response: Response) -> Context:
        collaborators = self._collaborators
        token = auth.bearer_token(request.headers.getlist("Authorization"))
        # Only a token makes authentication read; what it reads, and on which connection,
        # the documents tell.
        documents = self._documents(request) if token is not None else []
        with_row = any(needs_caller_row(document) for document in documents)
        if any(_MUTATION.search(document) for document in documents):
            self._database.expect_writes()
        key = self._mutation_key(request)
        # From the primary: a replica that trails it would let a revoked token in, and turn
        # away a caller who signed up a moment ago.
        reading = self._database.reading(current=True)
        if key is None:
            principal = auth.authenticate(reading, collaborators.tokens, token, with_row=with_row)
        else:
            principal, earlier = auth.authenticate_keyed(
                reading, collaborators.tokens, token, with_row=with_row, key=key
            )
            self._claim(request, key, principal, earlier)
        self._principal = principal
        log: RequestLog = current_globals().request_log
        log.principal_id = principal.user_id
        return Context(
            database=self._database,
            provisioner=collaborators.provisioner,
            principal=principal,
            tokens=collaborators.tokens,
            google=collaborators.google,
            google_signup_enabled=collaborators.google_signup_enabled,
            session_ttl_seconds=collaborators.session_ttl_seconds,
            user_agent=user_agent(request.headers.get("User-Agent")),
            log=log,
            limits=collaborators.limits,
            exposure=collaborators.exposure,
            rate_limiter=collaborators.rate_limiter,
            client_address=request.remote_addr or "unknown",
            tracer=collaborators.telemetry.tracer,
        )

    def _mutation_key(self, request: Request) -> str | None:
        """The request's Idempotency-Key when it runs a mutation (a key on a query is
        ignored). Raises InvalidIdempotencyKey."""
        header = request.headers.get("Idempotency-Key")
        if header is None:
            return None
        if not any(_is_mutation(document, name) for document, name, _ in self._operations(request)):
            return None
        return idempotency.checked_key(header)

    def _claim(
        self,
        request: Request,
        key: str,
        principal: auth.Principal,
        earlier: int | None,
    ) -> None:
        """Holds the request's writes, to commit them with the answer under the key; raises
        _Replay with the answer of an earlier request under it that sent the same."""
        owner = idempotency.owner(principal.user_id, request.remote_addr or "unknown")
        digest = idempotency.request_hash(self._operations(request))
        with database_errors():
            connection = self._database.hold()
            try:
                if principal.user_id is None:
                    earlier = idempotency.lookup(connection, principal=owner, key=key)
                now = self._collaborators.tokens.now()
                stored = idempotency.replayed(connection, earlier, digest, now)
            except BaseException:
                self._database.release(None)
                raise
        if stored is not None:
            with database_errors():
                self._database.release(None)
            raise _Replay(stored)
        self._idempotency = (owner, key, digest)

    def _operations(self, request: Request) -> list[tuple[str, str | None, Any]]:
        """Each operation's document (a persisted query's too), name and variables; made
        once a request, for authentication and the Idempotency-Key alike."""
        if self._request_operations is None:
            data = self.parse_http_body(self.request_adapter_class(request))
            self._request_operations = [
                (
                    item.query or self._collaborators.documents.stored(item.extensions) or "",
                    item.operation_name,
                    item.variables,
                )
                for item in (data if isinstance(data, list) else [data])
            ]
        return self._request_operations

    def _settle(self, response: Response) -> Response:
        """Ends the held writes: committed with the answer stored under the key; rolled back,
        and the answer of a request with the same key that committed first given instead;
        or, for an answer the client must not keep (5xx), rolled back whole."""
        owner, key, digest = self._idempotency or ("", "", "")
        self._idempotency = None
        if response.status_code >= 500:
            with database_errors():
                self._database.release(None)
            return response
        if set(current_globals().request_log.error_codes) & idempotency.NOT_KEPT:
            # An answer about the moment, not the request (an outage, a limit, a token):
            # what ran is committed, nothing is kept under the key, and a retry runs again.
            with database_errors():
                self._database.release(lambda connection: None)
            return response
        answer = idempotency.StoredAnswer(
            status=response.status_code,
            content_type=response.content_type or "application/json",
            body=response.get_data(),
        )
        now = self._collaborators.tokens.now()
        ttl = self._collaborators.idempotency_ttl_seconds

        def write(connection: Any) -> None:
            first = idempotency.keep(
                connection,
                principal=owner,
                key=key,
                digest=digest,
                answer=answer,
                now=now,
                ttl_seconds=ttl,
            )
            if first is not None:
                raise _Replay(first)  # release() rolls this request's writes back

        try:
            with database_errors():
                self._database.release(write)
        except _Replay as replay:
            return _replayed(replay.answer)
        except idempotency.IdempotencyKeyReused as error:
            return json_error(str(error), error.code, 422)
        except (OutcomeUnknown, DatabaseUnavailable, RequestTimedOut) as error:
            return json_error(str(error), error.code, 503)
        return response

    def _actor(self) -> Actor:
        """Who the request's changes are by, for the audit log: asked when an event is
        written, once the operation's name is known."""
        globals_ = current_globals()
        principal = self._principal
        return Actor(
            user_id=principal.user_id,
            role=None if principal.user_id is None else principal.role.name,
            request_id=globals_.request_id,
            operation_name=globals_.request_log.operation_name,
        )

    def render_graphql_ide(self, request: Request) -> Response:
        return graphiql_page(with_role_switcher=self._collaborators.development_tokens)

    def _documents(self, request: Request) -> list[str]:
        return [document for document, _, _ in self._operations(request) if document]

    def parse_http_body(self, request: SyncHTTPRequestAdapter) -> Any:
        # Parsed once, when the context is built, where authentication learns from the
        # documents which columns of the caller to read.
        if self._request_data is None:
            self._request_data = self._parse_http_body(request)
        return self._request_data

    def _parse_http_body(
        self, request: SyncHTTPRequestAdapter
    ) -> GraphQLRequestData | list[GraphQLRequestData]:
        if request.method == "POST":
            _require_json_content_type(request.content_type)
        elif self._collaborators.csrf_require_preflight and not any(
            request.headers.get(name) for name in PREFLIGHT_HEADERS
        ):
            raise GraphQLHTTPException(
                400,
                "GET requests must carry a GraphQL-Require-Preflight header "
                "(this server refuses possible cross-site request forgery).",
            )
        try:
            return super().parse_http_body(request)
        except UnicodeDecodeError as error:
            raise GraphQLHTTPException(400, "The request body is not valid UTF-8.") from error

    def execute_single(
        self,
        request: Request,
        request_adapter: SyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        document = self._collaborators.documents.admit(
            request_data, context.principal.role, context.log
        )
        if isinstance(document, ExecutionResult):
            return document
        try:
            return super().execute_single(
                request=request,
                request_adapter=request_adapter,
                sub_response=sub_response,
                context=context,
                root_value=root_value,
                request_data=dataclasses.replace(request_data, query=document),
            )
        except GraphQLHTTPException as error:
            if isinstance(error.__cause__, InvalidOperationTypeError):
                # GraphQL-over-HTTP: a mutation over GET is a wrong method, not a bad request.
                raise GraphQLHTTPException(405, "Mutations must be sent with POST.") from error
            raise

    def encode_json(self, data: object) -> bytes:
        # orjson, for large pages (see docs/performance.md). Every value of a GraphQL response
        # is JSON already: Int is 32-bit and Float finite by the spec's serializers.
        return orjson.dumps(data)

    def parse_json(self, data: str | bytes) -> Any:
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as error:
            # ValueError covers bytes that are not UTF-8 as well as bad JSON syntax.
            raise GraphQLHTTPException(400, "The request body is not valid JSON.") from error
        if not isinstance(value, dict | list):
            raise GraphQLHTTPException(400, "The request body must be a JSON object.")
        if isinstance(value, list):
            if self._collaborators.batch_max == 0:
                raise GraphQLHTTPException(400, "Batching is not enabled.")
            if len(value) > self._collaborators.batch_max:
                raise GraphQLHTTPException(
                    400, f"A batch may hold at most {self._collaborators.batch_max} operations."
                )
        return value

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        if _wants_graphql_response():
            sub_response.content_type = f"{GRAPHQL_RESPONSE}; charset=utf-8"
            if isinstance(response_data, dict) and _is_request_error(response_data):
                # GraphQL-over-HTTP: nothing ran, so 400 and no `data` entry at all.
                sub_response.status_code = 400
                response_data = {k: v for k, v in response_data.items() if k != "data"}  # type: ignore[assignment]
        return super().create_response(response_data, sub_response)

    def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = [mask_unexpected(error) for error in result.errors]
            g.request_log.error_codes.extend(
                (error.extensions or {}).get("code", INTERNAL) for error in result.errors
            )
        return super().process_result(request, result)

    def dispatch_request(self) -> ResponseReturnValue:
        try:
            response = self._run()
            if self._idempotency is not None and isinstance(response, Response):
                response = self._settle(response)
            return response
        finally:
            if self._idempotency is not None:
                self._idempotency = None
                with contextlib.suppress(Exception):
                    self._database.release(None)
            self._database.close()

    def _run(self) -> ResponseReturnValue:
        try:
            return self.run(request=current_request())
        except GraphQLHTTPException as error:
            code = CODE_BY_STATUS.get(error.status_code, "BAD_REQUEST")
            response = json_error(error.reason, code, error.status_code)
            if error.status_code == 405:
                response.headers["Allow"] = "POST"
            return response
        except _Replay as replay:
            return _replayed(replay.answer)
        except idempotency.InvalidIdempotencyKey as error:
            return json_error(str(error), error.code, 400)
        except idempotency.IdempotencyKeyReused as error:
            return json_error(str(error), error.code, 422)
        except Unauthenticated as error:
            # RFC 6750: the client must get (or refresh) a token before trying again.
            response = json_error(str(error), error.code, 401)
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        except DatabaseUnavailable as error:
            # Authentication could not reach the database; nothing ran.
            response = json_error(str(error), error.code, 503)
            response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response


class _Replay(Exception):
    """An earlier request with the same Idempotency-Key answered this one already."""

    def __init__(self, answer: idempotency.StoredAnswer) -> None:
        super().__init__("replayed")
        self.answer = answer


def _replayed(stored: idempotency.StoredAnswer) -> Response:
    response = Response(stored.body, status=stored.status, content_type=stored.content_type)
    response.headers["Idempotent-Replayed"] = "true"
    return response


# A client sends the same few documents again and again: each is parsed once for this.
@functools.lru_cache(maxsize=512)
def _is_mutation(document: str, operation_name: str | None) -> bool:
    if not _MUTATION.search(document):
        return False
    try:
        operation = get_operation_ast(parse(document), operation_name)
    except GraphQLError:
        return False  # the request fails the usual way, and changes nothing
    return operation is not None and operation.operation is OperationType.MUTATION


def _require_json_content_type(content_type: str | None) -> None:
    media_type, _, parameters = (content_type or "").partition(";")
    charset = parameters.strip().lower().removeprefix("charset=").strip('"')
    if media_type.strip().lower() != "application/json" or charset not in ("", "utf-8"):
        # Also what keeps HTML forms (urlencoded, multipart, text/plain) from posting here.
        raise GraphQLHTTPException(
            415, "Send POST requests as application/json (UTF-8), the GraphQL-over-HTTP format."
        )


def register(
    app: Flask,
    schema: UserqlSchema,
    collaborators: Collaborators,
    *,
    graphiql: bool,
    cors_origins: tuple[str, ...],
    cors_allow_credentials: bool,
) -> None:
    view = UserqlGraphQLView.as_view(
        "graphql",
        schema=schema,
        graphql_ide="graphiql" if graphiql else None,
        collaborators=collaborators,
    )
    app.add_url_rule("/graphql", view_func=view, methods=["GET", "POST"])
    if not cors_origins:
        return  # no Access-Control headers at all: browsers keep other origins out
    CORS(
        app,
        resources={r"/graphql": {}},
        origins=list(cors_origins),
        supports_credentials=cors_allow_credentials,
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
        expose_headers=["X-Request-ID"],
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
    )
