"""What the deployment tests measured (image size, build time), shown in pytest's summary."""

import pytest

REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("deployment")
        for line in REPORT:
            terminalreporter.write_line(line)
