"""Schemathesis against the served OpenAPI document: no 500, no answer outside the document.

Every operation of ``/api/v1/docs/openapi.json`` gets requests generated from its
document, schema-valid ones (positive) and schema-violating ones (negative), sent to
the app in-process (WSGI) with an admin's bearer token. Every default schemathesis
check applies: no 5xx, the status code, content type, headers and body as
documented, schema-violating requests refused. ``ORDERBUS_FUZZ_EXAMPLES`` sets the
examples per operation and mode (short in ``make test``, longer in ``make chaos``).

One check is refined, not switched off: a schema-valid request may be refused by a
rule JSON Schema cannot state (an opaque cursor, a rule joining two fields, an id
that does not exist, whitespace stripped before a length check). Such a refusal
must be a 400/422 problem that names only fields from :data:`RULES_NOT_IN_SCHEMA`;
any other refusal of valid data still fails the test. And a schema-violating request
that the server accepts fails it, unless the violation never left schemathesis (an
undocumented query key that serialised to nothing).
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

EXAMPLES = int(os.environ.get("ORDERBUS_FUZZ_EXAMPLES", "12"))
SKIP = {("DELETE", "/api/v1/auth/token")}  # would log the fuzzer itself out

# field -> why the document cannot say it (problem+json errors[].field, as a regex)
RULES_NOT_IN_SCHEMA = {
    r"cursor": "an opaque token only the API's own answers hold",
    r"agent_id|agent_ids\.\d+": "must name an existing, active agent",
    r"failure(\.note)?|prep_minutes|force|code": "depends on the target status or on the caller's role",
    r"body": "a rule joining two fields (origin_lat with origin_lon)",
    r"Idempotency-Key": "a key already used with another body: state, not shape",
    r"items\.\d+\.(item_id|name|unit_price_cents|option_ids(\.\d+)?)": "a line is a catalog item (which "
    "must exist, with its own options) or an admin's custom line (name and price): two shapes in one",
    r"currency": "must be the catalog's when the order has catalog lines",
    r"category_id": "must name an existing category",
    r"options": "the options' negative deltas may not take the item's price below zero",
}
STRIPPED = "string_too_short"  # valid length as sent, too short once whitespace is stripped


def _explained(response) -> bool:
    """A refusal of schema-valid data that a rule outside JSON Schema accounts for."""
    if response.status_code not in (400, 422):
        return False
    errors = (response.json() or {}).get("errors") or []
    return bool(errors) and all(
        error.get("type") == STRIPPED
        or any(re.fullmatch(rule, str(error.get("field"))) for rule in RULES_NOT_IN_SCHEMA)
        for error in errors
    )


def _invalid_part_not_sent(case, response) -> bool:
    """An undocumented query key schemathesis added, serialised to nothing (an empty list, a
    None): the server never saw it, so accepting the request is right."""
    documented = {parameter.name for parameter in case.operation.query}
    sent = set(parse_qs(urlsplit(response.request.url).query, keep_blank_values=True))
    added = set(case.query or {}) - documented
    return bool(added) and not (sent - documented) and not (added & sent)


def fuzz(app, headers: dict[str, str], examples: int = EXAMPLES) -> list[str]:
    """Run every operation in both modes; return the failures, one report each."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/docs/openapi.json", app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:
                response = case.call(headers=headers)
                skipped = []
                if case.meta.generation.mode.is_positive and _explained(response):
                    skipped.append(positive_data_acceptance)
                if not case.meta.generation.mode.is_positive and _invalid_part_not_sent(case, response):
                    skipped.append(negative_data_rejection)
                case.validate_response(response, headers=headers, excluded_checks=skipped or None)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing to get wrong: no parameters and no body
            except (AssertionError, BaseExceptionGroup) as exc:  # collected, reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode}):\n{exc}")
    return failures


@pytest.mark.timeout(120 + 10 * EXAMPLES)  # a bound, not a speed target: logins hash slowly
def test_api_answers_every_generated_request_within_its_document(app, admin):
    """Any request derived from the document gets a documented answer, never a 500."""
    failures = fuzz(app, admin.headers)
    assert not failures, "\n\n".join(failures)
