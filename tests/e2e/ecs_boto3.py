#!/usr/bin/env python3
"""Drives Berth's ECS API with boto3 and validates every response against botocore's model.

    ecs_boto3.py --endpoint http://127.0.0.1:PORT --registry 127.0.0.1:PORT [--image REF]

Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY); region
us-east-1. Every raw response body, including those of waiters and paginators, is checked
against the operation's output shape (see `botovalidate.py`): required members, types, enums,
epoch-second timestamps, lengths and patterns, no members the model lacks. Expected errors must
carry a `__type` the operation's model lists, with a message. Covers clusters (tags, settings,
statistics, pagination, capacity providers), task definitions (a rich registration, listing,
deregistration, deletion), the local agent's container instance (attributes, draining), and a
real task of `--image` (default `<registry>/bb:1`, a busybox image with `sleep`) from RunTask
through the tasks_running and tasks_stopped waiters; resource tags; error cases; a FARGATE task
(ENI attachment with its address, platform capacity not listed as the user's instances).

Prints a JSON summary line `{"validated": [...], ...}` last; exits 1 on the first failure.
"""

import argparse
import atexit
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from botovalidate import VALIDATED, Client, check, fail, snake, validate  # noqa: E402

REGION = "us-east-1"
ARN = r"arn:aws:ecs:us-east-1:\d{12}:"


def arn_re(kind, rest):
    return re.compile(ARN + kind + "/" + rest)


class Ecs(Client):
    """The ECS client: strict error bodies, and every response validated in the hook."""

    def __init__(self, endpoint):
        super().__init__("ecs", endpoint, REGION, strict_errors=True, validate_all=True)

    def waiter(self, name, **kwargs):
        """Runs botocore's waiter `name` (1 s delay, bounded); each of its calls is validated."""
        before = len(self.hook_validated)
        w = self.client.get_waiter(name)
        try:
            w.wait(WaiterConfig={"Delay": 1, "MaxAttempts": 90}, **kwargs)
        except Exception as e:  # botocore.exceptions.WaiterError
            fail(f"waiter {name}: {e}; last response: {str(getattr(e, 'last_response', None))[:3000]}")
        calls = self.hook_validated[before:]
        check(calls, f"waiter {name} made no call")
        VALIDATED.append(f"{calls[0]}~{name}")
        return len(calls)

    def pages(self, op, key, **kwargs):
        """Collects `key` over every page of `op` with maxResults=1 and nextToken."""
        out, token, n = [], None, 0
        while True:
            kw = dict(kwargs, maxResults=1)
            if token:
                kw["nextToken"] = token
            _, doc = self.call(op, **kw)
            check(len(doc[key]) <= 1, f"{op} maxResults=1 gave {doc}")
            out += doc[key]
            n += 1
            token = doc.get("nextToken")
            check(n < 1000, f"{op}: pagination does not end")
            if not token:
                return out

    def paginate(self, op, key, page_size, **kwargs):
        """Collects `key` over botocore's paginator of `op`; every page is validated."""
        before = len(self.hook_validated)
        out, pages = [], 0
        for page in self.client.get_paginator(snake(op)).paginate(
            PaginationConfig={"PageSize": page_size}, **kwargs
        ):
            pages += 1
            check(len(page[key]) <= page_size, f"{op} paginator: page of {len(page[key])} > {page_size}")
            out.extend(page[key])
        check(len(self.hook_validated) - before == pages, f"{op} paginator: pages not all validated")
        VALIDATED.append(f"{op}~paginator")
        return out, pages


def stop_on_exit(ecs, cluster, task, state):
    """Stops `task` when the script exits before it did (a failed check): no container left."""

    def stop():
        if not state.get("stopped"):
            try:
                ecs.client.stop_task(cluster=cluster, task=task, reason="ecs_boto3.py exiting")
            except Exception as e:  # the server may be gone already
                print(f"ecs_boto3.py: could not stop {task}: {e}", file=sys.stderr)

    atexit.register(stop)


def tags_of(items):
    return sorted((t["key"], t["value"]) for t in items)


def self_test(model):
    """The validator must reject what botocore's model does not allow (ECS shapes)."""
    shape = model.operation_model("DescribeTasks").output_shape
    good = {"tasks": [{"taskArn": "arn:aws:ecs:us-east-1:000000000000:task/c/1", "createdAt": 1700000000.25,
                       "containers": [{"name": "a", "exitCode": 0}], "tags": [{"key": "k", "value": "v"}]}],
            "failures": [{"arn": "x", "reason": "MISSING"}]}
    errors = []
    validate(shape, good, "good", errors)
    check(not errors, f"validator self-test: {errors}")
    bad = [
        {"tasks": [{"createdAt": "2024-01-01T00:00:00Z"}]},
        {"tasks": [{"createdAt": 1700000000000}]},
        {"tasks": [{"containers": [{"exitCode": "0"}]}]},
        {"tasks": [{"launchType": "SOMETIMES"}]},
        {"tasks": [{"tags": [{"Key": "k", "Value": "v"}]}]},
        {"tasks": [{"bogus": 1}]},
        {"tasks": [{"containers": [{"healthStatus": None}]}]},
        {"failures": {"arn": "x"}},
    ]
    for b in bad:
        errors = []
        validate(shape, b, "bad", errors)
        check(errors, f"validator self-test accepted {b}")
    shape = model.operation_model("DescribeTaskDefinition").output_shape
    errors = []
    validate(shape, {"taskDefinition": {"containerDefinitions": [{"name": "a", "portMappings": [{"containerPort": "80"}]}]}}, "bad", errors)
    check(errors, "validator self-test accepted a string containerPort")
    errors = []
    validate(shape, {"taskDefinition": {"cpu": 256}}, "bad", errors)
    check(errors, "validator self-test accepted a numeric task cpu (a string in ECS)")


