"""The exceptions ckptguard raises. The extension builds them through :func:`_from_native`."""

from __future__ import annotations

from ._report import Finding, Report


class CheckpointError(Exception):
    """Base class: a checkpoint was not loaded."""


class UnsafeCheckpointError(CheckpointError):
    """The scan did not clear the input, so nothing was unpickled or rebuilt.

    ``report`` is the scan (a :class:`~ckptguard.Report`), ``findings`` the findings that made
    it unsafe (most severe first), ``unreadable_only`` is true when every one of them says the
    input could not be read completely (truncated, malformed) rather than dangerous.
    """

    def __init__(self, message: str, report: Report | None = None, unreadable_only: bool = False):
        # One positional argument, so that the exception survives being re-raised from a
        # DataLoader worker (which rebuilds it as ``type(msg)``) and pickling.
        super().__init__(message)
        self.report = report
        self.unreadable_only = unreadable_only

    @property
    def findings(self) -> list[Finding]:
        return self.report.failing_findings if self.report is not None else []

    @property
    def path(self) -> str | None:
        if self.report is None:
            return None
        files = [f for f in self.report.files if f.verdict in ("unsafe", "error")] or list(self.report.files)
        return files[0].path if files else None


class UnsupportedCheckpointError(CheckpointError):
    """Safe, but holds something the safe loader does not rebuild (quantized or sparse tensors,
    an unknown class, a directory kind that is only scanned, ...)."""


class MalformedCheckpointError(CheckpointError):
    """Broken or inconsistent input: truncated, out-of-bounds views, missing records."""


class SignatureError(CheckpointError):
    """A signature did not verify (``invalid`` true), or could not be checked or made.

    ``kind`` is a short stable identifier: ``bad_signature``, ``wrong_key``, ``mismatch``,
    ``signature_io``, ``public_key``, ``private_key``, ``sign``, ...
    """

    def __init__(self, message: str, kind: str = "signature", invalid: bool = True):
        super().__init__(message)
        self.kind = kind
        self.invalid = invalid


def _from_native(kind: str, message: str, report_json: str | None, flag: bool) -> BaseException:
    """The exception for a failure reported by the extension (see ``crates/python``)."""
    if kind == "unsafe":
        report = Report.from_json(report_json) if report_json else None
        return UnsafeCheckpointError(message, report, unreadable_only=flag)
    if kind == "unsupported":
        return UnsupportedCheckpointError(message)
    if kind == "malformed":
        return MalformedCheckpointError(message)
    if kind.startswith("signature:"):
        return SignatureError(message, kind.split(":", 1)[1], invalid=flag)
    if kind == "io":
        return OSError(message)
    return RuntimeError(f"ckptguard: {message}")
