"""Optional parts of the daemon, off by default: imported only when the config turns them on.

Home Assistant discovery (``[mqtt.homeassistant]``, docs/mqtt.md) and the technician's
live view (``[web]``, docs/liveview.md); a device that uses neither never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

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


def start_live_view(
    sup: Supervisor, sink: EventSink
) -> tuple[EventSink, Callable[[], None] | None]:
    """The sink the pipeline should use (the view watches events) and the view's stop."""
    if not sup.config.web.enabled:
        return sink, None
    from agent.daemon.liveview import start_live_view as start  # noqa: PLC0415 - when enabled

    view, sink = start(sup, sink)  # reads sup.pipeline when asked
    return sink, view.stop
