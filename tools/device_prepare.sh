#!/bin/sh
# Gather what tools/device_targets.sh needs on a borrowed machine that reaches no index:
# the agent's dependencies as CPython 3.12 x86_64 wheels (the device image has numpy,
# OpenCV, protobuf, flatbuffers and the like already), Mosquitto from Debian's packages,
# and the sample clip and model. All of it goes into .device/ (git-ignored), ~30 MB:
# the working tree that travels to that machine is limited to 64 MiB.
#
#   tools/device_prepare.sh          # here, once, with pip and apt-get reaching their indexes
#
# Then, through the device tool: carry [".device"], command "sh tools/device_targets.sh".
set -eu
cd "$(dirname "$0")/.."
out=.device
rm -rf "$out"
mkdir -p "$out/wheels" "$out/debs" "$out/assets/models" "$out/assets/clips"

python3 -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    -d "$out/wheels" \
    ai-edge-litert backports.strenum pydantic pydantic-core annotated-types \
    typing-inspection typing-extensions structlog paho-mqtt cryptography cffi pycparser

# Mosquitto and the libraries a fresh image may lack; unpacked there with dpkg -x into /tmp.
(cd "$out/debs" && apt-get download mosquitto libmosquitto1 libcjson1 libdlt2 libwrap0)

for asset in models/face_detection_short_range.tflite clips/sample.mp4 clips/sample.json; do
    cp "assets/$asset" "$out/assets/$asset"
done
cp assets/ASSETS.json "$out/assets/"
du -sh "$out"
