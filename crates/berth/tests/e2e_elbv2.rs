//! End to end: the unmodified `aws elbv2` CLI and boto3 drive the ELBv2 API (AWS query
//! protocol) of a real `berth serve --no-agent` (no root needed). `tests/e2e/elbv2_boto3.py`
//! validates every raw XML response against botocore's model and covers every operation and
//! the error cases; the CLI part checks what a user sees, that refused calls store nothing,
//! that state survives a restart, and that an unsigned call gets an XML auth error.
//!
//! The data plane is not asserted here (no traffic through listeners).

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

struct Elb {
    _dir: tempfile::TempDir,
    srv: Server,
    aws: std::path::PathBuf,
}

const KEY: [&str; 4] = ["--access-key-id", AKID, "--secret-access-key", SECRET];

impl Elb {
    fn start() -> Option<Elb> {
        let aws = aws()?;
        let dir = tempfile::Builder::new()
            .prefix("berth-elbv2-e2e-")
            .tempdir()
            .expect("tempdir");
        let mut args = vec!["--no-agent"];
        args.extend_from_slice(&KEY);
        let srv = Server::serve(&dir.path().join("data"), &args);
        Some(Elb {
            _dir: dir,
            srv,
            aws,
        })
    }

    fn api(&self) -> String {
        self.srv.api_url.clone().expect("api url")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = aws_cmd(&self.aws, self._dir.path());
        cmd.arg("elbv2")
            .args(args)
            .args(["--endpoint-url", &self.api(), "--output", "json"]);
        cmd
    }

