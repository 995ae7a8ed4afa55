//! The ELBv2 API driven in process (no HTTP) against a fake data plane: semantics, validation
//! (nothing stored on a refusal), priorities, defaults, pagination, ResourceInUse, rollback
//! when the data plane cannot bind, durability across a reopen, the internal API.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use berth_aws::json::RequestContext;
use berth_aws::query::Params;
use berth_aws::AwsError;

use super::*;
use crate::control::{Control, ControlConfig};
use crate::model::Instance;
use crate::store::RedbStore;

/// Records the last configuration; refuses listeners on `taken` ports.
#[derive(Default)]
struct FakeDataPlane {
    cfg: Mutex<berth_lb::Config>,
    taken: Mutex<BTreeSet<u16>>,
}

#[async_trait::async_trait]
impl DataPlaneApi for FakeDataPlane {
    async fn apply(&self, cfg: berth_lb::Config) -> Result<(), berth_lb::LbError> {
        let taken = self.taken.lock().expect("lock").clone();
        if let Some(l) = cfg
            .listeners
            .iter()
            .find(|l| taken.contains(&l.bind.port()))
        {
            return Err(berth_lb::LbError::Bind {
                addr: l.bind,
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            });
        }
        *self.cfg.lock().expect("lock") = cfg;
        Ok(())
    }
    fn target_health(&self, tg: &str) -> Vec<berth_lb::TargetHealth> {
        let cfg = self.cfg.lock().expect("lock");
        cfg.target_groups
            .iter()
            .filter(|t| t.id == tg)
            .flat_map(|t| t.targets.iter())
            .map(|t| berth_lb::TargetHealth {
                id: t.id.clone(),
                port: t.port,
                state: berth_lb::TargetState::Healthy,
                reason: None,
                description: None,
                in_flight: 0,
            })
            .collect()
    }
}

struct T {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    control: Arc<Control>,
    dp: Arc<FakeDataPlane>,
    elb: Arc<Elbv2>,
    region: &'static str,
}

fn open(path: &std::path::Path) -> Arc<Control> {
    let store = RedbStore::open(path).expect("store");
    Control::open(Arc::new(store), ControlConfig::default()).expect("control")
}

impl T {
    fn new() -> T {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.redb");
        let control = open(&path);
        let dp = Arc::new(FakeDataPlane::default());
        let elb = Elbv2::with_data_plane(
            control.clone(),
            dp.clone(),
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)),
        );
        T {
            _dir: dir,
            path,
            control,
            dp,
            elb,
            region: "us-east-1",
        }
    }

    async fn call(&self, action: &str, params: &[(&str, &str)]) -> Result<String, AwsError> {
        let ctx = RequestContext {
            access_key_id: "AKID".into(),
            region: self.region.into(),
            request_id: "r".into(),
            account_id: "123456789012".into(),
        };
        let p = Params::from_pairs(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        ops::dispatch(&self.elb, &ctx, action, &p).await
    }

    async fn ok(&self, action: &str, params: &[(&str, &str)]) -> String {
        self.call(action, params)
            .await
            .unwrap_or_else(|e| panic!("{action} {params:?} failed: {e}"))
    }

    async fn err(&self, action: &str, params: &[(&str, &str)], code: &str) -> String {
        match self.call(action, params).await {
            Ok(v) => panic!("{action} {params:?} succeeded, expected {code}: {v}"),
            Err(e) => {
                assert_eq!(e.code, code, "{action} {params:?}: {e}");
                e.message
            }
        }
    }

    fn records(&self) -> Elbv2Region {
        self.elb.region(self.region)
    }

    async fn lb(&self, name: &str) -> String {
        let x = self
            .ok(
                "CreateLoadBalancer",
                &[
                    ("Name", name),
                    ("Subnets.member.1", "subnet-a"),
                    ("Subnets.member.2", "subnet-b"),
                ],
            )
            .await;
        field(&x, "LoadBalancerArn")
    }

    async fn tg(&self, name: &str, target_type: &str) -> String {
        let x = self
            .ok(
                "CreateTargetGroup",
                &[
                    ("Name", name),
                    ("Protocol", "HTTP"),
                    ("Port", "8080"),
                    ("TargetType", target_type),
                ],
            )
            .await;
        field(&x, "TargetGroupArn")
    }

    async fn listener(&self, lb: &str, port: &str, tg: &str) -> String {
        let x = self
            .ok(
                "CreateListener",
                &[
                    ("LoadBalancerArn", lb),
                    ("Protocol", "HTTP"),
                    ("Port", port),
                    ("DefaultActions.member.1.Type", "forward"),
                    ("DefaultActions.member.1.TargetGroupArn", tg),
                ],
            )
            .await;
        field(&x, "ListenerArn")
    }

    async fn rule(
        &self,
        listener: &str,
        prio: &str,
        path: &str,
        tg: &str,
    ) -> Result<String, AwsError> {
        self.call(
            "CreateRule",
            &[
                ("ListenerArn", listener),
                ("Priority", prio),
                ("Conditions.member.1.Field", "path-pattern"),
                (
                    "Conditions.member.1.PathPatternConfig.Values.member.1",
                    path,
                ),
                ("Actions.member.1.Type", "forward"),
                ("Actions.member.1.TargetGroupArn", tg),
            ],
        )
        .await
        .map(|x| field(&x, "RuleArn"))
    }
}

