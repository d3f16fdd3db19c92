"""Pure decisions on staging-built TensorRT engines: fit to this runtime, which engine, pruning."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.inference.trt_build import BuildTarget
from agent.update.engines.policy import (
    CacheEntry,
    Choice,
    EngineCheck,
    Fit,
    check_engine,
    choose_engine,
    describe,
    engines_to_prune,
)

ORIN = BuildTarget("10.3.0", "Orin (fake)", "8.7")
RECORDED = {"tensorrt": "10.3.0", "gpu": "Orin (fake)", "compute_capability": "8.7", "fp16": True}


def test_same_stack_matches() -> None:
    assert check_engine(RECORDED, ORIN) == EngineCheck(Fit.MATCH, {})
    assert not check_engine(RECORDED, ORIN).rebuild


def test_each_changed_fact_asks_for_a_rebuild_and_is_named() -> None:
    jetpack5 = {**RECORDED, "tensorrt": "8.5.2.2"}
    check = check_engine(jetpack5, ORIN)
    assert check.fit is Fit.STACK_CHANGED
    assert check.rebuild
    assert check.changed == {"tensorrt": ("8.5.2.2", "10.3.0")}
    xavier = {**RECORDED, "gpu": "Xavier (fake)", "compute_capability": "7.2"}
    assert check_engine(xavier, ORIN).changed == {
        "gpu": ("Xavier (fake)", "Orin (fake)"),
        "compute_capability": ("7.2", "8.7"),
    }
    # A patch release is another library version: TensorRT refuses the plan.
    assert check_engine(RECORDED, BuildTarget("10.3.1", "Orin (fake)", "8.7")).rebuild


def test_unknown_facts_and_missing_runtime_do_not_rebuild_blindly() -> None:
    assert check_engine({}, ORIN).fit is Fit.FACTS_UNKNOWN
    assert check_engine({**RECORDED, "gpu": ""}, ORIN).fit is Fit.FACTS_UNKNOWN
    assert check_engine(RECORDED, None).fit is Fit.RUNTIME_UNAVAILABLE
    assert not check_engine({}, ORIN).rebuild


@given(
    trt=st.sampled_from(["8.5.2.2", "10.3.0"]),
    gpu=st.sampled_from(["Orin (fake)", "Xavier (fake)"]),
    cc=st.sampled_from(["8.7", "7.2"]),
)
def test_rebuild_exactly_when_a_fact_differs(trt: str, gpu: str, cc: str) -> None:
    recorded = {"tensorrt": trt, "gpu": gpu, "compute_capability": cc}
    differs = (trt, gpu, cc) != (ORIN.trt_version, ORIN.gpu, ORIN.compute_capability)
    assert check_engine(recorded, ORIN).rebuild is differs


def test_choice_prefers_a_rebuild_in_the_cache() -> None:
    match, changed = check_engine(RECORDED, ORIN), check_engine({**RECORDED, "tensorrt": "8"}, ORIN)
    assert choose_engine(match, rebuilt_in_cache=False) is Choice.INSTALLED
    assert choose_engine(changed, rebuilt_in_cache=False) is Choice.REBUILD
    assert choose_engine(changed, rebuilt_in_cache=True) is Choice.REBUILT
    # After a failed load with matching facts, the forced rebuild is what loads next time.
    assert choose_engine(match, rebuilt_in_cache=True) is Choice.REBUILT
    unavailable = check_engine(RECORDED, None)
    assert choose_engine(unavailable, rebuilt_in_cache=True) is Choice.INSTALLED


def test_describe() -> None:
    assert describe(RECORDED) == "TensorRT 10.3.0 on Orin (fake) (sm87)"
    assert describe({}) == "TensorRT ? on ? (sm?)"


def entry(
    name: str, *, links: int = 1, age_s: float = 3600.0, sha: str = "", trt: str = ""
) -> CacheEntry:
    facts = {**RECORDED, "tensorrt": trt} if trt else {}
    return CacheEntry(name, links, age_s, sha, facts)


def test_prune_keeps_what_is_referenced_young_or_a_live_rebuild() -> None:
    entries = [
        entry("linked.engine", links=2, sha="a" * 64),
        entry("copied.engine", sha="b" * 64),
        entry("young.engine", age_s=10.0),
        entry("rebuilt.engine", sha="c" * 64, trt="10.3.0"),
        entry("stale-rebuild.engine", sha="c" * 64, trt="9.0.0"),
        entry("orphan.engine", sha="d" * 64, trt="10.3.0"),
        entry("no-sidecar.engine"),
    ]

    def prune(runtime: BuildTarget | None) -> list[str]:
        return engines_to_prune(
            entries,
            referenced=frozenset({"copied.engine"}),
            live_onnx=frozenset({"c" * 64}),
            runtime=runtime,
            min_age_s=60.0,
        )

    assert prune(ORIN) == ["no-sidecar.engine", "orphan.engine", "stale-rebuild.engine"]
    # Without a runtime to compare with, every engine of an installed ONNX file stays.
    assert prune(None) == ["no-sidecar.engine", "orphan.engine"]
