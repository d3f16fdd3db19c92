#!/bin/sh
# On a borrowed 16-core machine (the device tool's run, carry [".device"]): install what
# tools/device_prepare.sh gathered, then run issue 19's targets (tools/bench_targets.py)
# and leave the figures in $OUT. Fits one call: ~1 min of set-up, ~6 min of benchmarks.
#
#   sh tools/device_targets.sh [BENCH_TARGETS ARGS]    # default: --quick
set -u
out="${OUT:-/tmp/device-targets}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/wheels/*.whl || exit 1
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"

for deb in .device/debs/*.deb; do dpkg -x "$deb" /tmp/mq; done
export PATH="/tmp/mq/usr/sbin:/tmp/mq/usr/bin:$PATH"
export LD_LIBRARY_PATH="/tmp/mq/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export EDGE_AGENT_ASSETS="$PWD/.device/assets"

{
    date -u
    nproc
    uname -a
    python3 --version
    python3 -c "import numpy, cv2; from ai_edge_litert import interpreter; print('numpy', numpy.__version__, 'cv2', cv2.__version__)"
    mosquitto -h 2>&1 | head -1
    head -1 /proc/self/smaps_rollup 2>&1 || true
} 2>&1 | tee "$out/machine.txt"

[ $# -eq 0 ] && set -- --quick
python3 tools/bench_targets.py --json-out "$out/targets.json" "$@" 2>&1 | tee "$out/targets.txt"
