"""Pipeline steps: plain functions with explicit inputs and a small JSON-able summary out.

Each module is one step (ingest, validate, score, pull_labels, unlearn, evaluate, promote, bootstrap). They
never import Airflow; ``dags/`` wires them. Steps are idempotent per data interval or run id.
"""
