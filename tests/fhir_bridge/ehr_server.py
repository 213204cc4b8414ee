"""A real EHR for notify-and-pull tests: a threaded http.server on 127.0.0.1 with a FHIR read endpoint
(``GET /fhir/<type>/<id>``, bearer token required) serving the PA IG's Scenario 2 fixtures, a search endpoint
(``GET /fhir/<type>?patient=<id>&category=<system|code>&_count=n``, paged with ``_offset`` next links), and a
SMART token endpoint (``POST /auth/token``) that verifies the hub's client assertion against the hub's published
JWKS, as an EHR that registered the hub would.

It can be taken down (connections refused) and brought back on the same port, and records what it was asked.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

from fhir_bridge.examples import example
from fhir_bridge.smart_tokens import jwk_public_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def scenario2_resources() -> dict[str, dict]:
    """Ms Johansson's referral as it sits on her clinic's server: the ServiceRequest (with its reason Condition
    and two PAVS Observations as supporting info), the Patient, the Condition and the Observations, keyed
    ``Type/id``. References are relative, as on the EHR."""
    service_request = example("Scen2ServiceRequest")
    condition = example("Scen2ConditionLackOfExercise")
    days, minutes = example("Scen2ObsDaysPerWeek2"), example("Scen2ObsMinutesPerDay2")
    patient = example("Scen2PatientJohansson")
    service_request["reasonReference"] = [{"reference": f"Condition/{condition['id']}"}]
    service_request["supportingInfo"] = [{"reference": f"Observation/{days['id']}"},
                                         {"reference": f"Observation/{minutes['id']}"}]
    for resource in (condition, days, minutes):
        resource["subject"] = {"reference": f"Patient/{patient['id']}"}
    return {f"{r['resourceType']}/{r['id']}": r for r in (service_request, patient, condition, days, minutes)}


class FakeEhr:
    """``resources`` are served by ``Type/id``; ``jwks`` is the hub's public JWKS (what the EHR registered);
    ``hub_client_id`` the id it knows the hub by."""

    def __init__(self, *, jwks: dict, hub_client_id: str, resources: dict[str, dict] | None = None):
        self.jwks = jwks
        self.hub_client_id = hub_client_id
        self.resources = scenario2_resources() if resources is None else resources
        self.tokens: set[str] = set()
        self.seen_jti: set[str] = set()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self.assertion_errors: list[str] = []
        self.token_lifetime = 300  # expires_in, seconds
        self.extra_entries: dict[str, list[dict]] = {}  # type -> Bundle entries added to its searches' first page
        self.next_link: str | None = None  # a next link given instead of the server's own
        self.on_get = None  # called with the path before each GET is answered (from the server's thread)
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth/token"

    def start(self) -> FakeEhr:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until ``start`` again."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def token_endpoint(self, form: dict[str, str]) -> tuple[int, dict]:
        """RFC 7523 / SMART Backend Services: verify the assertion's signature with the hub's JWKS (by kid), its
        issuer, subject, audience, expiry and jti (used once)."""
        if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != ASSERTION_TYPE:
            return 400, {"error": "invalid_request"}
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            jwk = next(k for k in self.jwks["keys"] if k.get("kid") == header.get("kid"))
            claims = jwt.decode(
                assertion, jwk_public_key(jwk, header["alg"]), algorithms=[header["alg"]], audience=self.token_url,
                issuer=self.hub_client_id, options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
        except (StopIteration, jwt.PyJWTError, KeyError, ValueError) as exc:
            self.assertion_errors.append(repr(exc))
            return 401, {"error": "invalid_client"}
        if claims["sub"] != self.hub_client_id or claims["jti"] in self.seen_jti:
            self.assertion_errors.append("sub or replayed jti")
            return 401, {"error": "invalid_client"}
        self.seen_jti.add(claims["jti"])
        token = secrets.token_urlsafe(16)
        self.tokens.add(token)
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.token_lifetime,
                     "scope": form.get("scope", "")}

    def search(self, resource_type: str, query: dict[str, str]) -> dict:
        """A searchset of the ``resource_type`` resources whose subject is ``patient`` and that have the
        ``category`` coding, ``_count`` a page from ``_offset``."""
        patient, category = query.get("patient", ""), query.get("category", "")
        found = [
            r for key, r in sorted(self.resources.items())
            if key.startswith(f"{resource_type}/")
            and (r.get("subject") or {}).get("reference") in (f"Patient/{patient}", f"{self.base}/Patient/{patient}")
            and (not category or any(f"{c.get('system')}|{c.get('code')}" == category
                                     for concept in r.get("category") or [] for c in concept.get("coding") or []))
        ]
        count, offset = int(query.get("_count", 10)), int(query.get("_offset", 0))
        page = found[offset:offset + count]
        entries = [{"fullUrl": f"{self.base}/{resource_type}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                   for r in page]
        if offset == 0:
            entries += self.extra_entries.get(resource_type, [])
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": entries,
                  "link": [{"relation": "self", "url": f"{self.base}/{resource_type}?{urlencode(query)}"}]}
        if offset + count < len(found) or self.next_link:
            following = self.next_link or (
                f"{self.base}/{resource_type}?{urlencode(query | {'_offset': offset + count})}"
            )
            bundle["link"].append({"relation": "next", "url": following})
        return bundle


def _handler(ehr: FakeEhr) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            ehr.requests.append((self.command, self.path, status))
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.path != "/auth/token":
                return self._answer(404, {"error": "not found"})
            form = {k: v[0] for k, v in parse_qs(body).items()}
            return self._answer(*ehr.token_endpoint(form))

        def do_GET(self):  # noqa: N802
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if ehr.on_get is not None:
                ehr.on_get(self.path)
            if token not in ehr.tokens:
                return self._answer(401, _outcome("login", "no valid bearer token"))
            url = urlsplit(self.path)
            if url.query:
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                return self._answer(200, ehr.search(url.path.removeprefix("/fhir/"), query))
            key = self.path.removeprefix("/fhir/")
            if key not in ehr.resources:
                return self._answer(404, _outcome("not-found", f"{key} is not here"))
            return self._answer(200, ehr.resources[key])

        def log_message(self, *args):
            pass

    return Handler


def _outcome(code: str, text: str) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


def wait_until(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
