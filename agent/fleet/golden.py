"""``bundle create --golden DIR``: expected results computed with the model being bundled.

Each image of DIR becomes a signed bundle file and a golden case whose expected
detections (or top label, for a ``classify`` slot) are what the model gives on it with
the slot's settings (``--golden-config``'s ``[[models]]`` entry, else the defaults), so
the device proves it runs the model as the operator saw it. The operator reviews them:
they are printed and written into the manifest's ``trial`` section.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import load_config
from agent.config.model import ModelConfig
from agent.config.root import AgentConfig
from agent.errors import AgentError, CommandError, Reason
from agent.update.trust.manifest import SAFE_NAME_RE
from agent.update.trust.trialspec import MAX_EXPECTED, MAX_GOLDEN_BYTES, MAX_GOLDEN_CASES

if TYPE_CHECKING:
    from agent.fleet.bundle import BundleSpec

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})


def golden_images(directory: Path) -> list[Path]:
    """The images of ``directory``, sorted; CommandError when there are none or too many."""
    if not directory.is_dir():
        raise CommandError(Reason.MALFORMED, f"--golden {directory}: not a directory")
    images = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not 1 <= len(images) <= MAX_GOLDEN_CASES:
        raise CommandError(
            Reason.MALFORMED,
            f"--golden {directory}: {len(images)} images; 1 to {MAX_GOLDEN_CASES} are allowed",
        )
    for image in images:
        if not SAFE_NAME_RE.match(image.name):
            raise CommandError(Reason.BAD_NAME, f"golden image name {image.name!r} is not safe")
        if image.stat().st_size > MAX_GOLDEN_BYTES:
            raise CommandError(
                Reason.TOO_LARGE, f"golden image {image.name} is over {MAX_GOLDEN_BYTES} bytes"
            )
    return images


def golden_config(config: AgentConfig | None, slot: str, model: Path) -> AgentConfig:
    """The config whose ``slot`` settings compute the expected results (defaults if none)."""
    if config is None:
        return AgentConfig(models=[ModelConfig(slot=slot, path=str(model))])
    if not any(m.slot == slot for m in config.models):
        raise CommandError(Reason.MALFORMED, f"--golden-config has no [[models]] slot {slot!r}")
    return config


def expected_cases(
    config: AgentConfig,
    slot: str,
    model: Path,
    images: list[Path],
    *,
    iou_min: float = 0.5,
    score_tol: float = 0.1,
) -> list[dict[str, Any]]:
    """One manifest golden case per image, with what ``model`` gives on it."""
    # Imported here: the model runtimes stay off the import path of the other fleet commands.
    from agent.update.store.slotmodel import SlotDetectors, read_image  # noqa: PLC0415

    try:
        detector = SlotDetectors(config).open(slot, model)
    except AgentError as exc:
        raise CommandError(Reason.MALFORMED, f"golden cases: {model.name}: {exc}") from exc
    cases: list[dict[str, Any]] = []
    try:
        for image in images:
            try:
                found = detector.detect(read_image(image))
            except AgentError as exc:
                raise CommandError(Reason.MALFORMED, f"golden image {image.name}: {exc}") from exc
            name = re.sub(r"[^A-Za-z0-9._-]", "_", image.stem)[:64] or "case"
            case: dict[str, Any] = {"name": name, "file": image.name}
            case["iou_min_permille"] = permille(iou_min, "--golden-iou")
            case["score_tol_permille"] = permille(score_tol, "--golden-score-tol")
            if detector.top_label:
                top = max(found, key=lambda d: d.score, default=None)
                if top is None:
                    raise CommandError(Reason.MALFORMED, f"{image.name}: the model gives no label")
                case["expect"] = {"top_label": top.label, "score_permille": permille(top.score)}
            else:
                if len(found) > MAX_EXPECTED:
                    raise CommandError(
                        Reason.TOO_LARGE,
                        f"{image.name}: {len(found)} detections, at most {MAX_EXPECTED} per case",
                    )
                case["expect"] = {
                    "detections": [
                        {
                            "label": d.label,
                            "score_permille": permille(d.score),
                            "box": [round(v) for v in d.box],
                        }
                        for d in found
                    ]
                }
            cases.append(case)
    finally:
        detector.close()
    return cases


def permille(share: float, flag: str = "score") -> int:
    """A 0..1 share as the manifest's integer per-mille (signed JSON has no floats)."""
    if not 0.0 <= share <= 1.0:
        raise CommandError(Reason.MALFORMED, f"{flag} must be within 0..1 (got {share})")
    return round(share * 1000)