/// The text of the first `<tag>` of `xml`.
fn field(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find('<').expect("end") + start;
    xml[start..end].to_string()
}

fn count(xml: &str, tag: &str) -> usize {
    xml.matches(&format!("<{tag}>")).count()
}

#[tokio::test]
async fn load_balancer_lifecycle_and_arns() {
    let t = T::new();
    let lb = t.lb("web").await;
    assert!(
        lb.starts_with("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/web/"),
        "{lb}"
    );
    assert_eq!(lb.rsplit('/').next().expect("id").len(), 16);
    let d = t
        .ok("DescribeLoadBalancers", &[("Names.member.1", "web")])
        .await;
    assert_eq!(field(&d, "DNSName"), "127.0.0.9");
    assert_eq!(field(&d, "Scheme"), "internet-facing");
    assert_eq!(field(&d, "Code"), "active");
    assert_eq!(count(&d, "SubnetId"), 2);
    assert!(field(&d, "ZoneName").starts_with("us-east-1"));
    t.err(
        "CreateLoadBalancer",
        &[("Name", "web")],
        "DuplicateLoadBalancerName",
    )
    .await;
    // The same settings again: the existing load balancer (AWS's Create* are idempotent).
    assert_eq!(t.lb("web").await, lb);
    let tg = t.tg("same", "ip").await;
    assert_eq!(t.tg("same", "ip").await, tg);
    t.err(
        "CreateTargetGroup",
        &[
            ("Name", "same"),
            ("Protocol", "HTTP"),
            ("Port", "8080"),
            ("TargetType", "instance"),
        ],
        "DuplicateTargetGroupName",
    )
    .await;
    for bad in [
        "-web",
        "web-",
        "we_b",
        "internal-x",
        "a23456789012345678901234567890123",
        "",
    ] {
        t.err("CreateLoadBalancer", &[("Name", bad)], "ValidationError")
            .await;
    }
    t.err(
        "CreateLoadBalancer",
        &[("Name", "nlb"), ("Type", "network")],
        "InvalidConfigurationRequest",
    )
    .await;
    t.err(
        "CreateLoadBalancer",
        &[("Name", "x"), ("Scheme", "public")],
        "ValidationError",
    )
    .await;
    t.err(
        "CreateLoadBalancer",
        &[
            ("Name", "x"),
            ("Tags.member.1.Key", "k"),
            ("Tags.member.2.Key", "k"),
        ],
        "DuplicateTagKeys",
    )
    .await;
    assert_eq!(
        t.records().load_balancers.len(),
        1,
        "refused creations stored nothing"
    );
    t.err(
        "DescribeLoadBalancers",
        &[("Names.member.1", "nope")],
        "LoadBalancerNotFound",
    )
    .await;
    t.err(
        "DescribeLoadBalancers",
        &[("LoadBalancerArns.member.1", "garbage")],
        "ValidationError",
    )
    .await;

    // Attributes: defaults, modification, deletion protection.
    let a = t
        .ok(
            "DescribeLoadBalancerAttributes",
            &[("LoadBalancerArn", &lb)],
        )
        .await;
    assert!(
        a.contains("<Key>idle_timeout.timeout_seconds</Key><Value>60</Value>"),
        "{a}"
    );
    assert!(count(&a, "member") <= 20);
    t.err(
        "ModifyLoadBalancerAttributes",
        &[
            ("LoadBalancerArn", &lb),
            ("Attributes.member.1.Key", "idle_timeout.timeout_seconds"),
            ("Attributes.member.1.Value", "0"),
        ],
        "ValidationError",
    )
    .await;
    t.err(
        "ModifyLoadBalancerAttributes",
        &[
            ("LoadBalancerArn", &lb),
            ("Attributes.member.1.Key", "no.such"),
            ("Attributes.member.1.Value", "1"),
        ],
        "ValidationError",
    )
    .await;
    let m = t
        .ok(
            "ModifyLoadBalancerAttributes",
            &[
                ("LoadBalancerArn", &lb),
                ("Attributes.member.1.Key", "idle_timeout.timeout_seconds"),
                ("Attributes.member.1.Value", "120"),
                ("Attributes.member.2.Key", "deletion_protection.enabled"),
                ("Attributes.member.2.Value", "true"),
            ],
        )
        .await;
    assert!(
        m.contains("<Key>idle_timeout.timeout_seconds</Key><Value>120</Value>"),
        "{m}"
    );
    t.err(
        "DeleteLoadBalancer",
        &[("LoadBalancerArn", &lb)],
        "OperationNotPermitted",
    )
    .await;
    t.ok(
        "ModifyLoadBalancerAttributes",
        &[
            ("LoadBalancerArn", &lb),
            ("Attributes.member.1.Key", "deletion_protection.enabled"),
            ("Attributes.member.1.Value", "false"),
        ],
    )
    .await;
    t.ok("DeleteLoadBalancer", &[("LoadBalancerArn", &lb)])
        .await;
    // Idempotent.
    t.ok("DeleteLoadBalancer", &[("LoadBalancerArn", &lb)])
        .await;
    assert!(t.records().load_balancers.is_empty());
}

