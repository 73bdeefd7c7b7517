# CryptoVault API image: small, non-root, health-checked, with the web app and
# GraphiQL built in (served at / and /graphql; no CDN, nothing fetched at run time).
FROM node:22-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY schema.graphql /src/schema.graphql
COPY web ./
RUN npm run build

FROM python:3.13-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY cryptovault ./cryptovault
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-compile . \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.13-slim
RUN groupadd --system app && useradd --system --gid app --home /app --shell /usr/sbin/nologin app \
    && mkdir -p /app/data && chown app:app /app/data
COPY --from=build /opt/venv /opt/venv
COPY --from=web /src/web/dist /app/web
ENV PATH=/opt/venv/bin:$PATH \
    WEB_DIST_DIR=/app/web \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/app/data \
    ENVIRONMENT=production
WORKDIR /app
USER app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os,urllib.request,sys; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\",\"8000\")}/health', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
CMD ["cryptovault", "serve"]