def wait_instance(ecs, cluster):
    """The local agent's container instance in `cluster` (waits, bounded)."""
    deadline = time.time() + 60
    while True:
        _, doc = ecs.call("ListContainerInstances", cluster=cluster)
        if doc["containerInstanceArns"]:
            return doc["containerInstanceArns"]
        check(time.time() < deadline, f"no container instance registered in {cluster} after 60 s")
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--image")
    p.add_argument("--cluster", default="default", help="cluster of the local agent")
    a = p.parse_args()
    image = a.image or f"{a.registry}/bb:1"
    ecs = Ecs(a.endpoint)
    self_test(ecs.model)
    sfx = os.urandom(3).hex()

    # ---- clusters ------------------------------------------------------------------------
    c1, c2 = f"boto-{sfx}-a", f"boto-{sfx}-b"
    _, doc = ecs.call(
        "CreateCluster",
        clusterName=c1,
        tags=[{"key": "team", "value": "berth"}, {"key": "env", "value": "test"}],
        settings=[{"name": "containerInsights", "value": "enabled"}],
        configuration={"executeCommandConfiguration": {"logging": "DEFAULT"}},
    )
    cl = doc["cluster"]
    check(cl["clusterName"] == c1 and cl["status"] == "ACTIVE", f"CreateCluster {cl}")
    check(arn_re("cluster", re.escape(c1)).fullmatch(cl["clusterArn"]), f"cluster ARN {cl['clusterArn']}")
    check(cl.get("settings") == [{"name": "containerInsights", "value": "enabled"}], f"settings {cl.get('settings')}")
    check(tags_of(cl.get("tags", [])) == [("env", "test"), ("team", "berth")], f"CreateCluster tags {cl.get('tags')}")
    c1_arn = cl["clusterArn"]
    _, doc = ecs.call("CreateCluster", clusterName=c1)
    check(doc["cluster"]["clusterArn"] == c1_arn, "CreateCluster of an existing cluster returns it")
    ecs.call("CreateCluster", clusterName=c2)
    ecs.error("CreateCluster", "InvalidParameterException", clusterName="bad name!")
    ecs.error("CreateCluster", "InvalidParameterException", clusterName=f"boto-{sfx}-c",
              settings=[{"name": "containerInsights", "value": "sometimes"}])

    _, doc = ecs.call("DescribeClusters", clusters=[c1, c2 + "-missing"], include=["TAGS", "STATISTICS", "SETTINGS"])
    check([x["clusterArn"] for x in doc["clusters"]] == [c1_arn], f"DescribeClusters {doc}")
    check([f["reason"] for f in doc["failures"]] == ["MISSING"], f"DescribeClusters failures {doc['failures']}")
    check(doc["failures"][0]["arn"].endswith(f"cluster/{c2}-missing"), f"failure arn {doc['failures']}")
    d = doc["clusters"][0]
    check(tags_of(d["tags"]) == [("env", "test"), ("team", "berth")], f"DescribeClusters tags {d}")
    stats = {s["name"]: s["value"] for s in d.get("statistics", [])}
    check("runningEC2TasksCount" in stats, f"statistics {d.get('statistics')}")
    check(d["runningTasksCount"] == 0 and d["registeredContainerInstancesCount"] == 0, f"counts {d}")
    _, doc = ecs.call("DescribeClusters", clusters=[c1_arn])
    check("tags" not in doc["clusters"][0] or doc["clusters"][0]["tags"] == [], "tags only with include=TAGS")

    before = len(VALIDATED)
    arns = ecs.pages("ListClusters", "clusterArns")
    pages = len(VALIDATED) - before
    check(len(arns) == len(set(arns)), f"ListClusters pages overlap: {arns}")
    check(c1_arn in arns and any(x.endswith(f"cluster/{c2}") for x in arns), f"ListClusters {arns}")
    check(any(x.endswith(f"cluster/{a.cluster}") for x in arns), f"ListClusters lacks {a.cluster}: {arns}")
    check(pages >= 3, f"ListClusters maxResults=1: {pages} pages for {len(arns)} clusters")
    all_arns, _ = ecs.paginate("ListClusters", "clusterArns", 1)
    check(sorted(all_arns) == sorted(arns), "ListClusters paginator agrees with nextToken")
    ecs.error("ListClusters", "InvalidParameterException", nextToken="!!not-a-token!!")

    _, doc = ecs.call(
        "UpdateCluster",
        cluster=c1,
        settings=[{"name": "containerInsights", "value": "disabled"}],
        configuration={"executeCommandConfiguration": {"logging": "NONE"}},
    )
    check(doc["cluster"]["settings"] == [{"name": "containerInsights", "value": "disabled"}], f"UpdateCluster {doc}")
    check(doc["cluster"]["configuration"]["executeCommandConfiguration"]["logging"] == "NONE", f"UpdateCluster {doc}")
    _, doc = ecs.call("UpdateClusterSettings", cluster=c1, settings=[{"name": "containerInsights", "value": "enhanced"}])
    check(doc["cluster"]["settings"] == [{"name": "containerInsights", "value": "enhanced"}], f"UpdateClusterSettings {doc}")
    ecs.error("UpdateCluster", "ClusterNotFoundException", cluster=f"{c1}-missing",
              settings=[{"name": "containerInsights", "value": "enabled"}])

    # ---- capacity providers --------------------------------------------------------------
    cp = f"boto-{sfx}-cp"
    asg = f"arn:aws:autoscaling:us-east-1:000000000000:autoScalingGroup:{'0' * 8}-1111-2222-3333-{'4' * 12}:autoScalingGroupName/asg-{sfx}"
    _, doc = ecs.call(
        "CreateCapacityProvider",
        name=cp,
        autoScalingGroupProvider={
            "autoScalingGroupArn": asg,
            "managedScaling": {"status": "ENABLED", "targetCapacity": 90, "minimumScalingStepSize": 1,
                               "maximumScalingStepSize": 10, "instanceWarmupPeriod": 60},
            "managedTerminationProtection": "DISABLED",
        },
        tags=[{"key": "team", "value": "berth"}],
    )
    p = doc["capacityProvider"]
    check(p["name"] == cp and p["status"] == "ACTIVE", f"CreateCapacityProvider {p}")
    check(arn_re("capacity-provider", re.escape(cp)).fullmatch(p["capacityProviderArn"]), p["capacityProviderArn"])
    check(p["autoScalingGroupProvider"]["autoScalingGroupArn"] == asg, f"asg {p}")
    ecs.error("CreateCapacityProvider", "ClientException", name=cp, autoScalingGroupProvider={"autoScalingGroupArn": asg})
    ecs.error("CreateCapacityProvider", "InvalidParameterException", name="fargate-mine",
              autoScalingGroupProvider={"autoScalingGroupArn": asg})
    _, doc = ecs.call("DescribeCapacityProviders", capacityProviders=[cp, "FARGATE", f"{cp}-missing"], include=["TAGS"])
    check([x["name"] for x in doc["capacityProviders"]] == [cp, "FARGATE"], f"DescribeCapacityProviders {doc}")
    check(tags_of(doc["capacityProviders"][0]["tags"]) == [("team", "berth")], f"provider tags {doc}")
    check([f["reason"] for f in doc["failures"]] == ["MISSING"], f"DescribeCapacityProviders failures {doc}")
    names = [x["name"] for x in ecs.pages("DescribeCapacityProviders", "capacityProviders", include=["TAGS"])]
    check(cp in names and "FARGATE" in names and len(names) == len(set(names)), f"DescribeCapacityProviders pages {names}")

    _, doc = ecs.call(
        "PutClusterCapacityProviders",
        cluster=c1,
        capacityProviders=[cp, "FARGATE"],
        defaultCapacityProviderStrategy=[{"capacityProvider": cp, "weight": 1, "base": 1}],
    )
    check(doc["cluster"]["capacityProviders"] == [cp, "FARGATE"], f"PutClusterCapacityProviders {doc}")
    check(doc["cluster"]["defaultCapacityProviderStrategy"] == [{"capacityProvider": cp, "weight": 1, "base": 1}], f"{doc}")
    ecs.error("PutClusterCapacityProviders", "InvalidParameterException", cluster=c1,
              capacityProviders=[f"{cp}-missing"], defaultCapacityProviderStrategy=[])
    ecs.error("PutClusterCapacityProviders", "ClusterNotFoundException", cluster=f"{c1}-missing",
              capacityProviders=[], defaultCapacityProviderStrategy=[])
    # In use by c1: refused with an error the model lists for DeleteCapacityProvider.
    ecs.error("DeleteCapacityProvider", "ClientException", capacityProvider=cp)
    ecs.call("PutClusterCapacityProviders", cluster=c1, capacityProviders=[], defaultCapacityProviderStrategy=[])
    _, doc = ecs.call("DeleteCapacityProvider", capacityProvider=cp)
    check(doc["capacityProvider"]["status"] == "INACTIVE", f"DeleteCapacityProvider {doc}")
    ecs.error("DeleteCapacityProvider", "InvalidParameterException", capacityProvider=cp)

    # ---- task definitions ----------------------------------------------------------------
    fam = f"boto-{sfx}-rich"
    rich = dict(
        family=fam,
        networkMode="bridge",
        cpu="256",
        memory="512",
        requiresCompatibilities=["EC2"],
        volumes=[{"name": "data"}, {"name": "hostdir", "host": {"sourcePath": "/tmp"}}],
        placementConstraints=[{"type": "memberOf", "expression": "attribute:ecs.os-type == linux"}],
        tags=[{"key": "team", "value": "berth"}, {"key": "kind", "value": "rich"}],
        containerDefinitions=[
            {
                "name": "init",
                "image": image,
                "essential": False,
                "memory": 32,
                "command": ["true"],
            },
            {
                "name": "app",
                "image": image,
                "cpu": 128,
                "memory": 256,
                "memoryReservation": 128,
                "essential": True,
                "entryPoint": ["/bin/sh", "-c"],
                "command": ["sleep 600"],
                "workingDirectory": "/",
                "environment": [{"name": "GREETING", "value": "hello"}, {"name": "MODE", "value": "test"}],
                "portMappings": [
                    {"containerPort": 8080, "hostPort": 0, "protocol": "tcp", "name": "http"},
                    {"containerPort": 5353, "protocol": "udp"},
                ],
                "healthCheck": {"command": ["CMD-SHELL", "true"], "interval": 5, "timeout": 2, "retries": 3,
                                "startPeriod": 1},
                "dependsOn": [{"containerName": "init", "condition": "COMPLETE"}],
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
                "mountPoints": [
                    {"sourceVolume": "data", "containerPath": "/data", "readOnly": False},
                    {"sourceVolume": "hostdir", "containerPath": "/host", "readOnly": True},
                ],
                "logConfiguration": {"logDriver": "json-file", "options": {"max-size": "1m"}},
                "stopTimeout": 1,
                "dockerLabels": {"com.example.app": "boto"},
                "linuxParameters": {"initProcessEnabled": True},
            },
        ],
    )
    _, doc = ecs.call("RegisterTaskDefinition", **rich)
    td = doc["taskDefinition"]
    check(td["family"] == fam and td["revision"] == 1 and td["status"] == "ACTIVE", f"RegisterTaskDefinition {td}")
    check(arn_re("task-definition", re.escape(fam) + ":1").fullmatch(td["taskDefinitionArn"]), td["taskDefinitionArn"])
    check(td["cpu"] == "256" and td["memory"] == "512", f"task-level cpu/memory {td.get('cpu')} {td.get('memory')}")
    check(tags_of(doc.get("tags", [])) == [("kind", "rich"), ("team", "berth")], f"RegisterTaskDefinition tags {doc.get('tags')}")
    app = next(c for c in td["containerDefinitions"] if c["name"] == "app")
    check(app["healthCheck"]["command"] == ["CMD-SHELL", "true"], f"healthCheck {app.get('healthCheck')}")
    check(app["dependsOn"] == [{"containerName": "init", "condition": "COMPLETE"}], f"dependsOn {app.get('dependsOn')}")
    check(app["ulimits"] == [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}], f"ulimits {app.get('ulimits')}")
    check(app["logConfiguration"]["logDriver"] == "json-file", f"logConfiguration {app.get('logConfiguration')}")
    check(app["stopTimeout"] == 1, "stopTimeout")
    check([m["containerPort"] for m in app["portMappings"]] == [8080, 5353], f"portMappings {app['portMappings']}")
    check(sorted(v["name"] for v in td["volumes"]) == ["data", "hostdir"], f"volumes {td.get('volumes')}")
    td1_arn = td["taskDefinitionArn"]
    _, doc = ecs.call("RegisterTaskDefinition", **rich)
    check(doc["taskDefinition"]["revision"] == 2, "second revision")
    td2_arn = doc["taskDefinition"]["taskDefinitionArn"]

    _, doc = ecs.call("DescribeTaskDefinition", taskDefinition=f"{fam}:1", include=["TAGS"])
    check(doc["taskDefinition"]["taskDefinitionArn"] == td1_arn, "DescribeTaskDefinition family:1")
    check(tags_of(doc["tags"]) == [("kind", "rich"), ("team", "berth")], f"DescribeTaskDefinition tags {doc.get('tags')}")
    _, doc = ecs.call("DescribeTaskDefinition", taskDefinition=fam)
    check(doc["taskDefinition"]["revision"] == 2, "a bare family is its latest revision")
    ecs.error("DescribeTaskDefinition", "ClientException", taskDefinition=f"boto-{sfx}-nope")
    ecs.error("DescribeTaskDefinition", "ClientException", taskDefinition=f"{fam}:99")

    _, doc = ecs.call("ListTaskDefinitions", familyPrefix=fam, sort="DESC")
    check(doc["taskDefinitionArns"] == [td2_arn, td1_arn], f"ListTaskDefinitions DESC {doc}")
    _, doc = ecs.call("ListTaskDefinitions", familyPrefix=fam)
    check(doc["taskDefinitionArns"] == [td1_arn, td2_arn], f"ListTaskDefinitions ASC {doc}")
    _, doc = ecs.call("ListTaskDefinitions", familyPrefix=fam, sort="DESC", maxResults=1)
    check(doc["taskDefinitionArns"] == [td2_arn] and doc.get("nextToken"), f"ListTaskDefinitions page 1 {doc}")
    _, doc = ecs.call("ListTaskDefinitions", familyPrefix=fam, sort="DESC", maxResults=1, nextToken=doc["nextToken"])
    check(doc["taskDefinitionArns"] == [td1_arn], f"ListTaskDefinitions page 2 {doc}")
    if doc.get("nextToken"):
        _, doc = ecs.call("ListTaskDefinitions", familyPrefix=fam, sort="DESC", maxResults=1, nextToken=doc["nextToken"])
        check(doc["taskDefinitionArns"] == [] and not doc.get("nextToken"), f"ListTaskDefinitions page 3 {doc}")
    arns, _ = ecs.paginate("ListTaskDefinitions", "taskDefinitionArns", 1, familyPrefix=fam)
    check(arns == [td1_arn, td2_arn], f"ListTaskDefinitions paginator {arns}")

    sleep_fam = f"boto-{sfx}-sleep"
    _, doc = ecs.call(
        "RegisterTaskDefinition",
        family=sleep_fam,
        networkMode="none",
        containerDefinitions=[{
            "name": "main",
            "image": image,
            "memory": 32,
            "essential": True,
            "command": ["sleep", "600"],
            "stopTimeout": 1,
        }],
    )
    sleep_td = doc["taskDefinition"]["taskDefinitionArn"]
    check(doc["taskDefinition"]["networkMode"] == "none", f"networkMode {doc['taskDefinition']}")
    _, doc = ecs.call("ListTaskDefinitionFamilies", familyPrefix=f"boto-{sfx}-")
    check(sorted(doc["families"]) == sorted([fam, sleep_fam]), f"ListTaskDefinitionFamilies {doc}")
    _, doc = ecs.call("ListTaskDefinitionFamilies", familyPrefix=f"boto-{sfx}-", maxResults=1)
    check(len(doc["families"]) == 1 and doc.get("nextToken"), f"ListTaskDefinitionFamilies maxResults=1 {doc}")

    ecs.error("RegisterTaskDefinition", "ClientException", family=f"boto-{sfx}-bad",
              containerDefinitions=[{"name": "a", "image": image, "memory": 32}, {"name": "a", "image": image, "memory": 32}])
    ecs.error("RegisterTaskDefinition", "ClientException", family=f"boto-{sfx}-bad",
              containerDefinitions=[{"name": "a", "image": image}])
    _, doc = ecs.call("ListTaskDefinitionFamilies", familyPrefix=f"boto-{sfx}-bad")
    check(doc["families"] == [], "a refused task definition is not stored")

    _, doc = ecs.call("DeregisterTaskDefinition", taskDefinition=f"{fam}:1")
    check(doc["taskDefinition"]["status"] == "INACTIVE", f"DeregisterTaskDefinition {doc}")
    check("deregisteredAt" in doc["taskDefinition"], f"deregisteredAt {doc}")
    _, doc = ecs.call("ListTaskDefinitions", familyPrefix=fam, status="INACTIVE")
    check(doc["taskDefinitionArns"] == [td1_arn], f"ListTaskDefinitions INACTIVE {doc}")
    _, doc = ecs.call("DeleteTaskDefinitions", taskDefinitions=[f"{fam}:1", f"{fam}:2", f"{fam}:77"])
    check([t["taskDefinitionArn"] for t in doc["taskDefinitions"]] == [td1_arn], f"DeleteTaskDefinitions {doc}")
    check(doc["taskDefinitions"][0]["status"] == "DELETE_IN_PROGRESS", f"DeleteTaskDefinitions status {doc}")
    check(len(doc["failures"]) == 2, f"DeleteTaskDefinitions failures (an ACTIVE one, a missing one) {doc}")
    _, doc = ecs.call("DeregisterTaskDefinition", taskDefinition=td2_arn)
    check(doc["taskDefinition"]["status"] == "INACTIVE", f"DeregisterTaskDefinition by ARN {doc}")

    # ---- the local agent's container instance --------------------------------------------
    cluster = a.cluster
    instances = wait_instance(ecs, cluster)
    inst = instances[0]
    check(arn_re("container-instance", re.escape(cluster) + "/[0-9a-f]{32}").fullmatch(inst), inst)
    _, doc = ecs.call("DescribeContainerInstances", cluster=cluster, containerInstances=[inst, "0" * 32],
                      include=["TAGS", "CONTAINER_INSTANCE_HEALTH"])
    ci = doc["containerInstances"][0]
    check(ci["containerInstanceArn"] == inst and ci["status"] == "ACTIVE" and ci["agentConnected"], f"instance {ci}")
    check({r["name"] for r in ci["registeredResources"]} >= {"CPU", "MEMORY", "PORTS"}, f"resources {ci}")
    check([f["reason"] for f in doc["failures"]] == ["MISSING"], f"DescribeContainerInstances failures {doc}")
    ecs.error("DescribeContainerInstances", "ClusterNotFoundException", cluster=f"{c1}-missing", containerInstances=[inst])

    attr = f"boto.{sfx}"
    _, doc = ecs.call("PutAttributes", cluster=cluster,
                      attributes=[{"name": attr, "value": "yes", "targetType": "container-instance", "targetId": inst}])
    check([x["name"] for x in doc["attributes"]] == [attr], f"PutAttributes {doc}")
    _, doc = ecs.call("ListAttributes", cluster=cluster, targetType="container-instance", attributeName=attr)
    check([(x["name"], x.get("value"), x.get("targetId")) for x in doc["attributes"]] == [(attr, "yes", inst)],
          f"ListAttributes {doc}")
    _, doc = ecs.call("ListContainerInstances", cluster=cluster, filter=f"attribute:{attr} == yes")
    check(doc["containerInstanceArns"] == [inst], f"ListContainerInstances filter {doc}")
    _, doc = ecs.call("DeleteAttributes", cluster=cluster, attributes=[{"name": attr, "targetId": inst}])
    check([x["name"] for x in doc["attributes"]] == [attr], f"DeleteAttributes {doc}")
    _, doc = ecs.call("ListAttributes", cluster=cluster, targetType="container-instance", attributeName=attr)
    check(doc["attributes"] == [], f"ListAttributes after delete {doc}")
    ecs.error("PutAttributes", "TargetNotFoundException", cluster=cluster,
              attributes=[{"name": attr, "value": "x", "targetType": "container-instance", "targetId": "f" * 32}])

    _, doc = ecs.call("UpdateContainerInstancesState", cluster=cluster, containerInstances=[inst], status="DRAINING")
    check(doc["containerInstances"][0]["status"] == "DRAINING", f"DRAINING {doc}")
    _, doc = ecs.call("ListContainerInstances", cluster=cluster, status="DRAINING")
    check(doc["containerInstanceArns"] == [inst], f"ListContainerInstances DRAINING {doc}")
    _, doc = ecs.call("UpdateContainerInstancesState", cluster=cluster, containerInstances=[inst], status="ACTIVE")
    check(doc["containerInstances"][0]["status"] == "ACTIVE", f"ACTIVE {doc}")
    ecs.error("UpdateContainerInstancesState", "InvalidParameterException", cluster=cluster,
              containerInstances=[inst], status="REGISTERING")

    # ---- a real task -----------------------------------------------------------------------
    _, doc = ecs.call(
        "RunTask",
        cluster=cluster,
        taskDefinition=sleep_td,
        count=1,
        startedBy=f"boto-{sfx}",
        group=f"family:{sleep_fam}",
        tags=[{"key": "run", "value": sfx}],
        overrides={"containerOverrides": [{"name": "main", "environment": [{"name": "X", "value": "1"}]}]},
    )
    check(doc["failures"] == [] and len(doc["tasks"]) == 1, f"RunTask {doc}")
    t = doc["tasks"][0]
    task = t["taskArn"]
    task_state = {}
    stop_on_exit(ecs, cluster, task, task_state)
    check(arn_re("task", re.escape(cluster) + "/[0-9a-f]{32}").fullmatch(task), task)
    check(t["containerInstanceArn"] == inst, f"RunTask placed {t.get('containerInstanceArn')}")
    check(t["desiredStatus"] == "RUNNING", f"desiredStatus {t}")
    ecs.error("RunTask", "ClientException", cluster=cluster, taskDefinition=f"boto-{sfx}-nope")
    ecs.error("RunTask", "ClusterNotFoundException", cluster=f"{c1}-missing", taskDefinition=sleep_td)
    ecs.error("RunTask", "ClientException", cluster=cluster, taskDefinition=f"{fam}:99")

    ecs.waiter("tasks_running", cluster=cluster, tasks=[task])
    _, doc = ecs.call("DescribeTasks", cluster=cluster, tasks=[task, "0" * 32], include=["TAGS"])
    t = doc["tasks"][0]
    check(t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING", f"DescribeTasks {t}")
    check(tags_of(t["tags"]) == [("run", sfx)], f"task tags {t.get('tags')}")
    check(t["startedBy"] == f"boto-{sfx}" and t["group"] == f"family:{sleep_fam}", f"startedBy/group {t}")
    for k in ("createdAt", "pullStartedAt", "pullStoppedAt", "startedAt"):
        check(isinstance(t.get(k), (int, float)), f"DescribeTasks {k} missing: {t}")
    c = t["containers"][0]
    check(c["name"] == "main" and c["lastStatus"] == "RUNNING" and c.get("runtimeId"), f"container {c}")
    check([f["reason"] for f in doc["failures"]] == ["MISSING"], f"DescribeTasks failures {doc['failures']}")
    ecs.error("DescribeTasks", "ClusterNotFoundException", cluster=f"{c1}-missing", tasks=[task])

    _, doc = ecs.call("ListTasks", cluster=cluster, family=sleep_fam)
    check(doc["taskArns"] == [task], f"ListTasks family {doc}")
    _, doc = ecs.call("ListTasks", cluster=cluster, startedBy=f"boto-{sfx}", desiredStatus="RUNNING")
    check(doc["taskArns"] == [task], f"ListTasks startedBy {doc}")
    _, doc = ecs.call("ListTasks", cluster=cluster, containerInstance=inst)
    check(task in doc["taskArns"], f"ListTasks containerInstance {doc}")
    _, doc = ecs.call("ListTasks", cluster=cluster, family=sleep_fam, desiredStatus="STOPPED")
    check(doc["taskArns"] == [], f"ListTasks STOPPED before the stop {doc}")
    ecs.error("ListTasks", "ClusterNotFoundException", cluster=f"{c1}-missing")
    _, doc = ecs.call("DescribeClusters", clusters=[cluster], include=["STATISTICS"])
    check(doc["clusters"][0]["runningTasksCount"] >= 1, f"runningTasksCount {doc}")

    # ---- tags --------------------------------------------------------------------------------
    for arn in (task, c1_arn, sleep_td, inst):
        ecs.call("TagResource", resourceArn=arn, tags=[{"key": "added", "value": "1"}, {"key": "gone", "value": "2"}])
        ecs.call("UntagResource", resourceArn=arn, tagKeys=["gone"])
        _, doc = ecs.call("ListTagsForResource", resourceArn=arn)
        check(("added", "1") in tags_of(doc["tags"]) and "gone" not in [k for k, _ in tags_of(doc["tags"])],
              f"tags of {arn}: {doc}")
    _, doc = ecs.call("ListTagsForResource", resourceArn=c1_arn)
    check(tags_of(doc["tags"]) == [("added", "1"), ("env", "test"), ("team", "berth")], f"cluster tags {doc}")
    ecs.error("TagResource", "InvalidParameterException", resourceArn=c1_arn, tags=[{"key": "aws:no", "value": "x"}])
    missing_td = sleep_td.rsplit(":", 1)[0] + ":99"
    ecs.error("TagResource", "ResourceNotFoundException", resourceArn=missing_td, tags=[{"key": "k", "value": "v"}])
    ecs.error("UntagResource", "ResourceNotFoundException", resourceArn=missing_td, tagKeys=["k"])
    ecs.error("ListTagsForResource", "ClusterNotFoundException", resourceArn=c1_arn.replace(c1, f"{c1}-missing"))
    ecs.error("ListTagsForResource", "ClientException", resourceArn=missing_td)

    # ---- stop --------------------------------------------------------------------------------
    _, doc = ecs.call("StopTask", cluster=cluster, task=task, reason="boto3 done")
    check(doc["task"]["taskArn"] == task and doc["task"]["desiredStatus"] == "STOPPED", f"StopTask {doc}")
    task_state["stopped"] = True
    ecs.waiter("tasks_stopped", cluster=cluster, tasks=[task])
    _, doc = ecs.call("DescribeTasks", cluster=cluster, tasks=[task])
    t = doc["tasks"][0]
    check(t["lastStatus"] == "STOPPED", f"stopped {t}")
    check(t.get("stopCode") == "UserInitiated" and t.get("stoppedReason") == "boto3 done", f"stop code {t}")
    for k in ("stoppingAt", "stoppedAt", "executionStoppedAt"):
        check(isinstance(t.get(k), (int, float)), f"DescribeTasks {k} missing: {t}")
    check(t["containers"][0].get("exitCode") == 137, f"exit code of sleep after SIGKILL {t['containers']}")
    _, doc = ecs.call("ListTasks", cluster=cluster, family=sleep_fam, desiredStatus="STOPPED")
    check(doc["taskArns"] == [task], f"ListTasks STOPPED {doc}")
    ecs.error("StopTask", "ClusterNotFoundException", cluster=f"{c1}-missing", task=task)

    # ---- services ------------------------------------------------------------------------------
    sv1, sv2 = f"boto-{sfx}-svc", f"boto-{sfx}-idle"
    _, doc = ecs.call("CreateService", cluster=cluster, serviceName=sv1, taskDefinition=sleep_td, desiredCount=1,
                      deploymentConfiguration={"maximumPercent": 200, "minimumHealthyPercent": 100,
                                               "deploymentCircuitBreaker": {"enable": True, "rollback": True}},
                      tags=[{"key": "svc", "value": sfx}], propagateTags="SERVICE")
    s = doc["service"]
    check(arn_re("service", re.escape(cluster) + "/" + re.escape(sv1)).fullmatch(s["serviceArn"]), s["serviceArn"])
    check(s["status"] == "ACTIVE" and s["desiredCount"] == 1 and s["schedulingStrategy"] == "REPLICA", f"CreateService {s}")
    check(s["deployments"][0]["status"] == "PRIMARY" and s["deployments"][0]["id"].startswith("ecs-svc/"), f"deployment {s}")
    svc_state = {}

    def delete_services():
        if not svc_state.get("deleted"):
            for n in (sv1, sv2):
                try:
                    ecs.client.delete_service(cluster=cluster, service=n, force=True)
                except Exception as e:  # noqa: BLE001 - best effort on the way out
                    print(f"ecs_boto3.py: could not delete {n}: {e}", file=sys.stderr)

    atexit.register(delete_services)
    ecs.call("CreateService", cluster=cluster, serviceName=sv2, taskDefinition=sleep_td, desiredCount=0)
    ecs.error("CreateService", "InvalidParameterException", cluster=cluster, serviceName=sv2, taskDefinition=sleep_td,
              desiredCount=0)
    ecs.error("CreateService", "InvalidParameterException", cluster=cluster, serviceName=f"{sv1}-x",
              taskDefinition=sleep_td)
    ecs.error("CreateService", "ClusterNotFoundException", cluster=f"{c1}-missing", serviceName=sv1,
              taskDefinition=sleep_td, desiredCount=1)
    ecs.waiter("services_stable", cluster=cluster, services=[sv1])
    _, doc = ecs.call("DescribeServices", cluster=cluster, services=[sv1, f"{sv1}-missing"], include=["TAGS"])
    s = doc["services"][0]
    check(s["runningCount"] == 1 and len(s["deployments"]) == 1, f"stable service {s}")
    check(s["deployments"][0]["rolloutState"] == "COMPLETED", f"rollout {s['deployments']}")
    check(tags_of(s["tags"]) == [("svc", sfx)], f"service tags {s.get('tags')}")
    check(any("steady state" in e["message"] for e in s["events"]), f"events {s['events']}")
    check([f["reason"] for f in doc["failures"]] == ["MISSING"], f"DescribeServices failures {doc}")
    _, doc = ecs.call("ListTasks", cluster=cluster, serviceName=sv1)
    check(len(doc["taskArns"]) == 1, f"ListTasks serviceName {doc}")
    _, doc = ecs.call("DescribeTasks", cluster=cluster, tasks=doc["taskArns"], include=["TAGS"])
    t = doc["tasks"][0]
    check(t["group"] == f"service:{sv1}" and t["startedBy"].startswith("ecs-svc/"), f"service task {t}")
    check(("svc", sfx) in tags_of(t.get("tags", [])), f"propagated service tags {t.get('tags')}")
    arns, pages = ecs.paginate("ListServices", "serviceArns", 1, cluster=cluster)
    check(sorted(a.rsplit("/", 1)[1] for a in arns) == sorted([sv1, sv2]) and pages == 2, f"ListServices {arns}")
    check(len(ecs.pages("ListServices", "serviceArns", cluster=cluster)) == 2, "ListServices pages")
    # A new deployment of the same task definition (forceNewDeployment) replaces the task.
    _, doc = ecs.call("UpdateService", cluster=cluster, service=sv1, forceNewDeployment=True)
    check(len(doc["service"]["deployments"]) == 2, f"forceNewDeployment {doc['service']['deployments']}")
    ecs.waiter("services_stable", cluster=cluster, services=[sv1])
    _, doc = ecs.call("DescribeServices", cluster=cluster, services=[sv1])
    check(doc["services"][0]["deployments"][0]["rolloutState"] == "COMPLETED", f"after the new deployment {doc}")
    ecs.error("DeleteService", "InvalidParameterException", cluster=cluster, service=sv1)
    ecs.error("UpdateService", "ServiceNotFoundException", cluster=cluster, service=f"{sv1}-missing", desiredCount=1)
    _, doc = ecs.call("UpdateService", cluster=cluster, service=sv1, desiredCount=0)
    check(doc["service"]["desiredCount"] == 0, f"scale to 0 {doc}")
    for n in (sv1, sv2):
        _, doc = ecs.call("DeleteService", cluster=cluster, service=n)
        check(doc["service"]["status"] == "DRAINING", f"DeleteService {doc}")
    ecs.waiter("services_inactive", cluster=cluster, services=[sv1, sv2])
    svc_state["deleted"] = True
    _, doc = ecs.call("ListServices", cluster=cluster)
    check(doc["serviceArns"] == [], f"ListServices after delete {doc}")
    ecs.error("UpdateService", "ServiceNotActiveException", cluster=cluster, service=sv1, desiredCount=1)

    # ---- Fargate: a task of cluster c1 on the platform capacity of the local agent -----------
    _, doc = ecs.call("RegisterTaskDefinition", family=f"boto-{sfx}-fg", networkMode="awsvpc",
                      requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                      containerDefinitions=[{"name": "s", "image": image, "command": ["sleep", "3600"],
                                             "stopTimeout": 2}])
    fg_td = doc["taskDefinition"]["taskDefinitionArn"]
    check(doc["taskDefinition"]["compatibilities"] == ["EC2", "FARGATE"], f"compatibilities {doc}")
    vpc = {"awsvpcConfiguration": {"subnets": [f"subnet-{sfx}"], "securityGroups": ["sg-1"]}}
    ecs.error("RunTask", "InvalidParameterException", cluster=c1, taskDefinition=fg_td, launchType="FARGATE")
    ecs.error("RunTask", "ClientException", cluster=c1, taskDefinition=fg_td, launchType="FARGATE",
              networkConfiguration=vpc, overrides={"cpu": "256", "memory": "3072"})
    ecs.error("RunTask", "PlatformUnknownException", cluster=c1, taskDefinition=fg_td, launchType="FARGATE",
              networkConfiguration=vpc, platformVersion="0.1.0")
    _, doc = ecs.call("RunTask", cluster=c1, taskDefinition=fg_td, launchType="FARGATE",
                      networkConfiguration=vpc, platformVersion="LATEST")
    check(doc["failures"] == [] and len(doc["tasks"]) == 1, f"RunTask FARGATE {doc}")
    fg = doc["tasks"][0]
    check(fg["launchType"] == "FARGATE" and "containerInstanceArn" not in fg, f"FARGATE task {fg}")
    check(fg["platformVersion"] == "1.4.0" and fg["ephemeralStorage"] == {"sizeInGiB": 20}, f"FARGATE task {fg}")
    ecs.waiter("tasks_running", cluster=c1, tasks=[fg["taskArn"]])
    _, doc = ecs.call("DescribeTasks", cluster=c1, tasks=[fg["taskArn"]])
    fg = doc["tasks"][0]
    att = fg["attachments"][0]
    details = {d["name"]: d["value"] for d in att["details"]}
    check(att["type"] == "ElasticNetworkInterface" and att["status"] == "ATTACHED", f"ENI {att}")
    check(details["subnetId"] == f"subnet-{sfx}" and details["networkInterfaceId"].startswith("eni-"), f"ENI {att}")
    check(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", details.get("privateIPv4Address", "")), f"ENI address {att}")
    check(fg["containers"][0]["networkInterfaces"] == [
        {"attachmentId": att["id"], "privateIpv4Address": details["privateIPv4Address"]}], f"networkInterfaces {fg}")
    _, doc = ecs.call("ListContainerInstances", cluster=c1)
    check(doc["containerInstanceArns"] == [], f"Fargate capacity is not the user's: {doc}")
    _, doc = ecs.call("ListTasks", cluster=c1, launchType="FARGATE")
    check(doc["taskArns"] == [fg["taskArn"]], f"ListTasks launchType FARGATE {doc}")
    ecs.call("StopTask", cluster=c1, task=fg["taskArn"])
    ecs.waiter("tasks_stopped", cluster=c1, tasks=[fg["taskArn"]])
    _, doc = ecs.call("DescribeTasks", cluster=c1, tasks=[fg["taskArn"]])
    check(doc["tasks"][0]["attachments"][0]["status"] == "DELETED", f"ENI after the stop {doc}")
    ecs.call("DeregisterTaskDefinition", taskDefinition=fg_td)

    # ---- clean up ----------------------------------------------------------------------------
    for name in (c1, c2):
        _, doc = ecs.call("DeleteCluster", cluster=name)
        check(doc["cluster"]["status"] == "INACTIVE", f"DeleteCluster {doc}")
    ecs.error("DeleteCluster", "ClusterContainsContainerInstancesException", cluster=cluster)
    _, doc = ecs.call("DeregisterTaskDefinition", taskDefinition=sleep_td)

    print(f"ecs_boto3.py: {len(VALIDATED)} responses validated against botocore's model", file=sys.stderr)
    print(json.dumps({"validated": VALIDATED, "task": task, "containerInstance": inst}))


if __name__ == "__main__":
    main()
