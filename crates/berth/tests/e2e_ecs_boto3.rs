//! End to end: boto3 drives the ECS API of `berth serve` (control plane + registry + local
//! agent, real containers as root) and `tests/e2e/ecs_boto3.py` validates every raw response,
//! waiters' and paginators' included, against botocore's ECS service model: clusters, capacity
//! providers, task definitions, the agent's container instance and its attributes, a real task
//! of a busybox image pushed here with an ECR token (RunTask through the tasks_running and
//! tasks_stopped waiters), resource tags, and errors whose `__type` the model lists.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (or fails under BERTH_REQUIRE_ROOT=1) without root.
fn need_root() -> bool {
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
fn read_key(data: &Path) -> (String, String) {
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

struct Env {
    dir: tempfile::TempDir,
    srv: Server,
    aws: PathBuf,
    key: (String, String),
}

impl Env {
    fn api(&self) -> &str {
        self.srv.api_url.as_deref().expect("api url")
    }

    /// `cmd` (aws or python) with the server's key, us-east-1 and no host configuration.
    fn with_key(&self, program: &Path) -> Command {
        let mut cmd = aws_cmd(program, self.dir.path());
        cmd.env("AWS_ACCESS_KEY_ID", &self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.key.1);
        cmd
    }

    /// `berth` against a client engine root of its own (not the agent's).
    fn berth(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.env("BERTH_ROOT", self.dir.path().join("client"))
            .env("BERTH_CONFIG", self.dir.path().join("auth.json"))
            .env("BERTH_NETWORK", "none")
            .env("RUST_LOG", "error")
            .args(args);
        c
    }

    /// Builds a busybox image locally and pushes it as `<registry>/<name>` with an ECR token
    /// (`aws ecr get-login-password | berth login -u AWS --password-stdin`).
    fn push_busybox(&self, name: &str) -> String {
        let fs = self.dir.path().join("fs");
        std::fs::create_dir_all(fs.join("bin")).expect("mkdir");
        std::fs::create_dir_all(fs.join("tmp")).expect("mkdir");
        std::fs::copy("/bin/busybox", fs.join("bin/busybox")).expect("busybox-static");
        for a in ["sh", "sleep", "true"] {
            std::os::unix::fs::symlink("busybox", fs.join("bin").join(a)).expect("symlink");
        }
        let tar = self.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&fs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(st.success());
        let reference = format!("{}/{name}", self.srv.addr);
        run_ok(
            self.berth(&["image", "import", "--change", r#"CMD ["/bin/sh"]"#])
                .arg(&tar)
                .arg(&reference),
        );
        let mut pw = self.with_key(&self.aws);
        pw.args(["ecr", "get-login-password", "--endpoint-url", self.api()]);
        let password = run_ok(&mut pw);
        run_with_stdin(
            &mut self.berth(&["login", "-u", "AWS", "--password-stdin", &self.srv.addr]),
            password.trim(),
        );
        run_ok(&mut self.berth(&["push", &reference]));
        reference
    }

    fn agent_berth(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.env("BERTH_ROOT", self.srv.data.join("engine"))
            .env("RUST_LOG", "error")
            .args(args);
        c
    }

    /// Ids of every container of the agent's engine.
    fn agent_containers(&self) -> Vec<String> {
        run_ok(&mut self.agent_berth(&["ps", "-a", "-q", "--no-trunc"]))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Env {
    /// Leaves nothing running or mounted, even when the test failed: the server (and its
    /// agent) first, then the agent's containers, then mounts left under the test directory.
    fn drop(&mut self) {
        self.srv.kill9();
        if let Ok(out) = self.agent_berth(&["ps", "-a", "-q", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.agent_berth(&["rm", "-f", id]).output();
            }
        }
        let prefix = self.dir.path().display().to_string();
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
}

#[test]
fn ecs_boto3_responses_match_botocore_model() {
    if !need_root() {
        return;
    }
    let py = need!(python(&["boto3", "botocore"]));
    let aws = need!(aws());
    let dir = tempfile::Builder::new()
        .prefix("berth-ecs-boto3-")
        .tempdir()
        .expect("tempdir");
    let srv = Server::serve(&dir.path().join("data"), &["--task-cleanup-wait", "0"]);
    let key = read_key(&srv.data);
    let e = Env { dir, srv, aws, key };
    let image = e.push_busybox("boto/bb:1");

    let mut cmd = e.with_key(&py);
    cmd.arg(e2e_script("ecs_boto3.py")).args([
        "--endpoint",
        e.api(),
        "--registry",
        &e.srv.addr,
        "--image",
        &image,
    ]);
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ecs_boto3.py failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}\n{stderr}"));
    let v = json(last);
    let validated = v["validated"].as_array().expect("validated");
    eprintln!(
        "boto3: {} ECS responses validated against botocore's model",
        validated.len()
    );
    assert!(validated.len() >= 35, "{v}");
    for op in [
        "CreateCluster",
        "DescribeClusters",
        "ListClusters",
        "UpdateCluster",
        "PutClusterCapacityProviders",
        "CreateCapacityProvider",
        "DescribeCapacityProviders",
        "DeleteCapacityProvider",
        "RegisterTaskDefinition",
        "DescribeTaskDefinition",
        "ListTaskDefinitions",
        "ListTaskDefinitionFamilies",
        "DeregisterTaskDefinition",
        "DeleteTaskDefinitions",
        "ListContainerInstances",
        "DescribeContainerInstances",
        "PutAttributes",
        "ListAttributes",
        "DeleteAttributes",
        "UpdateContainerInstancesState",
        "RunTask",
        "DescribeTasks~tasks_running",
        "DescribeTasks",
        "ListTasks",
        "StopTask",
        "DescribeTasks~tasks_stopped",
        "TagResource",
        "UntagResource",
        "ListTagsForResource",
        "ClusterNotFoundException",
        "ClientException",
        "InvalidParameterException",
    ] {
        assert!(
            validated
                .iter()
                .filter_map(Value::as_str)
                .any(|x| x == op || x.ends_with(&format!("!{op}"))),
            "{op} not validated: {v}"
        );
    }

    // The script stopped its task; the agent removes its container (cleanup wait 0).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !e.agent_containers().is_empty() {
        assert!(
            Instant::now() < deadline,
            "containers left: {:?}\n{}",
            e.agent_containers(),
            e.srv.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