#[tokio::test]
async fn pagination() {
    let t = T::new();
    for n in ["e", "a", "d", "c", "b"] {
        t.lb(n).await;
    }
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("PageSize", "2".to_string())];
        if let Some(m) = &marker {
            params.push(("Marker", m.clone()));
        }
        let p: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let x = t.ok("DescribeLoadBalancers", &p).await;
        pages += 1;
        let mut rest = x.as_str();
        while let Some(i) = rest.find("<LoadBalancerName>") {
            names.push(field(&rest[i..], "LoadBalancerName"));
            rest = &rest[i + 1..];
        }
        if x.contains("<NextMarker>") {
            marker = Some(field(&x, "NextMarker"));
        } else {
            break;
        }
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    t.err(
        "DescribeLoadBalancers",
        &[("PageSize", "0")],
        "ValidationError",
    )
    .await;
    t.err(
        "DescribeLoadBalancers",
        &[("PageSize", "401")],
        "ValidationError",
    )
    .await;
    t.err(
        "DescribeLoadBalancers",
        &[("Marker", "!!")],
        "ValidationError",
    )
    .await;
}

#[tokio::test]
async fn target_group_defaults_validation_and_attributes() {
    let t = T::new();
    let tg = t.tg("app", "ip").await;
    assert!(tg.contains(":targetgroup/app/"), "{tg}");
    let d = t
        .ok("DescribeTargetGroups", &[("TargetGroupArns.member.1", &tg)])
        .await;
    for (k, v) in [
        ("HealthCheckProtocol", "HTTP"),
        ("HealthCheckPort", "traffic-port"),
        ("HealthCheckEnabled", "true"),
        ("HealthCheckIntervalSeconds", "30"),
        ("HealthCheckTimeoutSeconds", "5"),
        ("HealthyThresholdCount", "5"),
        ("UnhealthyThresholdCount", "2"),
        ("HealthCheckPath", "/"),
        ("HttpCode", "200"),
        ("ProtocolVersion", "HTTP1"),
        ("TargetType", "ip"),
    ] {
        assert_eq!(field(&d, k), v, "{k}: {d}");
    }
    for (params, code) in [
        (vec![("Name", "x"), ("Port", "80")], "ValidationError"),
        (vec![("Name", "x"), ("Protocol", "HTTP")], "ValidationError"),
        (
            vec![("Name", "x"), ("Protocol", "HTTP"), ("Port", "0")],
            "ValidationError",
        ),
        (
            vec![("Name", "x"), ("Protocol", "HTTP"), ("Port", "65536")],
            "ValidationError",
        ),
        (
            vec![("Name", "x"), ("Protocol", "HTTPS"), ("Port", "80")],
            "InvalidConfigurationRequest",
        ),
        (
            vec![("Name", "x"), ("Protocol", "TCP"), ("Port", "80")],
            "InvalidConfigurationRequest",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("TargetType", "lambda"),
            ],
            "InvalidConfigurationRequest",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("HealthCheckIntervalSeconds", "4"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("HealthCheckTimeoutSeconds", "30"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("HealthyThresholdCount", "11"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("HealthCheckPath", "nope"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("Matcher.HttpCode", "600"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("Matcher.HttpCode", "299-200"),
            ],
            "ValidationError",
        ),
        (
            vec![
                ("Name", "x"),
                ("Protocol", "HTTP"),
                ("Port", "80"),
                ("ProtocolVersion", "HTTP3"),
            ],
            "ValidationError",
        ),
        (
            vec![("Name", "app"), ("Protocol", "HTTP"), ("Port", "80")],
            "DuplicateTargetGroupName",
        ),
    ] {
        t.err("CreateTargetGroup", &params, code).await;
    }
    assert_eq!(t.records().target_groups.len(), 1);

    let m = t
        .ok(
            "ModifyTargetGroup",
            &[
                ("TargetGroupArn", &tg),
                ("HealthCheckPath", "/health"),
                ("Matcher.HttpCode", "200-299"),
            ],
        )
        .await;
    assert_eq!(field(&m, "HealthCheckPath"), "/health");
    assert_eq!(field(&m, "HttpCode"), "200-299");

    let a = t
        .ok("DescribeTargetGroupAttributes", &[("TargetGroupArn", &tg)])
        .await;
    assert!(
        a.contains("<Key>deregistration_delay.timeout_seconds</Key><Value>300</Value>"),
        "{a}"
    );
    assert!(a.contains("<Key>load_balancing.algorithm.type</Key><Value>round_robin</Value>"));
    let set = |k: &'static str, v: &'static str| {
        vec![
            ("TargetGroupArn", tg.clone()),
            ("Attributes.member.1.Key", k.to_string()),
            ("Attributes.member.1.Value", v.to_string()),
        ]
    };
    for (k, v) in [
        ("slow_start.duration_seconds", "10"),
        ("slow_start.duration_seconds", "901"),
        ("deregistration_delay.timeout_seconds", "3601"),
        ("load_balancing.algorithm.type", "random"),
        ("stickiness.enabled", "maybe"),
    ] {
        let p = set(k, v);
        let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (*a, b.as_str())).collect();
        t.err("ModifyTargetGroupAttributes", &p, "ValidationError")
            .await;
    }
    let p = set("load_balancing.algorithm.type", "weighted_random");
    let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (*a, b.as_str())).collect();
    t.err(
        "ModifyTargetGroupAttributes",
        &p,
        "InvalidConfigurationRequest",
    )
    .await;
    for (k, v) in [
        ("slow_start.duration_seconds", "30"),
        ("deregistration_delay.timeout_seconds", "5"),
    ] {
        let p = set(k, v);
        let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (*a, b.as_str())).collect();
        t.ok("ModifyTargetGroupAttributes", &p).await;
    }
    // Slow start and least outstanding requests do not go together.
    let p = set(
        "load_balancing.algorithm.type",
        "least_outstanding_requests",
    );
    let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (*a, b.as_str())).collect();
    t.err(
        "ModifyTargetGroupAttributes",
        &p,
        "InvalidConfigurationRequest",
    )
    .await;
    let info = t.elb.target_group("us-east-1", &tg).expect("info");
    assert_eq!(info.deregistration_delay, std::time::Duration::from_secs(5));
    assert_eq!(info.slow_start, std::time::Duration::from_secs(30));
    assert_eq!(info.target_type, "ip");
    assert_eq!(info.port, 8080);
    assert_eq!(
        info.health_check_interval,
        std::time::Duration::from_secs(30)
    );
    assert!(
        t.elb.target_group("eu-west-1", &tg).is_none(),
        "regions are separate"
    );
}

