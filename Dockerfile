# syntax=docker/dockerfile:1

# --- build: every wheel the app needs, so the runtime image needs no compiler ---
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies change less often than the source: their layer is cached on its own.
COPY constraints.txt ./
RUN pip wheel --wheel-dir /wheels --requirement constraints.txt
COPY pyproject.toml README.md app.py alembic.ini gunicorn.conf.py ./
COPY alembic ./alembic
COPY db ./db
COPY services ./services
COPY resolvers ./resolvers
COPY schema ./schema
RUN pip wheel --no-deps --wheel-dir /wheels .

# --- runtime ---
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    USERQL_ENV=production \
    PORT=8000
RUN groupadd --system --gid 10001 userql \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin userql
COPY --from=build /wheels /wheels
# Installs userql and only its runtime dependencies; migrations land in /usr/local/share/userql.
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/userql-*.whl && rm -rf /wheels
WORKDIR /srv/userql
COPY gunicorn.conf.py ./
USER 10001:10001
EXPOSE 8000
# Ready means the database answers and is migrated; slim images have no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/readyz', timeout=4)"]
CMD ["gunicorn", "app:create_app()"]
