"""Figures of ``tools/bench_transfer.py`` computed from its measured runs (pure functions)."""

from __future__ import annotations

import itertools
from typing import Any

TARGET_RATIO = 3.0  # issue 12's target against one device (kept for comparison)
TARGET_FANOUT_RATIO = 1.5  # issue 19: the rollout's wall time against the raw fan-out
TARGET_EGRESS = 1.1  # issue 19: server bytes out per bundle byte

TERMINAL = ("successful", "failed")


def phases(devices: list[dict[str, Any]], start: float) -> dict[str, float | None]:
    def last(statuses: tuple[str, ...]) -> float | None:
        times = [d["phases"][s] for d in devices for s in statuses if s in d["phases"]]
        return round(max(times) - start, 3) if times else None

    return {
        "downloading": last(("downloading",)),
        "installing": last(("installing",)),
        "done": last(TERMINAL),
    }


def cpu_by_phase(devices: list[dict[str, Any]], starts: list[float]) -> dict[str, float | None]:
    """Median CPU ms of a device (one per process) per phase: ready -> downloading (manifest
    verify), downloading -> installing (transfer), installing -> terminal (install)."""
    spans: dict[str, list[float]] = {"verify": [], "transfer": [], "install": []}
    for device, start in zip(devices, starts, strict=True):
        cpu = device.get("cpu", {})
        end = next((cpu[s] for s in TERMINAL if s in cpu), None)
        marks = [start, cpu.get("downloading"), cpu.get("installing"), end]
        for name, a, b in zip(spans, marks, marks[1:], strict=False):
            if a is not None and b is not None:
                spans[name].append(1000 * (b - a))
    return {name: round(sorted(v)[len(v) // 2], 1) if v else None for name, v in spans.items()}


def fleet_figures(
    one: dict[str, Any], many: dict[str, Any], fanout_s_per_byte: float
) -> dict[str, Any]:
    """The four labelled figures of ``fleet`` from the one-device and N-device runs."""
    ratio = many["seconds"] / one["seconds"]
    transfer_one = one["phases_s"]["installing"]
    install_one = one["seconds"] - transfer_one
    # Projection for N real devices, each with its own CPU, through this one broker: the
    # slowest of three measured rates, then one device's install.
    # - device: one device's transfer, stretched by how much more stream it must read
    #   (every device reads every frame of the shared stream);
    # - broker: Mosquitto (one thread) sends the stream once per device: its CPU per byte
    #   per subscriber is measured separately (broker_fanout_cpu), its control-traffic CPU
    #   per device from the N-device run;
    # - server: its CPU in the N-device run bounds its own busy time.
    stream = many["server_bytes"] / one["server_bytes"]
    device_s = transfer_one * stream
    devices, procs = many["devices"], many["procs"]
    # Mosquitto's CPU in the N-device run = the stream once per connection (procs copies,
    # at the measured per-copy rate) + control traffic per device (requests, op states).
    stream_copy_s = many["server_bytes"] * fanout_s_per_byte
    control_s = max(0.0, (many["broker_cpu_s"] or 0.0) - procs * stream_copy_s) / devices
    broker_s = devices * (stream_copy_s + control_s)
    server_s = many["server_cpu_s"]
    projected = max(device_s, broker_s, server_s) + install_one
    return {
        "a_measured_wall_ratio": round(ratio, 2),
        "a_target_ratio": TARGET_RATIO,
        "a_target_met": ratio <= TARGET_RATIO,
        "b_server_last_chunk_s": many["server_last_chunk_s"],
        "b_server_bytes_per_bundle": round(many["server_bytes"] / many["bundle_bytes"], 2),
        "c_device_cpu_ms_per_device": {
            "one_device": one["device_cpu_ms_per_device"],
            "fleet": many["device_cpu_ms_per_device"],
        },
        "d_projection": {
            "label": "PROJECTION (not measured): N devices, each on its own CPU, one broker",
            "formula": (
                "max(device_s, broker_s, server_s) + install_s; device_s = "
                "one.phases_s.installing * many.server_bytes / one.server_bytes; broker_s = "
                "devices * (many.server_bytes * broker_cpu_s_per_byte_per_subscriber + "
                "control_s); control_s = (many.broker_cpu_s - procs * many.server_bytes * "
                "broker_cpu_s_per_byte_per_subscriber) / devices; server_s = many.server_cpu_s; "
                "install_s = one.seconds - one.phases_s.installing"
            ),
            "broker_cpu_s_per_byte_per_subscriber": fanout_s_per_byte,
            "control_s": round(control_s, 5),
            "device_s": round(device_s, 3),
            "broker_s": round(broker_s, 3),
            "server_s": round(server_s, 3),
            "install_s": round(install_one, 3),
            "seconds": round(projected, 3),
            "ratio": round(projected / one["seconds"], 2),
        },
    }


def fanout_figures(raw: dict[str, Any], many: dict[str, Any]) -> dict[str, Any]:
    """The rollout against the raw fan-out to as many receivers, measured in the same run."""
    raw_s, rollout_s = raw["seconds"], many["seconds"]
    ratio = round(rollout_s / raw_s, 2) if raw_s and rollout_s else None
    egress = round(many["server_bytes"] / many["bundle_bytes"], 3)
    raw_out, rollout_out = raw["broker_bytes_out"], many.get("broker_bytes_out")
    return {
        "raw_fanout_s": raw_s,
        "fanout_ratio": ratio,
        "fanout_target": TARGET_FANOUT_RATIO,
        "fanout_target_met": ratio is not None and ratio <= TARGET_FANOUT_RATIO,
        "egress_per_bundle": egress,
        "egress_target": TARGET_EGRESS,
        "egress_target_met": egress <= TARGET_EGRESS,
        "broker_bytes_out": {
            "raw": raw_out,
            "rollout": rollout_out,
            # Per receiver, in bundles: 1.0 is the floor (every receiver gets every byte once).
            "raw_per_receiver_bundle": _per(raw_out, raw["subscribers"], raw["bytes"]),
            "rollout_per_device_bundle": _per(rollout_out, many["devices"], many["bundle_bytes"]),
        },
    }


def _per(total: int | None, receivers: int, size: int) -> float | None:
    return round(total / receivers / size, 3) if total is not None and receivers and size else None


def arrivals(first_asks: dict[str, float], held_s: float) -> dict[str, Any]:
    """How the devices began asking, seen by the chunk server (what the start wait waits for).

    ``first_asks`` maps each device to the server's time.monotonic() of its first request.
    """
    times = sorted(first_asks.values())
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return {
        "askers": len(times),
        "spread_s": round(times[-1] - times[0], 3) if times else None,
        # Between one device's first ask and the next device's: the quiet period must outlast
        # these while devices are still arriving.
        "gap_max_s": round(gaps[-1], 3) if gaps else None,
        "gap_p95_s": round(gaps[int(0.95 * (len(gaps) - 1))], 3) if gaps else None,
        "held_s": round(held_s, 3),  # first ask -> the first chunks went out
        # Devices that began asking after the first chunks had gone out (they need them again).
        "after_start": sum(1 for t in times if t > times[0] + held_s),
    }
