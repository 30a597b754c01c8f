#!/usr/bin/env python3
"""Holds recorded HTTP exchanges against docs/openapi.yaml and fails on anything it does not
describe: a path or method it does not declare, a status an operation does not list, a Content-Type
or response header the response does not declare, a body that does not match its schema (the
schemas are closed, so an undeclared property fails too), and an integer beyond 2^53-1 anywhere
but where the schema says `format: int64` (JavaScript's JSON.parse rounds those).

The exchanges are the JSON lines tests/integration/harness.py writes when COFFER_SPEC_RECORD is
set. Usage: check_exchanges.py [--spec docs/openapi.yaml] [--expect N] RECORD_FILE_OR_DIR...
(--expect: at least N record files must be found, so that a run that recorded nothing fails).
Standard library plus Debian's python3-yaml and python3-jsonschema.
"""

import argparse
import collections
import copy
import json
import os
import re
import sys
import urllib.parse

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SAFE_INTEGER = 2**53 - 1
METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
JSON_TYPES = ("application/json", "application/problem+json")
# Response headers of the API itself; a response may carry one only where the spec declares it.
API_HEADERS = ("idempotent-replayed", "retry-after", "allow", "location", "coffer-seq")
REPORT_MAX = 100
# Full batches (8,190 items: ~0.7 MB of request, ~3 MB of response) take seconds each to validate with Debian's
# jsonschema, and a load test sends dozens of them alike: past the first few of an operation
# and status, a body this large is parsed but not validated (--all validates every one).
LARGE_BODY = 256 << 10
LARGE_VALIDATED = 3
SAFE_JSON = "#/components/schemas/__AnyJsonWithSafeIntegers"


# ---- the spec, prepared for exact checks ------------------------------------------------------

def bound_integers(node):
    """Every integer schema without `format: int64` gets the bounds ±(2^53-1); every free-form
    object (additionalProperties: true) gets values checked the same way. Examples are values,
    not schemas, and are left alone."""
    if isinstance(node, list):
        for item in node:
            bound_integers(item)
        return
    if not isinstance(node, dict):
        return
    kinds = node.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds and node.get("format") != "int64":
        node["maximum"] = min(node.get("maximum", SAFE_INTEGER), SAFE_INTEGER)
        node["minimum"] = max(node.get("minimum", -SAFE_INTEGER), -SAFE_INTEGER)
    if node.get("additionalProperties") is True:
        node["additionalProperties"] = {"$ref": SAFE_JSON}
    for key, value in node.items():
        if key not in ("example", "examples"):
            bound_integers(value)


def prepare(spec):
    prepared = copy.deepcopy(spec)
    bound_integers(prepared)
    prepared["components"]["schemas"]["__AnyJsonWithSafeIntegers"] = {
        "if": {"type": "integer"},
        "then": {"maximum": SAFE_INTEGER, "minimum": -SAFE_INTEGER},
        "items": {"$ref": SAFE_JSON},
        "additionalProperties": {"$ref": SAFE_JSON},
    }
    return prepared


