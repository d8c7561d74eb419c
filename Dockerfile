# CoT SafePath on Ray, CPU: the image of every pod of the RayService that `python -m deployments.kuberay` writes
# (deployments/README.md, "On Kubernetes (KubeRay)"). GPU pods: Dockerfile.gpu.
#
#   docker build -t REGISTRY/safepath:0.1.0 .
#
# Ray's own image of the Ray this package runs with (deployments/kuberay.py RAY_VERSION), so KubeRay's `ray start`
# commands find what they expect; its Python (3.11) meets requires-python.
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-cpu

# KubeRay runs `ray start` in the image's working directory, and Ray starts every replica there: serve_config.yaml's
# relative paths (args.profiles: configs/profiles.yaml) resolve against it.
WORKDIR /home/ray/safepath

# What the wheel is built from (pyproject.toml names README.md and force-includes configs/).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users safepath/ safepath/
COPY --chown=ray:users deployments/ deployments/
COPY --chown=ray:users configs/ configs/
# onnxruntime (CPU), Ray Serve and the PostgreSQL audit backend: a cluster's audit trail lives in PostgreSQL.
RUN pip install --no-cache-dir ".[cpu,serve,postgres]"

# The models the shipped profiles load: the int8 transformers and the static embeddings of the cascade's gate.
# (The fp16 files come along unused: CPU replicas load int8.)
COPY --chown=ray:users models/safety-minilm/ models/safety-minilm/
COPY --chown=ray:users models/trace-minilm/ models/trace-minilm/
COPY --chown=ray:users models/semantic-minilm/ models/semantic-minilm/
COPY --chown=ray:users models/static-minilm/ models/static-minilm/
COPY --chown=ray:users serve_config.yaml serve_config.gpu.yaml ./

# The installed package would look for models/ and configs/ next to itself in site-packages.
ENV SAFEPATH_MODEL_DIR=/home/ray/safepath/models \
    SAFEPATH_CONFIG_DIR=/home/ray/safepath/configs
