"""An S3-compatible server for tests: moto's standalone server when `CADAPT_TEST_S3_ENDPOINT` names one.

`.ci/run` starts `moto_server` on a free loopback port and exports its URL. Locally, without it, the
tests that need a bucket are skipped (start one with `moto_server -H 127.0.0.1 -p PORT` and export
`CADAPT_TEST_S3_ENDPOINT=http://127.0.0.1:PORT`); in CI (``CI=true``) a missing server fails them
instead, so CI can never pass without testing the bucket.
"""

from __future__ import annotations

import os
import uuid

import pytest

S3_ENV = "CADAPT_TEST_S3_ENDPOINT"
# moto accepts any credentials; real ones must never be picked up from the machine by a test.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def s3_endpoint() -> str:
    url = os.environ.get(S3_ENV)
    if not url:
        message = f"{S3_ENV} is not set: no S3-compatible server to test against (.ci/run starts moto_server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


def storage_options(endpoint: str) -> dict:
    """fsspec storage options that point s3fs at the test server, as a Python caller passes them."""
    return {
        "key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "client_kwargs": {"endpoint_url": endpoint},
    }


def environment(endpoint: str) -> dict[str, str]:
    """The variables a user sets instead (botocore reads AWS_ENDPOINT_URL), for CLI subprocesses."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}


def new_bucket(endpoint: str) -> str:
    """A fresh, empty bucket; its name is unique so tests never see each other's objects."""
    import s3fs

    name = f"cadapt-test-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True, **storage_options(endpoint)).mkdir(name)
    return name


def bucket_fs(endpoint: str):
    """A file system on the server for the test itself: to look at, tamper with and delete objects as
    another client of the bucket would, bypassing cadapt."""
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **storage_options(endpoint))