def pointer(*parts):
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def resolve(spec, node, where):
    """Follows a local $ref; returns (node, its JSON pointer)."""
    while isinstance(node, dict) and "$ref" in node:
        where = node["$ref"]
        node = spec
        for part in where[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
    return node, where


def inline_references(spec, node):
    """The schema with every local $ref replaced by what it names (but the recursive
    SAFE_JSON): the validator then follows no references, several times faster with the
    jsonschema of Debian 12."""
    if isinstance(node, list):
        return [inline_references(spec, item) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and node["$ref"] != SAFE_JSON:
        target, _ = resolve(spec, {"$ref": node["$ref"]}, node["$ref"])
        siblings = {k: v for k, v in node.items() if k not in ("$ref", "description", "examples")}
        target = inline_references(spec, target)
        return {"allOf": [target, inline_references(spec, siblings)]} if siblings else target
    return {key: value if key in ("example", "examples") else inline_references(spec, value)
            for key, value in node.items()}


class Spec:
    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.raw = yaml.safe_load(f)
        self.spec = prepare(self.raw)
        self.validators = {}
        # Literal-heavy templates first: /v1/accounts/{id}/history before /v1/accounts/{id},
        # as the server matches suffixes first (an id may hold a raw '/').
        self.templates = sorted(self.spec["paths"], key=lambda t: -len(re.sub(r"\{[^}]+\}", "", t)))
        self.patterns = {t: re.compile("^" + re.sub(r"\\\{([^}]+)\\\}", r"(?P<\1>.+)",
                                                    re.escape(t)) + "$")
                         for t in self.templates}

    def match(self, path):
        for template in self.templates:
            found = self.patterns[template].match(path)
            if found:
                return template, {k: urllib.parse.unquote(v) for k, v in found.groupdict().items()}
        return None, None

    def errors(self, schema_pointer, instance):
        """The schema errors of `instance` against the schema at `schema_pointer`."""
        validator = self.validators.get(schema_pointer)
        if validator is None:
            schema, _ = resolve(self.spec, {"$ref": schema_pointer}, schema_pointer)
            root = dict(inline_references(self.spec, schema))
            # The one recursive schema stays a reference, resolved in the spec itself.
            root["components"] = {"schemas": {"__AnyJsonWithSafeIntegers":
                                              self.spec["components"]["schemas"][SAFE_JSON.rsplit("/", 1)[1]]}}
            validator = jsonschema.Draft202012Validator(root)
            self.validators[schema_pointer] = validator
        return [describe(error) for error in validator.iter_errors(instance)]

    def parameters(self, template, method):
        """The declared parameters of an operation (path level and operation level), by
        (location, name) -> (parameter, pointer of its schema)."""
        declared = {}
        path_item = self.spec["paths"][template]
        for level, base in ((path_item, ("paths", template)),
                            (path_item[method], ("paths", template, method))):
            for i, parameter in enumerate(level.get("parameters", [])):
                parameter, where = resolve(self.spec, parameter, pointer(*base, "parameters", i))
                declared[(parameter["in"], parameter["name"].lower())] = (parameter,
                                                                          where + "/schema")
        return declared


def describe(error):
    """One line for a schema error: of a oneOf, the branch that went deepest; array indices
    become * so that one mistake repeated over a batch is reported once."""
    while error.context:
        error = max(error.context, key=lambda branch: len(branch.absolute_path))
    where = "/".join("*" if isinstance(part, int) else str(part) for part in error.absolute_path)
    message = error.message if len(error.message) <= 160 else error.message[:160] + "..."
    return "%s (at /%s)" % (message, where)


# ---- one exchange ------------------------------------------------------------------------------

def media_type(value):
    return (value or "").split(";")[0].strip().lower()


def parse_json(text):
    """JSON with exact integers (Python's ints are unbounded); raises ValueError."""
    return json.loads(text)


def big_integers(value, where=""):
    """(JSON pointer, integer) for every integer beyond ±(2^53-1) in a parsed JSON value."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [(where, value)] if abs(value) > SAFE_INTEGER else []
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in big_integers(v, where + "/" + k)]
    if isinstance(value, list):
        return [hit for i, v in enumerate(value) for hit in big_integers(v, "%s/%d" % (where, i))]
    return []


class Checker:
    def __init__(self, spec, validate_all=False):
        self.spec = spec
        self.validate_all = validate_all
        self.large_validated = collections.Counter()
        self.large_skipped = 0
        self.failures = collections.OrderedDict()  # (operation, status, message) -> [count, target]
        self.covered = collections.Counter()
        self.exchanges = 0
        self.big_int64 = 0

    def fail(self, exchange, operation, message):
        key = (operation, exchange["status"], message)
        entry = self.failures.setdefault(key, [0, exchange["method"] + " " + exchange["target"]])
        entry[0] += 1

    def check(self, exchange):
        self.exchanges += 1
        method = exchange["method"].lower()
        split = urllib.parse.urlsplit(exchange["target"])
        template, path_values = self.spec.match(split.path)
        if template is None:
            return self.check_router_problem(exchange, "route_not_found", 404, split.path)
        path_item = self.spec.spec["paths"][template]
        if method not in path_item:
            return self.check_method_not_allowed(exchange, template, path_item)
        operation = "%s %s" % (method.upper(), template)
        self.check_parameters(exchange, operation, template, method, path_values, split.query)
        self.check_request_body(exchange, operation, template, method)
        self.check_response(exchange, operation, pointer("paths", template, method, "responses"),
                            path_item[method]["responses"])

    # -- what the spec describes in prose (info.description): 404 and 405 from the router

    def check_router_problem(self, exchange, code, status, what):
        operation = "(router) " + code
        if exchange["status"] != status:
            return self.fail(exchange, operation, "no operation declares %s (answered %d)"
                             % (what, exchange["status"]))
        self.covered[(operation, status)] += 1
        self.check_body(exchange, operation,
                        {"application/problem+json": pointer("components", "schemas", "Problem")})
        body = self.parsed(exchange["response_body"])
        if isinstance(body, dict) and body.get("code") != code:
            self.fail(exchange, operation, "code %r, want %s" % (body.get("code"), code))

    def check_method_not_allowed(self, exchange, template, path_item):
        declared = {m.upper() for m in path_item if m in METHODS} - {"HEAD"}
        self.check_router_problem(exchange, "method_not_allowed", 405,
                                  "%s %s" % (exchange["method"], template))
        allow = self.header(exchange, "allow")
        if exchange["status"] == 405 and {m.strip() for m in (allow or "").split(",")} != declared:
            self.fail(exchange, "(router) method_not_allowed",
                      "Allow: %r, but the spec declares %s" % (allow, sorted(declared)))

    # -- the request

    def check_parameters(self, exchange, operation, template, method, path_values, query):
        declared = self.spec.parameters(template, method)
        values = [("path", name, value) for name, value in path_values.items()]
        values += [("query", name, value) for name, value in
                   urllib.parse.parse_qsl(query, keep_blank_values=True)]
        for location, name, value in values:
            found = declared.get((location, name.lower()))
            if found is None:
                self.fail(exchange, operation, "undeclared %s parameter %r" % (location, name))
                continue
            if exchange["status"] >= 400:
                continue  # a refused value is the server's business (e.g. limit=0 is a 400)
            parameter, schema_pointer = found
            if re.fullmatch(r"-?[0-9]+", value) and self.is_integer_schema(schema_pointer):
                value = int(value)
            for error in self.spec.errors(schema_pointer, value):
                self.fail(exchange, operation, "%s parameter %s: %s" % (location, name, error))

    def is_integer_schema(self, schema_pointer):
        schema, _ = resolve(self.spec.spec, {"$ref": schema_pointer}, schema_pointer)
        return schema.get("type") == "integer"

    def check_request_body(self, exchange, operation, template, method):
        text = exchange["request_body"]
        request_body = self.spec.spec["paths"][template][method].get("requestBody")
        if not text or request_body is None:
            return
        # 400 and 413 refuse what the spec does not allow, as does a batch item answered 400:
        # those bodies are not held to it. Nor is one a follower answered 307: it accepted
        # nothing, it sent the client to the leader, which checks the body (and answers 400).
        if exchange["status"] in (307, 400, 413) or self.has_malformed_item(exchange):
            return
        request_body, where = resolve(self.spec.spec, request_body,
                                      pointer("paths", template, method, "requestBody"))
        try:
            body = parse_json(text)
        except ValueError:
            return self.fail(exchange, operation, "a request body that is not JSON was accepted")
        if self.sampled_out(exchange, operation + " (request)", text):
            return
        # Read as JSON whatever its Content-Type (the spec says so): held to application/json.
        schema_pointer = where + "/content/application~1json/schema"
        for error in self.spec.errors(schema_pointer, body):
            self.fail(exchange, operation, "request body: " + error)

    def has_malformed_item(self, exchange):
        body = self.parsed(exchange["response_body"])
        results = body.get("results") if isinstance(body, dict) else None
        return isinstance(results, list) and any(
            isinstance(item, dict) and item.get("status") == 400 for item in results)

    # -- the response

    def header(self, exchange, name):
        for key, value in exchange["response_headers"]:
            if key == name:
                return value
        return None

    @staticmethod
    def parsed(text):
        try:
            return parse_json(text)
        except ValueError:
            return None

    def check_response(self, exchange, operation, responses_pointer, responses):
        status = str(exchange["status"])
        key = status if status in responses else status[0] + "XX" if (
            status[0] + "XX") in responses else "default" if "default" in responses else None
        if key is None:
            return self.fail(exchange, operation, "undeclared status %s" % status)
        self.covered[(operation, exchange["status"])] += 1
        response, where = resolve(self.spec.spec, responses[key], responses_pointer + "/" + key)
        declared_headers = {name.lower() for name in response.get("headers", {})}
        for name in API_HEADERS:
            if self.header(exchange, name) is not None and name not in declared_headers:
                self.fail(exchange, operation, "undeclared response header %s" % name)
        if "x-request-id" in declared_headers and self.header(exchange, "x-request-id") is None:
            self.fail(exchange, operation, "no X-Request-Id")
        if exchange["method"] == "HEAD":
            if exchange["response_body"]:
                self.fail(exchange, operation, "a HEAD response with a body")
            return
        self.check_body(exchange, operation, {name: "%s/content/%s/schema" % (
            where, name.replace("~", "~0").replace("/", "~1")) for name in response.get("content", {})})

    def check_body(self, exchange, operation, schemas):
        """schemas: the declared media types of the response, each to its schema's pointer."""
        text = exchange["response_body"]
        received = self.header(exchange, "content-type")
        if not schemas:
            if text:
                self.fail(exchange, operation, "a body, but the spec declares none")
            return
        declared = {media_type(name): name for name in schemas}
        name = declared.get(media_type(received))
        if name is None:
            return self.fail(exchange, operation, "Content-Type %r, the spec declares %s"
                             % (received, sorted(schemas)))
        if media_type(received) not in JSON_TYPES:
            return
        body = self.parsed(text)
        if body is None:
            return self.fail(exchange, operation, "the %s body is not JSON" % received)
        if self.sampled_out(exchange, operation, text):
            return
        for error in self.spec.errors(schemas[name], body):
            self.fail(exchange, operation, "response body: " + error)
        self.big_int64 += len(big_integers(body))

    def sampled_out(self, exchange, operation, text):
        """True for a large body past the first LARGE_VALIDATED of its operation and status."""
        if self.validate_all or len(text) < LARGE_BODY:
            return False
        key = (operation, exchange["status"])
        if self.large_validated[key] < LARGE_VALIDATED:
            self.large_validated[key] += 1
            return False
        self.large_skipped += 1
        return True

    # -- the report

    def report(self, out):
        print("checked %d exchanges; %d operation/status pairs covered; %d integers beyond "
              "2^53-1, all in int64 fields; %d bodies over %d bytes parsed, not validated "
              "(--all)" % (self.exchanges, len(self.covered), self.big_int64, self.large_skipped,
                           LARGE_BODY), file=out)
        shown = list(self.failures.items())[:REPORT_MAX]
        for (operation, status, message), (count, target) in shown:
            print("FAIL %s -> %s: %s (%d times; e.g. %s)"
                  % (operation, status, message, count, target), file=out)
        if len(self.failures) > len(shown):
            print("... and %d more kinds of failure" % (len(self.failures) - len(shown)), file=out)
        return not self.failures


def record_files(paths):
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, name) for name in os.listdir(path)
                            if name.endswith(".jsonl"))
        elif os.path.exists(path):
            files.append(path)
    return files


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=os.path.join(REPO, "docs", "openapi.yaml"))
    parser.add_argument("--expect", type=int, default=1, help="at least this many record files")
    parser.add_argument("--all", action="store_true", help="validate every large body too")
    parser.add_argument("records", nargs="+")
    arguments = parser.parse_args()
    files = record_files(arguments.records)
    if len(files) < arguments.expect:
        print("found %d record files in %s, want at least %d (did the integration tests run "
              "with COFFER_SPEC_RECORD?)" % (len(files), arguments.records, arguments.expect))
        return 1
    checker = Checker(Spec(arguments.spec), validate_all=arguments.all)
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                checker.check(json.loads(line))
    if checker.exchanges == 0:
        print("no exchanges recorded")
        return 1
    return 0 if checker.report(sys.stdout) else 1


if __name__ == "__main__":
    sys.exit(main())
