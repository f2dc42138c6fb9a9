#!/usr/bin/env bash
# Downloads, into .whl/ (git-ignored), the wheels that the lent GPU machine lacks for
# bench/runtime_gpu.py (its image has torch, safetensors, httpx, typer, uvloop… and an older transformers,
# but not diffusers nor the service's own stack), at the versions this checkout's .venv uses,
# for that machine's Python 3.12 on x86-64. Then, on the GPU machine (carry ".whl"):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site:. python3 bench/runtime_gpu.py --served 48 --clients 16
#
# Usage: bench/gpu_wheels.sh   (after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
names=(diffusers huggingface_hub fastapi starlette annotated-doc uvicorn httptools pydantic pydantic_core
       pydantic-settings python-dotenv annotated-types typing-inspection sqlalchemy greenlet alembic mako
       aiosqlite psycopg psycopg-binary structlog pyahocorasick stripe importlib_metadata transformers tokenizers)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for name in "${names[@]}"; do
  version=$(.venv/bin/pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$version" ] || { echo "gpu_wheels: $name is not installed in .venv" >&2; exit 1; }
  platforms=()
  for n in 17 24 27 28 31 34 35; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version"
done
ls .whl
du -sh .whl
