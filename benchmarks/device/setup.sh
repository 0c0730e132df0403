# Source this on a lent GPU machine: vlp and the carried kit (`python
# benchmarks/device/kit.py pack` here first) installed over the image's packages, and the
# embedded data.
#   source benchmarks/device/setup.sh
# The image's python3 is itself a venv, so a venv on top would not see its packages:
# vlp goes to a --target folder on PYTHONPATH instead. SITE (default /tmp/vlp-site) is
# reused when it exists, so a second call on a machine still warm skips the install.
site=${SITE:-/tmp/vlp-site}
if [ ! -x "$site/bin/vlp" ]; then
  pip=(python3 -m pip install --quiet --no-index --no-deps --no-build-isolation --target "$site")
  rm -rf "$site"
  "${pip[@]}" .device_kit/wheels/* .  # one install: a second would not add to $site/bin
  PYTHONPATH=$site python3 benchmarks/device/kit.py unpack /tmp/vlp-kit
fi
export PATH=$site/bin:$PATH PYTHONPATH=$site:/tmp/vlp-kit PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, lightning, timm, transformers as t; print('torch', torch.__version__, 'lightning', lightning.__version__, 'timm', timm.__version__, 'transformers', t.__version__)"
[ -f data/scenes/classes.json ] || vlp data --out data/scenes --format jsonl >/dev/null
