"""Shared string keys: DAG ids, pools, queues, asset URIs, artifact names (one place, like TFX's specs)."""

from __future__ import annotations

# DAG ids
DAG_SCORING = "telemetry_scoring"
DAG_UNLEARNING = "lifelong_unlearning"
DAG_BOOTSTRAP = "bootstrap_model"

# Airflow pool and Celery queue of the unlearning task (a pool of size 1; the queue can go to a GPU worker).
POOL_UNLEARNING = "lifelong_unlearning"
QUEUE_UNLEARNING = "unlearning"
QUEUE_DEFAULT = "default"

# Asset URIs (Airflow Assets link the DAGs).
ASSET_SCORES = "lifelong://scores"
ASSET_MODEL = "lifelong://models/production"

# Registry artifact names (design.md layout).
WEIGHTS_FILE = "weights.safetensors"
MANIFEST_FILE = "manifest.json"
PRODUCTION_ALIAS = "production"
# Evaluation report files of a version: flat names (registry file names hold no '/'), e.g. report-index.html.
REPORT_PREFIX = "report-"

# Label kinds and statuses.
FP = "FP"
FN = "FN"
LABEL_STATUSES = ("pending", "claimed", "consumed", "superseded")
