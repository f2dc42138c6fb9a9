# GPU image: CUDA torch from the PyTorch index, then ponyserve on top.
FROM nvidia/cuda:12.8.0-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
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
RUN pip install .

ENV PONYSERVE_HOST=0.0.0.0 PONYSERVE_DATA_DIR=/var/lib/ponyserve
EXPOSE 8000
# API replicas: `ponyserve serve --no-embedded-worker`; GPU hosts: `ponyserve worker --devices cuda:0,...`
CMD ["ponyserve", "serve", "--no-embedded-worker"]
