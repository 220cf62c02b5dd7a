"""Schemathesis hooks of dev/check-openapi.sh.

- Each operation of infra/openapi.yaml names its function in its `servers`
  (`http://127.0.0.1:9000/lambda-url/<function>`): the request goes to that
  function on the stack `--url` names (its scheme, host and port).
- A request the document calls valid must be accepted. JSON Schema cannot
  say every rule of the document: the few it states in words (a rule across
  two fields, or against the clock) are kept here (`_keep_stated_rules`),
  and a valid request generated is made to keep them before it is sent (a
  contract's term ends a day after it starts, ...). Each names the words of
  infra/openapi.yaml it follows.
- A portal link is refused 403 `not_an_admin` for a user who is no admin
  of the tenant and 429 `rate_limited` past 20 a minute: what the tenant
  holds decides ("`admin` must be a member whom the tenant's role rules
  make one of the model's privileged roles", "At most 20 links per tenant
  per minute"), not counted as a valid request refused; the seeded tenant's
  requests name its admin.
- An amendment is refused 422 `invalid_amendment` for what the contract
  as it stands makes of it (a patch's path it lacks, a change of nothing,
  ...: "Whether it applies depends on the contract as it stands"): not
  counted as a valid request refused.
- A JSON body that is not UTF-8 is not sent: `cargo lambda watch` (the local
  stand-in for function URLs) answers it 500 itself, and the function never
  sees it.
- `cargo lambda watch` sometimes answers 500 itself (its own text/plain
  problem body; the function logs nothing) to an answer of some 20 KB or
  more while another function answers at the same time: such an answer is
  asked for again (twice at most). A function's own 500 is JSON, and a
  panic is left to dev/check-openapi.sh, which looks for it in the log.
- A request the document calls invalid must be refused. The functions are
  more lenient than the document in ways that do no harm, and a refusal
  not made for those is not counted (`filter_failure`): a query parameter
  the route does not read is ignored; an optional body field sent as null
  is read as absent; a body that is a JSON array of the fields' values in
  their order is read as the object (serde's reading of a struct); the
  local stack (SCIM_ALLOW_HTTP=1) takes a target's `base_url` of any form.
- In the fuzzing phase, a valid tenant, user or directory id of the path is
  replaced by the one dev/check-openapi.sh created (OPENAPI_CHECK_TENANT,
  _USER, _DIRECTORY), so that those requests reach a tenant that exists;
  the coverage phase keeps the ids it generates (the longest, the shortest,
  each character class: answered 404, never 400).
"""

import os
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit, urlunsplit

import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.generation.meta import TestPhase

SEEDED = {name: os.environ.get(f"OPENAPI_CHECK_{name.upper()}") for name in ("tenant", "user", "directory")}


@schemathesis.hook
def before_init_operation(context, operation):
    servers = operation.definition.raw.get("servers") or []
    if not servers:
        return
    stack = urlsplit(operation.schema.get_base_url())
    declared = urlsplit(servers[0]["url"])
    operation.base_url = urlunsplit((stack.scheme, stack.netloc, declared.path, "", ""))


def _time(value):
    """An RFC 3339 time, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _rfc3339(t):
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _keep_contract_rules(doc):
    """ContractDocument: "`term.end` is after `term.start`, and no two
    `named_users` share an `id`"."""
    if not isinstance(doc, dict):
        return
    term = doc.get("term")
    if isinstance(term, dict):
        start, end = _time(term.get("start")), _time(term.get("end"))
        if start and end and end <= start:
            try:
                term["end"] = _rfc3339(start + timedelta(days=1))
            except OverflowError:
                term["start"] = _rfc3339(end - timedelta(days=1))
    users = doc.get("named_users")
    if isinstance(users, list):
        kept, ids = [], set()
        for user in users:
            uid = user.get("id") if isinstance(user, dict) else None
            if uid is None or uid not in ids:
                kept.append(user)
                ids.add(uid)
        doc["named_users"] = kept


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _keep_stated_rules(case):
    """A valid request made to keep the rules infra/openapi.yaml states in words."""
    op = (case.method.upper(), case.operation.path)
    body = case.body if isinstance(case.body, dict) else {}
    path = case.path_parameters or {}
    query = case.query or {}
    if op == ("PUT", "/tenants/{tenant}/members/{user}/seat"):
        # SeatRequest.from: "not the member itself".
        if "from" in body and body["from"] == path.get("user"):
            del body["from"]
    elif op == ("GET", "/tenants/{tenant}/audit/export"):
        # to_seq: "Not below `from_seq`" (which is 1 when absent).
        to, start = _int(query.get("to_seq")), _int(query.get("from_seq", 1))
        if to is not None and start is not None and to < start:
            query["to_seq"] = query.get("from_seq", 1)
    elif op == ("PUT", "/tenants/{tenant}/model"):
        # until: "In the future".
        until = _time(body.get("until"))
        if until is not None and until <= datetime.now(timezone.utc):
            body["until"] = _rfc3339(datetime.now(timezone.utc) + timedelta(days=1))
    elif op == ("POST", "/tenants/{tenant}/portal-links"):
        # admin: "a member whom the tenant's role rules make" an admin: the
        # seeded tenant's admin (u1, group admins) where the tenant is the seeded one.
        if SEEDED["user"] and path.get("tenant") == SEEDED["tenant"] and "admin" in body:
            body["admin"] = SEEDED["user"]
    elif op == ("POST", "/contracts"):
        _keep_contract_rules(case.body)
    elif op == ("POST", "/contracts/{contract}/amendments"):
        _keep_contract_rules(body.get("document"))


