# Sourced by the device-call scripts (from session 7 on), run from the repository root on the GPU machine:
# the carried wheels (.whl/) into /tmp/site, the package from src/ on the path, and the card's name first.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
