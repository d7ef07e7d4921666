"""Who may use what, and how often: tables enforced per field, printed in the SDL and README.

Every field of Query and Mutation must have a rule, or the schema does not build. Fields of
other types are readable by whoever can reach their object, unless a rule here says more.
An argument (`Query.users(active:)`) or a field of an input (`UpdateUserInput.role`) may have
a rule too: giving it a value needs that role. Rate limits count each call of a field, so
aliases and batches cannot multiply attempts.
"""

import re
from dataclasses import dataclass
from typing import Any

import strawberry
from graphql import GraphQLInputObjectType, GraphQLObjectType, GraphQLSchema
from strawberry.extensions import FieldExtension
from strawberry.extensions.field_extension import SyncExtensionResolver
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.name_converter import NameConverter
from strawberry.schema_directive import Location
from strawberry.types.base import get_object_definition
from strawberry.types.field import StrawberryField

from schema.context import Context
from schema.types.users import User
from services.auth import Access, Principal
from services.errors import Forbidden, Unauthenticated
from services.rate_limit import RateLimited

ROOT_TYPES = ("Query", "Mutation")
USER_TYPE = get_object_definition(User, strict=True).name


@dataclass(frozen=True, slots=True)
class Rule:
    role: Access
    """The lowest role that may use the field; higher roles may too."""
    or_self: bool = False
    """Also the caller themselves: on a User field, the user it is read on; on a root field,
    the user its `id` argument names."""

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
    "Query.users(active:)": Rule(Access.ADMIN),
    "Query.user": Rule(Access.USER),
    "Query.auditEvents": Rule(Access.ADMIN),
    "Mutation.createUser": Rule(Access.ADMIN),
    "Mutation.signInWithGoogle": Rule(Access.ANONYMOUS),
    "Mutation.updateUser": Rule(Access.ADMIN, or_self=True),
    "UpdateUserInput.email": Rule(Access.ADMIN),
    "UpdateUserInput.role": Rule(Access.ADMIN),
    "Mutation.deactivateUser": Rule(Access.ADMIN),
    "Mutation.reactivateUser": Rule(Access.ADMIN),
    "Mutation.deleteUser": Rule(Access.ADMIN),
    "Mutation.refreshSession": Rule(Access.ANONYMOUS),
    "Mutation.signOut": Rule(Access.USER),
    "Mutation.signOutEverywhere": Rule(Access.USER),
    "Mutation.revokeSessions": Rule(Access.ADMIN),
    "User.email": Rule(Access.ADMIN, or_self=True),
    "User.deactivatedAt": Rule(Access.ADMIN),
    "User.sessions": Rule(Access.ADMIN, or_self=True),
}

# The root fields only the federated schema has (schema.federation): a gateway reads users as
# `user` does, and composes from the SDL without a caller.
FEDERATION_RULES: dict[str, Rule] = {
    "Query._entities": Rule(Access.USER),
    "Query._service": Rule(Access.ANONYMOUS),
}


# Field → rate-limit bucket; the rates themselves are settings (RATE_LIMIT_*).
RATE_LIMITS: dict[str, str] = {
    "Mutation.createUser": "create_user",
    "Mutation.signInWithGoogle": "sign_in",
    "Mutation.refreshSession": "sign_in",
}


# The access levels of services.auth, as the directive's argument type: mapped, not copied.
AccessRole = strawberry.enum(
    Access, name="AccessRole", description="Who a rule admits: a role and those above it."
)


@strawberry.schema_directive(
    locations=[
        Location.FIELD_DEFINITION,
        Location.ARGUMENT_DEFINITION,
        Location.INPUT_FIELD_DEFINITION,
    ],
    name="requiresRole",
    description="The field needs this role or a higher one; with orSelf, the user it is read "
    "on (or, on a mutation, the user it names) may use it too. On an argument or an input "
    "field: giving it a value needs this role.",
)
class RequiresRole:
    role: AccessRole  # type: ignore[valid-type]
    or_self: bool = False


@dataclass(frozen=True, slots=True)
class ValueRule:
    """A rule on an argument, or on a field of an input argument, of a root field."""

    coordinate: str
    argument: str
    """The resolver's parameter."""
    input_field: str | None
    """The input's attribute, for a field of an input."""
    rule: Rule

    def given(self, arguments: dict[str, Any]) -> bool:
        value = arguments.get(self.argument)
        if self.input_field is not None and value is not None:
            value = getattr(value, self.input_field, strawberry.UNSET)
        return value is not None and value is not strawberry.UNSET


