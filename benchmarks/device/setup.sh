# Source this on a lent GPU machine: a venv over the image's packages with vlp and the
# carried kit (`python benchmarks/device/kit.py pack` here first), and the embedded data.
#   source benchmarks/device/setup.sh
# VENV (default /tmp/vlp-venv) is reused when it exists, so a second call on a machine
# still warm skips the install.
venv=${VENV:-/tmp/vlp-venv}
if [ ! -x "$venv/bin/vlp" ]; then
  python3 -m venv --system-site-packages "$venv"
  "$venv/bin/pip" install --quiet --no-index --no-deps --no-build-isolation .device_kit/wheels/*
  "$venv/bin/pip" install --quiet --no-index --no-deps --no-build-isolation .
  "$venv/bin/python" benchmarks/device/kit.py unpack /tmp/vlp-kit
fi
source "$venv/bin/activate"
export PYTHONPATH=/tmp/vlp-kit PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python -c "import torch, lightning, timm, transformers as t; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__, 'transformers', t.__version__)"
[ -f data/scenes/classes.json ] || vlp data --out data/scenes --format jsonl >/dev/null
