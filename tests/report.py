"""Figures a test measured (image size, worst request time in an outage), printed in
pytest's summary by tests/conftest.py, so that a run shows them."""

REPORT: list[str] = []
