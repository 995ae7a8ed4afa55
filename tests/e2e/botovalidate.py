"""Validation of raw AWS JSON responses against botocore's service model, shared by the boto3
end-to-end scripts (`ecr_boto3.py`, `ecs_boto3.py`).

Each raw response body (captured from botocore's after-call event, before parsing) is checked
against the operation's output shape: required members present, types right (AWS JSON 1.1:
timestamps are epoch seconds), enum values known, lengths/ranges/patterns respected, and no
members the model does not define. Errors must carry a `__type` the operation's model lists.

`fail`/`check` print `<script>: FAILED: <message>` and exit 1; `VALIDATED` collects the names
of the validated calls (`Op`, or `Op!ErrorCode` for an expected error).
"""

import json
import os
import re
import sys

import boto3
import botocore.config
import botocore.exceptions
import botocore.session

VALIDATED = []


def fail(msg):
    print(f"{os.path.basename(sys.argv[0])}: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


# ---- output-shape validation ---------------------------------------------------------------


def validate(shape, value, path, errors):
    t = shape.type_name
    if value is None:
        errors.append(f"{path}: null")
        return
    if t == "structure":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected object ({shape.name}), got {type(value).__name__}")
            return
        members = shape.members
        for k in value:
            if k not in members:
                errors.append(f"{path}.{k}: not a member of {shape.name}")
        for k in shape.required_members:
            if k not in value:
                errors.append(f"{path}.{k}: required member of {shape.name} missing")
        for k, v in value.items():
            if k in members:
                validate(members[k], v, f"{path}.{k}", errors)
    elif t == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: expected list ({shape.name})")
            return
        for i, v in enumerate(value):
            validate(shape.member, v, f"{path}[{i}]", errors)
        check_len(shape, len(value), path, errors)
    elif t == "map":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected map ({shape.name})")
            return
        for k, v in value.items():
            validate(shape.key, k, f"{path}<key {k}>", errors)
            validate(shape.value, v, f"{path}[{k}]", errors)
    elif t == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: expected string ({shape.name}), got {type(value).__name__}")
            return
        if shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} not in enum {shape.name} {shape.enum}")
        check_len(shape, len(value), path, errors)
        pattern = shape.metadata.get("pattern")
        if pattern:
            try:
                ok = re.fullmatch(pattern, value) is not None
            except re.error:
                ok = True  # a Java-only construct; nothing to say
            if not ok:
                errors.append(f"{path}: {value!r} does not match {shape.name} pattern {pattern}")
    elif t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: expected integer ({shape.name}), got {value!r}")
            return
        lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
        if lo is not None and value < lo or hi is not None and value > hi:
            errors.append(f"{path}: {value} outside [{lo}, {hi}] of {shape.name}")
    elif t in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected number ({shape.name}), got {value!r}")
    elif t == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected boolean ({shape.name}), got {value!r}")
    elif t == "timestamp":
        # AWS JSON 1.1 timestamps are epoch seconds (a JSON number).
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"{path}: expected epoch-seconds timestamp ({shape.name}), got {value!r}")
        elif not (1_500_000_000 < value < 4_000_000_000):
            errors.append(f"{path}: timestamp {value} is not in seconds")
    elif t == "blob":
        if not isinstance(value, str):
            errors.append(f"{path}: expected base64 string ({shape.name})")
    else:
        errors.append(f"{path}: unhandled shape type {t}")


def check_len(shape, n, path, errors):
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and n < lo or hi is not None and n > hi:
        errors.append(f"{path}: length {n} outside [{lo}, {hi}] of {shape.name}")


