"""The error vocabulary every layer raises and the CLI turns into one line.

Exit codes are harness.outcome's table: PASS 0, FAIL 1, ERROR 2 (the
harness's infrastructure failed), 3 an internal error of xenrig, 4 a usage,
configuration, patch or compile error.  A XenrigError is never a verdict on
the subject; a failing check is not an exception but a result.
"""


class XenrigError(Exception):
    """Base: a problem the user can act on, described in one paragraph."""

    exit_code = 2
    kind = "infrastructure"

    def __init__(self, message: str, *, hint: str = "", log: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log = log

    def paragraph(self) -> str:
        parts = [_sentence(self.message)]
        if self.log:
            parts.append(f"See {self.log}.")
        if self.hint:
            parts.append(_sentence(self.hint))
        return " ".join(parts)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if text.endswith((".", "?", "!")) else text + "."


class ConfigError(XenrigError):
    """A configuration file, key or value is wrong: deterministic, never retried."""

    exit_code = 4
    kind = "config"


class UsageError(XenrigError):
    """A command was called with arguments or files that cannot work."""

    exit_code = 4
    kind = "usage"


class InternalError(XenrigError):
    """An exception xenrig did not expect: a bug of the harness."""

    exit_code = 3
    kind = "internal"


class HostSetupError(XenrigError):
    """The host lacks a package or a capability (xenrig doctor tells which)."""

    kind = "host"


class InfraError(XenrigError):
    """Image build, boot, SSH, or a tool failed: not the subject under test."""


class DiskFull(InfraError):
    """No space where the run writes: the machine's trouble, never the
    subject's, and no bug of the harness."""
    kind = "disk-full"


class TransportError(InfraError):
    """The SSH stream to dom0 broke (a MAC error, a reset, EOF) while a
    command ran: the command may or may not have taken effect in dom0."""

    kind = "transport"


class CorruptionError(InfraError):
    """Bytes arrived that differ from what their source computed a checksum
    over (or a canary changed): the stack damaged data, so nothing read from
    it in this run is trustworthy evidence about the subject."""

    kind = "corruption"


class StageTimeout(InfraError):
    """A wait ran out of time; the message names the stage and the log."""


class HangDetected(XenrigError):
    """Block I/O in the guest stopped making progress: a verdict about the
    subject (FAIL), carrying what the watchdog saw."""

    exit_code = 1
    kind = "hang"

    def __init__(self, message: str, evidence: str = "", rule: str = "blkif.hang"):
        super().__init__(message)
        self.evidence = evidence
        self.rule = rule    # hang.HangReport.rule: which promise the stuck device broke
