"""Reports for people: the candidate evaluation report stored with every unlearning run's version."""

from __future__ import annotations

from lifelong.reports.evaluation import EvaluationData, build_report, report_file_names, write_report

__all__ = ["EvaluationData", "build_report", "report_file_names", "write_report"]
