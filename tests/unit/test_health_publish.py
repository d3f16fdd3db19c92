"""Issue 17.9: the retained health message changes only when a status does."""

from __future__ import annotations

from agent.uplink.health import health_document, same_health


def doc(storage: str, detail: str, ts: float) -> dict[str, object]:
    return health_document(
        {"storage": {"status": storage, "detail": detail}, "uplink": {"status": "ok"}}, ts
    )


def test_a_changing_detail_text_is_not_a_change():
    first = doc("ok", "812 MB free", 1.0)
    assert same_health(first, doc("ok", "811 MB free", 11.0))


def test_a_changing_status_is():
    first = doc("ok", "812 MB free", 1.0)
    assert not same_health(first, doc("degraded", "90 MB free < 100 MB", 11.0))
    assert not same_health(None, first)
    fewer = health_document({"storage": {"status": "ok", "detail": "x"}}, 2.0)
    assert not same_health(first, fewer)  # a component appeared or went away
