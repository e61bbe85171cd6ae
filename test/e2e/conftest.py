"""Shared fixtures for the end-to-end suites.

Every suite talks to the real services that test/stack.sh started; their
addresses come from the environment that test/run.sh exports from
STATE/stack.env (PG*, AC_TEMPORAL_URL, AC_NATS_URL, ...).
"""
import json
import os
import urllib.error
import urllib.request

import psycopg
import pytest

TEMPORAL_URL = os.environ.get("AC_TEMPORAL_URL", "http://127.0.0.1:17243")
NATS_URL = os.environ.get("AC_NATS_URL", "nats://127.0.0.1:14222")
NATS_MONITOR = os.environ.get("AC_NATS_MONITOR", "http://127.0.0.1:18222")
NAMESPACE = "default"


def http(method, url, body=None, timeout=10):
    """Send one HTTP request; return (status, parsed JSON body or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, {"message": raw.decode(errors="replace")}


def temporal(method, path, body=None, timeout=10):
    """Call Temporal's HTTP API under the test namespace."""
    return http(method, f"{TEMPORAL_URL}/namespaces/{NAMESPACE}{path}", body, timeout)


@pytest.fixture(scope="session")
def conn():
    """An autocommit connection to the test database with the extension."""
    with psycopg.connect(autocommit=True) as c:
        c.execute("SET client_min_messages = warning")
        c.execute("CREATE EXTENSION IF NOT EXISTS activity_core")
        yield c


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "restarts_postgres: the test restarts PostgreSQL or crashes a backend, "
        "which drops every open connection; such tests run after all others")


def pytest_collection_modifyitems(items):
    """Run tests marked restarts_postgres last, so that the session's `conn` serves
    every other suite before a restart drops it."""
    items.sort(key=lambda item: item.get_closest_marker("restarts_postgres") is not None)