#[tokio::test]
async fn listeners_rules_priorities_and_config() {
    let t = T::new();
    let lb = t.lb("web").await;
    let tg = t.tg("app", "ip").await;
    let tg2 = t.tg("api", "ip").await;
    t.err(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb),
            ("Protocol", "HTTPS"),
            ("Port", "443"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg),
        ],
        "UnsupportedProtocol",
    )
    .await;
    t.err(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb),
            ("Protocol", "HTTP"),
            ("Port", "70000"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg),
        ],
        "ValidationError",
    )
    .await;
    let missing_tg = tg.replace("/app/", "/zzz/");
    t.err(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &missing_tg),
        ],
        "TargetGroupNotFound",
    )
    .await;
    t.err(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb),
            ("Protocol", "HTTP"),
            ("Port", "80"),
            ("DefaultActions.member.1.Type", "authenticate-oidc"),
        ],
        "InvalidLoadBalancerAction",
    )
    .await;
    assert!(t.records().listeners.is_empty());
    let l = t.listener(&lb, "8081", &tg).await;
    assert!(l.contains(":listener/app/web/"), "{l}");
    // The same settings again: the same listener (AWS's idempotency), nothing new stored.
    let again = t
        .ok(
            "CreateListener",
            &[
                ("LoadBalancerArn", &lb),
                ("Protocol", "HTTP"),
                ("Port", "8081"),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", &tg),
            ],
        )
        .await;
    assert!(again.contains(&l), "{again}");
    assert_eq!(t.records().listeners.len(), 1);
    // Other settings on a port in use: DuplicateListener.
    t.err(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb),
            ("Protocol", "HTTP"),
            ("Port", "8081"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg2),
        ],
        "DuplicateListener",
    )
    .await;
    // Another load balancer on the same port of this host.
    let lb2 = t.lb("other").await;
    let msg = t
        .err(
            "CreateListener",
            &[
                ("LoadBalancerArn", &lb2),
                ("Protocol", "HTTP"),
                ("Port", "8081"),
                ("DefaultActions.member.1.Type", "fixed-response"),
                (
                    "DefaultActions.member.1.FixedResponseConfig.StatusCode",
                    "404",
                ),
            ],
            "DuplicateListener",
        )
        .await;
    assert!(msg.contains("web"), "{msg}");
    // A target group serves one load balancer.
    t.err(
        "CreateListener",
        &[
            ("LoadBalancerArn", &lb2),
            ("Protocol", "HTTP"),
            ("Port", "8082"),
            ("DefaultActions.member.1.Type", "forward"),
            ("DefaultActions.member.1.TargetGroupArn", &tg),
        ],
        "TargetGroupAssociationLimit",
    )
    .await;

    // Rules and priorities.
    let r1 = t.rule(&l, "10", "/api/*", &tg2).await.expect("rule");
    assert!(r1.contains(":listener-rule/app/web/"), "{r1}");
    assert_eq!(
        t.rule(&l, "10", "/x", &tg2).await.expect_err("dup").code,
        "PriorityInUse"
    );
    assert_eq!(
        t.rule(&l, "0", "/x", &tg2).await.expect_err("0").code,
        "ValidationError"
    );
    assert_eq!(
        t.rule(&l, "50001", "/x", &tg2).await.expect_err("big").code,
        "ValidationError"
    );
    assert_eq!(
        t.rule(&l, "11", "/a b", &tg2)
            .await
            .expect_err("space")
            .code,
        "ValidationError"
    );
    let long = format!("/{}", "a".repeat(128));
    assert_eq!(
        t.rule(&l, "11", &long, &tg2).await.expect_err("long").code,
        "ValidationError"
    );
    let r2 = t.rule(&l, "5", "/static/*", &tg).await.expect("rule");
    // More than five values.
    let mut six: Vec<(String, String)> = vec![
        ("ListenerArn".into(), l.clone()),
        ("Priority".into(), "20".into()),
        ("Conditions.member.1.Field".into(), "host-header".into()),
        ("Actions.member.1.Type".into(), "fixed-response".into()),
        (
            "Actions.member.1.FixedResponseConfig.StatusCode".into(),
            "200".into(),
        ),
    ];
    for i in 1..=6 {
        six.push((
            format!("Conditions.member.1.Values.member.{i}"),
            format!("h{i}.example.com"),
        ));
    }
    let p: Vec<(&str, &str)> = six.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    t.err("CreateRule", &p, "ValidationError").await;
    // Every condition kind, in both forms.
    let ok = t
        .ok(
            "CreateRule",
            &[
                ("ListenerArn", &l),
                ("Priority", "30"),
                ("Conditions.member.1.Field", "host-header"),
                ("Conditions.member.1.Values.member.1", "*.example.com"),
                ("Conditions.member.2.Field", "http-header"),
                (
                    "Conditions.member.2.HttpHeaderConfig.HttpHeaderName",
                    "X-Env",
                ),
                (
                    "Conditions.member.2.HttpHeaderConfig.Values.member.1",
                    "prod*",
                ),
                ("Conditions.member.3.Field", "http-request-method"),
                (
                    "Conditions.member.3.HttpRequestMethodConfig.Values.member.1",
                    "GET",
                ),
                ("Conditions.member.4.Field", "query-string"),
                (
                    "Conditions.member.4.QueryStringConfig.Values.member.1.Key",
                    "v",
                ),
                (
                    "Conditions.member.4.QueryStringConfig.Values.member.1.Value",
                    "2",
                ),
                ("Conditions.member.5.Field", "source-ip"),
                (
                    "Conditions.member.5.SourceIpConfig.Values.member.1",
                    "10.0.0.0/8",
                ),
                ("Actions.member.1.Type", "redirect"),
                ("Actions.member.1.RedirectConfig.Protocol", "HTTPS"),
                ("Actions.member.1.RedirectConfig.StatusCode", "HTTP_301"),
            ],
        )
        .await;
    assert_eq!(count(&ok, "Field"), 5, "{ok}");
    t.err(
        "CreateRule",
        &[
            ("ListenerArn", &l),
            ("Priority", "31"),
            (
                "Conditions.member.1.SourceIpConfig.Values.member.1",
                "10.0.0.0/33",
            ),
            ("Actions.member.1.Type", "fixed-response"),
            ("Actions.member.1.FixedResponseConfig.StatusCode", "200"),
        ],
        "ValidationError",
    )
    .await;
    t.err(
        "CreateRule",
        &[
            ("ListenerArn", &l),
            ("Priority", "31"),
            ("Conditions.member.1.Field", "path-pattern"),
            ("Conditions.member.1.Values.member.1", "/x"),
            ("Actions.member.1.Type", "redirect"),
            ("Actions.member.1.RedirectConfig.StatusCode", "HTTP_302"),
        ],
        "InvalidLoadBalancerAction",
    )
    .await;

    // DescribeRules: by priority, the default rule last.
    let d = t.ok("DescribeRules", &[("ListenerArn", &l)]).await;
    let prios: Vec<&str> = d
        .split("<Priority>")
        .skip(1)
        .map(|s| &s[..s.find('<').expect("<")])
        .collect();
    assert_eq!(prios, ["5", "10", "30", "default"], "{d}");
    assert!(
        d.ends_with("<IsDefault>true</IsDefault></member></Rules>"),
        "{d}"
    );

    // SetRulePriorities: swap is fine, a collision is not, nothing half-done.
    t.ok(
        "SetRulePriorities",
        &[
            ("RulePriorities.member.1.RuleArn", &r1),
            ("RulePriorities.member.1.Priority", "5"),
            ("RulePriorities.member.2.RuleArn", &r2),
            ("RulePriorities.member.2.Priority", "10"),
        ],
    )
    .await;
    t.err(
        "SetRulePriorities",
        &[
            ("RulePriorities.member.1.RuleArn", &r1),
            ("RulePriorities.member.1.Priority", "30"),
        ],
        "PriorityInUse",
    )
    .await;
    let rules = t.records();
    let prio = |arn: &str| {
        rules
            .rules
            .values()
            .find(|r| r.arn == arn)
            .expect("rule")
            .priority
    };
    assert_eq!((prio(&r1), prio(&r2)), (5, 10));
    let default_arn = field(&d[d.rfind("<RuleArn>").expect("default")..], "RuleArn");
    t.err(
        "SetRulePriorities",
        &[
            ("RulePriorities.member.1.RuleArn", &default_arn),
            ("RulePriorities.member.1.Priority", "3"),
        ],
        "OperationNotPermitted",
    )
    .await;
    t.err(
        "DeleteRule",
        &[("RuleArn", &default_arn)],
        "OperationNotPermitted",
    )
    .await;
    t.err(
        "ModifyRule",
        &[
            ("RuleArn", &default_arn),
            ("Conditions.member.1.Field", "path-pattern"),
            ("Conditions.member.1.Values.member.1", "/"),
        ],
        "OperationNotPermitted",
    )
    .await;

    // The data plane's configuration.
    let cfg = t.dp.cfg.lock().expect("lock").clone();
    assert_eq!(cfg.listeners.len(), 1);
    let lc = &cfg.listeners[0];
    assert_eq!(lc.bind, SocketAddr::from(([127, 0, 0, 9], 8081)));
    assert_eq!(lc.rules.len(), 4);
    assert_eq!(lc.rules[0].id, r1);
    assert_eq!(
        lc.rules[0].conditions,
        vec![berth_lb::config::Condition::PathPattern(vec![
            "/api/*".into()
        ])]
    );
    assert!(lc.rules[3].conditions.is_empty());
    assert_eq!(lc.rules[3].id, default_arn);
    assert!(
        matches!(&lc.rules[2].action, berth_lb::config::Action::Redirect { location, status: 301 } if location == "https://#{host}:#{port}/#{path}?#{query}")
    );

    // ResourceInUse while forwarded to; deleting the listener deletes its rules.
    t.err(
        "DeleteTargetGroup",
        &[("TargetGroupArn", &tg)],
        "ResourceInUse",
    )
    .await;
    t.err(
        "DeleteTargetGroup",
        &[("TargetGroupArn", &tg2)],
        "ResourceInUse",
    )
    .await;
    let d = t
        .ok("DescribeTargetGroups", &[("LoadBalancerArn", &lb)])
        .await;
    assert_eq!(count(&d, "TargetGroupArn"), 2, "{d}");
    t.ok("DeleteListener", &[("ListenerArn", &l)]).await;
    assert!(t.records().rules.is_empty());
    t.err("DeleteListener", &[("ListenerArn", &l)], "ListenerNotFound")
        .await;
    t.ok("DeleteTargetGroup", &[("TargetGroupArn", &tg)]).await;
    t.ok("DeleteTargetGroup", &[("TargetGroupArn", &tg)]).await;
    assert!(t.dp.cfg.lock().expect("lock").listeners.is_empty());
}

