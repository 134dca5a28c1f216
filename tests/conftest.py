"""Fixtures shared by every test folder.

Each block below is self-contained; add new blocks rather than editing someone else's.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# ---------------------------------------------------------------------------------------------------------
# S3 API on loopback: moto's standalone server over real HTTP (registry, lake and task tests)
#
#   moto_server  (session)  starts the server once, with dummy AWS credentials in the environment; yields
#                           its endpoint URL, e.g. "http://127.0.0.1:54321".
#   s3_endpoint  (function) the same URL, also exported as AWS_ENDPOINT_URL for this test only (so code that
#                           reads the standard variable, like ModelRegistry.from_settings, finds the server).
#   s3_client    (function) a boto3 S3 client for that endpoint (to create or tamper with objects directly).
#   s3_bucket    (function) a fresh bucket with a unique, valid name for this test.
# ---------------------------------------------------------------------------------------------------------
_MOTO_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # A developer's real profile, config or endpoint must never leak into a test.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def _serialise_moto_puts(mp: pytest.MonkeyPatch) -> None:
    """Make moto's conditional PUTs atomic, as S3's are.

    moto checks ``If-Match`` / ``If-None-Match`` and then stores the object in two steps without a lock, so
    two concurrent conditional PUTs can, rarely, both pass the check. Real S3 and MinIO evaluate the
    condition atomically with the write, and the registry's compare-and-swap relies on that; serialising
    moto's PUT handler keeps the concurrency tests about our code, not about moto's race.
    """
    from moto.s3.responses import S3Response

    original = getattr(S3Response, "put_object", None)
    if original is None:  # a moto that restructured its handlers: nothing to patch
        return
    lock = threading.Lock()

    def put_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    mp.setattr(S3Response, "put_object", put_object)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port), with dummy credentials; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in _MOTO_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        _serialise_moto_puts(mp)
        # werkzeug logs every request at INFO; keep test output readable.
        werkzeug_logger = logging.getLogger("werkzeug")
        saved_level = werkzeug_logger.level
        werkzeug_logger.setLevel(logging.WARNING)

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()
            werkzeug_logger.setLevel(saved_level)


@pytest.fixture
def s3_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint URL, exported as ``AWS_ENDPOINT_URL`` for the duration of one test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def s3_client(moto_server: str) -> Any:
    """A boto3 S3 client talking to the moto server."""
    import boto3

    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    """A new, empty bucket with a unique valid S3 name (lowercase, 3-63 characters)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    return name
