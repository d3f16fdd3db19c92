"""Bad input at volume: commands, deployment manifests, chunks and config files.

Each target gets generated input through the same entry point the agent uses: the command
dispatcher with the daemon's real handlers, the installer's manifest verification against a
real trust root, the transfer session's frame handling on real part files, and the config
loader on real TOML files. Invariants: nothing but a reasoned rejection ever comes out, and
the active model and its files are exactly as before. CI runs ``CI_EXAMPLES`` per target
(derandomized, so a failure reproduces); ``-m slow`` runs ``SLOW_EXAMPLES``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import load_config
from agent.config.root import AgentConfig
from agent.daemon.supervisor import Supervisor
from agent.errors import AgentError, ConfigError, Reason, UpdateError
from agent.fleet.keys import signers_for
from agent.update.store.bundle import MANIFEST_FILE
from agent.update.store.truststore import load_root_file
from agent.update.transfer.parts import WriteResult
from agent.update.transfer.planner import PlannerLimits
from agent.update.transfer.session import IndexRef, TransferSession
from agent.update.transfer.table import table_from_bytes
from agent.update.transfer.wire import FrameError, FrameKind, decode_frame, encode_frame
from agent.update.trust.envelope import canonical_bytes, sign_envelope
from agent.update.trust.manifest import MANIFEST_PAYLOAD_TYPE
from agent.uplink.commands import CommandDispatcher
from tests.fault.conftest import figure
from tests.support.update_fleet import Fleet, install_bundle, make_installer, snapshot

CI_EXAMPLES = 300
SLOW_EXAMPLES = 10_000
REASONS = {r.value for r in Reason}
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_doc = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def fuzz_settings(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="module")
def fast_dir() -> Iterator[Path]:
    """Scratch space in RAM where there is some: 10,000 fsyncs on a disk take minutes."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base, prefix="fault-fuzz-") as name:
        yield Path(name)


def tree_hash(root: Path) -> str:
    return hashlib.sha256(json.dumps(snapshot(root), sort_keys=True).encode()).hexdigest()


# --- MQTT commands ---------------------------------------------------------------------------

OPS = ["ping", "health_check", "config", "restart", "model_update", "diag_", "", "a/b", "#"]


def command_target(fast_dir: Path, examples: int) -> dict[str, int]:
    state = fast_dir / f"cmd-{examples}"
    sup = Supervisor(load_config(None, environ={}, assignments=[f"storage.state_dir={state}"]))
    emitted: list[dict[str, Any]] = []
    disp = CommandDispatcher(sup.topics, lambda _t, doc: emitted.append(doc), state)
    from agent.daemon.ops import build_command_handlers

    for op, handler in build_command_handlers(sup).items():
        if op != "diag":  # diag runs the full field checks (seconds): covered in tests/unit
            disp.register(op, handler)
    seen: dict[str, int] = {}
    payloads = st.binary(max_size=64) | json_doc.map(lambda d: json.dumps(d).encode())
    configs = st.fixed_dictionaries({"config": json_doc}).map(lambda d: json.dumps(d).encode())

    @fuzz_settings(examples)
    @given(
        op=st.sampled_from(OPS) | st.text(max_size=12),
        cmd_id=st.text(max_size=12),
        payload=payloads | configs,
    )
    def run(op: str, cmd_id: str, payload: bytes) -> None:
        topic = f"{sup.topics.base}/cmd/{op}/{cmd_id}"
        final = disp.process(topic, payload)
        valid_topic = sup.topics.parse_cmd(topic) is not None and all(
            0 < len(p) <= 128 and not any(c in p for c in "/#+\x00") for p in (op, cmd_id)
        )
        if final is None:
            assert not valid_topic, (topic, "crashed")
            return
        assert final["status"] in ("successful", "failed")
        if final["status"] == "failed":
            assert final["reason"], final
        seen[final.get("reason", "ok")] = seen.get(final.get("reason", "ok"), 0) + 1

    with structlog.testing.capture_logs():  # 10,000 rejections would flood the output
        run()
    return seen


def test_commands_ci(fast_dir: Path) -> None:
    seen = command_target(fast_dir, CI_EXAMPLES)
    figure(f"fuzz_commands[{CI_EXAMPLES}]", outcomes=seen)


