# syntax=docker/dockerfile:1
# The gateway in a small image: built in one stage, run as a non-root user in another.
#   docker build -t gateway .
#   docker run -p 8000:8000 -v gateway-data:/data -e GATEWAY_UPSTREAM_API_KEY=sk-... gateway
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The locked, hashed dependencies first (their layer is reused while the lock is unchanged), then the
# package itself without resolving anything again.
COPY requirements/run.txt ./requirements/run.txt
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-cache-dir --require-hashes -r requirements/run.txt
# The build backend (hatchling) needs README.md (the package's readme) and migrations/ (packaged as
# gateway/_migrations, so `gateway migrate` works from the installed package).
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY gateway ./gateway
RUN /opt/gateway/bin/pip install --no-cache-dir --no-deps . \
    && /opt/gateway/bin/gateway --help > /dev/null

FROM python:${PYTHON_VERSION}-slim
ENV PATH=/opt/gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin gateway \
    && mkdir /data \
    && chown gateway:gateway /data
COPY --from=build /opt/gateway /opt/gateway
USER gateway
WORKDIR /data
# The SQLite file (the default database) lives here; with Postgres the volume stays empty.
VOLUME ["/data"]
EXPOSE 8000
# Slim images have no curl: ask /healthz (200 while the database answers) with the standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${GATEWAY_PORT:-8000}/healthz', timeout=4)" || exit 1
CMD ["gateway", "serve", "--host", "0.0.0.0"]
