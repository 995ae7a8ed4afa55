#!/usr/bin/env python3
"""Drives Berth's ELBv2 API (AWS query protocol) with boto3 and validates every raw XML
response against botocore's `elbv2` model.

    elbv2_boto3.py --endpoint http://127.0.0.1:PORT

Credentials come from the environment; region us-east-1 (and eu-west-1 for the region check).
Every raw response (waiters' and paginators' included) is parsed as XML and checked: the
`<OpResponse xmlns=...>` document with `<OpResult>` and `ResponseMetadata/RequestId`, then the
result against the operation's output shape — members the model defines and no others,
required members, lists as `<member>`, integers/booleans/ISO 8601 timestamps, enums, lengths,
ranges and patterns. Expected errors must be `<ErrorResponse>` documents whose `Code` is the
`error.code` of an error the operation's model lists (or the common `ValidationError`), with a
message and a request id. Covers every operation Berth serves and checks that refused calls
leave nothing behind.

Prints a JSON summary line `{"validated": [...], ...}` last; exits 1 on the first failure.
"""

import argparse
import datetime
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

import boto3
import botocore
import botocore.config
import botocore.exceptions
import botocore.session

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from botovalidate import VALIDATED, check, fail, snake  # noqa: E402

XMLNS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
NS = "{" + XMLNS + "}"
COMMON_ERRORS = {"ValidationError", "InvalidAction"}


def local(tag):
    return tag[len(NS):] if tag.startswith(NS) else tag


def check_len(shape, n, path, errors):
    lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
    if lo is not None and n < lo or hi is not None and n > hi:
        errors.append(f"{path}: length {n} outside [{lo}, {hi}] of {shape.name}")


def validate_xml(shape, el, path, errors):
    """Validates element `el` (its children or text) against `shape`."""
    t = shape.type_name
    if t == "structure":
        members = shape.members
        seen = set()
        for child in el:
            name = local(child.tag)
            if name not in members:
                errors.append(f"{path}.{name}: not a member of {shape.name}")
                continue
            if name in seen:
                errors.append(f"{path}.{name}: given twice")
            seen.add(name)
            validate_xml(members[name], child, f"{path}.{name}", errors)
        for k in shape.required_members:
            if k not in seen:
                errors.append(f"{path}.{k}: required member of {shape.name} missing")
        if (el.text or "").strip():
            errors.append(f"{path}: text in a structure: {el.text!r}")
    elif t == "list":
        items = list(el)
        for i, child in enumerate(items):
            if local(child.tag) != "member":
                errors.append(f"{path}[{i}]: list item <{local(child.tag)}>, expected <member>")
            validate_xml(shape.member, child, f"{path}[{i}]", errors)
        check_len(shape, len(items), path, errors)
    elif t == "map":
        errors.append(f"{path}: maps are not expected in ELBv2 outputs")
    else:
        if len(el):
            errors.append(f"{path}: scalar {shape.name} has child elements")
            return
        text = el.text or ""
        if t == "string":
            if shape.enum and text not in shape.enum:
                errors.append(f"{path}: {text!r} not in enum {shape.name} {shape.enum}")
            check_len(shape, len(text), path, errors)
            pattern = shape.metadata.get("pattern")
            if pattern:
                try:
                    ok = re.fullmatch(pattern, text) is not None
                except re.error:
                    ok = True
                if not ok:
                    errors.append(f"{path}: {text!r} does not match {shape.name} pattern {pattern}")
        elif t in ("integer", "long"):
            if not re.fullmatch(r"-?\d+", text):
                errors.append(f"{path}: expected integer ({shape.name}), got {text!r}")
                return
            v = int(text)
            lo, hi = shape.metadata.get("min"), shape.metadata.get("max")
            if lo is not None and v < lo or hi is not None and v > hi:
                errors.append(f"{path}: {v} outside [{lo}, {hi}] of {shape.name}")
        elif t == "boolean":
            if text not in ("true", "false"):
                errors.append(f"{path}: expected true/false ({shape.name}), got {text!r}")
        elif t == "timestamp":
            if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", text):
                errors.append(f"{path}: expected an ISO 8601 timestamp ({shape.name}), got {text!r}")
            else:
                year = int(text[:4])
                if not 2017 < year < 2100:
                    errors.append(f"{path}: implausible timestamp {text}")
        elif t in ("float", "double"):
            try:
                float(text)
            except ValueError:
                errors.append(f"{path}: expected a number ({shape.name}), got {text!r}")
        else:
            errors.append(f"{path}: unhandled shape type {t}")