@pytest.mark.slow
def test_commands_10k(fast_dir: Path) -> None:
    seen = command_target(fast_dir, SLOW_EXAMPLES)
    figure(f"fuzz_commands[{SLOW_EXAMPLES}]", outcomes=seen)


# --- deployment manifests --------------------------------------------------------------------


def manifest_target(fast_dir: Path, model: Path, examples: int) -> dict[str, int]:
    base = fast_dir / f"man-{examples}"
    fleet = Fleet(base / "fleet", model)
    installer = make_installer(base / "state", fleet)
    assert install_bundle(installer, fleet.bundle()).outcome == "committed"
    good = (fleet.bundle(manifest_version=2) / MANIFEST_FILE).read_bytes()
    payload = fleet.payload(fleet.bundle(manifest_version=3))
    root = load_root_file(fleet.keys / "root.json")
    signers = signers_for(fleet.keys, root, "release")
    active = installer.store.current_model("detector")
    models = tree_hash(base / "state" / "models")
    reasons: dict[str, int] = {}

    def resigned(changes: dict[str, Any]) -> bytes:
        doc = {**payload, **changes}
        return sign_envelope(MANIFEST_PAYLOAD_TYPE, canonical_bytes(doc), signers).to_bytes()

    flips = st.tuples(st.integers(0, len(good) - 1), st.integers(1, 255)).map(
        lambda t: good[: t[0]] + bytes([good[t[0]] ^ t[1]]) + good[t[0] + 1 :]
    )
    edits = st.dictionaries(st.sampled_from(sorted(payload)), json_doc, min_size=1, max_size=3)

    @fuzz_settings(examples)
    @given(data=st.binary(max_size=512) | flips | edits.map(resigned))
    def run(data: bytes) -> None:
        try:
            installer.verify(data)
        except UpdateError as exc:
            assert exc.reason.value in REASONS  # noqa: PT017 - acceptance is valid too
            reasons[exc.reason.value] = reasons.get(exc.reason.value, 0) + 1
        else:
            reasons["accepted"] = reasons.get("accepted", 0) + 1

    with structlog.testing.capture_logs():  # 10,000 rejections would flood the output
        run()
    assert installer.store.current_model("detector") == active
    assert tree_hash(base / "state" / "models") == models
    return reasons


def test_manifests_ci(fast_dir: Path, short_range_model: Path) -> None:
    reasons = manifest_target(fast_dir, short_range_model, CI_EXAMPLES)
    figure(f"fuzz_manifests[{CI_EXAMPLES}]", reasons=reasons)
    assert reasons.get("unsigned", 0) > 0


@pytest.mark.slow
def test_manifests_10k(fast_dir: Path, short_range_model: Path) -> None:
    figure(
        f"fuzz_manifests[{SLOW_EXAMPLES}]",
        reasons=manifest_target(fast_dir, short_range_model, SLOW_EXAMPLES),
    )


# --- chunks ------------------------------------------------------------------------------------

CHUNK = 512