def shadow_block(
    min_agreement: float | None, max_rate_change: float | None, min_frames: int | None
) -> dict[str, Any] | None:
    """The manifest's ``trial.shadow`` object from the CLI flags (None: no shadow trial)."""
    if min_agreement is None:
        if max_rate_change is not None or min_frames is not None:
            raise CommandError(Reason.MALFORMED, "shadow flags need --shadow-min-agreement")
        return None
    block: dict[str, Any] = {
        "min_agreement_permille": permille(min_agreement, "--shadow-min-agreement")
    }
    if max_rate_change is not None:
        block["max_rate_change_permille"] = permille(max_rate_change, "--shadow-max-rate-change")
    if min_frames is not None:
        if min_frames < 1:
            raise CommandError(Reason.MALFORMED, "--shadow-min-frames must be positive")
        block["min_frames"] = min_frames
    return block


def render(cases: list[dict[str, Any]]) -> list[str]:
    """Lines for the operator to review."""
    lines: list[str] = []
    for case in cases:
        expect = case["expect"]
        if "top_label" in expect:
            lines.append(
                f"golden {case['name']} ({case['file']}): top {expect['top_label']} "
                f"{expect['score_permille'] / 1000:.3f}"
            )
            continue
        dets = expect["detections"]
        lines.append(f"golden {case['name']} ({case['file']}): {len(dets)} detections")
        lines += [f"  {d['label']} {d['score_permille'] / 1000:.3f} box {d['box']}" for d in dets]
    return lines


def add_trial_args(create: argparse.ArgumentParser) -> None:
    create.add_argument(
        "--golden",
        type=Path,
        default=None,
        metavar="DIR",
        help="images that become signed golden cases; expected results computed with --model",
    )
    create.add_argument(
        "--golden-config",
        type=Path,
        default=None,
        metavar="FILE",
        help="agent.toml whose [[models]] entry for --slot gives the decoder settings",
    )
    create.add_argument("--golden-iou", type=float, default=0.5, metavar="IOU")
    create.add_argument("--golden-score-tol", type=float, default=0.1, metavar="TOL")
    create.add_argument(
        "--shadow-min-agreement",
        type=float,
        default=None,
        metavar="F",
        help="run the candidate in shadow on live frames; fail the trial below this agreement",
    )
    create.add_argument("--shadow-max-rate-change", type=float, default=None, metavar="F")
    create.add_argument("--shadow-min-frames", type=int, default=None, metavar="N")


def with_trial(spec: BundleSpec, args: argparse.Namespace) -> BundleSpec:
    """``spec`` with the golden images as files and the ``trial`` section from the flags."""
    trial: dict[str, Any] = {}
    extra = list(spec.extra_files)
    if args.golden is not None:
        images = golden_images(args.golden)
        loaded = load_config(args.golden_config).config if args.golden_config else None
        config = golden_config(loaded, spec.slot, spec.model)
        cases = expected_cases(
            config,
            spec.slot,
            spec.model,
            images,
            iou_min=args.golden_iou,
            score_tol=args.golden_score_tol,
        )
        for line in render(cases):
            print(line)
        trial["golden"] = cases
        extra += images
    elif args.golden_config is not None:
        raise CommandError(Reason.MALFORMED, "--golden-config needs --golden")
    shadow = shadow_block(
        args.shadow_min_agreement, args.shadow_max_rate_change, args.shadow_min_frames
    )
    if shadow is not None:
        trial["shadow"] = shadow
    return dataclasses.replace(spec, extra_files=extra, trial=trial) if trial else spec
