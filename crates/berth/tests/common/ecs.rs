//! The ECS end-to-end harness: `berth serve` (control plane, registry, local agent) with data in a
//! temp dir, the aws CLI with the generated key, a busybox image pushed with an ECR token, and a
//! clean-up that leaves no container, network, daemon or mount behind even when a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json as j, Value};

use super::*;

/// `GET path` over HTTP/1.0 (the whole response, status line included), or `None` when the
/// connection fails.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    try_http_get(addr, path).ok()
}

/// An HTTP/1.0 GET; Err says which step failed, how, and after how long.
pub fn try_http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let t0 = std::time::Instant::now();
    let fail = |step: &str, e: std::io::Error| format!("{step}: {e} (after {:?})", t0.elapsed());
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| fail("connect", e))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail("set timeout", e))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| fail("write", e))?;
    let mut body = Vec::new();
    match s.read_to_end(&mut body) {
        Ok(_) => String::from_utf8(body).map_err(|e| format!("response not UTF-8: {e}")),
        Err(e) => Err(format!(
            "{}; read so far: {:?}",
            fail("read", e),
            String::from_utf8_lossy(&body)
        )),
    }
}

/// What [`Ecs::load_balancer`] made.
pub struct Lb {
    /// The load balancer's ARN.
    pub arn: String,
    /// The target group's ARN.
    pub tg: String,
    /// `host:port` of the listener.
    pub listener: String,
}

/// A running `berth serve` and what the tests drive it with.
pub struct Ecs {
    // Fields drop in order: the server first (its Drop prints the log of a failed test),
    // then the directory that holds the log.
    pub srv: Server,
    pub dir: tempfile::TempDir,
    pub aws: PathBuf,
    pub key: (String, String),
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (or fails under BERTH_REQUIRE_ROOT=1) without root.
pub fn need_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("BERTH_REQUIRE_ROOT").as_deref() != Ok("1"),
        "ECS end-to-end tests run containers and need root (BERTH_REQUIRE_ROOT=1)"
    );
    eprintln!("skipping: needs root");
    false
}

