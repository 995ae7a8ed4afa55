#!/usr/bin/env python3
"""RunTask -> RUNNING latency driver of bench/ecs (boto3 against `berth serve`).

For each of RUNS tasks: t0 = perf_counter(); RunTask; DescribeTasks in a tight loop (every
POLL ms, at most 30 s) until lastStatus is RUNNING; the latency is t1 - t0. The task's own
timestamps split it: createdAt (control plane accepted RunTask) -> pullStartedAt (the agent
took it) -> pullStoppedAt (image ready) -> startedAt (container started).

At most BATCH tasks run at once:
  --stop batch    after every BATCH measured tasks: StopTask them all, wait until they are
                  STOPPED and the agent's engine has no container left, then go on (each
                  measurement starts on a quiet host);
  --stop rolling  StopTask the oldest (without waiting) once BATCH run, so stops and
                  container removals overlap the next starts (a busier, steadier state).
At the end every task is stopped and the script waits (bounded) until ListTasks
desiredStatus=RUNNING is empty, every task is STOPPED and `berth ps -aq` is empty.

--fargate: the task definition is FARGATE (awsvpc, task cpu 256 / memory 512) and every
RunTask has launchType FARGATE with a subnet (the task runs on Berth's platform capacity, in its
own network namespace with its own address). --cold-images IMG,...: afterwards, for each image
(in the registry, never on this host): register a task definition of it and RunTask at once,
RUNNING within 300 s (the pull of a big image; with --fargate the platform agents' pre-pull on
registration races the task's own pull, as it would for a user).

Writes the raw samples and summary figures as JSON (--out) and prints a table.
Exit status 1 when a task failed to reach RUNNING, or something was left behind.
"""
import argparse
import configparser
import json
import os
import signal
import subprocess
import sys
import time

import boto3
from botocore.config import Config

TIMEOUT = 30.0  # seconds for one task to reach RUNNING


