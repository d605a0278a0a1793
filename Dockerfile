# The creditflow image: `creditflow run` (the flow), `retrain` (Ray), `loadtest` and the
# other commands of the CLI; k8s/ runs it. Build: docker build -t creditflow:0.1.0 .

# Stage 1: the hot modules compiled with mypyc (creditflow/native.py), against the same installed
# sources and the same Python minor version as the image below (the build records the ABI and the
# sha256 of each source; a mismatch runs plain Python, never a wrong build).
FROM python:3.11-bookworm AS native
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . mypy==2.4.1 setuptools==80.9.0 \
 && CREDITFLOW_PURE=1 CREDITFLOW_NATIVE_DIR=/native creditflow native build

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
COPY --from=native /native /opt/creditflow-native
ENV CREDITFLOW_NATIVE_DIR=/opt/creditflow-native

USER 10001
WORKDIR /home/creditflow
ENTRYPOINT ["creditflow"]
CMD ["--help"]
