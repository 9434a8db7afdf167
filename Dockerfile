# One image for every role: `serve` (the default), `poll` and `migrate`.
# Migrations are never run at start on PostgreSQL: run `migrate` once, as its
# own step, before starting or upgrading the API (see deploy/compose.yaml).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Dependencies in a layer of their own: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# The application, built into a wheel: the migrations travel inside it
# (app.migrations), so the image needs no source tree.
COPY README.md ./
COPY migrations/ migrations/
COPY app/ app/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATABASE_URL=sqlite:////data/targetsms-receiver.db
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home app \
    && mkdir /data \
    && chown app:app /data
COPY --from=builder /opt/venv /opt/venv
# The wheel is mounted for this step only: it does not stay in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl
WORKDIR /app
USER 10001:10001
EXPOSE 8000
VOLUME ["/data"]
# The slim image has no curl: ask /readyz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
# Exec form: the server is PID 1 and gets SIGTERM itself (graceful shutdown).
ENTRYPOINT ["targetsms-receiver"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
