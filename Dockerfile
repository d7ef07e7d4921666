# syntax=docker/dockerfile:1

# --- build: wheels of the runtime dependencies, at the versions constraints.txt pins ---
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /build
COPY pyproject.toml constraints.txt ./
# pyproject's [project] dependencies only: the [dev] tools (mypy, ruff, pytest, …) stay out.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > requirements.txt \
    && pip wheel --wheel-dir /wheels --requirement requirements.txt --constraint constraints.txt

# --- runtime: the dependencies in site-packages, userql's own source tree in /srv/userql ---
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/srv/userql \
    USERQL_ENV=production \
    PORT=8000
RUN groupadd --system --gid 10001 userql \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin userql
# Mounted, not copied: the wheels never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --no-deps /wheels/*.whl
WORKDIR /srv/userql
# What is copied is what .dockerignore lets through: the application, owned by root and
# read-only to the user it runs as.
COPY . .
RUN printf '#!/bin/sh\nexec python -m cli "$@"\n' > /usr/local/bin/userql \
    && chmod 0755 /usr/local/bin/userql \
    && python -m compileall -q /srv/userql
USER 10001:10001
# 8000: the API; 8081: /livez and /readyz from a thread of their own (HEALTH_PORT).
EXPOSE 8000 8081
# Ready means the database answers and is migrated; it asks the address gunicorn binds.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["userql", "healthcheck"]
CMD ["gunicorn", "app:create_app()"]
