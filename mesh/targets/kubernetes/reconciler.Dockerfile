# `mesh reconcile` for the kubernetes target, in the cluster (built from a meshops checkout: the build context is the
# repository root). git fetches the policies; kubectl sends verification requests from inside the mesh's pods.
FROM python:3.11-slim
ARG KUBECTL_VERSION=v1.35.0
RUN apt-get update && apt-get install -y --no-install-recommends git curl ca-certificates \
    && curl -fsSLo /usr/local/bin/kubectl "https://dl.k8s.io/release/${KUBECTL_VERSION}/bin/linux/amd64/kubectl" \
    && chmod 0755 /usr/local/bin/kubectl && apt-get purge -y curl && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY mesh /src/mesh
RUN pip install --no-cache-dir /src 'kubernetes>=29'
ENV PYTHONUNBUFFERED=1 HOME=/var/lib/meshops
USER 65532
EXPOSE 9900
ENTRYPOINT ["mesh"]
