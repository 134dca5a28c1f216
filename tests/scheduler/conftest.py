"""Fixtures for tests that start a real Airflow cluster; makes ``harness`` importable from this folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/ is not a package, so the harness module is found through sys.path rather than a package import.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from harness import DEFAULT_POSTGRES_URL, AirflowCluster, postgres_unreachable_reason  # noqa: E402


@pytest.fixture(scope="session")
def airflow_postgres_url() -> str:
    """Return the admin URL of the PostgreSQL server for cluster databases, or skip when it is unreachable."""
    reason = postgres_unreachable_reason(DEFAULT_POSTGRES_URL)
    if reason is not None:
        pytest.skip(f"{reason}; scheduler tests need PostgreSQL (AIRFLOW_CI_POSTGRES_URL points elsewhere)")
    return DEFAULT_POSTGRES_URL


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Attach each component's log tail to a failed test that used an Airflow cluster, and keep its home."""
    report = yield
    if report.failed and call.when == "call":
        for value in getattr(item, "funcargs", {}).values():
            if isinstance(value, AirflowCluster) and value.home is not None:
                value.failed = True
                report.sections.append(("Airflow cluster logs", value.component_logs()))
    return report
