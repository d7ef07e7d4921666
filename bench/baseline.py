"""The raw baseline: plain Flask and SQLAlchemy Core, no GraphQL, no auth, no limits, serving
the same JSON for the same rows as userql's benchmark queries. Not part of the product.

    gunicorn 'bench.baseline:create_app()'   (reads DATABASE_URL)
"""

import base64
import json
import os
from typing import Any, cast

from flask import Flask, Response, request
from sqlalchemy import Table, insert, select, update

from db import models
from db.base import utc_now
from db.session import make_engine

USERS = cast(Table, models.User.__table__)
FIELDS = (USERS.c.id, USERS.c.name, USERS.c.email, USERS.c.role, USERS.c.created_at)


def _node(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "email": row.email,
        "role": row.role.value,
        "createdAt": row.created_at.isoformat(),
    }


def _cursor(user_id: int) -> str:
    return base64.urlsafe_b64encode(f"user:{user_id}".encode()).decode()


def _json(body: object) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), content_type="application/json")


def create_app() -> Flask:
    engine = make_engine(os.environ["DATABASE_URL"])
    app = Flask(__name__)

    @app.get("/user")
    def user() -> Response:
        with engine.connect() as connection:
            row = connection.execute(
                select(*FIELDS).where(USERS.c.id == int(request.args["id"]))
            ).first()
        return _json({"data": {"user": None if row is None else _node(row)}})

    @app.get("/users")
    def users() -> Response:
        first = int(request.args.get("first", "20"))
        query = select(*FIELDS).order_by(USERS.c.id).limit(first + 1)
        if after := request.args.get("after"):
            after_id = int(base64.urlsafe_b64decode(after).decode().removeprefix("user:"))
            query = query.where(USERS.c.id > after_id)
        with engine.connect() as connection:
            rows = connection.execute(query).all()
        page = rows[:first]
        edges = [{"node": _node(row)} for row in page]
        end = _cursor(page[-1].id) if page else None
        body = {"edges": edges, "pageInfo": {"hasNextPage": len(rows) > first, "endCursor": end}}
        return _json({"data": {"users": body}})

    @app.post("/users")
    def create() -> Response:
        payload = request.get_json()
        now = utc_now()
        values = {
            "name": payload["name"],
            "email": payload["email"].lower(),
            "role": models.Role.USER,
            "created_at": now,
            "updated_at": now,
        }
        with engine.begin() as connection:
            inserted = connection.execute(insert(USERS).values(**values)).inserted_primary_key
            user_id = None if inserted is None else inserted[0]
        node = {
            "id": str(user_id),
            "name": values["name"],
            "email": values["email"],
            "role": "USER",
        }
        return _json({"data": {"createUser": {"user": node}}})

    @app.patch("/users/<int:user_id>")
    def rename(user_id: int) -> Response:
        payload = request.get_json()
        with engine.begin() as connection:
            connection.execute(
                update(USERS)
                .where(USERS.c.id == user_id)
                .values(name=payload["name"], updated_at=utc_now())
            )
            row = connection.execute(select(*FIELDS).where(USERS.c.id == user_id)).first()
        return _json({"data": {"updateUser": {"user": None if row is None else _node(row)}}})

    return app
