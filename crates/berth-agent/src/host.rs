//! What the agent tells ECS about this host: resources, version, attributes.

use serde_json::{json, Value};

/// Ports the ECS agent reserves on every instance (SSH, Docker, the agent's own).
pub const RESERVED_PORTS: &[&str] = &["22", "2375", "2376", "51678", "51679"];

/// Capability attributes: the ones ECS's Linux agent reports for what Berth runs.
///
/// `container-health-check`: health checks are run (`health.rs`) and reported. Included
/// although only partly carried out, so that ordinary task definitions can be placed (their
/// fields are logged per task as unsupported): `logging-driver.awslogs` (logs stay in the
/// engine's json-file log).
const CAPABILITIES: &[&str] = &[
    "com.amazonaws.ecs.capability.logging-driver.json-file",
    "com.amazonaws.ecs.capability.logging-driver.none",
    "com.amazonaws.ecs.capability.logging-driver.awslogs",
    "com.amazonaws.ecs.capability.ecr-auth",
    "ecs.capability.execution-role-ecr-pull",
    "ecs.capability.docker-plugin.local",
    "ecs.capability.task-eni",
    "ecs.capability.container-ordering",
    "ecs.capability.container-health-check",
    "ecs.capability.task-cpu-mem-limit",
];

/// The oldest and newest Docker remote API versions announced (as `docker-remote-api.1.N`).
const DOCKER_API_MINORS: std::ops::RangeInclusive<u32> = 17..=44;

/// The CPU architecture as ECS names it (`x86_64`, `arm64`).
pub fn cpu_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

/// CPU units: 1024 per processor available to this process.
pub fn cpu_units() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i64) * 1024
}

/// Total memory in MiB from `/proc/meminfo`.
pub fn memory_mib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total_kib(&s))
        .map_or(0, |kib| kib / 1024)
}

fn parse_mem_total_kib(meminfo: &str) -> Option<i64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The instance attribute naming the address other hosts reach this host's published ports on.
pub const ADDRESS_ATTRIBUTE: &str = "berth.address";
/// The instance attribute (value `true`) of an agent that also offers Fargate platform
/// capacity (`berth agent --platform`): the control plane may place FARGATE tasks on it and
/// sends it `prepullImages`.
pub const PLATFORM_ATTRIBUTE: &str = berth_control::ecs::fargate::PLATFORM_ATTRIBUTE;