def snake(op):
    """`CreateCluster` -> `create_cluster` (boto3's method name)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()


# ---- a validating client -------------------------------------------------------------------


class Client:
    """A boto3 client of `service` whose every response is validated against the service model.

    `call(op, **kw)` must succeed; `error(op, code, **kw)` must fail with `code`. With
    `strict_errors`, an error's raw body must also be a JSON object whose `__type` (namespace
    prefix `...#` allowed) names an error the operation's model lists, whose other members
    validate against that error's shape, and which carries a message. With `validate_all`,
    every successful response, including those of waiters and paginators, is validated in the
    after-call hook; a bad one fails at once.
    """

    def __init__(self, service, endpoint, region, strict_errors=False, validate_all=False):
        self.service = service
        self.model = botocore.session.get_session().get_service_model(service)
        self.client = boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=region,
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )
        self.strict_errors = strict_errors
        self.validate_all = validate_all
        self.raw = {}
        # Calls validated in the hook, by operation (waiters, paginators).
        self.hook_validated = []
        self.client.meta.events.register(f"after-call.{self.model.service_id.hyphenize()}", self._after_call)

    def _after_call(self, http_response, parsed, model, **_):
        self.raw[model.name] = (http_response.status_code, http_response.content, dict(http_response.headers))
        if self.validate_all and http_response.status_code == 200:
            self._check_response(model.name, http_response.status_code, http_response.content, dict(http_response.headers))
            self.hook_validated.append(model.name)

    def _check_response(self, op, status, body, headers):
        check(status == 200, f"{op}: HTTP {status}")
        ctype = headers.get("Content-Type") or headers.get("content-type") or ""
        check(ctype.startswith("application/x-amz-json-1.1"), f"{op}: Content-Type {ctype!r}")
        check(headers.get("x-amzn-RequestId") or headers.get("x-amzn-requestid"), f"{op}: no x-amzn-RequestId")
        try:
            doc = json.loads(body or b"{}")
        except ValueError:
            fail(f"{op}: response is not JSON: {body[:200]!r}")
        errors = []
        validate(self.model.operation_model(op).output_shape, doc, op, errors)
        if errors:
            fail(f"{op} response does not match botocore's model:\n  " + "\n  ".join(errors) + f"\nbody: {body[:2000]!r}")
        return doc

    def call(self, op, **kwargs):
        result = getattr(self.client, snake(op))(**kwargs)
        status, body, headers = self.raw.pop(op)
        doc = self._check_response(op, status, body, headers)
        VALIDATED.append(op)
        return result, doc

    def error(self, op, code, **kwargs):
        """Calls `op`, which must fail with `code` (a modeled error of the operation)."""
        modeled = [e.name for e in self.model.operation_model(op).error_shapes]
        check(code in modeled, f"test bug: {code} is not an error of {op}")
        self.raw.pop(op, None)
        try:
            getattr(self.client, snake(op))(**kwargs)
        except botocore.exceptions.ClientError as e:
            got = e.response["Error"]["Code"]
            if self.strict_errors:
                self._check_error_body(op, code, modeled)
            check(got == code, f"{op}: expected {code}, got {got}: {e}")
            check(e.response["Error"].get("Message"), f"{op}: {code} without a message")
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            check(400 <= status < 500, f"{op}: {code} with HTTP {status}")
            VALIDATED.append(f"{op}!{code}")
            return e
        fail(f"{op} succeeded, expected {code}")

    def _check_error_body(self, op, code, modeled):
        check(op in self.raw, f"{op}: no raw error response captured")
        status, body, headers = self.raw.pop(op)
        ctype = headers.get("Content-Type") or headers.get("content-type") or ""
        check(ctype.startswith("application/x-amz-json-1.1"), f"{op}!{code}: Content-Type {ctype!r}")
        check(headers.get("x-amzn-RequestId") or headers.get("x-amzn-requestid"), f"{op}!{code}: no x-amzn-RequestId")
        try:
            doc = json.loads(body)
        except ValueError:
            fail(f"{op}!{code}: error body is not JSON: {body[:200]!r}")
        check(isinstance(doc, dict), f"{op}!{code}: error body is not an object: {body[:200]!r}")
        raw_type = doc.get("__type")
        check(isinstance(raw_type, str), f"{op}!{code}: error body without a string __type: {body[:200]!r}")
        name = raw_type.split("#")[-1].split(":")[0]
        check(name in modeled, f"{op}: __type {raw_type!r} is not an error the model lists for {op} ({modeled})")
        check(name == code, f"{op}: __type {raw_type!r}, expected {code}")
        msg = doc.get("message", doc.get("Message"))
        check(isinstance(msg, str) and msg, f"{op}!{code}: error body without a message: {body[:200]!r}")
        shape = self.model.shape_for(name)
        rest = {k: v for k, v in doc.items() if k not in ("__type", "Message") or k in shape.members}
        errors = []
        validate(shape, rest, f"{op}!{code}", errors)
        if errors:
            fail(f"{op}!{code} error body does not match botocore's model:\n  " + "\n  ".join(errors) + f"\nbody: {body[:2000]!r}")
