# The production image: the pinned runtime dependencies of requirements/prod.lock (no embedded
# PostgreSQL or NATS: DATABASE_URL and NATS_URL name real servers), run as an unprivileged user
# whose data folder (mail files, made secrets, development wallet keys) is /var/lib/linjerum.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/linjerum
COPY requirements/prod.lock /tmp/prod.lock
RUN /opt/linjerum/bin/pip install --require-hashes -r /tmp/prod.lock
COPY pyproject.toml README.md /src/
COPY domain /src/domain
COPY infra /src/infra
COPY projections /src/projections
COPY services /src/services
RUN /opt/linjerum/bin/pip install --no-deps /src

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/linjerum linjerum
COPY --from=build /opt/linjerum /opt/linjerum
ENV PATH=/opt/linjerum/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LINJERUM_DATA_DIR=/var/lib/linjerum
USER linjerum
WORKDIR /var/lib/linjerum
EXPOSE 8080 8081
# /healthz of the process: a worker's on LINJERUM_HEALTH_PORT, else the gateway's own port.
HEALTHCHECK --interval=10s --timeout=6s --start-period=30s --retries=3 CMD ["python", "-c", \
    "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('LINJERUM_HEALTH_PORT') or os.environ.get('LINJERUM_PORT', '8080')), timeout=5)"]
ENTRYPOINT ["linjerum"]
CMD ["gateway", "--host", "0.0.0.0"]