def chunk_target(fast_dir: Path, model: Path, examples: int) -> dict[str, int]:
    data = model.read_bytes()[: 64 * CHUNK]
    table = table_from_bytes(CHUNK, [("m.bin", len(data), hashlib.sha256(data).hexdigest())], data)
    index = b"index:" + hashlib.sha256(data).digest()  # opaque to the session; parsed by the seam
    directory = fast_dir / f"chunks-{examples}"
    directory.mkdir()
    (directory / "index").write_bytes(index)
    session = TransferSession(
        directory=directory,
        index_ref=IndexRef(len(index), hashlib.sha256(index).hexdigest(), CHUNK),
        parse_index=lambda _b: table,
        limits=PlannerLimits(window=8, stall_s=5.0),
        now_s=0.0,
    )
    assert session.parts is not None
    outcomes: dict[str, int] = {}
    good = [
        encode_frame(FrameKind.CHUNK, 0, i, data[i * CHUNK : (i + 1) * CHUNK]) for i in range(64)
    ]
    forged = st.builds(
        encode_frame,
        st.sampled_from(list(FrameKind)),
        st.integers(0, 65535),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=CHUNK + 8),
    )
    flipped = st.tuples(st.sampled_from(good), st.integers(0, CHUNK + 60), st.integers(1, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[0][t[1] % len(t[0])] ^ t[2]]) + t[0][t[1] + 1 :]
    )

    @fuzz_settings(examples)
    @given(raw=st.binary(max_size=CHUNK + 64) | forged | flipped | st.sampled_from(good))
    def run(raw: bytes) -> None:
        try:
            frame = decode_frame(raw)
        except FrameError:
            outcomes["undecodable"] = outcomes.get("undecodable", 0) + 1
            return
        if not frame.header_ok:  # what the update service drops before the session
            outcomes["bad_hash"] = outcomes.get("bad_hash", 0) + 1
            return
        result = session.on_frame(frame, 1.0)
        key = result.value if isinstance(result, WriteResult) else "ignored"
        outcomes[key] = outcomes.get(key, 0) + 1

    with structlog.testing.capture_logs():  # 10,000 rejections would flood the output
        run()
    assert session.parts is not None
    session.parts.flush()
    written = Path(session.parts.path(0)).read_bytes()
    for i in range(64):  # every chunk marked done holds exactly the signed bytes
        if session.parts.table.to_global(0, i) in session.parts.bitmap:
            assert written[i * CHUNK : (i + 1) * CHUNK] == data[i * CHUNK : (i + 1) * CHUNK]
    session.close()
    return outcomes


def test_chunks_ci(fast_dir: Path, short_range_model: Path) -> None:
    outcomes = chunk_target(fast_dir, short_range_model, CI_EXAMPLES)
    figure(f"fuzz_chunks[{CI_EXAMPLES}]", outcomes=outcomes)


@pytest.mark.slow
def test_chunks_10k(fast_dir: Path, short_range_model: Path) -> None:
    outcomes = chunk_target(fast_dir, short_range_model, SLOW_EXAMPLES)
    figure(f"fuzz_chunks[{SLOW_EXAMPLES}]", outcomes=outcomes)
    assert outcomes.get("written", 0) > 0


# --- config files --------------------------------------------------------------------------------

SECTIONS = {
    name: sorted(f.annotation.model_fields)
    for name, f in AgentConfig.model_fields.items()
    if hasattr(f.annotation, "model_fields")
}  # type: ignore[union-attr]
toml_scalar = (
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.text(max_size=16)
)
toml_value = toml_scalar | st.lists(toml_scalar, max_size=3)


def toml_text(doc: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in doc.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def config_target(fast_dir: Path, examples: int) -> dict[str, int]:
    path = fast_dir / f"cfg-{examples}.toml"
    outcomes: dict[str, int] = {}
    sections = st.sampled_from(sorted(SECTIONS)).flatmap(
        lambda s: st.tuples(
            st.just(s),
            st.dictionaries(st.sampled_from([*SECTIONS[s], "bogus"]), toml_value, max_size=4),
        )
    )
    structured = st.lists(sections, max_size=4).map(lambda items: toml_text(dict(items)))

    @fuzz_settings(examples)
    @given(text=structured | st.text(max_size=200))
    def run(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path, environ={})
        except ConfigError as exc:
            assert str(exc)  # noqa: PT017 - a valid config is an outcome too
            assert all(i.message for i in exc.issues)  # noqa: PT017 - as above
            outcomes["rejected"] = outcomes.get("rejected", 0) + 1
        except AgentError as exc:  # e.g. an unknown board profile: still a reasoned error
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        else:
            outcomes["valid"] = outcomes.get("valid", 0) + 1

    with structlog.testing.capture_logs():  # 10,000 rejections would flood the output
        run()
    return outcomes


def test_configs_ci(fast_dir: Path) -> None:
    outcomes = config_target(fast_dir, CI_EXAMPLES)
    figure(f"fuzz_configs[{CI_EXAMPLES}]", outcomes=outcomes)
    assert outcomes.get("rejected", 0) > 0


@pytest.mark.slow
def test_configs_10k(fast_dir: Path) -> None:
    figure(f"fuzz_configs[{SLOW_EXAMPLES}]", outcomes=config_target(fast_dir, SLOW_EXAMPLES))