class RoleRule(BasePermission):
    def __init__(
        self, coordinate: str, rule: Rule, value_rules: tuple[ValueRule, ...] = ()
    ) -> None:
        self._coordinate = coordinate
        self._rule = rule
        self._value_rules = value_rules

    @property
    def schema_directive(self) -> object:
        return RequiresRole(role=self._rule.role, or_self=self._rule.or_self)

    def has_permission(
        self, source: Any, info: strawberry.Info[Context, None], **arguments: Any
    ) -> bool:
        # Raises rather than returning False: on_unauthorized() cannot see who is asking.
        context, rule = info.context, self._rule
        is_self = (
            rule.or_self
            and not rule.allows(context.principal.role)
            and _is_self(source, arguments, context)
        )
        rule.check(self._coordinate, context.principal, is_self=is_self)
        for value_rule in self._value_rules:
            if value_rule.given(arguments):
                value_rule.rule.check(value_rule.coordinate, context.principal, is_self=False)
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
        try:
            context.rate_limiter.check(self._bucket, *identities)
        except RateLimited:
            context.log.rate_limited.append(self._bucket)
            raise
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
    values = _value_rules(fields, rules, names)
    unknown = [
        coordinate
        for coordinate in (*rules, *rate_limits)
        if coordinate not in fields and coordinate not in {v.coordinate for v in values}
    ]
    if unknown:
        raise LookupError(f"access rules for fields that do not exist: {', '.join(unknown)}")
    for coordinate, field in fields.items():
        if coordinate not in rules:
            continue
        mine = tuple(v for v in values if _owner(v, coordinate, field, names))
        # On fields of other types than the roots, once per row: the fast path applies these
        # rules by field_rules instead.
        role_rule = RoleRule(coordinate, rules[coordinate], mine)
        field.extensions.append(PermissionExtension([role_rule]))
    # Strawberry runs the last extension outermost: placed first, the rate limit runs inside
    # the permission, so a caller without the role is refused without being counted.
    for coordinate, bucket in rate_limits.items():
        fields[coordinate].extensions.insert(0, RateLimit(bucket))


def _value_rules(
    fields: dict[str, StrawberryField], rules: dict[str, Rule], names: NameConverter
) -> list[ValueRule]:
    """The rules of `rules` on arguments of these root fields and on fields of their inputs."""
    found = []
    for coordinate, field in fields.items():
        if coordinate.split(".")[0] not in ROOT_TYPES:
            continue
        for argument in field.arguments:
            argument_name = names.get_graphql_name(argument)
            own = f"{coordinate}({argument_name}:)"
            if own in rules:
                found.append(ValueRule(own, argument.python_name, None, rules[own]))
                _print_rule(argument, rules[own])
            input_type = getattr(argument.type, "of_type", argument.type)
            definition = get_object_definition(input_type)
            if definition is None or not definition.is_input:
                continue
            for input_field in definition.fields:
                inner = f"{definition.name}.{names.get_graphql_name(input_field)}"
                if inner in rules:
                    found.append(
                        ValueRule(
                            inner, argument.python_name, input_field.python_name, rules[inner]
                        )
                    )
                    _print_rule(input_field, rules[inner])
    return found


def _print_rule(target: Any, rule: Rule) -> None:
    """Shows the rule in the SDL, on the argument or input field it is on."""
    directives = tuple(target.directives)
    if not any(isinstance(directive, RequiresRole) for directive in directives):
        target.directives = (*directives, RequiresRole(role=rule.role, or_self=rule.or_self))


def _owner(rule: ValueRule, coordinate: str, field: StrawberryField, names: NameConverter) -> bool:
    if rule.coordinate.startswith(f"{coordinate}("):
        return True
    return rule.input_field is not None and any(
        argument.python_name == rule.argument
        and rule.coordinate.split(".")[0]
        == getattr(
            get_object_definition(getattr(argument.type, "of_type", argument.type)), "name", None
        )
        for argument in field.arguments
    )


def _is_self(source: Any, arguments: dict[str, Any], context: Context) -> bool:
    # A User is read off its record (see schema.types.users), whose id is the user's; a root
    # field names its user by the `id` argument.
    if source is not None:
        return context.is_caller(source.id)
    named = arguments.get("id")
    return isinstance(named, str) and named.isdigit() and context.is_caller(int(named))


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
        if isinstance(graphql_type, GraphQLInputObjectType):
            continue  # checked on the root field that takes the input (see ValueRule)
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
