# Source on the device (GPU) machine from the repo root:  source scripts/gpu_setup.sh
# Puts flactl on PYTHONPATH and installs carried wheels (name them in the run tool's `carry`):
#   .whl   datasets, lm-eval and their pure-Python deps (absent from the GPU image)
#   .peer  fla-core / flash-linear-attention 0.6.0, the optional benchmark peer
export PYTHONPATH=$PWD
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if [ -d .peer ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/peer .peer/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/peer
fi
export PYTHONUNBUFFERED=1
