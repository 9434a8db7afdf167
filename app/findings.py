"""What a `doctor` check answers: OK, WARN or FAIL, with what to do."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    level: Level
    detail: str
    action: str = ""

    def line(self) -> str:
        todo = f" -> {self.action}" if self.action else ""
        return f"{self.level.value:<4} {self.check}: {self.detail}{todo}"


def ok(check: str, detail: str) -> Finding:
    return Finding(check, Level.OK, detail)


def warn(check: str, detail: str, action: str = "") -> Finding:
    return Finding(check, Level.WARN, detail, action)


def fail(check: str, detail: str, action: str) -> Finding:
    return Finding(check, Level.FAIL, detail, action)
