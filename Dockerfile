FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY infra infra
COPY projections projections
COPY services services
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT ["linjerum"]
