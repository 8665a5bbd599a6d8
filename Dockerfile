# One image for every Caliber service; docker-compose.yml picks the module to run.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY simulator ./simulator
COPY tooling ./tooling
COPY bench ./bench
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
CMD ["caliber", "--help"]
