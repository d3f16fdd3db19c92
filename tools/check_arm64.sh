#!/usr/bin/env bash
# The user's path on arm64: a Debian bookworm arm64 root (the Raspberry Pi OS userland) run
# under qemu through binfmt_misc, the built wheel installed with binary wheels only, then
# validate-config for every arm64 board profile, the demo (must find a face), diag --json,
# a short bench and setup-service --root. Needs root, debootstrap and qemu-user-static.
#
#   tools/check_arm64.sh [--wheel PATH] [--bundle PATH] [--cache DIR] [--keep] [--prepare]
#
# --wheel PATH   the edge-agent wheel to install (default: build one from this checkout)
# --bundle PATH  install an offline bundle (tools/build_offline_bundle.py) instead of a wheel
# --cache DIR    where the pristine root is kept, keyed by this script's hash
#                (default ${TMPDIR:-/tmp}/edge-agent-arm64)
# --keep         leave the work root in place for a look afterwards
# --prepare      only build the cached root
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
wheel=""
bundle=""
cache="${TMPDIR:-/tmp}/edge-agent-arm64"
keep=0
prepare=0
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# Each inference takes 2-3 s under emulation (XNNPACK ~10x slower than on a board).
demo_seconds="${ARM64_DEMO_SECONDS:-25}"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) wheel="$(realpath "$2")"; shift 2 ;;
        --bundle) bundle="$(realpath "$2")"; shift 2 ;;
        --cache) cache="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        --prepare) prepare=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "check_arm64.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

[ "$(id -u)" = 0 ] || { echo "check_arm64.sh: needs root (debootstrap, chroot, binfmt_misc)" >&2; exit 2; }
binfmt_conf=/usr/lib/binfmt.d/qemu-aarch64.conf
if { ! command -v debootstrap >/dev/null || [ ! -f "$binfmt_conf" ]; } && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        debootstrap qemu-user-static >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends debootstrap qemu-user-static >/dev/null; }
fi
command -v debootstrap >/dev/null || { echo "check_arm64.sh: debootstrap missing: apt-get install debootstrap" >&2; exit 2; }
[ -f "$binfmt_conf" ] || { echo "check_arm64.sh: $binfmt_conf missing: apt-get install qemu-user-static" >&2; exit 2; }

