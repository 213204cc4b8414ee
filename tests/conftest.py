"""Fixtures shared by the whole suite: a clinic, its EHR client with a token, and a FHIR client that sends what
an EHR sends."""

import threading

import orjson
import pytest
from django.db import connections
from django.test import Client

from fhir_bridge.smart_tokens import access_token_encode
from tests.factories import ALL_SCOPES, ClinicFactory, EhrClientFactory
from tests.receivers import http_receiver, smtp_backend, smtp_server  # noqa: F401 - real peers on 127.0.0.1

FHIR_JSON = "application/fhir+json"


class FhirClient:
    """Django's test client speaking FHIR as an EHR does: bearer token, application/fhir+json."""

    def __init__(self, token: str | None):
        self.http = Client()
        self.token = token

    def _headers(self, headers):
        base = {"HTTP_ACCEPT": FHIR_JSON}
        if self.token:
            base["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        for name, value in (headers or {}).items():
            base["HTTP_" + name.upper().replace("-", "_")] = value
        return base

    def get(self, path, headers=None, **params):
        return self.http.get(f"/fhir/{path}".rstrip("/"), params or None, **self._headers(headers))

    def post(self, path, body, headers=None, content_type=FHIR_JSON):
        data = body if isinstance(body, (bytes, str)) else orjson.dumps(body)
        return self.http.post(f"/fhir/{path}".rstrip("/"), data, content_type=content_type, **self._headers(headers))

    def put(self, path, body, headers=None):
        return self.http.put(f"/fhir/{path}", orjson.dumps(body), content_type=FHIR_JSON, **self._headers(headers))

    def delete(self, path, headers=None):
        return self.http.delete(f"/fhir/{path}", **self._headers(headers))


def fhir_client_for(ehr_client, scopes: str = ALL_SCOPES) -> FhirClient:
    token, _ = access_token_encode(client=ehr_client, scopes=scopes.split())
    return FhirClient(token)


@pytest.fixture
def clinic(db):
    return ClinicFactory(name="Good Health Cardiology", slug="good-health")


@pytest.fixture
def ehr_client(clinic):
    return EhrClientFactory(clinic=clinic)


@pytest.fixture
def fhir(ehr_client) -> FhirClient:
    return fhir_client_for(ehr_client)


@pytest.fixture
def other_fhir(db) -> FhirClient:
    """An EHR client of another clinic."""
    return fhir_client_for(EhrClientFactory())


def json_of(response) -> dict:
    return orjson.loads(response.content)


def issue_paths(response) -> list[str]:
    return [expr for issue in json_of(response)["issue"] for expr in issue.get("expression", [])]


def fire_at_once(n: int, work) -> list:
    """Run ``work(i)`` in ``n`` threads released together by a barrier; each thread's result, or the exception it
    raised. Each thread has its own database connection, closed when it ends."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i):
        try:
            barrier.wait()
            results[i] = work(i)
        except Exception as error:  # noqa: BLE001 - reported by the test
            results[i] = error
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results