#[tokio::test]
async fn bind_failure_rolls_back() {
    let t = T::new();
    let lb = t.lb("web").await;
    let tg = t.tg("app", "ip").await;
    let l = t.listener(&lb, "8081", &tg).await;
    t.dp.taken.lock().expect("lock").insert(9000);
    let msg = t
        .err(
            "CreateListener",
            &[
                ("LoadBalancerArn", &lb),
                ("Protocol", "HTTP"),
                ("Port", "9000"),
                ("DefaultActions.member.1.Type", "forward"),
                ("DefaultActions.member.1.TargetGroupArn", &tg),
            ],
            "InvalidConfigurationRequest",
        )
        .await;
    assert!(msg.contains("9000"), "{msg}");
    t.err(
        "ModifyListener",
        &[("ListenerArn", &l), ("Port", "9000")],
        "InvalidConfigurationRequest",
    )
    .await;
    let r = t.records();
    assert_eq!(r.listeners.len(), 1);
    assert_eq!(r.listeners.values().next().expect("l").port, 8081);
    assert_eq!(
        t.dp.cfg.lock().expect("lock").listeners[0].bind.port(),
        8081
    );
    // Nothing of the refused listener reached the store either.
    drop(t.elb);
    drop(t.control);
    let c = open(&t.path);
    let stored = c.read(|s| {
        s.region("us-east-1")
            .map(|r| r.elbv2.clone())
            .unwrap_or_default()
    });
    assert_eq!(stored.listeners.len(), 1);
    assert_eq!(stored.listeners.values().next().expect("l").port, 8081);
}

