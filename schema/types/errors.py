import strawberry


@strawberry.type(description="One input field that failed validation.")
class FieldError:
    path: list[str] = strawberry.field(description="Where the field is, from the argument down.")
    message: str
    code: str = strawberry.field(description="A stable, machine-readable reason.")


@strawberry.type(description="The input was refused; nothing was written.")
class ValidationError:
    fields: list[FieldError]