class Elbv2:
    """An elbv2 client whose every response is validated against the model (in the hook)."""

    def __init__(self, endpoint, region="us-east-1", unsigned=False, validate_params=True):
        self.model = botocore.session.get_session().get_service_model("elbv2")
        cfg = botocore.config.Config(retries={"total_max_attempts": 1}, parameter_validation=validate_params)
        if unsigned:
            cfg = cfg.merge(botocore.config.Config(signature_version=botocore.UNSIGNED))
        self.client = boto3.client("elbv2", endpoint_url=endpoint, region_name=region, config=cfg)
        self.raw = {}
        self.hook_validated = []
        self.client.meta.events.register(f"after-call.{self.model.service_id.hyphenize()}", self._after_call)

    def _after_call(self, http_response, parsed, model, **_):
        self.raw[model.name] = (http_response.status_code, http_response.content, dict(http_response.headers))
        if http_response.status_code == 200:
            self._check_response(model.name, http_response.content, dict(http_response.headers))
            self.hook_validated.append(model.name)

    def _check_response(self, op, body, headers):
        ctype = headers.get("Content-Type") or headers.get("content-type") or ""
        check(ctype.startswith("text/xml"), f"{op}: Content-Type {ctype!r}")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            fail(f"{op}: response is not XML ({e}): {body[:300]!r}")
        check(root.tag == NS + op + "Response", f"{op}: root element {root.tag}, expected {NS}{op}Response")
        om = self.model.operation_model(op)
        wrapper = om.output_shape.serialization.get("resultWrapper") if om.output_shape else None
        result = root.find(NS + (wrapper or op + "Result"))
        check(result is not None, f"{op}: no <{wrapper}> element: {body[:300]!r}")
        rid = root.find(f"{NS}ResponseMetadata/{NS}RequestId")
        check(rid is not None and (rid.text or "").strip(), f"{op}: no ResponseMetadata/RequestId")
        check([local(c.tag) for c in root] == [wrapper, "ResponseMetadata"], f"{op}: unexpected top-level elements {[local(c.tag) for c in root]}")
        errors = []
        if om.output_shape is not None:
            validate_xml(om.output_shape, result, op, errors)
        if errors:
            fail(f"{op} response does not match botocore's model:\n  " + "\n  ".join(errors) + f"\nbody: {body[:3000]!r}")

    def call(self, op, **kwargs):
        result = getattr(self.client, snake(op))(**kwargs)
        check(op in self.hook_validated, f"{op}: response not validated")
        self.hook_validated.remove(op)
        VALIDATED.append(op)
        return result

    def error(self, op, code, **kwargs):
        """Calls `op`, which must fail with `code`: an error the model lists for `op` (its
        `error.code`), or a common query-protocol error."""
        om = self.model.operation_model(op)
        modeled = {e.metadata.get("error", {}).get("code", e.name): e.name for e in om.error_shapes}
        check(code in modeled or code in COMMON_ERRORS or kwargs.pop("_auth", False), f"test bug: {code} is not an error of {op}")
        self.raw.pop(op, None)
        try:
            getattr(self.client, snake(op))(**kwargs)
        except botocore.exceptions.ClientError as e:
            got = e.response["Error"]["Code"]
            check(got == code, f"{op}: expected {code}, got {got}: {e}")
            check(e.response["Error"].get("Message"), f"{op}: {code} without a message")
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
            check(400 <= status < 500, f"{op}: {code} with HTTP {status}")
            self._check_error_body(op, code)
            VALIDATED.append(f"{op}!{code}")
            return e
        fail(f"{op} succeeded, expected {code}")

    def _check_error_body(self, op, code):
        check(op in self.raw, f"{op}: no raw error response captured")
        status, body, headers = self.raw.pop(op)
        ctype = headers.get("Content-Type") or headers.get("content-type") or ""
        check(ctype.startswith("text/xml"), f"{op}!{code}: Content-Type {ctype!r}")
        root = ET.fromstring(body)
        check(root.tag == NS + "ErrorResponse", f"{op}!{code}: root {root.tag}")
        err = root.find(NS + "Error")
        check(err is not None, f"{op}!{code}: no <Error>")
        fields = {local(c.tag): c.text for c in err}
        check(fields.get("Type") in ("Sender", "Receiver"), f"{op}!{code}: Type {fields.get('Type')!r}")
        check(fields.get("Code") == code, f"{op}!{code}: Code {fields.get('Code')!r}")
        check(fields.get("Message"), f"{op}!{code}: no Message")
        rid = root.find(NS + "RequestId")
        check(rid is not None and rid.text, f"{op}!{code}: no RequestId")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--port-base", type=int, default=18080, help="first listener port to use")
    args = ap.parse_args()
    elb = Elbv2(args.endpoint)
    P = args.port_base

    # ---- load balancers ----
    lb = elb.call("CreateLoadBalancer", Name="web", Subnets=["subnet-a", "subnet-b"], SecurityGroups=["sg-1"],
                  Scheme="internal", Tags=[{"Key": "team", "Value": "edge"}])["LoadBalancers"][0]
    lb_arn = lb["LoadBalancerArn"]
    check(re.fullmatch(r"arn:aws:elasticloadbalancing:us-east-1:\d{12}:loadbalancer/app/web/[0-9a-f]{16}", lb_arn), lb_arn)
    check(lb["Scheme"] == "internal" and lb["Type"] == "application", lb)
    check(isinstance(lb["CreatedTime"], datetime.datetime), lb)
    check(len(lb["AvailabilityZones"]) == 2, lb)
    dns = lb["DNSName"]
    elb.call("CreateLoadBalancer", Name="api", SubnetMappings=[{"SubnetId": "subnet-c", "PrivateIPv4Address": "10.0.0.5"}])
    elb.call("CreateLoadBalancer", Name="aux")
    elb.error("CreateLoadBalancer", "DuplicateLoadBalancerName", Name="web")
    again = elb.call("CreateLoadBalancer", Name="web", Subnets=["subnet-a", "subnet-b"], SecurityGroups=["sg-1"],
                     Scheme="internal")["LoadBalancers"][0]
    check(again["LoadBalancerArn"] == lb_arn, f"CreateLoadBalancer with the same settings is idempotent: {again}")
    elb.error("CreateLoadBalancer", "ValidationError", Name="bad_name!")
    elb.error("CreateLoadBalancer", "InvalidConfigurationRequest", Name="nlb", Type="network")
    before = len(elb.call("DescribeLoadBalancers")["LoadBalancers"])
    check(before == 3, f"{before} load balancers")
    w = elb.client.get_waiter("load_balancer_available")
    w.wait(Names=["web"], WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    VALIDATED.append("DescribeLoadBalancers~load_balancer_available")
    pages = list(elb.client.get_paginator("describe_load_balancers").paginate(PaginationConfig={"PageSize": 1}))
    names = [l["LoadBalancerName"] for p in pages for l in p["LoadBalancers"]]
    check(names == ["api", "aux", "web"] and len(pages) == 3, f"pagination: {names} in {len(pages)} pages")
    VALIDATED.append("DescribeLoadBalancers~paginate")
    elb.call("DescribeLoadBalancers", Names=["web"])
    elb.error("DescribeLoadBalancers", "LoadBalancerNotFound", Names=["nope"])
    elb.error("DescribeLoadBalancers", "LoadBalancerNotFound", LoadBalancerArns=[lb_arn.replace("/web/", "/zzz/")])
    attrs = elb.call("DescribeLoadBalancerAttributes", LoadBalancerArn=lb_arn)["Attributes"]
    check({"Key": "idle_timeout.timeout_seconds", "Value": "60"} in attrs, attrs)
    attrs = elb.call("ModifyLoadBalancerAttributes", LoadBalancerArn=lb_arn,
                     Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "120"}])["Attributes"]
    check({"Key": "idle_timeout.timeout_seconds", "Value": "120"} in attrs, attrs)
    elb.error("ModifyLoadBalancerAttributes", "ValidationError", LoadBalancerArn=lb_arn,
              Attributes=[{"Key": "idle_timeout.timeout_seconds", "Value": "99999"}])
    elb.call("SetSecurityGroups", LoadBalancerArn=lb_arn, SecurityGroups=["sg-2", "sg-3"])
    elb.call("SetSubnets", LoadBalancerArn=lb_arn, Subnets=["subnet-a", "subnet-d"])
    elb.call("SetIpAddressType", LoadBalancerArn=lb_arn, IpAddressType="dualstack")
    lb = elb.call("DescribeLoadBalancers", LoadBalancerArns=[lb_arn])["LoadBalancers"][0]
    check(lb["SecurityGroups"] == ["sg-2", "sg-3"] and lb["IpAddressType"] == "dualstack", lb)

    # ---- target groups ----
    tg = elb.call("CreateTargetGroup", Name="app", Protocol="HTTP", Port=8080, TargetType="ip", VpcId="vpc-1",
                  HealthCheckPath="/health", Matcher={"HttpCode": "200-299"})["TargetGroups"][0]
    tg_arn = tg["TargetGroupArn"]
    check(re.fullmatch(r"arn:aws:elasticloadbalancing:us-east-1:\d{12}:targetgroup/app/[0-9a-f]{16}", tg_arn), tg_arn)
    check(tg["HealthCheckIntervalSeconds"] == 30 and tg["HealthyThresholdCount"] == 5 and tg["ProtocolVersion"] == "HTTP1", tg)
    tg2_arn = elb.call("CreateTargetGroup", Name="api", Protocol="HTTP", Port=9090, TargetType="ip",
                       ProtocolVersion="HTTP2")["TargetGroups"][0]["TargetGroupArn"]
    tg3_arn = elb.call("CreateTargetGroup", Name="spare", Protocol="HTTP", Port=80)["TargetGroups"][0]["TargetGroupArn"]
    elb.error("CreateTargetGroup", "DuplicateTargetGroupName", Name="app", Protocol="HTTP", Port=8080, TargetType="ip")
    again = elb.call("CreateTargetGroup", Name="api", Protocol="HTTP", Port=9090, TargetType="ip",
                     ProtocolVersion="HTTP2")["TargetGroups"][0]
    check(again["TargetGroupArn"] == tg2_arn, f"CreateTargetGroup with the same settings is idempotent: {again}")
    elb.error("CreateTargetGroup", "InvalidConfigurationRequest", Name="tls", Protocol="HTTPS", Port=443)
    elb.error("CreateTargetGroup", "ValidationError", Name="slow", Protocol="HTTP", Port=80, HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=10)
    check(len(elb.call("DescribeTargetGroups")["TargetGroups"]) == 3, "refused target groups were stored")
    elb.call("DescribeTargetGroups", Names=["app", "api"])
    elb.error("DescribeTargetGroups", "TargetGroupNotFound", Names=["nope"])
    tg = elb.call("ModifyTargetGroup", TargetGroupArn=tg_arn, HealthCheckIntervalSeconds=10, HealthyThresholdCount=2)["TargetGroups"][0]
    check(tg["HealthCheckIntervalSeconds"] == 10, tg)
    attrs = elb.call("DescribeTargetGroupAttributes", TargetGroupArn=tg_arn)["Attributes"]
    check({"Key": "deregistration_delay.timeout_seconds", "Value": "300"} in attrs, attrs)
    elb.call("ModifyTargetGroupAttributes", TargetGroupArn=tg_arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "5"},
        {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"},
        {"Key": "stickiness.enabled", "Value": "true"}])
    elb.error("ModifyTargetGroupAttributes", "ValidationError", TargetGroupArn=tg_arn,
              Attributes=[{"Key": "slow_start.duration_seconds", "Value": "10"}])
    elb.error("ModifyTargetGroupAttributes", "InvalidConfigurationRequest", TargetGroupArn=tg_arn,
              Attributes=[{"Key": "slow_start.duration_seconds", "Value": "60"}])

    # ---- targets ----
    elb.call("RegisterTargets", TargetGroupArn=tg_arn, Targets=[{"Id": "127.0.0.1", "Port": 18999}, {"Id": "127.0.0.2"}])
    elb.error("RegisterTargets", "InvalidTarget", TargetGroupArn=tg_arn, Targets=[{"Id": "not-an-ip"}])
    elb.error("RegisterTargets", "InvalidTarget", TargetGroupArn=tg3_arn, Targets=[{"Id": "i-0123456789abcdef0"}])
    elb.error("RegisterTargets", "TargetGroupNotFound", TargetGroupArn=tg_arn.replace("/app/", "/zzz/"), Targets=[{"Id": "127.0.0.1"}])
    health = elb.call("DescribeTargetHealth", TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    got = sorted((h["Target"]["Id"], h["Target"]["Port"]) for h in health)
    check(got == [("127.0.0.1", 18999), ("127.0.0.2", 8080)], f"targets {got}")
    check(all(h["TargetHealth"]["State"] == "unused" for h in health), health)

    # ---- listeners ----
    listener = elb.call("CreateListener", LoadBalancerArn=lb_arn, Protocol="HTTP", Port=P,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
                        Tags=[{"Key": "k", "Value": "v"}])["Listeners"][0]
    l_arn = listener["ListenerArn"]
    check(re.fullmatch(r"arn:aws:elasticloadbalancing:us-east-1:\d{12}:listener/app/web/[0-9a-f]{16}/[0-9a-f]{16}", l_arn), l_arn)
    check(listener["DefaultActions"][0]["ForwardConfig"]["TargetGroups"][0]["TargetGroupArn"] == tg_arn, listener)
    health = elb.call("DescribeTargetHealth", TargetGroupArn=tg_arn, Targets=[{"Id": "127.0.0.2"}])["TargetHealthDescriptions"]
    check(len(health) == 1 and health[0]["TargetHealth"]["State"] in ("initial", "healthy", "unhealthy"), health)
    check(health[0]["HealthCheckPort"] == "8080", health)
    elb.error("CreateListener", "UnsupportedProtocol", LoadBalancerArn=lb_arn, Protocol="HTTPS", Port=P + 1,
              Certificates=[{"CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/x"}],
              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    # The same settings again: the same listener (AWS's idempotency); other ones: DuplicateListener.
    same = elb.call("CreateListener", LoadBalancerArn=lb_arn, Protocol="HTTP", Port=P,
                    DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])["Listeners"]
    check(len(same) == 1 and same[0]["Port"] == P and same[0]["LoadBalancerArn"] == lb_arn, same)
    check(len(elb.call("DescribeListeners", LoadBalancerArn=lb_arn)["Listeners"]) == 1, "idempotent CreateListener stored nothing")
    elb.error("CreateListener", "DuplicateListener", LoadBalancerArn=lb_arn, Protocol="HTTP", Port=P,
              DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}])
    api_arn = elb.call("DescribeLoadBalancers", Names=["api"])["LoadBalancers"][0]["LoadBalancerArn"]
    elb.error("CreateListener", "DuplicateListener", LoadBalancerArn=api_arn, Protocol="HTTP", Port=P,
              DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}])
    elb.error("CreateListener", "TargetGroupAssociationLimit", LoadBalancerArn=api_arn, Protocol="HTTP", Port=P + 2,
              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    elb.error("CreateListener", "LoadBalancerNotFound", LoadBalancerArn=lb_arn.replace("/web/", "/zzz/"), Protocol="HTTP",
              Port=P + 3, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    elb.error("CreateListener", "TargetGroupNotFound", LoadBalancerArn=api_arn, Protocol="HTTP", Port=P + 3,
              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn.replace("/app/", "/zzz/")}])
    l2 = elb.call("CreateListener", LoadBalancerArn=api_arn, Protocol="HTTP", Port=P + 4,
                  DefaultActions=[{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}])
    l2_arn = l2["Listeners"][0]["ListenerArn"]
    ls = elb.call("DescribeListeners", LoadBalancerArn=lb_arn)["Listeners"]
    check([x["ListenerArn"] for x in ls] == [l_arn], ls)
    elb.call("DescribeListeners", ListenerArns=[l_arn, l2_arn])
    elb.error("DescribeListeners", "ListenerNotFound", ListenerArns=[l_arn[:-16] + "0" * 16])
    elb.call("ModifyListener", ListenerArn=l2_arn, Port=P + 5,
             DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain", "MessageBody": "down <for> maintenance & more"}}])
    l2 = elb.call("DescribeListeners", ListenerArns=[l2_arn])["Listeners"][0]
    check(l2["Port"] == P + 5 and l2["DefaultActions"][0]["FixedResponseConfig"]["MessageBody"] == "down <for> maintenance & more", l2)
    check(len(elb.call("DescribeListeners", LoadBalancerArn=api_arn)["Listeners"]) == 1, "refused listeners were stored")

    # ---- rules ----
    r1 = elb.call("CreateRule", ListenerArn=l_arn, Priority=10,
                  Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/*"]}},
                              {"Field": "http-request-method", "HttpRequestMethodConfig": {"Values": ["GET", "POST"]}}],
                  Actions=[{"Type": "forward", "ForwardConfig": {"TargetGroups": [
                      {"TargetGroupArn": tg_arn, "Weight": 3}, {"TargetGroupArn": tg2_arn, "Weight": 1}],
                      "TargetGroupStickinessConfig": {"Enabled": True, "DurationSeconds": 60}}}])["Rules"][0]
    r1_arn = r1["RuleArn"]
    check(re.fullmatch(r"arn:aws:elasticloadbalancing:us-east-1:\d{12}:listener-rule/app/web/[0-9a-f]{16}/[0-9a-f]{16}/[0-9a-f]{16}", r1_arn), r1_arn)
    check(r1["Priority"] == "10" and r1["IsDefault"] is False, r1)
    r2_arn = elb.call("CreateRule", ListenerArn=l_arn, Priority=20,
                      Conditions=[{"Field": "host-header", "Values": ["*.example.com"]},
                                  {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["prod"]}},
                                  {"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "v", "Value": "2"}, {"Value": "beta"}]}},
                                  {"Field": "source-ip", "SourceIpConfig": {"Values": ["10.0.0.0/8", "::1/128"]}}],
                      Actions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200", "ContentType": "application/json", "MessageBody": "{}"}}])["Rules"][0]["RuleArn"]
    rule_args = dict(ListenerArn=l_arn, Actions=[{"Type": "forward", "TargetGroupArn": tg2_arn}])
    elb.error("CreateRule", "PriorityInUse", Priority=10, Conditions=[{"Field": "path-pattern", "Values": ["/x"]}], **rule_args)
    elb.error("CreateRule", "ValidationError", Priority=30, Conditions=[{"Field": "path-pattern", "Values": ["/a b"]}], **rule_args)
    elb.error("CreateRule", "ValidationError", Priority=30, Conditions=[{"Field": "path-pattern", "Values": ["/" + "a" * 200]}], **rule_args)
    elb.error("CreateRule", "ValidationError", Priority=30, Conditions=[{"Field": "host-header", "Values": [f"h{i}.example.com" for i in range(6)]}], **rule_args)
    elb.error("CreateRule", "ValidationError", Priority=30, Conditions=[{"Field": "source-ip", "SourceIpConfig": {"Values": ["10.0.0.0/40"]}}], **rule_args)
    elb.error("CreateRule", "ValidationError", Priority=30, Conditions=[{"Field": "cookie", "Values": ["x"]}], **rule_args)
    elb.error("CreateRule", "ListenerNotFound", Priority=30, Conditions=[{"Field": "path-pattern", "Values": ["/x"]}],
              ListenerArn=l_arn[:-16] + "0" * 16, Actions=[{"Type": "forward", "TargetGroupArn": tg2_arn}])
    rules = elb.call("DescribeRules", ListenerArn=l_arn)["Rules"]
    check([r["Priority"] for r in rules] == ["10", "20", "default"], [r["Priority"] for r in rules])
    check(rules[-1]["IsDefault"] is True and rules[-1]["Conditions"] == [], rules[-1])
    default_arn = rules[-1]["RuleArn"]
    q = [c for c in rules[1]["Conditions"] if c["Field"] == "query-string"][0]
    check(q["QueryStringConfig"]["Values"] == [{"Key": "v", "Value": "2"}, {"Value": "beta"}], q)
    pages = list(elb.client.get_paginator("describe_rules").paginate(ListenerArn=l_arn, PaginationConfig={"PageSize": 2})) \
        if elb.client.can_paginate("describe_rules") else None
    if pages is not None:
        check(sum(len(p["Rules"]) for p in pages) == 3, pages)
        VALIDATED.append("DescribeRules~paginate")
    else:
        first = elb.call("DescribeRules", ListenerArn=l_arn, PageSize=2)
        rest = elb.call("DescribeRules", ListenerArn=l_arn, PageSize=2, Marker=first["NextMarker"])
        check(len(first["Rules"]) == 2 and len(rest["Rules"]) == 1 and "NextMarker" not in rest, (first, rest))
    elb.call("DescribeRules", RuleArns=[r1_arn, default_arn])
    elb.error("DescribeRules", "RuleNotFound", RuleArns=[r1_arn[:-16] + "0" * 16])
    m = elb.call("ModifyRule", RuleArn=r1_arn, Conditions=[{"Field": "path-pattern", "Values": ["/v2/*"]}])["Rules"][0]
    check(m["Conditions"][0]["Values"] == ["/v2/*"], m)
    elb.call("ModifyRule", RuleArn=default_arn, Actions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
    elb.error("ModifyRule", "OperationNotPermitted", RuleArn=default_arn, Conditions=[{"Field": "path-pattern", "Values": ["/"]}])
    sp = elb.call("SetRulePriorities", RulePriorities=[{"RuleArn": r1_arn, "Priority": 20}, {"RuleArn": r2_arn, "Priority": 10}])["Rules"]
    check(sorted(r["Priority"] for r in sp) == ["10", "20"], sp)
    elb.error("SetRulePriorities", "PriorityInUse", RulePriorities=[{"RuleArn": r1_arn, "Priority": 10}])
    elb.error("SetRulePriorities", "OperationNotPermitted", RulePriorities=[{"RuleArn": default_arn, "Priority": 5}])
    elb.error("DeleteRule", "OperationNotPermitted", RuleArn=default_arn)
    elb.call("DeleteRule", RuleArn=r2_arn)
    elb.error("DeleteRule", "RuleNotFound", RuleArn=r2_arn)

    # ---- tags ----
    elb.call("AddTags", ResourceArns=[lb_arn, tg_arn, l_arn, r1_arn], Tags=[{"Key": "env", "Value": "test"}])
    elb.error("AddTags", "DuplicateTagKeys", ResourceArns=[lb_arn], Tags=[{"Key": "a", "Value": "1"}, {"Key": "a", "Value": "2"}])
    elb.error("AddTags", "TargetGroupNotFound", ResourceArns=[lb_arn, tg_arn.replace("/app/", "/zzz/")], Tags=[{"Key": "half", "Value": "x"}])
    td = elb.call("DescribeTags", ResourceArns=[lb_arn, tg_arn, l_arn, r1_arn, tg3_arn])["TagDescriptions"]
    by = {d["ResourceArn"]: {t["Key"]: t["Value"] for t in d.get("Tags", [])} for d in td}
    check(by[lb_arn] == {"team": "edge", "env": "test"} and by[l_arn] == {"k": "v", "env": "test"} and by[tg3_arn] == {}, by)
    elb.call("RemoveTags", ResourceArns=[lb_arn], TagKeys=["team"])
    td = elb.call("DescribeTags", ResourceArns=[lb_arn])["TagDescriptions"]
    check(td[0]["Tags"] == [{"Key": "env", "Value": "test"}], td)
    elb.error("DescribeTags", "LoadBalancerNotFound", ResourceArns=[lb_arn.replace("/web/", "/zzz/")])

    elb.call("DescribeAccountLimits")

    # ---- deletion ----
    elb.error("DeleteTargetGroup", "ResourceInUse", TargetGroupArn=tg_arn)
    elb.call("DeregisterTargets", TargetGroupArn=tg_arn, Targets=[{"Id": "127.0.0.2"}])
    elb.error("DeregisterTargets", "InvalidTarget", TargetGroupArn=tg_arn, Targets=[{"Id": "127.0.0.2"}])
    health = elb.call("DescribeTargetHealth", TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    check([h["Target"]["Id"] for h in health if h["TargetHealth"]["State"] != "draining"] == ["127.0.0.1"], health)
    elb.call("DeleteListener", ListenerArn=l_arn)
    elb.error("DeleteListener", "ListenerNotFound", ListenerArn=l_arn)
    elb.error("DescribeRules", "RuleNotFound", RuleArns=[r1_arn])
    elb.call("DeleteTargetGroup", TargetGroupArn=tg_arn)
    elb.call("DeleteTargetGroup", TargetGroupArn=tg_arn)  # idempotent
    elb.call("DeleteLoadBalancer", LoadBalancerArn=api_arn)
    elb.error("DescribeListeners", "ListenerNotFound", ListenerArns=[l2_arn])
    elb.call("DeleteLoadBalancer", LoadBalancerArn=api_arn)  # idempotent
    elb.error("DescribeTargetGroups", "LoadBalancerNotFound", LoadBalancerArn=api_arn)

    # ---- out-of-range input botocore would refuse itself, checked by the server ----
    raw = Elbv2(args.endpoint, validate_params=False)
    lb_arn2 = raw.call("CreateLoadBalancer", Name="ports")["LoadBalancers"][0]["LoadBalancerArn"]
    tgp = raw.call("CreateTargetGroup", Name="ports", Protocol="HTTP", Port=80, TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    for port in (0, 65536, -1):
        raw.error("CreateTargetGroup", "ValidationError", Name="badport", Protocol="HTTP", Port=port)
        raw.error("CreateListener", "ValidationError", LoadBalancerArn=lb_arn2, Protocol="HTTP", Port=port,
                  DefaultActions=[{"Type": "forward", "TargetGroupArn": tgp}])
        raw.error("RegisterTargets", "ValidationError", TargetGroupArn=tgp, Targets=[{"Id": "10.0.0.1", "Port": port}])
    raw.error("CreateRule", "ValidationError", ListenerArn=l2_arn.replace("0", "1"), Priority=0,
              Conditions=[{"Field": "path-pattern", "Values": ["/x"]}], Actions=[{"Type": "forward", "TargetGroupArn": tgp}])
    raw.error("CreateLoadBalancer", "ValidationError", Name="x" * 40)
    check(raw.call("DescribeListeners", LoadBalancerArn=lb_arn2)["Listeners"] == [], "a refused listener was stored")
    check(raw.call("DescribeTargetHealth", TargetGroupArn=tgp)["TargetHealthDescriptions"] == [], "a refused target was stored")
    raw.call("DeleteLoadBalancer", LoadBalancerArn=lb_arn2)
    raw.call("DeleteTargetGroup", TargetGroupArn=tgp)

    # ---- regions are separate ----
    eu = Elbv2(args.endpoint, region="eu-west-1")
    check(eu.call("DescribeLoadBalancers")["LoadBalancers"] == [], "eu-west-1 sees us-east-1's load balancers")
    eu_lb = eu.call("CreateLoadBalancer", Name="web")["LoadBalancers"][0]["LoadBalancerArn"]
    check(":eu-west-1:" in eu_lb, eu_lb)
    eu.call("DeleteLoadBalancer", LoadBalancerArn=eu_lb)

    # ---- unsigned ----
    anon = Elbv2(args.endpoint, unsigned=True)
    anon.error("DescribeLoadBalancers", "MissingAuthenticationToken", _auth=True)

    print(json.dumps({"validated": VALIDATED, "dns": dns}))


if __name__ == "__main__":
    main()