def _not_utf8(body):
    if not isinstance(body, (bytes, bytearray)):
        return False
    try:
        bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _valid(case):
    return case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE


@schemathesis.hook
def filter_case(context, case):
    if _not_utf8(case.body) and "json" in (case.media_type or ""):
        return False
    # A candidate licensing model (`application/toml`): "whether it
    # validates is the model loader's to say (422 naming every problem)".
    return not (_valid(case) and case.media_type == "application/toml")


@schemathesis.hook
def map_case(context, case):
    if _valid(case):
        _keep_stated_rules(case)
    meta = case.meta
    if meta is None or meta.phase.name != TestPhase.FUZZING or meta.is_negative_at(ParameterLocation.PATH):
        return case
    path = case.path_parameters
    if path:
        for name, value in SEEDED.items():
            if value and name in path:
                path[name] = value
    return case


def _emulator_500(response):
    """cargo lambda watch's own 500 (never a function's: theirs are JSON)."""
    return response.status_code == 500 and b"httpstatuses.com/500" in response.content and "json" not in ",".join(response.headers.get("content-type", []))


@schemathesis.hook
def after_call(context, case, response):
    for _ in range(2):
        if not _emulator_500(response):
            return
        time.sleep(0.2)
        with requests.Session() as session:
            again = Response.from_requests(session.send(response.request.copy(), timeout=30), verify=response.verify)
        for name in ("status_code", "headers", "content", "content_size", "elapsed", "message", "http_version", "encoding"):
            setattr(response, name, getattr(again, name))
        response._deserialized = NOT_SET
        response._encoded_body = None


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _valid_body(case, body):
    declared = case.operation.get_body_for_media_type(case.media_type)
    return declared is not None and declared.is_valid(body)


def _harmless_leniency(case, failure):
    """Whether a negative request was accepted for one of the leniencies above."""
    if "in query - object with unexpected properties" in failure.message:
        return True
    body = case.body
    if isinstance(body, dict) and _without_nulls(body) != body and _valid_body(case, _without_nulls(body)):
        return True
    if isinstance(body, list) and (case.meta is None or not case.meta.is_negative_at(ParameterLocation.PATH)):
        return True
    if (case.method.upper(), case.operation.path) == ("PUT", "/tenants/{tenant}/targets/{target}") and isinstance(body, dict):
        return _valid_body(case, {**body, "base_url": "https://scim.example.com/v2"})
    return False


def _code(response):
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def _refused_for_the_contract_as_it_stands(case, response):
    if (case.method.upper(), case.operation.path) != ("POST", "/contracts/{contract}/amendments") or response.status_code != 422:
        return False
    return _code(response) == "invalid_amendment"


def _refused_by_a_stated_rule(case, response):
    """A portal link: `admin` "must be a member whom the tenant's role rules
    make one of the model's privileged roles" (403 `not_an_admin`), and "at
    most 20 links per tenant per minute" (429 `rate_limited`): what the
    tenant holds decides, not the request's form."""
    if (case.method.upper(), case.operation.path) != ("POST", "/tenants/{tenant}/portal-links"):
        return False
    return (response.status_code, _code(response)) in ((403, "not_an_admin"), (429, "rate_limited"))


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if isinstance(failure, AcceptedNegativeData):
        return not _harmless_leniency(case, failure)
    if isinstance(failure, RejectedPositiveData):
        return not (_refused_for_the_contract_as_it_stands(case, response) or _refused_by_a_stated_rule(case, response))
    return True
