"""The one exception tree of the agent.

Every error the agent raises on purpose derives from ``AgentError`` and carries
its data as attributes, so callers (CLI, health, MQTT op states) never parse
messages. Third-party exceptions are translated into these once, at the module
that wraps the library.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Reason(str, enum.Enum):
    """Machine-readable reason codes shared by update op states, CLI and logs (CONTRACT §5)."""

    UNSIGNED = "unsigned"
    HASH_MISMATCH = "hash_mismatch"
    LENGTH_MISMATCH = "length_mismatch"
    ROLLBACK = "rollback"
    VERSION_CONFLICT = "version_conflict"
    EXPIRED = "expired"
    NOT_TARGETED = "not_targeted"
    INCOMPATIBLE = "incompatible"
    TOO_LARGE = "too_large"
    INSUFFICIENT_SPACE = "insufficient_space"
    BAD_NAME = "bad_name"
    TRUST_STATE_CORRUPT = "trust_state_corrupt"
    HEALTH_FAILED = "health_failed"
    CLOCK_INVALID = "clock_invalid"
    DOWNGRADE_NOT_AUTHORISED = "downgrade_not_authorised"
    SLOW_TRANSFER = "slow_transfer"
    INTERRUPTED = "interrupted"
    INCONSISTENT = "inconsistent"
    # The manifest's HTTPS source refused for good (TLS, HTTP error, host not allowed).
    DOWNLOAD_FAILED = "download_failed"
    # The model's outputs do not fit the slot's decoder (found at load or on live frames).
    DECODER_MISMATCH = "decoder_mismatch"
    # A signed golden case gave other results on the staged model (rejected before activation).
    GOLDEN_MISMATCH = "golden_mismatch"
    # The candidate, run in shadow on live frames, disagreed with the serving model.
    SHADOW_DISAGREEMENT = "shadow_disagreement"
    # Operator side only: a targeted device sent no state for this publication in time.
    NO_ANSWER = "no_answer"
    # Not update reasons, but rejections of operator input on the command channel.
    MALFORMED = "malformed"
    UNKNOWN_OPERATION = "unknown_operation"
    INVALID_CONFIG = "invalid_config"  # a desired config that does not validate
    NO_FRAME = "no_frame"  # a snapshot of a camera that has not delivered a frame yet
    BUSY = "busy"  # command queue full or the sender over its rate: retry after retry_after_s
    # The daemon side doors (issues 17, 18): one daemon per state dir, safe socket paths,
    # remote config allow-list, one installer at a time.
    ALREADY_RUNNING = "already_running"  # another daemon holds the state dir or socket
    UNSAFE_PATH = "unsafe_path"  # a socket path that would replace a file that is not ours
    NOT_ALLOWED = "not_allowed"  # a remote config key off the allow-list
    INSTALL_BUSY = "install_busy"  # another install/rollback holds the install lock
    # A slot manifest of a release set that does not match its sibling slots (issue 18.9).
    RELEASE_MISMATCH = "release_mismatch"

    def __str__(self) -> str:
        return self.value


class AgentError(Exception):
    """Root of every error the agent raises on purpose.

    ``exit_code`` is what the CLI exits with when this error reaches it.
    """

    exit_code: int = 1

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = data

    def __str__(self) -> str:
        return self.message


# --- configuration -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found in a config: where it came from, where in the tree, what was there."""

    source: str  # file path, "env:NAME", "flag:--set" or "profile:NAME"
    key_path: str  # e.g. "cameras[0].fps"
    value: str  # already redacted when the key is a secret
    message: str

    def render(self) -> str:
        got = f" (got {self.value})" if self.value else ""  # a syntax error has no value
        return f"{self.source}: {self.key_path}: {self.message}{got}"


class ConfigError(AgentError):
    """The configuration cannot be used; ``issues`` lists every problem found."""

    def __init__(self, message: str, issues: list[ConfigIssue] | None = None) -> None:
        super().__init__(message)
        self.issues: list[ConfigIssue] = issues or []


