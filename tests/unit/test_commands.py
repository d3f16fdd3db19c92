"""The command dispatcher: state machine, idempotency, and arbitrary input never crashing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import CommandError, Reason
from agent.uplink.commands import CommandDispatcher, require
from agent.uplink.topics import Topics

TOPICS = Topics("ea/v1", "cam-001")


def make(tmp_path: Path) -> tuple[CommandDispatcher, list[tuple[str, dict[str, Any]]], list[int]]:
    emitted: list[tuple[str, dict[str, Any]]] = []
    runs: list[int] = []
    disp = CommandDispatcher(TOPICS, lambda t, d: emitted.append((t, d)), tmp_path)

    def ping(req: dict[str, Any]) -> dict[str, Any]:
        runs.append(1)
        return {"pong": True, "n": require(req, "n", int, 0)}

    disp.register("ping", ping)
    return disp, emitted, runs


def test_state_machine_and_preserved_fields(tmp_path: Path) -> None:
    disp, emitted, _ = make(tmp_path)
    final = disp.process(TOPICS.cmd("ping", "a1"), json.dumps({"n": 3, "trace": "x"}).encode())
    assert final is not None
    assert [d["status"] for _, d in emitted] == ["executing", "successful"]
    assert [d["status_version"] for _, d in emitted] == [1, 2]
    assert {t for t, _ in emitted} == {TOPICS.op("ping", "a1")}
    assert final["result"] == {"pong": True, "n": 3}
    # The request is named by size and digest, never echoed (issue 18: amplification).
    assert "trace" not in final
    assert final["request"]["bytes"] == len(json.dumps({"n": 3, "trace": "x"}))


def test_bad_field_type_fails_malformed(tmp_path: Path) -> None:
    disp, _, _ = make(tmp_path)
    final = disp.process(TOPICS.cmd("ping", "a2"), b'{"n": "three"}')
    assert final is not None
    assert (final["status"], final["reason"]) == ("failed", "malformed")


def test_redelivery_republishes_without_running_again_even_after_restart(tmp_path: Path) -> None:
    disp, _, runs = make(tmp_path)
    first = disp.process(TOPICS.cmd("ping", "a3"), b"{}")
    disp2, emitted2, runs2 = make(tmp_path)  # a new process reading the persisted ids
    again = disp2.process(TOPICS.cmd("ping", "a3"), b"{}")
    assert again == first
    assert emitted2 == [(TOPICS.op("ping", "a3"), first)]
    assert len(runs) == 1
    assert runs2 == []


def test_command_interrupted_by_a_restart_is_failed(tmp_path: Path) -> None:
    disp, _, _ = make(tmp_path)
    checked: list[bool] = []

    def hang(_req: dict[str, Any]) -> dict[str, Any]:
        disp2, _, _ = make(tmp_path)  # the "next boot" sees only `executing`
        final = disp2.process(TOPICS.cmd("slow", "a4"), b"{}")
        assert final is not None
        assert (final["status"], final["reason"]) == ("failed", "interrupted")
        checked.append(True)
        raise CommandError(Reason.INTERRUPTED, "simulated")

    disp.register("slow", hang)
    disp.process(TOPICS.cmd("slow", "a4"), b"{}")
    assert checked == [True]


def test_topics_that_are_not_commands_are_ignored(tmp_path: Path) -> None:
    disp, emitted, _ = make(tmp_path)
    for topic in [
        "ea/v1/d/other/cmd/ping/1",
        f"{TOPICS.base}/cmd/ping",
        f"{TOPICS.base}/cmd/ping/1/extra",
        f"{TOPICS.base}/cmd//1",
    ]:
        assert disp.process(topic, b"{}") is None
    assert emitted == []


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    op=st.sampled_from(["ping", "diag", "nope", "x" * 5]),
    cmd_id=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20),
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
            max_leaves=10,
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_arbitrary_input_never_raises_and_always_terminates(
    tmp_path: Path, op: str, cmd_id: str, payload: bytes
) -> None:
    disp, emitted, _ = make(tmp_path)
    topic = f"{TOPICS.base}/cmd/{op}/{cmd_id}"
    final = disp.process(topic, payload)
    if TOPICS.parse_cmd(topic) is None or any(c in cmd_id for c in "/#+\x00"):
        assert final is None
        return
    assert final is not None
    assert final["status"] in ("successful", "failed")
    if final["status"] == "failed":
        assert final["reason"] in ("malformed", "unknown_operation", "busy")
    assert emitted[-1][1] == final