/// The generated key from `<data>/credentials` (AWS shared-credentials INI).
pub fn read_key(data: &Path) -> (String, String) {
    let text = std::fs::read_to_string(data.join("credentials")).expect("credentials");
    let get = |k: &str| {
        text.lines()
            .find_map(|l| {
                let (a, b) = l.split_once('=')?;
                (a.trim() == k).then(|| b.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{k} in credentials"))
    };
    (get("aws_access_key_id"), get("aws_secret_access_key"))
}

impl Ecs {
    pub fn start(extra: &[&str]) -> Option<Ecs> {
        if !need_root() {
            return None;
        }
        let aws = aws()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-ecs-e2e-")
            .tempdir()
            .expect("tempdir");
        let mut args = vec!["--task-cleanup-wait", "0"];
        args.extend_from_slice(extra);
        let srv = Server::serve(&dir.path().join("data"), &args);
        let key = read_key(&srv.data);
        Some(Ecs { dir, srv, aws, key })
    }

    pub fn api(&self) -> &str {
        self.srv.api_url.as_deref().expect("api url")
    }

    /// `program` (aws, or a python with boto3) with the server's key, us-east-1 and no host
    /// configuration.
    pub fn with_key(&self, program: &Path) -> Command {
        let mut cmd = aws_cmd(program, self.dir.path());
        cmd.env("AWS_ACCESS_KEY_ID", &self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.key.1);
        cmd
    }

    /// `aws` with the server's key.
    pub fn aws_cmd(&self) -> Command {
        self.with_key(&self.aws)
    }

    pub fn ecs(&self, args: &[&str]) -> Result<Value, String> {
        self.aws_json("ecs", args)
    }

    /// `aws elbv2 ARGS` against the server; panics on failure.
    pub fn elbv2(&self, args: &[&str]) -> Value {
        self.aws_json("elbv2", args)
            .unwrap_or_else(|e| panic!("aws elbv2 {args:?} failed:\n{e}\n{}", self.srv.log_text()))
    }

    /// `aws SERVICE ARGS --output json` against the server.
    pub fn aws_json(&self, service: &str, args: &[&str]) -> Result<Value, String> {
        let mut cmd = self.aws_cmd();
        cmd.arg(service)
            .args(args)
            .args(["--endpoint-url", self.api(), "--output", "json"]);
        let out = run(&mut cmd);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let s = String::from_utf8_lossy(&out.stdout);
        Ok(if s.trim().is_empty() {
            Value::Null
        } else {
            json(&s)
        })
    }

    pub fn ok(&self, args: &[&str]) -> Value {
        self.ecs(args)
            .unwrap_or_else(|e| panic!("aws ecs {args:?} failed:\n{e}\n{}", self.srv.log_text()))
    }

    pub fn err(&self, args: &[&str], code: &str) -> String {
        match self.ecs(args) {
            Ok(v) => panic!("aws ecs {args:?} succeeded, expected {code}: {v}"),
            Err(e) => {
                assert!(
                    e.contains(&format!("({code})")),
                    "aws ecs {args:?}: expected {code}, got:\n{e}"
                );
                e
            }
        }
    }

    /// `berth` against a client engine root of its own (not the agent's).
    pub fn berth(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.env("BERTH_ROOT", self.dir.path().join("client"))
            .env("BERTH_CONFIG", self.dir.path().join("auth.json"))
            .env("BERTH_NETWORK", "none")
            .env("RUST_LOG", "error")
            .args(args);
        c
    }

    /// Builds a busybox image locally and pushes it as `<registry>/<name>` with an ECR token.
    pub fn push_busybox(&self, name: &str) -> String {
        let tar = super::busybox_rootfs_tar(
            self.dir.path(),
            &["sh", "httpd", "sleep", "echo", "cat", "true"],
            &[("www/index.html", "hello from an ECS task\n")],
        );
        let reference = format!("{}/{name}", self.srv.addr);
        run_ok(
            self.berth(&["image", "import", "--change", r#"CMD ["/bin/sh"]"#])
                .arg(&tar)
                .arg(&reference),
        );
        // Log in the way ECR users do: `aws ecr get-login-password | docker login -u AWS`.
        let mut pw = self.aws_cmd();
        pw.args(["ecr", "get-login-password", "--endpoint-url", self.api()]);
        let password = run_ok(&mut pw);
        run_with_stdin(
            &mut self.berth(&["login", "-u", "AWS", "--password-stdin", &self.srv.addr]),
            password.trim(),
        );
        run_ok(&mut self.berth(&["push", &reference]));
        reference
    }

    /// Waits (bounded) until the local agent has registered, and returns its instance ARN.
    pub fn wait_instance(&self, cluster: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.ok(&["list-container-instances", "--cluster", cluster]);
            let arns: Vec<String> = v["containerInstanceArns"]
                .as_array()
                .expect("arns")
                .iter()
                .map(|a| a.as_str().expect("arn").to_string())
                .collect();
            if arns.len() >= count {
                return arns;
            }
            assert!(
                Instant::now() < deadline,
                "no container instance registered in {cluster}:\n{}",
                self.srv.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn describe_task(&self, arn: &str) -> Value {
        let v = self.ok(&["describe-tasks", "--tasks", arn]);
        v["tasks"][0].clone()
    }

    /// Polls DescribeTasks (bounded) until lastStatus is `status`.
    pub fn wait_status(&self, arn: &str, status: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.describe_task(arn);
            if t["lastStatus"] == status {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "task {arn} not {status} after {secs} s: {t}\n{}",
                self.srv.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A load balancer `name` on `subnets`, an HTTP target group of `target_type` on port 8080
    /// checking `/id` every 5 s (timeout 2 s, 2 to change state) with `delay` seconds of
    /// deregistration delay, and an HTTP listener on a free port forwarding to it.
    pub fn load_balancer(&self, name: &str, subnets: &[&str], target_type: &str, delay: u32) -> Lb {
        let mut args = vec!["create-load-balancer", "--name", name, "--subnets"];
        args.extend_from_slice(subnets);
        let lb = self.elbv2(&args);
        let arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
            .as_str()
            .expect("lb arn")
            .to_string();
        let dns = lb["LoadBalancers"][0]["DNSName"]
            .as_str()
            .expect("dns")
            .to_string();
        let tg = self.elbv2(&[
            "create-target-group",
            "--name",
            name,
            "--protocol",
            "HTTP",
            "--port",
            "8080",
            "--target-type",
            target_type,
            "--vpc-id",
            "vpc-1",
            "--health-check-path",
            "/id",
            "--health-check-interval-seconds",
            "5",
            "--health-check-timeout-seconds",
            "2",
            "--healthy-threshold-count",
            "2",
            "--unhealthy-threshold-count",
            "2",
        ]);
        let tg = tg["TargetGroups"][0]["TargetGroupArn"]
            .as_str()
            .expect("tg arn")
            .to_string();
        self.elbv2(&[
            "modify-target-group-attributes",
            "--target-group-arn",
            &tg,
            "--attributes",
            &format!("Key=deregistration_delay.timeout_seconds,Value={delay}"),
        ]);
        let port = free_port().to_string();
        self.elbv2(&[
            "create-listener",
            "--load-balancer-arn",
            &arn,
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            &format!("Type=forward,TargetGroupArn={tg}"),
        ]);
        Lb {
            arn,
            tg,
            listener: format!("{dns}:{port}"),
        }
    }

    pub fn register(&self, family: &str, containers: Value) -> Value {
        self.register_with(family, containers, &[])
    }

    pub fn register_with(&self, family: &str, containers: Value, extra: &[&str]) -> Value {
        let c = containers.to_string();
        let mut args = vec![
            "register-task-definition",
            "--family",
            family,
            "--container-definitions",
            &c,
        ];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    pub fn run_task(&self, family: &str) -> String {
        let r = self.ok(&["run-task", "--task-definition", family]);
        assert_eq!(r["failures"], j!([]), "{r}");
        r["tasks"][0]["taskArn"]
            .as_str()
            .expect("taskArn")
            .to_string()
    }

    pub fn engine_root(&self) -> PathBuf {
        self.srv.data.join("engine")
    }

    pub fn agent_berth(&self, args: &[&str]) -> String {
        run_ok(
            Command::new(berth_bin())
                .env("BERTH_ROOT", self.engine_root())
                .env("RUST_LOG", "error")
                .args(args),
        )
    }

    /// Ids of every container of the agent's engine (`berth ps -a -q --no-trunc`).
    pub fn agent_containers(&self) -> Vec<String> {
        self.agent_berth(&["ps", "-a", "-q", "--no-trunc"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Removes what the engine roots under `dir` left: containers, networks (the default bridge
/// too), network daemons, mounts.
pub fn clean_engine(root: &Path) {
    let berth = |args: &[&str]| {
        Command::new(berth_bin())
            .env("BERTH_ROOT", root)
            .env("RUST_LOG", "error")
            .args(args)
            .output()
    };
    if let Ok(out) = berth(&["ps", "-a", "-q", "--no-trunc"]) {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = berth(&["rm", "-f", id]);
        }
    }
    // Sandboxes (tasks' shared namespaces) hold their network: before the networks.
    if let Ok(out) = berth(&["sandbox", "ls", "-q"]) {
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = berth(&["sandbox", "rm", name]);
        }
    }
    if let Ok(out) = berth(&["network", "ls", "-q"]) {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = berth(&["network", "rm", id]);
        }
    }
    let _ = Command::new("pkill")
        .arg("-f")
        .arg(format!("netd --root {}/netd", root.display()))
        .status();
    let prefix = root.display().to_string();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
}

impl Drop for Ecs {
    fn drop(&mut self) {
        // The server (and its agent) first, so nothing starts containers again.
        self.srv.kill9();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(format!("agent --cluster c2 --control {}", self.api()))
            .status();
        clean_engine(&self.engine_root());
        clean_engine(&self.dir.path().join("agent2/engine"));
        clean_engine(&self.dir.path().join("client"));
    }
}
