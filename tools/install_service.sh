#!/usr/bin/env bash
# Put the edge-agent systemd service in place on a device (or under --root for packaging/tests):
# unit, optional board drop-ins, tmpfiles.d and sysusers.d entries, /etc/edge-agent layout.
#
#   tools/install_service.sh [--root DIR] [--prefix /opt/edge-agent] [--dropin NAME]... [--enable]
#
# --root DIR   install below DIR instead of / (DESTDIR); systemctl is not touched then.
# --prefix P   where the venv with bin/edge-agent lives (default /opt/edge-agent).
# --dropin N   also install systemd/dropins/N.conf (jetson-gpu, rpi-libcamera, coral-edgetpu).
# --enable     enable and start the unit (only with --root /).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
root="/"
prefix="/opt/edge-agent"
enable=0
dropins=()

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="$2"; shift 2 ;;
        --root=*) root="${1#*=}"; shift ;;
        --prefix) prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --dropin) dropins+=("$2"); shift 2 ;;
        --dropin=*) dropins+=("${1#*=}"); shift ;;
        --enable) enable=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install_service.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

root="${root%/}"
live=0
[ -z "$root" ] && live=1  # installing onto the running system
dest() { printf '%s%s' "$root" "$1"; }

if [ "$enable" = 1 ] && [ "$live" = 0 ]; then
    echo "install_service.sh: --enable only works on the running system (no --root)" >&2
    exit 2
fi
for name in "${dropins[@]+"${dropins[@]}"}"; do
    if [ ! -f "$here/systemd/dropins/$name.conf" ]; then
        echo "install_service.sh: no drop-in named $name in systemd/dropins/" >&2
        exit 2
    fi
done

unit_dir="$(dest /etc/systemd/system)"
install -D -m 0644 "$here/systemd/edge-agent.service" "$unit_dir/edge-agent.service"
if [ "$prefix" != "/opt/edge-agent" ]; then
    sed -i "s|^ExecStart=/opt/edge-agent/bin/edge-agent |ExecStart=$prefix/bin/edge-agent |" \
        "$unit_dir/edge-agent.service"
fi
for name in "${dropins[@]+"${dropins[@]}"}"; do
    install -D -m 0644 "$here/systemd/dropins/$name.conf" "$unit_dir/edge-agent.service.d/$name.conf"
done
install -D -m 0644 "$here/systemd/edge-agent.tmpfiles.conf" "$(dest /etc/tmpfiles.d/edge-agent.conf)"
install -D -m 0644 "$here/systemd/edge-agent.sysusers.conf" "$(dest /etc/sysusers.d/edge-agent.conf)"

# The user first: tmpfiles and the config's group ownership need it.
if command -v systemd-sysusers >/dev/null 2>&1; then
    if [ "$live" = 1 ]; then
        systemd-sysusers /etc/sysusers.d/edge-agent.conf
    else
        systemd-sysusers --root="$root" "$(dest /etc/sysusers.d/edge-agent.conf)"
    fi
elif [ "$live" = 1 ] && ! getent passwd edge-agent >/dev/null; then
    useradd --system --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin \
        --user-group edge-agent
fi

config="$(dest /etc/edge-agent/agent.toml)"
install -d -m 0750 "$(dest /etc/edge-agent)" "$(dest /etc/edge-agent/trust)"
if [ ! -e "$config" ]; then
    # Never overwrite a device's config; this is only a starting point.
    cat > "$config" <<'TOML'
# edge-agent configuration (see docs/configuration.md). Validate with:
#   edge-agent validate-config /etc/edge-agent/agent.toml
[device]
# id = "cam-001"            # defaults to the host name
profile = "x86-gateway"     # jetson-orin-nano, jetson-nano, rpi5, rpi4, rpi4-coral, x86-gateway

[mqtt]
url = "mqtt://127.0.0.1:1883"

[trust]
root = "/etc/edge-agent/trust/root.json"

[[cameras]]
name = "cam0"
source = "v4l2:/dev/video0"
fps = 15
TOML
    chmod 0640 "$config"
fi

if command -v systemd-tmpfiles >/dev/null 2>&1; then
    if [ "$live" = 1 ]; then
        systemd-tmpfiles --create /etc/tmpfiles.d/edge-agent.conf
    else
        systemd-tmpfiles --root="$root" --create "$(dest /etc/tmpfiles.d/edge-agent.conf)"
    fi
fi

if [ ! -x "$(dest "$prefix/bin/edge-agent")" ]; then
    echo "note: $prefix/bin/edge-agent is missing; create it with:" >&2
    echo "  python3 -m venv $prefix && $prefix/bin/pip install 'edge-agent[tflite]'" >&2
fi

if [ "$live" = 1 ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ "$enable" = 1 ]; then
        systemctl enable --now edge-agent.service
    fi
fi
echo "installed edge-agent service under ${root:-/}"
