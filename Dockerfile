# The creditflow image: `creditflow run` (the flow), `retrain` (Ray), `loadtest` and the
# other commands of the CLI; k8s/ runs it. Build: docker build -t creditflow:0.1.0 .
FROM python:3.11-slim-bookworm

# redis-server: `creditflow loadtest` and `creditflow demo` start their own.
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin creditflow

WORKDIR /opt/creditflow
COPY . .
# The pinned dependencies of pyproject.toml; not editable, so the source tree is only the build input.
RUN pip install --no-cache-dir . && rm -rf /opt/creditflow/build

USER 10001
WORKDIR /home/creditflow
ENTRYPOINT ["creditflow"]
CMD ["--help"]
