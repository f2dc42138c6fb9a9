# GPU image: CUDA torch from the PyTorch index, then ponyserve (with its `gpu` extra) on top.
# The same image runs the API (`ponyserve serve --no-embedded-worker`), the workers
# (`ponyserve worker`) and the migration Job (`ponyserve migrate`); deploy/ has the manifests.
FROM nvidia/cuda:12.8.0-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The CUDA build of torch (the repo's constraints.txt pins the CPU build for dev/CI machines).
RUN pip install "torch>=2.4" --index-url https://download.pytorch.org/whl/cu128

WORKDIR /srv/ponyserve
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# gpu: nvidia-ml-py, so each worker exports its GPU's memory and utilisation through NVML.
RUN pip install ".[gpu]"

# A fixed, unprivileged user: Kubernetes' runAsNonRoot needs a numeric one, and the data folders
# exist owned by it so named volumes (compose) and emptyDirs start writable.
RUN groupadd --system --gid 10001 ponyserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ponyserve --shell /usr/sbin/nologin ponyserve \
    && mkdir -p /var/lib/ponyserve/images /models \
    && chown -R 10001:10001 /var/lib/ponyserve
USER 10001:10001

# PCI bus order, as NVML numbers the GPUs: torch's cuda:N and the GPU gauges then name the same device.
ENV PONYSERVE_HOST=0.0.0.0 PONYSERVE_DATA_DIR=/var/lib/ponyserve HOME=/var/lib/ponyserve \
    CUDA_DEVICE_ORDER=PCI_BUS_ID
# 8000: the API (and its /metrics); 9464: a worker's /metrics and probes (PONYSERVE_WORKER_METRICS_PORT).
EXPOSE 8000 9464
# API replicas: `ponyserve serve --no-embedded-worker`; GPU hosts: `ponyserve worker --devices cuda:0,...`
CMD ["ponyserve", "serve", "--no-embedded-worker"]
