FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --uid 10001 exporter
USER exporter
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"
CMD ["integration-health", "serve"]