#[tokio::test]
async fn targets_health_and_internal_api() {
    let t = T::new();
    let lb = t.lb("web").await;
    let ip_tg = t.tg("ips", "ip").await;
    let inst_tg = t.tg("insts", "instance").await;
    t.err(
        "RegisterTargets",
        &[("TargetGroupArn", &ip_tg), ("Targets.member.1.Id", "i-123")],
        "InvalidTarget",
    )
    .await;
    t.err(
        "RegisterTargets",
        &[
            ("TargetGroupArn", &ip_tg),
            ("Targets.member.1.Id", "10.0.0.1"),
            ("Targets.member.1.Port", "0"),
        ],
        "ValidationError",
    )
    .await;
    t.err(
        "RegisterTargets",
        &[
            ("TargetGroupArn", &inst_tg),
            ("Targets.member.1.Id", "i-nope"),
        ],
        "InvalidTarget",
    )
    .await;
    t.ok(
        "RegisterTargets",
        &[
            ("TargetGroupArn", &ip_tg),
            ("Targets.member.1.Id", "10.0.0.1"),
            ("Targets.member.2.Id", "10.0.0.2"),
            ("Targets.member.2.Port", "9000"),
        ],
    )
    .await;
    // An ECS container instance with and without berth.address.
    t.control
        .write(crate::store::Durability::Immediate, |tx| {
            for (id, addr) in [("i-aaa", Some("192.0.2.7")), ("i-bbb", None)] {
                let mut attributes = BTreeMap::new();
                if let Some(a) = addr {
                    attributes.insert("berth.address".to_string(), Some(a.to_string()));
                }
                tx.put_instance(Instance {
                    arn: format!(
                        "arn:aws:ecs:us-east-1:123456789012:container-instance/default/{id}"
                    ),
                    id: id.into(),
                    region: "us-east-1".into(),
                    cluster: "default".into(),
                    ec2_instance_id: id.into(),
                    status: "ACTIVE".into(),
                    status_reason: None,
                    agent_connected: true,
                    registered_at: 0.0,
                    cpu: 1024,
                    memory: 1024,
                    reserved_tcp_ports: vec![],
                    reserved_udp_ports: vec![],
                    attributes,
                    version_info: None,
                    version: 0,
                });
            }
            Ok(())
        })
        .expect("instances");
    t.elb
        .register_targets(
            "us-east-1",
            &inst_tg,
            &[("i-aaa".into(), 0), ("i-bbb".into(), 8000)],
        )
        .await
        .expect("internal register");
    let cfg = t.dp.cfg.lock().expect("lock").clone();
    let addrs: BTreeMap<String, Vec<SocketAddr>> = cfg
        .target_groups
        .iter()
        .map(|g| (g.id.clone(), g.targets.iter().map(|t| t.addr).collect()))
        .collect();
    assert_eq!(
        addrs[&ip_tg],
        vec![
            SocketAddr::from(([10, 0, 0, 1], 8080)),
            SocketAddr::from(([10, 0, 0, 2], 9000))
        ]
    );
    assert_eq!(
        addrs[&inst_tg],
        vec![
            SocketAddr::from(([192, 0, 2, 7], 8080)),
            SocketAddr::from(([127, 0, 0, 1], 8000))
        ]
    );

    // Not used by a load balancer yet: unused.
    let h = t
        .ok("DescribeTargetHealth", &[("TargetGroupArn", &ip_tg)])
        .await;
    assert_eq!(count(&h, "State"), 2);
    assert_eq!(field(&h, "State"), "unused");
    assert_eq!(field(&h, "Reason"), "Target.NotInUse");
    t.listener(&lb, "8081", &ip_tg).await;
    let h = t
        .ok("DescribeTargetHealth", &[("TargetGroupArn", &ip_tg)])
        .await;
    assert_eq!(field(&h, "State"), "healthy");
    assert_eq!(field(&h, "HealthCheckPort"), "8080");
    let h = t
        .ok(
            "DescribeTargetHealth",
            &[
                ("TargetGroupArn", &ip_tg),
                ("Targets.member.1.Id", "10.9.9.9"),
            ],
        )
        .await;
    assert_eq!(field(&h, "Reason"), "Target.NotRegistered");
    assert_eq!(
        t.elb
            .target_health("us-east-1", &ip_tg)
            .expect("health")
            .len(),
        2
    );
    assert_eq!(
        t.elb
            .target_health("us-east-1", &ip_tg.replace("ips", "zz"))
            .expect_err("none")
            .code,
        "TargetGroupNotFound"
    );
    let info = t.elb.target_group("us-east-1", &ip_tg).expect("info");
    assert_eq!(info.load_balancer_arns, vec![lb.clone()]);

    t.err(
        "DeregisterTargets",
        &[
            ("TargetGroupArn", &ip_tg),
            ("Targets.member.1.Id", "10.0.0.3"),
        ],
        "InvalidTarget",
    )
    .await;
    t.ok(
        "DeregisterTargets",
        &[
            ("TargetGroupArn", &ip_tg),
            ("Targets.member.1.Id", "10.0.0.2"),
            ("Targets.member.1.Port", "9000"),
        ],
    )
    .await;
    t.elb
        .deregister_targets(
            "us-east-1",
            &inst_tg,
            &[("i-aaa".into(), 0), ("i-zzz".into(), 1)],
        )
        .await
        .expect("internal deregister is idempotent");
    let info = t.elb.target_group("us-east-1", &inst_tg).expect("info");
    assert_eq!(info.targets, vec![("i-bbb".to_string(), 8000)]);
}

