"""userql as an Apollo Federation 2 subgraph: the root fields a gateway uses, and the SDL it
composes, whose directives say what userql's own rules and cost function say.

The schema stays the one a client sees; the federated build (schema.root, FEDERATION) adds
`_entities` and `_service`. `User @key(fields: "id")` and the gateway's directives live in the
SDL `_service` answers, not on the types, so the stock schema and its SDL never change:
- `@authenticated` where a rule admits any signed-in caller (or, with or_self, some of them:
  the subgraph still decides who is self), `@requiresScopes(scopes: [["ADMIN"]])` where only
  an ADMIN is admitted; scopes are the `roles` claim of userql's tokens.
- `@cost(weight: 1)` on leaves (gateways count objects 1 and leaves 0 unless told), and
  `@listSize` where userql multiplies: `first` on a connection sizes its `edges`; a list without
  `first` counts once. A connection's `totalCount` and `pageInfo`, which userql multiplies by
  `first` too, cannot be sized (`sizedFields` must be lists), so there a gateway estimates less.
Rules on arguments and input fields have no gateway directive: userql applies them alone.
"""

from typing import Any, Protocol, cast

import strawberry
from graphql import (
    ConstDirectiveNode,
    DocumentNode,
    FieldDefinitionNode,
    GraphQLList,
    GraphQLObjectType,
    GraphQLSchema,
    ObjectTypeDefinitionNode,
    ScalarTypeDefinitionNode,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    parse,
    print_ast,
)
from strawberry.annotation import StrawberryAnnotation
from strawberry.types.union import StrawberryUnion

from resolvers import users as user_resolvers
from schema.limits import ENTITIES_FIELD, SLICING_ARGUMENT
from schema.permissions import FEDERATION_RULES, RULES, USER_TYPE, Rule, apply_rules
from schema.types.users import User
from services.auth import Access

FEDERATION_VERSION = "2.9"
"""The first version with every directive below (`@cost` and `@listSize`)."""
IMPORTED = ("@key", "@authenticated", "@requiresScopes", "@cost", "@listSize")
SERVICE_FIELD = "_service"
# What a subgraph's SDL leaves out: the gateway knows federation's own fields and types.
FEDERATION_TYPES = frozenset({"_Any", "_Entity", "_Service"})

# The union federation names `_Entity`; Strawberry builds its own only for types with a key
# directive, which User has in the SDL alone.
ENTITY_TYPE = "_Entity"
Entity = StrawberryUnion(ENTITY_TYPE, type_annotations=(StrawberryAnnotation(User),))


class Subgraph(Protocol):
    """A schema that prints its subgraph SDL (schema.root's federated one does)."""

    @property
    def subgraph_sdl(self) -> str: ...


@strawberry.type(name="_Service")
class Service:
    sdl: str


def _service(info: strawberry.Info[Any, None]) -> Service:
    return Service(sdl=cast(Subgraph, info.schema).subgraph_sdl)


@strawberry.type(name="Query")
class FederationFields:
    entities: list[Entity | None] = strawberry.field(  # type: ignore[valid-type]
        name=ENTITIES_FIELD,
        resolver=user_resolvers.entities,
        description="The users these representations name, in their order; null for each "
        "that names nobody.",
    )
    service: Service = strawberry.field(name=SERVICE_FIELD, resolver=_service)


apply_rules(FederationFields, rules=FEDERATION_RULES, rate_limits={})


def _directive(text: str) -> ConstDirectiveNode:
    definition = parse(f"scalar S {text}", no_location=True).definitions[0]
    assert isinstance(definition, ScalarTypeDefinitionNode)
    [directive] = definition.directives or ()
    return directive


def gateway_rule(rule: Rule) -> str | None:
    """The directive a gateway enforces for `rule`, None where it admits everyone."""
    if rule.role is Access.ANONYMOUS:
        return None
    if rule.role is Access.USER or rule.or_self:
        return "@authenticated"
    return f'@requiresScopes(scopes: [["{rule.role.name}"]])'


def gateway_cost(graphql_type: GraphQLObjectType, name: str) -> list[str]:
    """The directives that give a gateway userql's cost of this field."""
    field = graphql_type.fields[name]
    directives = []
    if is_leaf_type(get_named_type(field.type)):
        directives.append("@cost(weight: 1)")
    returned = get_named_type(field.type)
    if SLICING_ARGUMENT in field.args and isinstance(returned, GraphQLObjectType):
        sized = [
            inner
            for inner, definition in returned.fields.items()
            if isinstance(get_nullable_type(definition.type), GraphQLList)
        ]
        sized_fields = ", ".join(f'"{inner}"' for inner in sized)
        directives.append(
            f'@listSize(slicingArguments: ["{SLICING_ARGUMENT}"], sizedFields: [{sized_fields}])'
        )
    elif isinstance(get_nullable_type(field.type), GraphQLList):
        directives.append("@listSize(assumedSize: 1)")
    return directives


def subgraph_sdl(printed: str, schema: GraphQLSchema, rules: dict[str, Rule] = RULES) -> str:
    """The SDL `_service` answers: `printed` (the schema's own SDL) with the link to
    federation, the key and the directives of the module docstring, without federation's own
    fields and types."""
    document = parse(printed, no_location=True)
    definitions: list[Any] = []
    for definition in document.definitions:
        name = getattr(getattr(definition, "name", None), "value", None)
        if name in FEDERATION_TYPES:
            continue
        if isinstance(definition, ObjectTypeDefinitionNode) and name is not None:
            definition = _decorated(definition, schema, rules)
        definitions.append(definition)
    imported = ", ".join(f'"{name}"' for name in IMPORTED)
    link = parse(
        f"extend schema @link(url: "
        f'"https://specs.apollo.dev/federation/v{FEDERATION_VERSION}", import: [{imported}])',
        no_location=True,
    ).definitions[0]
    return print_ast(DocumentNode(definitions=(link, *definitions))) + "\n"


def _decorated(
    node: ObjectTypeDefinitionNode, schema: GraphQLSchema, rules: dict[str, Rule]
) -> ObjectTypeDefinitionNode:
    type_name = node.name.value
    graphql_type = schema.type_map[type_name]
    assert isinstance(graphql_type, GraphQLObjectType)
    fields = []
    for field in node.fields or ():
        name = field.name.value
        if name in (ENTITIES_FIELD, SERVICE_FIELD):
            continue
        added = gateway_cost(graphql_type, name)
        rule = rules.get(f"{type_name}.{name}")
        gateway = None if rule is None else gateway_rule(rule)
        if gateway is not None:
            added.insert(0, gateway)
        fields.append(
            FieldDefinitionNode(
                description=field.description,
                name=field.name,
                arguments=field.arguments,
                type=field.type,
                directives=(*(field.directives or ()), *map(_directive, added)),
            )
        )
    directives = tuple(node.directives or ())
    if type_name == USER_TYPE:
        directives = (*directives, _directive('@key(fields: "id")'))
    return ObjectTypeDefinitionNode(
        description=node.description,
        name=node.name,
        interfaces=node.interfaces,
        directives=directives,
        fields=tuple(fields),
    )