    fn call(&self, args: &[&str]) -> Result<Value, String> {
        let out = run(&mut self.cmd(args));
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

    fn ok(&self, args: &[&str]) -> Value {
        self.call(args)
            .unwrap_or_else(|e| panic!("aws elbv2 {args:?} failed:\n{e}\n{}", self.srv.log_text()))
    }

    fn err(&self, args: &[&str], code: &str) -> String {
        match self.call(args) {
            Ok(v) => panic!("aws elbv2 {args:?} succeeded, expected {code}: {v}"),
            Err(e) => {
                assert!(
                    e.contains(&format!("({code})")),
                    "aws elbv2 {args:?}: expected {code}, got:\n{e}"
                );
                e
            }
        }
    }
}

#[test]
fn elbv2_boto3_responses_match_botocore_model() {
    let py = need!(python(&["boto3", "botocore"]));
    let Some(e) = Elb::start() else { return };
    let base = free_port().to_string();
    let mut cmd = aws_cmd(&py, e._dir.path());
    cmd.arg(e2e_script("elbv2_boto3.py"))
        .args(["--endpoint", &e.api(), "--port-base", &base]);
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "elbv2_boto3.py failed ({}):\n{stderr}\n{stdout}\n{}",
        out.status,
        e.srv.log_text()
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no summary:\n{stdout}\n{stderr}"));
    let v = json(last);
    let validated = v["validated"].as_array().expect("validated");
    eprintln!(
        "boto3: {} ELBv2 responses validated against botocore's model",
        validated.len()
    );
    for op in [
        "CreateLoadBalancer",
        "DescribeLoadBalancers",
        "DeleteLoadBalancer",
        "DescribeLoadBalancerAttributes",
        "ModifyLoadBalancerAttributes",
        "SetSecurityGroups",
        "SetSubnets",
        "SetIpAddressType",
        "CreateTargetGroup",
        "DescribeTargetGroups",
        "ModifyTargetGroup",
        "DeleteTargetGroup",
        "DescribeTargetGroupAttributes",
        "ModifyTargetGroupAttributes",
        "RegisterTargets",
        "DeregisterTargets",
        "DescribeTargetHealth",
        "CreateListener",
        "DescribeListeners",
        "ModifyListener",
        "DeleteListener",
        "CreateRule",
        "DescribeRules",
        "ModifyRule",
        "DeleteRule",
        "SetRulePriorities",
        "AddTags",
        "RemoveTags",
        "DescribeTags",
        "DescribeAccountLimits",
        "DescribeLoadBalancers~load_balancer_available",
        "DescribeLoadBalancers~paginate",
        "LoadBalancerNotFound",
        "DuplicateLoadBalancerName",
        "TargetGroupNotFound",
        "DuplicateTargetGroupName",
        "ListenerNotFound",
        "RuleNotFound",
        "DuplicateListener",
        "UnsupportedProtocol",
        "PriorityInUse",
        "ResourceInUse",
        "InvalidTarget",
        "OperationNotPermitted",
        "TargetGroupAssociationLimit",
        "ValidationError",
        "MissingAuthenticationToken",
    ] {
        assert!(
            validated
                .iter()
                .filter_map(Value::as_str)
                .any(|x| x == op || x.ends_with(&format!("!{op}"))),
            "{op} not validated: {v}"
        );
    }
}

#[test]
fn elbv2_with_the_aws_cli() {
    let Some(mut e) = Elb::start() else { return };
    let lb = e.ok(&[
        "create-load-balancer",
        "--name",
        "web",
        "--subnets",
        "subnet-1",
        "subnet-2",
        "--tags",
        "Key=env,Value=test",
    ]);
    let lb_arn = lb["LoadBalancers"][0]["LoadBalancerArn"]
        .as_str()
        .expect("arn")
        .to_string();
    assert_eq!(lb["LoadBalancers"][0]["DNSName"], "127.0.0.1");
    let tg = e.ok(&[
        "create-target-group",
        "--name",
        "app",
        "--protocol",
        "HTTP",
        "--port",
        "8080",
        "--target-type",
        "ip",
        "--health-check-path",
        "/health",
    ]);
    let tg_arn = tg["TargetGroups"][0]["TargetGroupArn"]
        .as_str()
        .expect("arn")
        .to_string();
    let port = free_port().to_string();
    // (Out-of-range ports are refused by the CLI itself; elbv2_boto3.py sends them unvalidated.)
    let forward = format!("Type=forward,TargetGroupArn={tg_arn}");
    // HTTPS is refused; bad ports and missing target groups too; nothing is created.
    e.err(
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTPS",
            "--port",
            "443",
            "--default-actions",
            &forward,
        ],
        "UnsupportedProtocol",
    );
    e.err(
        &[
            "create-listener",
            "--load-balancer-arn",
            &lb_arn,
            "--protocol",
            "HTTP",
            "--port",
            &port,
            "--default-actions",
            &forward.replace("/app/", "/nope/"),
        ],
        "TargetGroupNotFound",
    );
    let l = e.ok(&[
        "create-listener",
        "--load-balancer-arn",
        &lb_arn,
        "--protocol",
        "HTTP",
        "--port",
        &port,
        "--default-actions",
        &forward,
    ]);
    let l_arn = l["Listeners"][0]["ListenerArn"]
        .as_str()
        .expect("arn")
        .to_string();
    e.err(
        &[
            "create-rule",
            "--listener-arn",
            &l_arn,
            "--priority",
            "10",
            "--conditions",
            "Field=path-pattern,Values=/bad path",
            "--actions",
            &forward,
        ],
        "ValidationError",
    );
    e.ok(&[
        "create-rule",
        "--listener-arn",
        &l_arn,
        "--priority",
        "10",
        "--conditions",
        "Field=path-pattern,Values=/api/*",
        "--actions",
        &forward,
    ]);
    e.err(
        &[
            "create-rule",
            "--listener-arn",
            &l_arn,
            "--priority",
            "10",
            "--conditions",
            "Field=path-pattern,Values=/other/*",
            "--actions",
            &forward,
        ],
        "PriorityInUse",
    );
    e.ok(&[
        "register-targets",
        "--target-group-arn",
        &tg_arn,
        "--targets",
        "Id=127.0.0.1,Port=9001",
        "Id=127.0.0.1,Port=9002",
    ]);
    let h = e.ok(&["describe-target-health", "--target-group-arn", &tg_arn]);
    let descs = h["TargetHealthDescriptions"].as_array().expect("list");
    assert_eq!(descs.len(), 2, "{h}");
    assert!(descs.iter().all(|d| d["TargetHealth"]["State"].is_string()));
    e.err(
        &["delete-target-group", "--target-group-arn", &tg_arn],
        "ResourceInUse",
    );
    let listeners = e.ok(&["describe-listeners", "--load-balancer-arn", &lb_arn]);
    assert_eq!(listeners["Listeners"].as_array().expect("list").len(), 1);

    // The unsigned call gets an XML auth error.
    let out = run(Command::new("curl")
        .args(["-s", "-i", "-X", "POST", "-H"])
        .arg("Content-Type: application/x-www-form-urlencoded; charset=utf-8")
        .args(["--data", "Action=DescribeLoadBalancers&Version=2015-12-01"])
        .arg(format!("{}/", e.api())));
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        assert!(text.contains("403"), "{text}");
        assert!(text.contains("text/xml"), "{text}");
        assert!(
            text.contains("<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>MissingAuthenticationToken</Code>"),
            "{text}"
        );
    }

    // Everything survives a restart.
    let mut extra = vec!["--no-agent"];
    extra.extend_from_slice(&KEY);
    e.srv.restart_serve(&extra);
    let rules = e.ok(&["describe-rules", "--listener-arn", &l_arn]);
    let prios: Vec<&str> = rules["Rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["Priority"].as_str().expect("priority"))
        .collect();
    assert_eq!(prios, ["10", "default"]);
    let tags = e.ok(&["describe-tags", "--resource-arns", &lb_arn]);
    assert_eq!(tags["TagDescriptions"][0]["Tags"][0]["Key"], "env");
    e.ok(&["delete-load-balancer", "--load-balancer-arn", &lb_arn]);
    e.ok(&["delete-target-group", "--target-group-arn", &tg_arn]);
    let lbs = e.ok(&["describe-load-balancers"]);
    assert_eq!(lbs["LoadBalancers"].as_array().expect("list").len(), 0);
}
