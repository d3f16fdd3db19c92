"""Optional parts of the daemon, off by default: imported only when the config turns them on.

Home Assistant discovery (``[mqtt.homeassistant]``, docs/mqtt.md), published snapshots
(``telemetry.snapshot_interval_s`` or Home Assistant, docs/mqtt.md) and the technician's
live view (``[web]``, docs/liveview.md). The live view and Home Assistant modules are
imported only when turned on; ``agent.uplink.snapshots`` is read to decide (its rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.daemon.ops import FrameSource
from agent.events.types import EventSink

if TYPE_CHECKING:
    from agent.daemon.supervisor import Supervisor


def start_homeassistant(sup: Supervisor) -> Callable[[], None] | None:
    """Start the discovery publisher; its stop function, or None when it is off."""
    cfg = sup.config
    if not cfg.mqtt.homeassistant.enabled:
        return None
    from agent.update.store.journal import read_status  # noqa: PLC0415 - when enabled
    from agent.uplink.homeassistant import start_homeassistant as start  # noqa: PLC0415

    # Both are started before the supervisor calls this.
    assert sup.outbox is not None
    assert sup.link is not None
    return start(
        cfg,
        sup.topics,
        sup.outbox,
        sup.link,
        stop=sup.stop_event,
        update_state=lambda: read_status(sup.state_dir)["slots"],
    )


def start_event_taps(
    sup: Supervisor, sink: EventSink
) -> tuple[EventSink, Callable[[], None] | None]:
    """The sink the pipeline should use and the stop of the optional parts that watch its
    events: the snapshot publisher and the live view (both read ``sup.pipeline`` when asked)."""
    sink, snapshots_stop = start_snapshots(sup, sink)
    if not sup.config.web.enabled:
        return sink, snapshots_stop
    from agent.daemon.liveview import start_live_view as start  # noqa: PLC0415 - when enabled

    view, sink = start(sup, sink)

    def stop() -> None:
        view.stop()
        if snapshots_stop is not None:
            snapshots_stop()

    return sink, stop


def start_snapshots(
    sup: Supervisor, sink: EventSink
) -> tuple[EventSink, Callable[[], None] | None]:
    """Snapshots as raw JPEGs on ``<base>/snapshot/<camera>`` (docs/mqtt.md), when Home
    Assistant discovery or ``telemetry.snapshot_interval_s`` asks for them."""
    from agent.uplink import snapshots  # noqa: PLC0415 - optional parts load here

    if not snapshots.enabled(sup.config):
        return sink, None

    def latest_frame(camera: str) -> Any:
        pipeline: object = sup.pipeline  # set right after this hook returns
        return pipeline.latest_frame(camera) if isinstance(pipeline, FrameSource) else None

    assert sup.outbox is not None
    assert sup.commands is not None
    publisher = snapshots.SnapshotPublisher(
        sup.config,
        sup.topics,
        sup.outbox.put,
        latest_frame,
        now_s=sup.clock.wall_s,
        stop=sup.stop_event,
    )
    command = sup.commands.handlers.get("snapshot")
    if command is not None:
        sup.commands.register("snapshot", publisher.wrap_command(command))
    publisher.start()
    return publisher.tap(sink), publisher.join