/// The local address of the route to the control plane at `control_url` (the address of the
/// socket the agent reaches it from; 127.0.0.1 for a loopback URL). A connected UDP socket
/// asks the kernel's routing table; nothing is sent.
pub async fn local_address_for(control_url: &str) -> Option<std::net::IpAddr> {
    let rest = control_url
        .split_once("://")
        .map_or(control_url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = match authority.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    let target = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = tokio::net::lookup_host(target).await.ok()?.next()?;
    let bind: std::net::SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(addr).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Every attribute: OS, architecture, capabilities, then the user's (which win).
pub fn attributes(user: &[(String, Option<String>)]) -> Vec<Value> {
    let mut attrs: Vec<(String, Option<String>)> = vec![
        ("ecs.os-type".into(), Some("linux".into())),
        ("ecs.os-family".into(), Some("LINUX".into())),
        (
            "ecs.cpu-architecture".into(),
            Some(cpu_architecture().into()),
        ),
    ];
    for minor in DOCKER_API_MINORS {
        attrs.push((
            format!("com.amazonaws.ecs.capability.docker-remote-api.1.{minor}"),
            None,
        ));
    }
    attrs.extend(CAPABILITIES.iter().map(|c| (c.to_string(), None)));
    // Every attribute a task definition's `requiresAttributes` can hold: the scheduler places
    // a task only where all of them are present (what is not carried out is logged per task).
    for c in berth_control::taskdef::CAPABILITY_ATTRIBUTES {
        if !attrs.iter().any(|(n, _)| n == c) {
            attrs.push((c.to_string(), None));
        }
    }
    for (name, value) in user {
        attrs.retain(|(n, _)| n != name);
        attrs.push((name.clone(), value.clone()));
    }
    attrs
        .into_iter()
        .map(|(name, value)| match value {
            Some(v) => json!({"name": name, "value": v}),
            None => json!({"name": name}),
        })
        .collect()
}

/// The `RegisterContainerInstance` input.
pub fn register_input(
    cluster: &str,
    instance_arn: Option<&str>,
    user_attributes: &[(String, Option<String>)],
) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let mut input = json!({
        "cluster": cluster,
        "totalResources": [
            {"name": "CPU", "type": "INTEGER", "integerValue": cpu_units()},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": memory_mib()},
            {"name": "PORTS", "type": "STRINGSET", "stringSetValue": RESERVED_PORTS},
            {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
        ],
        "versionInfo": {
            "agentVersion": version,
            "agentHash": option_env!("BERTH_GIT_HASH").unwrap_or("unknown"),
            "dockerVersion": format!("berth-{version}"),
        },
        "attributes": attributes(user_attributes),
    });
    if let (Some(arn), Some(obj)) = (instance_arn, input.as_object_mut()) {
        obj.insert("containerInstanceArn".into(), json!(arn));
    }
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_mem_total_kib("MemTotal:        8025500 kB\nMemFree: 1 kB\n"),
            Some(8_025_500)
        );
        assert_eq!(parse_mem_total_kib("nothing"), None);
        assert!(memory_mib() > 0);
        assert!(cpu_units() >= 1024);
    }

    #[tokio::test]
    async fn local_address_of_the_control_url() {
        let lo = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        assert_eq!(local_address_for("http://127.0.0.1:7000").await, lo);
        assert_eq!(local_address_for("http://127.0.0.1:7000/x?y").await, lo);
        assert_eq!(
            local_address_for("http://localhost:7000")
                .await
                .map(|a| a.is_loopback()),
            Some(true)
        );
        assert_eq!(local_address_for("127.0.0.1").await, lo);
        assert_eq!(
            local_address_for("http://[::1]:7000").await,
            Some(std::net::Ipv6Addr::LOCALHOST.into())
        );
        assert_eq!(local_address_for("http://").await, None);
    }

    #[test]
    fn register_input_shape() {
        let user = vec![
            ("zone".to_string(), Some("a".to_string())),
            ("ecs.os-type".to_string(), Some("custom".to_string())),
            ("gpu".to_string(), None),
        ];
        let v = register_input("prod", Some("arn:ci"), &user);
        assert_eq!(v["cluster"], "prod");
        assert_eq!(v["containerInstanceArn"], "arn:ci");
        assert_eq!(v["totalResources"][0]["name"], "CPU");
        assert_eq!(v["totalResources"][2]["stringSetValue"][4], "51679");
        assert_eq!(
            v["versionInfo"]["dockerVersion"],
            format!("berth-{}", env!("CARGO_PKG_VERSION"))
        );
        let attrs = v["attributes"].as_array().expect("attributes");
        let get = |n: &str| attrs.iter().find(|a| a["name"] == n).cloned();
        assert_eq!(get("ecs.os-type").expect("os")["value"], "custom");
        assert_eq!(get("ecs.os-family").expect("family")["value"], "LINUX");
        assert_eq!(get("zone").expect("zone")["value"], "a");
        assert!(get("gpu").expect("gpu").get("value").is_none());
        assert!(get("com.amazonaws.ecs.capability.docker-remote-api.1.17").is_some());
        assert!(get("com.amazonaws.ecs.capability.docker-remote-api.1.44").is_some());
        assert!(get("ecs.capability.task-eni").is_some());
        assert_eq!(
            attrs.iter().filter(|a| a["name"] == "ecs.os-type").count(),
            1
        );
        assert!(register_input("c", None, &[])
            .get("containerInstanceArn")
            .is_none());
    }
}
