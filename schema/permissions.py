"""Who may use what, and how often: tables enforced per field, printed in the SDL and README.

Every field of Query and Mutation must have a rule, or the schema does not build. Fields of
other types are readable by whoever can reach their object, unless a rule here says more.
Rate limits count each call of a field, so aliases and batches cannot multiply attempts.
"""

import re
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import GraphQLObjectType, GraphQLSchema
from strawberry.extensions import FieldExtension
from strawberry.extensions.field_extension import SyncExtensionResolver
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.name_converter import NameConverter
from strawberry.schema_directive import Location
from strawberry.types.base import get_object_definition

from schema.context import Context
from schema.types.users import User
from services.auth import Access, Principal
from services.errors import Forbidden, Unauthenticated

ROOT_TYPES = ("Query", "Mutation")
USER_TYPE = get_object_definition(User, strict=True).name


@dataclass(frozen=True, slots=True)
class Rule:
    role: Access
    """The lowest role that may use the field; higher roles may too."""
    or_self: bool = False
    """Also the user the field is read on, when that user is the caller (User fields only)."""

    def allows(self, role: Access) -> bool:
        return role >= self.role

    def check(self, coordinate: str, principal: Principal, *, is_self: bool) -> None:
        """Returns if the principal may use the field; raises Unauthenticated or Forbidden."""
        if self.allows(principal.role) or (self.or_self and is_self):
            return
        if principal.role is Access.ANONYMOUS:
            raise Unauthenticated(f"Sign in to use {coordinate}.")
        raise Forbidden(f"{coordinate} needs the {self.role.name} role.")


RULES: dict[str, Rule] = {
    "Query.me": Rule(Access.ANONYMOUS),
    "Query.users": Rule(Access.USER),
    "Query.user": Rule(Access.USER),
    "Mutation.createUser": Rule(Access.ADMIN),
    "Mutation.signInWithGoogle": Rule(Access.ANONYMOUS),
    "User.email": Rule(Access.ADMIN, or_self=True),
}


# Field → rate-limit bucket; the rates themselves are settings (RATE_LIMIT_*).
RATE_LIMITS: dict[str, str] = {
    "Mutation.createUser": "create_user",
    "Mutation.signInWithGoogle": "sign_in",
}


# The access levels of services.auth, as the directive's argument type: mapped, not copied.
AccessRole = strawberry.enum(
    Access, name="AccessRole", description="Who a rule admits: a role and those above it."
)


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="requiresRole",
    description="The field needs this role or a higher one; with orSelf, the user it is read "
    "on may read it too.",
)
class RequiresRole:
    role: AccessRole  # type: ignore[valid-type]
    or_self: bool = False


class RoleRule(BasePermission):
    def __init__(self, coordinate: str, rule: Rule) -> None:
        self._coordinate = coordinate
        self._rule = rule

    @property
    def schema_directive(self) -> object:
        return RequiresRole(role=self._rule.role, or_self=self._rule.or_self)

    def has_permission(self, source: Any, info: strawberry.Info[Context, None], **_: Any) -> bool:
        # Raises rather than returning False: on_unauthorized() cannot see who is asking.
        context, rule = info.context, self._rule
        # A User is read off its record (see schema.types.users), whose id is the user's.
        is_self = (
            rule.or_self and not rule.allows(context.principal.role) and _is_caller(source, context)
        )
        rule.check(self._coordinate, context.principal, is_self=is_self)
        return True


class RateLimit(FieldExtension):
    """Counts each call against the caller's address and, when signed in, their user."""

    def __init__(self, bucket: str) -> None:
        self._bucket = bucket

    def resolve(
        self,
        next_: SyncExtensionResolver,
        source: Any,
        info: strawberry.Info[Context, None],
        **kwargs: Any,
    ) -> Any:
        context = info.context
        identities = [f"address:{context.client_address}"]
        if context.principal.user_id is not None:
            identities.append(f"user:{context.principal.user_id}")
        context.rate_limiter.check(self._bucket, *identities)
        return next_(source, info, **kwargs)