def log(msg):
    print(f"[bench/ecs {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(xs, p):
    """Percentile with linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def ms(a, b):
    """b - a in ms for two datetimes (None when one is missing)."""
    if a is None or b is None:
        return None
    return (b - a).total_seconds() * 1000.0


class Bench:
    def __init__(self, a):
        self.a = a
        ini = configparser.ConfigParser()
        ini.read(os.path.join(a.data, "credentials"))
        sec = ini["default"]
        self.ecs = boto3.client(
            "ecs",
            endpoint_url=a.endpoint,
            region_name=a.region,
            aws_access_key_id=sec["aws_access_key_id"].strip(),
            aws_secret_access_key=sec["aws_secret_access_key"].strip(),
            config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )
        self.engine_root = os.path.join(a.data, "engine")
        self.running = []  # ARNs started and not yet stopped, oldest first
        self.all = []  # every ARN this run started
        self.failures = []
        self.cold = []

    def engine_ps(self):
        env = dict(os.environ, BERTH_ROOT=self.engine_root, RUST_LOG="error")
        out = subprocess.run([self.a.berth, "ps", "-aq", "--no-trunc"], env=env,
                             capture_output=True, text=True, timeout=60)
        return [x for x in out.stdout.split() if x]

    def wait_instance(self):
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.ecs.list_container_instances(cluster=self.a.cluster)["containerInstanceArns"]:
                    return
            except Exception as e:  # noqa: BLE001 - the server may still be starting
                last = e
            else:
                last = "no container instance"
            if time.monotonic() > deadline:
                raise SystemExit(f"the local agent did not register within 30 s: {last}")
            time.sleep(0.1)

    def register(self, image=None, family=None):
        container = {
            "name": "bench",
            "image": image or self.a.image,
            "essential": True,
            "command": ["sleep", "3600"],
            "stopTimeout": 1,
        }
        if self.a.fargate:
            container["stopTimeout"] = 2  # Fargate's minimum
            td = self.ecs.register_task_definition(
                family=family or self.a.family, networkMode="awsvpc",
                requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
                containerDefinitions=[container])
        else:
            container["memory"] = 16
            td = self.ecs.register_task_definition(
                family=family or self.a.family, networkMode="none",
                containerDefinitions=[container])
        return td["taskDefinition"]["taskDefinitionArn"]

    def run_task(self, td):
        if self.a.fargate:
            return self.ecs.run_task(
                cluster=self.a.cluster, taskDefinition=td, count=1, launchType="FARGATE",
                networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-bench"]}})
        return self.ecs.run_task(cluster=self.a.cluster, taskDefinition=td, count=1)

    def one(self, td, timeout=TIMEOUT):
        """Runs one task and waits for RUNNING; returns a sample dict."""
        poll = self.a.poll / 1000.0
        before = len(self.running)
        wall0 = time.time()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        r = self.run_task(td)
        t_call = time.perf_counter()
        if r.get("failures") or not r.get("tasks"):
            return {"ok": False, "why": f"RunTask failures: {r.get('failures')}"}
        arn = r["tasks"][0]["taskArn"]
        self.all.append(arn)
        self.running.append(arn)
        polls = 0
        while True:
            d = self.ecs.describe_tasks(cluster=self.a.cluster, tasks=[arn])["tasks"][0]
            polls += 1
            st = d.get("lastStatus")
            if st == "RUNNING":
                t1 = time.perf_counter()
                wall1 = time.time()
                cpu1 = time.process_time()
                break
            if st in ("DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"):
                return {"ok": False, "arn": arn,
                        "why": f"{st} before RUNNING: {d.get('stoppedReason')} "
                               f"{[c.get('reason') for c in d.get('containers', [])]}"}
            if time.perf_counter() - t0 > timeout:
                return {"ok": False, "arn": arn, "why": f"not RUNNING after {timeout:.0f} s (lastStatus {st})"}
            time.sleep(poll)
        c, ps, pe, s = (d.get("createdAt"), d.get("pullStartedAt"), d.get("pullStoppedAt"),
                        d.get("startedAt"))
        return {
            "ok": True,
            "arn": arn,
            "latency_ms": (t1 - t0) * 1000.0,
            "runtask_call_ms": (t_call - t0) * 1000.0,
            "polls": polls,
            "running_before": before,
            "client_cpu_ms": (cpu1 - cpu0) * 1000.0,
            # the task's own timestamps (ms resolution)
            "created_to_started_ms": ms(c, s),
            "created_to_pull_started_ms": ms(c, ps),
            "pull_ms": ms(ps, pe),
            "pull_stopped_to_started_ms": ms(pe, s),
            # wall clock of this process vs the task's timestamps (same host clock)
            "client_to_created_ms": (c.timestamp() - wall0) * 1000.0 if c else None,
            "started_to_seen_ms": (wall1 - s.timestamp()) * 1000.0 if s else None,
        }

    def stop(self, arns):
        for arn in arns:
            try:
                self.ecs.stop_task(cluster=self.a.cluster, task=arn, reason="bench/ecs")
            except Exception as e:  # noqa: BLE001
                log(f"StopTask {arn}: {e}")
            if arn in self.running:
                self.running.remove(arn)

    def wait_quiet(self, arns, secs):
        """Waits until every task in arns is STOPPED and the engine has no container."""
        deadline = time.monotonic() + secs
        pending = list(arns)
        while pending:
            got = []
            for i in range(0, len(pending), 100):
                got += self.ecs.describe_tasks(cluster=self.a.cluster, tasks=pending[i:i + 100])["tasks"]
            pending = [t["taskArn"] for t in got if t.get("lastStatus") != "STOPPED"]
            if not pending:
                break
            if time.monotonic() > deadline:
                return f"{len(pending)} task(s) not STOPPED after {secs} s"
            time.sleep(0.05)
        while True:
            left = self.engine_ps()
            if not left:
                return None
            if time.monotonic() > deadline:
                return f"{len(left)} container(s) left in the agent's engine after {secs} s"
            time.sleep(0.05)

    def run(self):
        a = self.a
        self.wait_instance()
        td = self.register()
        warm = []
        for i in range(a.warmup):
            w = self.one(td)
            if not w["ok"]:
                raise SystemExit(f"warm-up task failed: {w['why']}")
            warm.append(w)
            self.stop(list(self.running))
            why = self.wait_quiet(list(self.all), 60)
            if why:
                raise SystemExit(f"after the warm-up: {why}")
        log(f"{a.runs} tasks, at most {a.batch} at once, stop mode {a.stop}")
        samples = []
        quiet_errors = []
        for i in range(a.runs):
            s = self.one(td)
            samples.append(s)
            if not s["ok"]:
                self.failures.append(s["why"])
                log(f"task {i + 1} failed: {s['why']}")
            if a.stop == "rolling":
                while len(self.running) >= a.batch:
                    self.stop([self.running[0]])
            elif len(self.running) >= a.batch or i == a.runs - 1:
                batch = list(self.running)
                self.stop(batch)
                why = self.wait_quiet(batch, 60)
                if why:
                    quiet_errors.append(why)
                    log(why)
            if (i + 1) % 20 == 0:
                ok = [x["latency_ms"] for x in samples if x["ok"]]
                log(f"{i + 1}/{a.runs} tasks, p50 so far {pct(ok, 50):.1f} ms")
        cold = []
        for n, img in enumerate(x for x in a.cold_images.split(",") if x):
            t0 = time.perf_counter()
            td = self.register(image=img, family=f"{a.family}-cold{n}")
            s = self.one(td, timeout=300.0)
            s["register_ms"] = (time.perf_counter() - t0) * 1000.0 - s.get("latency_ms", 0.0)
            s["image"] = img
            cold.append(s)
            if not s["ok"]:
                self.failures.append(s["why"])
                log(f"cold task {n + 1} failed: {s['why']}")
            else:
                log(f"cold image {n + 1}: RUNNING after {s['latency_ms']:.0f} ms "
                    f"(pull {s['pull_ms']:.0f} ms)")
            self.stop(list(self.running))
            why = self.wait_quiet(list(self.all), 120)
            if why:
                quiet_errors.append(why)
        self.cold = cold
        # final clean-up: every task stopped, nothing desired RUNNING, the engine empty
        self.stop(list(self.running))
        leftover = self.wait_quiet(list(self.all), 120)
        deadline = time.monotonic() + 30
        while True:
            desired = self.ecs.list_tasks(cluster=a.cluster, desiredStatus="RUNNING")["taskArns"]
            if not desired or time.monotonic() > deadline:
                break
            self.stop(desired)
            time.sleep(0.1)
        if desired:
            leftover = (leftover or "") + f"; ListTasks desiredStatus=RUNNING still lists {len(desired)}"
        return warm, samples, quiet_errors, leftover


ROWS = [
    ("latency_ms", "RunTask -> RUNNING seen by the client"),
    ("runtask_call_ms", "  RunTask call (response)"),
    ("created_to_started_ms", "createdAt -> startedAt (the task's own)"),
    ("client_to_created_ms", "  client t0 -> createdAt"),
    ("created_to_pull_started_ms", "  createdAt -> pullStartedAt (to agent)"),
    ("pull_ms", "  pullStartedAt -> pullStoppedAt (pull)"),
    ("pull_stopped_to_started_ms", "  pullStoppedAt -> startedAt (start)"),
    ("started_to_seen_ms", "  startedAt -> RUNNING seen by client"),
    ("polls", "DescribeTasks calls per task"),
    ("client_cpu_ms", "CPU time of this client per task (ms)"),
]


def summary(samples):
    ok = [s for s in samples if s["ok"]]
    out = {}
    for key, _ in ROWS:
        xs = [s[key] for s in ok if s.get(key) is not None]
        if xs:
            out[key] = {"n": len(xs), "p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99),
                        "max": max(xs), "min": min(xs), "mean": sum(xs) / len(xs)}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--data", required=True, help="berth serve --data (credentials, engine)")
    p.add_argument("--berth", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--region", default="us-east-1")
    p.add_argument("--cluster", default="default")
    p.add_argument("--family", default="bench-ecs")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--stop", choices=["batch", "rolling"], default="batch")
    p.add_argument("--poll", type=float, default=2.0, help="ms between DescribeTasks calls")
    p.add_argument("--out", required=True, help="JSON results")
    p.add_argument("--fargate", action="store_true", help="FARGATE tasks (awsvpc, 256/512)")
    p.add_argument("--cold-images", default="", help="comma-separated images not on the host")
    a = p.parse_args()
    # Die of SIGINT/SIGTERM (no traceback, no clean-up here): bench/ecs sees the signal and
    # cleans up the server and its containers itself.
    signal.signal(signal.SIGINT, signal.SIG_DFL)

    b = Bench(a)
    warm, samples, quiet_errors, leftover = b.run()
    summ = summary(samples)
    ok = [s for s in samples if s["ok"]]
    res = {"runs": a.runs, "ok": len(ok), "stop": a.stop, "batch": a.batch, "poll_ms": a.poll,
           "warmup": warm, "samples": samples, "summary": summ, "failures": b.failures,
           "quiet_errors": quiet_errors, "leftover": leftover, "cold": b.cold,
           "cold_ms": [c["latency_ms"] for c in b.cold if c["ok"]]}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1, default=str)

    print(f"{'ms':<44} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'min':>8} {'mean':>8}")
    for key, label in ROWS:
        v = summ.get(key)
        if v:
            fmt = "{:8.0f}" if key in ("polls", "client_cpu_ms") else "{:8.1f}"
            print(f"{label:<44} " + " ".join(fmt.format(v[k]) for k in ("p50", "p90", "p99", "max", "min", "mean")))
    if warm:
        w = warm[0]
        print(f"warm-up task (not counted; first RunTask of the server): {w['latency_ms']:.1f} ms "
              f"(to agent {w['created_to_pull_started_ms']:.0f}, pull {w['pull_ms']:.0f}, "
              f"start {w['pull_stopped_to_started_ms']:.0f})")
    by = {}
    for s in ok:
        by.setdefault(s["running_before"], []).append(s)
    if len(by) > 1:
        print("p50 by tasks already running (total / start): " + ", ".join(
            f"{k}: {pct([s['latency_ms'] for s in v], 50):.0f}/"
            f"{pct([s['pull_stopped_to_started_ms'] for s in v if s['pull_stopped_to_started_ms'] is not None], 50):.0f}"
            for k, v in sorted(by.items())))
    for c in b.cold:
        if c["ok"]:
            print(f"image not on the host ({c['image']}): register + RunTask -> RUNNING "
                  f"{c['latency_ms'] + c['register_ms']:.0f} ms (RunTask -> RUNNING {c['latency_ms']:.0f}: "
                  f"to agent {c['created_to_pull_started_ms']:.0f}, pull {c['pull_ms']:.0f}, "
                  f"start {c['pull_stopped_to_started_ms']:.0f})")
    slow = sorted(ok, key=lambda s: -s["latency_ms"])[:3]
    if slow:
        print("slowest: " + "; ".join(
            f"#{samples.index(s) + 1} {s['latency_ms']:.0f} ms (to agent {s['created_to_pull_started_ms']:.0f}, "
            f"pull {s['pull_ms']:.0f}, start {s['pull_stopped_to_started_ms']:.0f}, "
            f"seen +{s['started_to_seen_ms']:.0f})" for s in slow))
    rc = 0
    if b.failures:
        rc = 1
        print(f"FAILED: {len(b.failures)} of {a.runs} tasks did not reach RUNNING: {b.failures[:3]}")
    if quiet_errors:
        print(f"note: between batches: {quiet_errors[:3]}")
    if leftover:
        rc = 1
        print(f"LEFT BEHIND: {leftover}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
