"""The scan report as Python objects: the document ``ckptguard scan --format json`` prints
(schema version 1, ``docs/report-schema.md``), field for field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

#: Severities, least to most severe.
SEVERITIES = ("info", "low", "medium", "high", "critical")


@dataclass(frozen=True)
class Finding:
    """One finding: a stable code (``CG101``), its name, severity and where it was seen."""

    code: str
    name: str
    severity: str
    message: str
    entry: str | None = None
    offset: int | None = None
    global_: str | None = None
    call: str | None = None
    why: str | None = None
    help: str | None = None
    blocking: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        return cls(
            code=d["code"],
            name=d["name"],
            severity=d["severity"],
            message=d["message"],
            entry=d.get("entry"),
            offset=d.get("offset"),
            global_=d.get("global"),
            call=d.get("call"),
            why=d.get("why"),
            help=d.get("help"),
            blocking=bool(d.get("blocking", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"code": self.code, "name": self.name, "severity": self.severity,
                             "message": self.message}
        for key, value in (("entry", self.entry), ("offset", self.offset), ("global", self.global_),
                           ("call", self.call), ("why", self.why), ("help", self.help)):
            if value is not None:
                d[key] = value
        if self.blocking:
            d["blocking"] = True
        return d

    def fails(self, fail_on: str) -> bool:
        """Whether this finding makes its file unsafe at the failing severity ``fail_on``."""
        return self.blocking or SEVERITIES.index(self.severity) >= SEVERITIES.index(fail_on)

    def __str__(self) -> str:
        where = f" [{self.entry}]" if self.entry else ""
        call = f" — {self.call}" if self.call else ""
        return f"{self.severity} {self.code} {self.name}{where}: {self.message}{call}"


@dataclass(frozen=True)
class WeightsOnly:
    """Whether ``torch.load(weights_only=True)`` would accept the file as it is."""

    accepted: bool
    needs_safe_globals: tuple[str, ...] = ()
    blocker: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsOnly:
        return cls(bool(d["accepted"]), tuple(d.get("needs_safe_globals", ())), d.get("blocker"))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"accepted": self.accepted}
        if self.needs_safe_globals:
            d["needs_safe_globals"] = list(self.needs_safe_globals)
        if self.blocker is not None:
            d["blocker"] = self.blocker
        return d


@dataclass(frozen=True)
class FileReport:
    """The verdict on one file (or one directory container): ``safe``, ``unsafe``, ``error``
    (could not be read) or ``skipped`` (not a checkpoint format; unpickling it would fail before
    doing anything)."""

    path: str
    verdict: str
    format: str
    size: int
    bytes_read: int
    findings: tuple[Finding, ...] = ()
    globals: tuple[str, ...] = ()
    weights_only: WeightsOnly | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileReport:
        wo = d.get("weights_only")
        return cls(
            path=d["path"],
            verdict=d["verdict"],
            format=d["format"],
            size=d["size"],
            bytes_read=d["bytes_read"],
            findings=tuple(Finding.from_dict(f) for f in d.get("findings", ())),
            globals=tuple(d.get("globals", ())),
            weights_only=WeightsOnly.from_dict(wo) if wo is not None else None,
            error=d.get("error"),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path, "verdict": self.verdict, "format": self.format, "size": self.size,
            "bytes_read": self.bytes_read, "findings": [f.to_dict() for f in self.findings],
            "globals": list(self.globals),
        }
        if self.weights_only is not None:
            d["weights_only"] = self.weights_only.to_dict()
        if self.error is not None:
            d["error"] = self.error
        return d

    @property
    def safe(self) -> bool:
        return self.verdict == "safe"


@dataclass(frozen=True)
class Summary:
    """Counts per verdict."""

    files: int = 0
    safe: int = 0
    unsafe: int = 0
    error: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class Report:
    """A whole scan. ``verdict`` is the worst over all files; ``findings`` lists every finding."""

    schema_version: int
    tool: dict[str, str]
    fail_on: str
    files: tuple[FileReport, ...]
    summary: Summary = field(default_factory=Summary)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        return cls(
            schema_version=d["schema_version"],
            tool=dict(d["tool"]),
            fail_on=d["fail_on"],
            files=tuple(FileReport.from_dict(f) for f in d["files"]),
            summary=Summary(**d["summary"]),
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document, as ``ckptguard scan --format json`` writes it."""
        return {
            "schema_version": self.schema_version,
            "tool": dict(self.tool),
            "fail_on": self.fail_on,
            "files": [f.to_dict() for f in self.files],
            "summary": {"files": self.summary.files, "safe": self.summary.safe,
                        "unsafe": self.summary.unsafe, "error": self.summary.error,
                        "skipped": self.summary.skipped},
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @property
    def verdict(self) -> str:
        """``unsafe`` if any file is, else ``error`` if any could not be read, else ``safe`` if
        any file was analysed, else ``skipped``."""
        s = self.summary
        if s.unsafe:
            return "unsafe"
        if s.error:
            return "error"
        if s.safe or not s.files:
            return "safe"
        return "skipped"

    @property
    def safe(self) -> bool:
        """Nothing unsafe and everything readable (skipped files are not checkpoints)."""
        return self.verdict in ("safe", "skipped")

    @property
    def findings(self) -> list[Finding]:
        """Every finding of every file, in report order."""
        return [f for file in self.files for f in file.findings]

    @property
    def failing_findings(self) -> list[Finding]:
        """The findings that make a file unsafe (at or above ``fail_on``, or blocking)."""
        return [f for f in self.findings if f.fails(self.fail_on)]

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this report: 1 unsafe, 2 unreadable, 0 otherwise."""
        return 1 if self.summary.unsafe else 2 if self.summary.error else 0

    def __str__(self) -> str:
        lines = []
        for f in self.files:
            lines.append(f"{f.verdict.upper():7} {f.path}  ({f.format})")
            lines.extend(f"  {x}" for x in f.findings if x.fails(self.fail_on))
            if f.error and f.verdict != "safe":
                lines.append(f"  {f.error}")
        s = self.summary
        lines.append(f"{s.files} file{'s' if s.files != 1 else ''} scanned: {s.unsafe} unsafe, "
                     f"{s.safe} safe, {s.skipped} skipped, {s.error} unreadable "
                     f"(failing at {self.fail_on} and above)")
        return "\n".join(lines)