def apply_rules(
    *types: type, rules: dict[str, Rule] = RULES, rate_limits: dict[str, str] = RATE_LIMITS
) -> None:
    """Attach each rule and rate limit to its field. Raises LookupError for a root field
    without a rule and for a rule that names no field."""
    names = NameConverter()
    fields = {}
    for graphql_type in types:
        definition = get_object_definition(graphql_type, strict=True)
        for field in definition.fields:
            fields[f"{definition.name}.{names.get_graphql_name(field)}"] = field
    unruled = [c for c in fields if c.split(".")[0] in ROOT_TYPES and c not in rules]
    if unruled:
        raise LookupError(f"no access rule for {', '.join(unruled)}: add one to RULES")
    unknown = [coordinate for coordinate in (*rules, *rate_limits) if coordinate not in fields]
    if unknown:
        raise LookupError(f"access rules for fields that do not exist: {', '.join(unknown)}")
    for coordinate, rule in rules.items():
        # On fields of other types than the roots, once per row: the fast path applies these
        # rules by field_rules instead.
        fields[coordinate].extensions.append(PermissionExtension([RoleRule(coordinate, rule)]))
    # Strawberry runs the last extension outermost: placed first, the rate limit runs inside
    # the permission, so a caller without the role is refused without being counted.
    for coordinate, bucket in rate_limits.items():
        fields[coordinate].extensions.insert(0, RateLimit(bucket))


def _is_caller(source: Any, context: Context) -> bool:
    return context.is_caller(source.id)


@dataclass(frozen=True, slots=True)
class FieldRule:
    """A rule on a field of a non-root type, as the fast path applies it (see field_rules):
    what RoleRule decides, for a field that reads an attribute of its source."""

    type_name: str
    field_name: str
    attribute: str
    rule: Rule

    def admits(self, source: Any, context: Context) -> bool:
        rule = self.rule
        return rule.allows(context.principal.role) or (rule.or_self and _is_caller(source, context))

    def read(self, source: Any, context: Context) -> Any:
        """The field's value; raises Unauthenticated or Forbidden as RoleRule does."""
        if not self.admits(source, context):
            self.rule.check(f"{self.type_name}.{self.field_name}", context.principal, is_self=False)
        return getattr(source, self.attribute)

    def settled_by_role(self, context: Context) -> bool:
        """Whether the caller's role alone admits them, so that every row reads `attribute`."""
        return self.rule.allows(context.principal.role)


def field_rules(schema: GraphQLSchema, rules: dict[str, Rule] = RULES) -> tuple[FieldRule, ...]:
    """The rules on fields of non-root types of `schema`. Raises TypeError for a rule that
    cannot hold there."""
    found = []
    for coordinate, rule in rules.items():
        type_name, field_name = coordinate.split(".")
        if type_name in ROOT_TYPES:
            continue
        graphql_type = schema.type_map[type_name]
        if not isinstance(graphql_type, GraphQLObjectType):
            raise TypeError(f"{coordinate}: rules apply to fields of object types")
        if rule.or_self and type_name != USER_TYPE:
            raise TypeError(f"{coordinate}: or_self applies to fields of {USER_TYPE}")
        found.append(FieldRule(type_name, field_name, _snake_case(field_name), rule))
    return tuple(found)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def permission_matrix(rules: dict[str, Rule] = RULES) -> str:
    """The rules as a Markdown table, role by field."""
    roles = list(Access)
    lines = [
        "| Field | " + " | ".join(role.name for role in roles) + " |",
        "|---" * (len(roles) + 1) + "|",
    ]
    for coordinate, rule in rules.items():
        cells = [_cell(rule, role) for role in roles]
        lines.append(f"| `{coordinate}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(rule: Rule, role: Access) -> str:
    if rule.allows(role):
        return "yes"
    if rule.or_self and role is not Access.ANONYMOUS:
        return "own only"
    return "no"