started=$(date +%s)
step() { printf '[arm64 %4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

# --- binfmt_misc: register qemu-aarch64 for this run only, undo on exit ---------------
binfmt=/proc/sys/fs/binfmt_misc
mounted_binfmt=0
registered=0
work=""
mounts=()
unmount_under() {  # every mount below $1, deepest first; fails when one stays
    local dir point
    dir="$(realpath "$1")"
    for point in $(awk -v d="$dir" 'index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount "$point" 2>/dev/null || umount -l "$point" 2>/dev/null || true
    done
    ! awk -v d="$dir" 'index($2, d "/") == 1 {found=1} END {exit !found}' /proc/mounts
}
safe_rm() {  # never rm -rf through a bind mount of the host's /dev
    [ -e "$1" ] || return 0
    if unmount_under "$1"; then rm -rf "$1"; else echo "check_arm64.sh: mounts left under $1; not removed" >&2; fi
}
cleanup() {
    local i
    for (( i=${#mounts[@]}-1; i>=0; i-- )); do umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}" 2>/dev/null || true; done
    if [ -n "$work" ] && [ "$keep" = 0 ]; then safe_rm "$work"; fi
    [ "$registered" = 1 ] && echo -1 > "$binfmt/qemu-aarch64" 2>/dev/null || true
    [ "$mounted_binfmt" = 1 ] && umount "$binfmt" 2>/dev/null || true
}
trap cleanup EXIT
if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt"
    mounted_binfmt=1
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
    # The F flag opens the interpreter now, so the chroot needs no qemu binary of its own.
    grep -v '^#' "$binfmt_conf" > "$binfmt/register"
    registered=1
fi

# --- the pristine root, built once per recipe ---------------------------------------------
suite=bookworm
include=python3,python3-venv,ca-certificates
# Keyed by what goes into it, so editing the checks below keeps the cached root.
key="$(printf '%s arm64 minbase %s' "$suite" "$include" | sha256sum | cut -c1-12)"
base="$cache/base-$key"
mkdir -p "$cache"
if [ ! -x "$base/usr/bin/python3" ]; then
    step "building arm64 bookworm root in $base (debootstrap, then second stage under qemu)"
    safe_rm "$base.part"
    debootstrap --arch=arm64 --foreign --variant=minbase \
        --include="$include" "$suite" "$base.part" "$mirror" \
        > "$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    chroot "$base.part" /debootstrap/debootstrap --second-stage \
        >> "$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    rm -rf "$base.part/var/cache/apt/archives/"*.deb
    unmount_under "$base.part"  # the second stage mounts /proc itself
    mv "$base.part" "$base"
    step "root ready ($(du -sh "$base" | cut -f1))"
else
    step "cached root $base"
fi
[ "$prepare" = 1 ] && exit 0

# --- what to install ----------------------------------------------------------------
if [ -z "$wheel" ] && [ -z "$bundle" ]; then
    out="$(mktemp -d)"
    step "building the wheel from $here"
    # From a copy: an in-tree build would leave build/ in the checkout.
    mkdir "$out/src"
    (cd "$here" && tar -cf - --exclude=__pycache__ pyproject.toml setup.py MANIFEST.in README.md \
        agent firmware_profiles systemd) | tar -xf - -C "$out/src"
    "${PYTHON:-python3}" -m pip wheel --quiet --no-deps -w "$out" "$out/src" >/dev/null
    wheel="$(ls "$out"/edge_agent-*.whl)"
fi

# --- a throw-away copy of the root, with /proc, /dev and an arm64 /proc/cpuinfo ---------
work="$(mktemp -d "$cache/work-XXXXXX")"
cp -a "$base/." "$work/"
mount -t proc proc "$work/proc"; mounts+=("$work/proc")
mount --bind /dev "$work/dev"; mounts+=("$work/dev")
mount -t sysfs sysfs "$work/sys"; mounts+=("$work/sys")
# LiteRT reads /proc/cpuinfo to pick kernels; the host's x86 one makes allocate_tensors()
# segfault under qemu, so the guest sees a Raspberry Pi 5's (4x Cortex-A76).
cpuinfo="$cache/cpuinfo-arm64"
: > "$cpuinfo"
for cpu in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$cpu" >> "$cpuinfo"
done
mount --bind "$cpuinfo" "$work/proc/cpuinfo"; mounts+=("$work/proc/cpuinfo")
cp -L /etc/resolv.conf "$work/etc/resolv.conf"
# A host that reaches the index through a TLS proxy trusts its CA through PIP_CERT (or
# SSL_CERT_FILE); the guest gets the same bundle, or pip there refuses the certificate.
guest_cert=""
host_cert="${PIP_CERT:-${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}}"
if [ -n "$host_cert" ] && [ -f "$host_cert" ]; then
    cp -L "$host_cert" "$work/etc/ssl/certs/host-ca-bundle.crt"
    guest_cert=/etc/ssl/certs/host-ca-bundle.crt
fi
# Downloads are kept between runs.
mkdir -p "$cache/pip-cache" "$work/root/.cache/pip"
mount --bind "$cache/pip-cache" "$work/root/.cache/pip"; mounts+=("$work/root/.cache/pip")

guest() { chroot "$work" /usr/bin/env -i HOME=/root PATH=/opt/edge-agent/bin:/usr/bin:/bin \
    LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ONLY_BINARY=:all: \
    ${guest_cert:+PIP_CERT=$guest_cert} ${PIP_INDEX_URL:+PIP_INDEX_URL=$PIP_INDEX_URL} "$@"; }

step "guest: $(guest uname -m), $(guest python3 --version)"
if [ -n "$bundle" ]; then
    mkdir -p "$work/tmp/bundle"
    tar -xzf "$bundle" -C "$work/tmp/bundle" --strip-components=1
    step "installing offline bundle $(basename "$bundle") (no index)"
    guest /bin/sh -c 'cd /tmp/bundle && ./install.sh --no-service' | tail -3
else
    cp "$wheel" "$work/tmp/"
    name="$(basename "$wheel")"
    step "installing $name[tflite] with binary wheels only"
    guest python3 -m venv /opt/edge-agent
    guest /opt/edge-agent/bin/pip install --quiet --only-binary=:all: "/tmp/$name[tflite]"
fi
guest /opt/edge-agent/bin/pip list 2>/dev/null \
    | grep -E '^(edge-agent|ai-edge-litert|numpy|opencv-python-headless) ' | sed 's/^/    /'

failed=0
check() {  # check NAME CMD...: run in the guest from /root (not a checkout), record the result
    local name="$1"; shift
    if guest /bin/sh -c "cd /root && $*" > "$work/tmp/$name.out" 2>&1; then
        step "ok    $name"
    else
        step "FAIL  $name (exit $?)"; sed 's/^/    /' "$work/tmp/$name.out" | tail -20; failed=1
    fi
}
profiles=$(grep -l '^arch = "aarch64"' "$here"/firmware_profiles/*.toml | xargs -n1 basename | sed 's/\.toml$//')
for profile in $profiles; do
    printf '[device]\nid = "arm64-check"\nprofile = "%s"\n' "$profile" > "$work/root/$profile.toml"
    check "validate-config-$profile" edge-agent validate-config "$profile.toml"
done
check demo edge-agent demo --seconds "$demo_seconds"
faces=$(grep -c '^seq .* face ' "$work/tmp/demo.out" || true)
if [ "$faces" -ge 1 ]; then step "ok    demo found a face in $faces event(s)"; else step "FAIL  demo found no face"; failed=1; fi
grep -A2 '^summary after' "$work/tmp/demo.out" | sed 's/^/    /'
# diag exits 1/2 when a check warns or fails (no broker, no unit here): only the JSON matters.
guest /bin/sh -c 'cd /root && edge-agent diag --json' > "$work/tmp/diag.json" 2>/dev/null || true
if guest /opt/edge-agent/bin/python -c 'import json; r=json.load(open("/tmp/diag.json")); print("    diag:", r["summary"]["status"], r["summary"]["counts"], [c["name"] + "=" + c["status"] for c in r["checks"]])'; then
    step "ok    diag --json"
else
    step "FAIL  diag --json is not JSON"; head -5 "$work/tmp/diag.json"; failed=1
fi
check bench edge-agent bench --seconds 8 --threads 4 --json
guest /opt/edge-agent/bin/python -c 'import json; r=json.load(open("/tmp/bench.out")); print("    bench: raw %.2f ips, pipeline %.2f ips, runtime %s %s" % (r["raw"]["ips"], r["pipeline"]["ips"], r["runtime"]["name"], r["runtime"]["version"]))' || failed=1
check setup-service edge-agent setup-service --root /tmp/image --board rpi
step "$( [ "$failed" = 0 ] && echo PASSED || echo FAILED ) in $(( $(date +%s) - started )) s"
exit "$failed"
