"""What a run reports: one ``CheckReport`` per check and the ``RunReport``
that commands print (the JSON shape is the README's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from kong.models import Check, TestResult


@dataclass
class CheckReport:
    """One check's result as commands and APIs print it (the JSON shape the README gives for --format json)."""

    test: str
    site: str
    server: str | None
    status: str
    succeeded: bool
    duration_ms: float
    failed_line: int | None
    reason: str
    result_id: int | None = None
    location: str | None = None  # the location's slug; None: the default location

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("result_id")
        return data


@dataclass
class RunReport:
    results: list[CheckReport] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def passed(self) -> int:
        return sum(1 for report in self.results if report.succeeded)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed

    @property
    def exit_code(self) -> int:
        """Nagios convention: 0 all passed, 2 anything else."""
        return 0 if self.failed == 0 else 2

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failed": self.failed,
            "duration_ms": round(self.duration_ms, 1),
            "results": [report.as_json() for report in self.results],
        }


def report_for(check: Check, result: TestResult) -> CheckReport:
    return CheckReport(
        test=check.test.slug,
        site=check.site.slug,
        server=check.server.slug if check.server else None,
        status=result.status,
        succeeded=result.succeeded,
        duration_ms=round(result.duration, 1),
        failed_line=result.failed_line,
        reason=result.reason,
        result_id=result.pk,
        location=check.location.slug if check.location else None,
    )