class ProfileNotFoundError(ConfigError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown board profile {name!r}; known profiles: {', '.join(known)}")
        self.name = name
        self.known = known


class SecretError(ConfigError):
    """A ``file:`` secret reference could not be read (the value itself is never shown)."""

    def __init__(self, key_path: str, path: str, detail: str) -> None:
        super().__init__(f"secret {key_path} could not be read from {path}: {detail}")
        self.key_path = key_path
        self.path = path


# --- capture -------------------------------------------------------------------


class CaptureError(AgentError):
    def __init__(self, message: str, camera: str, source: str, **data: Any) -> None:
        super().__init__(message, **data)
        self.camera = camera
        self.source = source


class SourceOpenError(CaptureError):
    """The source could not be opened (missing file, no device, refused stream)."""


class SourceSpecError(CaptureError):
    """The source string itself is malformed or names an unknown scheme."""


# --- inference -----------------------------------------------------------------


class InferenceError(AgentError):
    def __init__(self, message: str, model: str = "", **data: Any) -> None:
        super().__init__(message, **data)
        self.model = model


class BackendUnavailableError(InferenceError):
    """The runtime for a backend is not installed, or the backend name is unknown."""

    def __init__(self, message: str, backend: str, **data: Any) -> None:
        super().__init__(message, **data)
        self.backend = backend


class ModelLoadError(InferenceError):
    """The runtime refused the model file (corrupt, wrong format, wrong accelerator)."""


class EngineRebuildError(ModelLoadError):
    """A TensorRT engine could not be rebuilt from the installed ONNX file; ``reason`` says why."""

    def __init__(self, reason: Reason, message: str, model: str = "", **data: Any) -> None:
        super().__init__(message, model=model, reason=reason.value, **data)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class DecoderError(InferenceError):
    """Model outputs do not have the shape the configured decoder expects."""


class DecoderMismatchError(ModelLoadError):
    """The model does not fit the configured decoder; found at load, before any frame.

    ``outputs`` lists the tensors seen (``name dtype[shape]``); ``fits`` the decoder
    families that would take them (empty when none does). ``reason`` is always
    ``decoder_mismatch``, so an update trial can report it as is.
    """

    reason = Reason.DECODER_MISMATCH

    def __init__(
        self, message: str, *, decoder: str, outputs: list[str], fits: list[str], model: str = ""
    ) -> None:
        super().__init__(
            message,
            model=model,
            reason=Reason.DECODER_MISMATCH.value,
            decoder=decoder,
            outputs=outputs,
            fits=fits,
        )
        self.decoder = decoder
        self.outputs = outputs
        self.fits = fits


class InferenceStuckError(InferenceError):
    """An invoke did not return within the watchdog limit."""


# --- transport -----------------------------------------------------------------


class TransportError(AgentError):
    pass


class BrokerUnavailableError(TransportError):
    def __init__(self, message: str, url: str, rc: int | str | None = None) -> None:
        super().__init__(message, url=url, rc=rc)
        self.url = url
        self.rc = rc


class StorageError(AgentError):
    """State directory, outbox or model store cannot be written."""

    def __init__(self, message: str, path: str, **data: Any) -> None:
        super().__init__(message, **data)
        self.path = path


# --- updates -------------------------------------------------------------------


class UpdateError(AgentError):
    """A model update was refused or failed; ``reason`` is the contract's reason code."""

    def __init__(self, reason: Reason, message: str, **data: Any) -> None:
        super().__init__(message, **data)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class VerificationError(UpdateError):
    """Signature, version, freshness, targeting or compatibility checks failed."""


class DownloadError(UpdateError):
    """A transfer failed, stalled, or delivered bytes that do not match the manifest."""


class SourceError(DownloadError):
    """A download source failed; ``transient``: asking again later may succeed."""

    def __init__(self, reason: Reason, message: str, *, transient: bool, **data: Any) -> None:
        super().__init__(reason, message, transient=transient, **data)
        self.transient = transient


class ActivationError(UpdateError):
    """Staging or switching the active model failed; the previous model stays active."""


class HealthCheckError(UpdateError):
    """The new model did not meet its health criteria during the trial."""


class CommandError(AgentError):
    """An operator command was malformed or cannot be executed."""

    def __init__(self, reason: Reason, message: str, **data: Any) -> None:
        super().__init__(message, **data)
        self.reason = reason


class DaemonNotRunningError(AgentError):
    """The local control socket is not there: the daemon is not running."""

    exit_code = 3


class InstanceError(AgentError):
    """This daemon must not start: another holds the state dir or socket, or a path is unsafe."""

    def __init__(self, reason: Reason, message: str, **data: Any) -> None:
        super().__init__(message, reason=reason.value, **data)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class InstallBusyError(UpdateError):
    """Another install, rollback or recovery holds the install lock (``holder`` says who)."""

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(Reason.INSTALL_BUSY, message, **data)