#[tokio::test]
async fn tags_regions_and_durability() {
    let mut t = T::new();
    let lb = t.lb("web").await;
    let tg = t.tg("app", "ip").await;
    t.ok(
        "AddTags",
        &[
            ("ResourceArns.member.1", &lb),
            ("ResourceArns.member.2", &tg),
            ("Tags.member.1.Key", "env"),
            ("Tags.member.1.Value", "prod"),
        ],
    )
    .await;
    t.err(
        "AddTags",
        &[
            ("ResourceArns.member.1", &lb),
            ("ResourceArns.member.2", &tg.replace("app", "zz")),
            ("Tags.member.1.Key", "x"),
        ],
        "TargetGroupNotFound",
    )
    .await;
    t.err(
        "AddTags",
        &[
            ("ResourceArns.member.1", &lb),
            ("Tags.member.1.Key", "aws:x"),
        ],
        "ValidationError",
    )
    .await;
    let d = t
        .ok(
            "DescribeTags",
            &[
                ("ResourceArns.member.1", &lb),
                ("ResourceArns.member.2", &tg),
            ],
        )
        .await;
    assert_eq!(count(&d, "Key"), 2, "{d}");
    assert!(
        !d.contains("<Key>x</Key>"),
        "a refused AddTags changed nothing"
    );
    t.ok(
        "RemoveTags",
        &[("ResourceArns.member.1", &lb), ("TagKeys.member.1", "env")],
    )
    .await;
    let d = t
        .ok("DescribeTags", &[("ResourceArns.member.1", &lb)])
        .await;
    assert!(!d.contains("<Tags>"), "{d}");
    let many: Vec<(String, String)> = (1..=51)
        .flat_map(|i| {
            [
                (format!("Tags.member.{i}.Key"), format!("k{i}")),
                (format!("Tags.member.{i}.Value"), "v".into()),
            ]
        })
        .chain([("ResourceArns.member.1".to_string(), lb.clone())])
        .collect();
    let p: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    t.err("AddTags", &p, "TooManyTags").await;

    // Another region is another namespace.
    t.region = "eu-west-1";
    t.ok("DescribeLoadBalancers", &[]).await;
    assert!(t.records().load_balancers.is_empty());
    let lb_eu = t.lb("web").await;
    assert!(lb_eu.contains(":eu-west-1:"), "{lb_eu}");
    t.err(
        "DescribeLoadBalancers",
        &[("LoadBalancerArns.member.1", &lb)],
        "LoadBalancerNotFound",
    )
    .await;
    t.err("UnknownThing", &[], "InvalidAction").await;

    // Everything survives a restart, and the stored configuration is applied again.
    let T {
        _dir,
        path,
        elb,
        control,
        ..
    } = t;
    drop(elb);
    drop(control);
    let c = open(&path);
    let dp = Arc::new(FakeDataPlane::default());
    let elb = Elbv2::with_data_plane(c.clone(), dp.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    let us = elb.region("us-east-1");
    assert_eq!(us.load_balancers.len(), 1);
    assert_eq!(us.target_groups.len(), 1);
    assert_eq!(elb.region("eu-west-1").load_balancers.len(), 1);
    elb.apply_stored().await.expect("apply");
    assert_eq!(dp.cfg.lock().expect("lock").target_groups.len(), 1);
}
