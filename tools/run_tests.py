#!/usr/bin/env python3
"""Run the test suite and fail when nothing ran (a collection mistake must not pass CI)."""

from __future__ import annotations

import sys

import pytest


class _Counter:
    def __init__(self) -> None:
        self.passed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed:
            self.passed += 1


def main() -> int:
    counter = _Counter()
    code = int(
        pytest.main(
            ["-m", "not slow and not gpu and not hardware", *sys.argv[1:]], plugins=[counter]
        )
    )
    if code == 0 and counter.passed == 0:
        sys.stderr.write("run_tests: no test passed; refusing to report success\n")
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
