#!/usr/bin/env python3
"""Service scale driver of bench/scale (boto3 against `berth serve`).

A REPLICA service of a busybox `sleep` task (networkMode none, 16 MiB) is created with
desiredCount 0. Each of RUNS rounds: t0; UpdateService desiredCount=N; DescribeServices every
POLL ms until steady (runningCount == N, pendingCount 0, one deployment, rollout COMPLETED:
what `aws ecs wait services-stable` checks, without its 15 s poll interval); t1 - t0 is the
figure. Also recorded: when every task was RUNNING, from the tasks' startedAt. Then desiredCount
0 and a wait until the engine is empty before the next round.

The same-run reference: N containers started by the engine alone, `berth run -d --network
none IMG sleep 3600` N at once on the agent's engine root, until every one is running.

Writes raw samples as JSON (--out) and prints a table. Exit 1 when a round did not reach steady
state within 60 s or something was left behind.
"""
import argparse
import configparser
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

TIMEOUT = 60.0


def log(msg):
    print(f"[bench/scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs, p):
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--berth", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--local-image", required=True)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--poll", type=float, default=20.0)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    ini = configparser.ConfigParser()
    ini.read(os.path.join(a.data, "credentials"))
    sec = ini["default"]
    ecs = boto3.client(
        "ecs", endpoint_url=a.endpoint, region_name=a.region,
        aws_access_key_id=sec["aws_access_key_id"].strip(),
        aws_secret_access_key=sec["aws_secret_access_key"].strip(),
        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30))
    engine = os.path.join(a.data, "engine")
    env = dict(os.environ, BERTH_ROOT=engine, RUST_LOG="error")

    def ps():
        out = subprocess.run([a.berth, "ps", "-aq", "--no-trunc"], env=env,
                             capture_output=True, text=True, timeout=60)
        return [x for x in out.stdout.split() if x]

    def wait_empty(secs=60):
        deadline = time.monotonic() + secs
        while ps():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    deadline = time.monotonic() + 30
    while not ecs.list_container_instances()["containerInstanceArns"]:
        if time.monotonic() > deadline:
            raise SystemExit("the local agent did not register within 30 s")
        time.sleep(0.1)
    ecs.register_task_definition(
        family="scale", networkMode="none",
        containerDefinitions=[{"name": "app", "image": a.image, "memory": 16, "essential": True,
                               "command": ["sleep", "3600"], "stopTimeout": 1}])
    ecs.create_service(serviceName="scale", taskDefinition="scale", desiredCount=0)
    samples = []
    ok = True
    poll = a.poll / 1000.0
    for r in range(a.runs):
        t0 = time.perf_counter()
        w0 = time.time()
        ecs.update_service(service="scale", desiredCount=a.count)
        steady = None
        describes = 0
        while time.perf_counter() - t0 < TIMEOUT:
            sv = ecs.describe_services(services=["scale"])["services"][0]
            describes += 1
            deps = sv["deployments"]
            if (sv["runningCount"] == a.count and sv["pendingCount"] == 0 and len(deps) == 1
                    and deps[0].get("rolloutState") == "COMPLETED"):
                steady = time.perf_counter() - t0
                break
            time.sleep(poll)
        if steady is None:
            ok = False
            log(f"round {r + 1}: not steady within {TIMEOUT:.0f} s: running {sv['runningCount']}")
            break
        arns = ecs.list_tasks(serviceName="scale")["taskArns"]
        started = []
        for i in range(0, len(arns), 100):
            for t in ecs.describe_tasks(tasks=arns[i:i + 100])["tasks"]:
                if t.get("startedAt"):
                    started.append(t["startedAt"].timestamp())
        last_running = max(started) - w0 if started else float("nan")
        samples.append({"steady_s": steady, "all_running_s": last_running, "describes": describes})
        log(f"round {r + 1}/{a.runs}: 0 -> {a.count} steady in {steady:.3f} s "
            f"(last task started at +{last_running:.3f} s)")
        ecs.update_service(service="scale", desiredCount=0)
        deadline = time.monotonic() + TIMEOUT
        while True:
            sv = ecs.describe_services(services=["scale"])["services"][0]
            if sv["runningCount"] == 0 and sv["pendingCount"] == 0:
                break
            if time.monotonic() > deadline:
                ok = False
                log("scale to 0 did not finish")
                break
            time.sleep(0.05)
        if not wait_empty():
            ok = False
            log(f"containers left after scale to 0: {ps()}")
            break

    # Reference: the engine alone, N containers at once.
    floor = []
    for r in range(a.runs):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=a.count) as ex:
            res = list(ex.map(lambda i: subprocess.run(
                [a.berth, "run", "-d", "--network", "none", a.local_image, "sleep", "3600"],
                env=env, capture_output=True, text=True, timeout=120), range(a.count)))
        floor.append(time.perf_counter() - t0)
        bad = [x.stderr for x in res if x.returncode != 0]
        ids = ps()
        if ids:
            subprocess.run([a.berth, "rm", "-f", *ids], env=env, capture_output=True, timeout=300)
        if bad:
            ok = False
            log(f"berth run -d failed: {bad[0][:300]}")
            break
    ecs.delete_service(service="scale", force=True)

    steady = [s["steady_s"] for s in samples]
    allrun = [s["all_running_s"] for s in samples]
    print(f"{'seconds':44} {'p50':>8} {'min':>8} {'max':>8} {'n':>4}")
    for name, xs in [(f"UpdateService 0 -> {a.count}: steady state", steady),
                     (f"UpdateService 0 -> {a.count}: last task started", allrun),
                     (f"reference: {a.count} x berth run -d at once", floor)]:
        if xs:
            print(f"{name:44} {pct(xs, 50):8.3f} {min(xs):8.3f} {max(xs):8.3f} {len(xs):4d}")
    with open(a.out, "w") as f:
        json.dump({"count": a.count, "samples": samples, "floor_s": floor,
                   "summary": {"steady_p50_s": pct(steady, 50) if steady else None,
                               "floor_p50_s": pct(floor, 50) if floor else None}}, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
