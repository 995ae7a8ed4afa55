//! The rules ECS applies when it registers a task definition, and the defaults it fills in.
//!
//! Messages use ECS's wording where it is known (from its API documentation and from errors users
//! have reported); the others follow the same style. ECS answers almost every rejection of a
//! well-formed request with `ClientException`; tag problems are `InvalidParameterException`.

use std::collections::{HashMap, HashSet};

use super::model::{
    Compatibility, ContainerCondition, ContainerDefinition, HealthCheck, LogDriver, NetworkMode,
    PortMapping, RegisterTaskDefinitionRequest, Tag, TaskDefinitionPlacementConstraintType,
    TransportProtocol, Volume,
};
use super::{size, TaskDefError};

/// At most this many containers in one task definition (an ECS quota that cannot be raised).
pub const MAX_CONTAINERS: usize = 10;
/// At most this many tags on one resource.
pub const MAX_TAGS: usize = 50;
/// At most this many placement constraints in a task definition.
pub const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
/// At most this many environment files per container.
pub const MAX_ENVIRONMENT_FILES: usize = 10;
/// At most this many port ranges per container.
pub const MAX_PORT_RANGES: usize = 100;
/// Docker's smallest memory limit and reservation for a container, in MiB.
pub const MIN_CONTAINER_MEMORY_MIB: i32 = 6;

fn client(message: impl Into<String>) -> TaskDefError {
    TaskDefError::Client(message.into())
}

fn invalid(message: impl Into<String>) -> TaskDefError {
    TaskDefError::InvalidParameter(message.into())
}

/// Letters, digits, `-` and `_`: the charset of families, container and volume names.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn in_range(value: Option<i32>, lo: i32, hi: i32) -> bool {
    value.is_none_or(|v| (lo..=hi).contains(&v))
}

/// What the task-wide checks of one container need to know.
struct TaskContext<'a> {
    mode: NetworkMode,
    cpu_units: Option<u32>,
    memory_mib: Option<u32>,
    fargate: bool,
    containers: &'a HashMap<&'a str, &'a ContainerDefinition>,
    volumes: &'a HashSet<&'a str>,
}

/// Validates `request` and fills in ECS's defaults in place (task `cpu`/`memory` become units and
/// MiB, containers get `essential`, `cpu`, `portMappings`, … as ECS echoes them).
pub(super) fn validate_and_normalize(
    request: &mut RegisterTaskDefinitionRequest,
) -> Result<(), TaskDefError> {
    validate(request)?;
    normalize(request);
    Ok(())
}

fn validate(request: &RegisterTaskDefinitionRequest) -> Result<(), TaskDefError> {
    check_family(&request.family)?;
    let mode = request.network_mode.unwrap_or(NetworkMode::Bridge);
    let containers = &request.container_definitions;
    if containers.is_empty() {
        return Err(client("Container list cannot be empty."));
    }
    if containers.len() > MAX_CONTAINERS {
        return Err(client(format!(
            "Too many containers. A task definition can have at most {MAX_CONTAINERS} containers."
        )));
    }
    let cpu_units = match request.cpu.as_deref() {
        Some(text) => Some(
            size::parse_task_cpu(text).ok_or_else(|| client("Invalid 'cpu' setting for task."))?,
        ),
        None => None,
    };
    let memory_mib = match request.memory.as_deref() {
        Some(text) => Some(
            size::parse_task_memory(text)
                .ok_or_else(|| client("Invalid 'memory' setting for task."))?,
        ),
        None => None,
    };
    let required = request
        .requires_compatibilities
        .as_deref()
        .unwrap_or_default();
    if required.contains(&Compatibility::ManagedInstances) {
        return Err(client(
            "The MANAGED_INSTANCES launch type is not supported. Use EC2, FARGATE or EXTERNAL.",
        ));
    }
    let fargate = required.contains(&Compatibility::Fargate);

    let volumes = request.volumes.as_deref().unwrap_or_default();
    let volume_names = check_volumes(volumes)?;

    let mut by_name: HashMap<&str, &ContainerDefinition> = HashMap::new();
    for container in containers {
        let name = check_container_name(container.name.as_deref())?;
        if by_name.insert(name, container).is_some() {
            return Err(client(
                "Container names must be unique within a task definition.",
            ));
        }
    }
    let context = TaskContext {
        mode,
        cpu_units,
        memory_mib,
        fargate,
        containers: &by_name,
        volumes: &volume_names,
    };
    for container in containers {
        check_container(container, &context)?;
    }
    check_task_ports(containers, mode)?;
    check_dependencies(containers, &by_name)?;
    if !containers.iter().any(ContainerDefinition::is_essential) {
        return Err(client(
            "Task definition must have at least one essential container.",
        ));
    }
    check_task_sums(containers, cpu_units, memory_mib)?;
    if fargate {
        if let Some(reason) = fargate_incompatibility(request, cpu_units, memory_mib) {
            return Err(client(reason));
        }
    }
    if required.contains(&Compatibility::External) && mode == NetworkMode::Awsvpc {
        return Err(client(
            "EXTERNAL compatible task definitions do not support networkMode=awsvpc.",
        ));
    }
    check_placement_constraints(request)?;
    if let Some(storage) = &request.ephemeral_storage {
        if !(21..=200).contains(&storage.size_in_gib) {
            return Err(client(
                "Invalid 'ephemeralStorage' setting. 'sizeInGiB' must be between 21 and 200.",
            ));
        }
    }
    if let Some(proxy) = &request.proxy_configuration {
        if !by_name.contains_key(proxy.container_name.as_str()) {
            return Err(client(format!(
                "Invalid 'proxyConfiguration' setting. Container '{}' is not defined in the task \
                 definition.",
                proxy.container_name
            )));
        }
    }
    check_tags(request.tags.as_deref().unwrap_or_default())?;
    Ok(())
}

fn check_family(family: &str) -> Result<(), TaskDefError> {
    if family.is_empty() {
        return Err(client("Family should not be null or empty."));
    }
    if family.chars().count() > 255 {
        return Err(client(
            "Family name is too long. The maximum length is 255 characters.",
        ));
    }
    if !family.chars().all(is_name_char) {
        return Err(client("Family contains invalid characters."));
    }
    Ok(())
}

fn check_container_name(name: Option<&str>) -> Result<&str, TaskDefError> {
    let name = name.unwrap_or_default();
    if name.is_empty() {
        return Err(client("Container.name should not be null or empty."));
    }
    if name.chars().count() > 255 {
        return Err(client(
            "Container.name is too long. The maximum length is 255 characters.",
        ));
    }
    if !name.chars().all(is_name_char) {
        return Err(client("Container.name contains invalid characters."));
    }
    Ok(name)
}

fn check_image(image: Option<&str>) -> Result<(), TaskDefError> {
    let image = image.unwrap_or_default();
    if image.trim().is_empty() {
        return Err(client("Container.image should not be null or empty."));
    }
    let (repository, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_:./#".contains(c);
    if repository.is_empty() || !repository.chars().all(allowed) {
        return Err(client("Container.image contains invalid characters."));
    }
    if repository.len() > 255 {
        return Err(client(
            "Container.image is too long. The maximum length before the digest is 255 characters.",
        ));
    }
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(client(
                "Container.image contains an invalid digest. Only sha256 digests of 64 hexadecimal \
                 characters are supported.",
            ));
        }
    }
    Ok(())
}

fn check_container(c: &ContainerDefinition, task: &TaskContext<'_>) -> Result<(), TaskDefError> {
    let name = c.name();
    check_image(c.image.as_deref())?;
    check_container_resources(c, task)?;
    check_container_networking(c, task)?;
    for mapping in c.port_mappings.as_deref().unwrap_or_default() {
        check_port_mapping(name, mapping, task.mode)?;
    }
    let ranges = c
        .port_mappings
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|m| m.container_port_range.is_some())
        .count();
    if ranges > MAX_PORT_RANGES {
        return Err(client(format!(
            "Invalid port mappings for container '{name}'. A container can have at most \
             {MAX_PORT_RANGES} port ranges."
        )));
    }
    if let Some(check) = &c.health_check {
        check_health_check(name, check)?;
    }
    check_container_storage(c, task)?;
    check_container_misc(c)
}

fn check_container_resources(
    c: &ContainerDefinition,
    task: &TaskContext<'_>,
) -> Result<(), TaskDefError> {
    let name = c.name();
    if c.cpu.is_some_and(|cpu| cpu < 0) {
        return Err(client(format!(
            "Invalid setting for container '{name}'. 'cpu' must be greater than or equal to 0."
        )));
    }
    for (field, value) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if value.is_some_and(|v| v < MIN_CONTAINER_MEMORY_MIB) {
            return Err(client(format!(
                "Invalid setting for container '{name}'. '{field}' must be at least \
                 {MIN_CONTAINER_MEMORY_MIB} MiB."
            )));
        }
    }
    if c.memory.is_none() && c.memory_reservation.is_none() && task.memory_mib.is_none() {
        return Err(client(format!(
            "Invalid setting for container '{name}'. At least one of 'memory' or \
             'memoryReservation' must be specified."
        )));
    }
    if let (Some(memory), Some(reservation)) = (c.memory, c.memory_reservation) {
        if memory < reservation {
            return Err(client(format!(
                "Invalid setting for container '{name}'. 'memory' must be greater than or equal \
                 to 'memoryReservation'."
            )));
        }
    }
    if let Some(task_memory) = task.memory_mib {
        for (field, value) in [
            ("memory", c.memory),
            ("memoryReservation", c.memory_reservation),
        ] {
            if value.is_some_and(|v| i64::from(v) > i64::from(task_memory)) {
                return Err(client(format!(
                    "The '{field}' setting for container '{name}' is greater than for the task."
                )));
            }
        }
    }
    if let (Some(task_cpu), Some(cpu)) = (task.cpu_units, c.cpu) {
        if i64::from(cpu) > i64::from(task_cpu) {
            return Err(client(format!(
                "The 'cpu' setting for container '{name}' is greater than for the task."
            )));
        }
    }
    if let Some(timeout) = c.stop_timeout {
        let lo = if task.fargate { 2 } else { 0 };
        if !(lo..=120).contains(&timeout) {
            return Err(client(format!(
                "Invalid setting for container '{name}'. 'stopTimeout' must be between {lo} and \
                 120 seconds."
            )));
        }
    }
    if let Some(timeout) = c.start_timeout {
        let (lo, hi) = if task.fargate {
            (2, 120)
        } else {
            (0, i32::MAX)
        };
        if !(lo..=hi).contains(&timeout) {
            return Err(client(if task.fargate {
                format!(
                    "Invalid setting for container '{name}'. 'startTimeout' must be between 2 \
                     and 120 seconds."
                )
            } else {
                format!(
                    "Invalid setting for container '{name}'. 'startTimeout' must be greater than \
                     or equal to 0."
                )
            }));
        }
    }
    for ulimit in c.ulimits.as_deref().unwrap_or_default() {
        // -1 is "unlimited" to Docker.
        let as_limit = |v: i32| if v == -1 { i64::MAX } else { i64::from(v) };
        if ulimit.soft_limit < -1 || ulimit.hard_limit < -1 {
            return Err(client(format!(
                "Invalid setting for container '{name}'. Limits of ulimit {} must be -1 or \
                 greater.",
                ulimit.name
            )));
        }
        if as_limit(ulimit.soft_limit) > as_limit(ulimit.hard_limit) {
            return Err(client(format!(
                "Invalid setting for container '{name}'. Soft limit exceeds hard limit for ulimit \
                 {}.",
                ulimit.name
            )));
        }
    }
    for requirement in c.resource_requirements.as_deref().unwrap_or_default() {
        if requirement.kind == super::model::ResourceType::Gpu {
            let ok = requirement
                .value
                .as_deref()
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|n| n > 0);
            if !ok {
                return Err(client(format!(
                    "Invalid 'resourceRequirements' setting for container '{name}'. The GPU \
                     value must be a positive integer."
                )));
            }
        }
    }
    Ok(())
}

fn check_container_networking(
    c: &ContainerDefinition,
    task: &TaskContext<'_>,
) -> Result<(), TaskDefError> {
    let name = c.name();
    let mode = task.mode;
    if let Some(links) = &c.links {
        if !links.is_empty() && mode != NetworkMode::Bridge {
            return Err(client(format!(
                "Links are not supported when networkMode={mode}."
            )));
        }
        for link in links {
            let target = link.split_once(':').map_or(link.as_str(), |(t, _)| t);
            if target == name || !task.containers.contains_key(target) {
                return Err(client(format!(
                    "Invalid link '{link}' for container '{name}'. Container '{target}' is not \
                     another container of the task definition."
                )));
            }
        }
    }
    if mode == NetworkMode::Awsvpc {
        let unsupported = [
            (c.hostname.is_some(), "hostname is"),
            (c.disable_networking == Some(true), "Disable Networking is"),
            (
                c.extra_hosts.as_ref().is_some_and(|v| !v.is_empty()),
                "Extra hosts are",
            ),
            (
                c.dns_servers.as_ref().is_some_and(|v| !v.is_empty()),
                "DNS servers are",
            ),
            (
                c.dns_search_domains.as_ref().is_some_and(|v| !v.is_empty()),
                "DNS search domains are",
            ),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(client(format!(
                "{what} not supported on container when networkMode=awsvpc."
            )));
        }
    }
    if mode == NetworkMode::None && c.port_mappings.as_ref().is_some_and(|v| !v.is_empty()) {
        return Err(client(format!(
            "Invalid port mappings for container '{name}'. Port mappings are not supported when \
             networkMode=none."
        )));
    }
    Ok(())
}

/// `"<first>-<last>"` with 1 ≤ first < last ≤ 65535.
pub(super) fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let (first, last) = text.split_once('-')?;
    let first: u16 = first.trim().parse().ok()?;
    let last: u16 = last.trim().parse().ok()?;
    (first >= 1 && first < last).then_some((first, last))
}

fn check_port_mapping(
    name: &str,
    mapping: &PortMapping,
    mode: NetworkMode,
) -> Result<(), TaskDefError> {
    let prefix = format!("Invalid port mapping for container '{name}'.");
    if let Some(port_name) = &mapping.name {
        let ok = !port_name.is_empty()
            && port_name.len() <= 64
            && !port_name.starts_with('-')
            && port_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return Err(client(format!(
                "{prefix} The name '{port_name}' must be 1-64 lowercase letters, numbers, \
                 underscores and hyphens, and can't start with a hyphen."
            )));
        }
    }
    if let Some(range) = &mapping.container_port_range {
        if mapping.container_port.is_some() || mapping.host_port.is_some() {
            return Err(client(format!(
                "{prefix} Cannot specify both single port and port range."
            )));
        }
        if !matches!(mode, NetworkMode::Bridge | NetworkMode::Awsvpc) {
            return Err(client(format!(
                "{prefix} 'containerPortRange' is only supported when networkMode is bridge or \
                 awsvpc."
            )));
        }
        if parse_port_range(range).is_none() {
            return Err(client(format!(
                "{prefix} Invalid 'containerPortRange' setting '{range}'. Use '<first>-<last>' \
                 with 1 <= first < last <= 65535."
            )));
        }
        return Ok(());
    }
    let Some(container_port) = mapping.container_port else {
        return Err(client(format!(
            "{prefix} Either 'containerPort' or 'containerPortRange' must be specified."
        )));
    };
    if !(1..=65535).contains(&container_port) {
        return Err(client(format!(
            "{prefix} 'containerPort' must be between 1 and 65535."
        )));
    }
    if let Some(host_port) = mapping.host_port {
        if !(0..=65535).contains(&host_port) {
            return Err(client(format!(
                "{prefix} 'hostPort' must be between 0 and 65535."
            )));
        }
        if matches!(mode, NetworkMode::Host | NetworkMode::Awsvpc)
            && host_port != 0
            && host_port != container_port
        {
            return Err(client(format!(
                "When networkMode={mode}, the host ports and container ports in port mappings \
                 must match."
            )));
        }
    }
    Ok(())
}

/// One port interval a mapping occupies, for overlap checks.
#[derive(Clone, Copy)]
struct Ports {
    protocol: TransportProtocol,
    first: u16,
    last: u16,
}

impl Ports {
    fn overlaps(&self, other: &Ports) -> bool {
        self.protocol == other.protocol && self.first <= other.last && other.first <= self.last
    }

    fn describe(&self) -> String {
        if self.first == self.last {
            format!("{}/{}", self.first, self.protocol)
        } else {
            format!("{}-{}/{}", self.first, self.last, self.protocol)
        }
    }
}

fn container_ports(mapping: &PortMapping) -> Option<Ports> {
    let protocol = mapping.protocol.unwrap_or(TransportProtocol::Tcp);
    if let Some(range) = &mapping.container_port_range {
        let (first, last) = parse_port_range(range)?;
        return Some(Ports {
            protocol,
            first,
            last,
        });
    }
    let port = u16::try_from(mapping.container_port?).ok()?;
    Some(Ports {
        protocol,
        first: port,
        last: port,
    })
}

fn find_overlap(ports: &[Ports]) -> Option<Ports> {
    for (i, a) in ports.iter().enumerate() {
        if let Some(b) = ports.get(i + 1..)?.iter().find(|b| a.overlaps(b)) {
            return Some(if a.first == a.last { *a } else { *b });
        }
    }
    None
}

/// Within a container a port is in at most one mapping; across the task a host port (bridge:
/// static host ports; host and awsvpc: the container ports, which are the host's or the task's
/// ports) is used once.
fn check_task_ports(
    containers: &[ContainerDefinition],
    mode: NetworkMode,
) -> Result<(), TaskDefError> {
    let mut task_ports = Vec::new();
    let mut names = HashSet::new();
    for c in containers {
        let mappings = c.port_mappings.as_deref().unwrap_or_default();
        let own: Vec<Ports> = mappings.iter().filter_map(container_ports).collect();
        if let Some(p) = find_overlap(&own) {
            return Err(client(format!(
                "Invalid port mappings for container '{}'. Container port {} is included in more \
                 than one port mapping.",
                c.name(),
                p.describe()
            )));
        }
        for m in mappings {
            if let Some(name) = &m.name {
                if !names.insert(name.as_str()) {
                    return Err(client(format!(
                        "Port mapping name '{name}' is already used in the task definition."
                    )));
                }
            }
        }
        match mode {
            NetworkMode::Bridge => task_ports.extend(mappings.iter().filter_map(|m| {
                let host = u16::try_from(m.host_port?).ok().filter(|p| *p != 0)?;
                let protocol = m.protocol.unwrap_or(TransportProtocol::Tcp);
                Some(Ports {
                    protocol,
                    first: host,
                    last: host,
                })
            })),
            NetworkMode::Host | NetworkMode::Awsvpc => task_ports.extend(own),
            NetworkMode::None => {}
        }
    }
    if let Some(p) = find_overlap(&task_ports) {
        let what = if mode == NetworkMode::Bridge {
            "Host"
        } else {
            "Container"
        };
        return Err(client(format!(
            "{what} port {} is used multiple times in the task.",
            p.describe()
        )));
    }
    Ok(())
}

fn check_health_check(name: &str, check: &HealthCheck) -> Result<(), TaskDefError> {
    let prefix = format!("Invalid 'healthCheck' setting for container '{name}'.");
    let command_ok = match check.command.first().map(String::as_str) {
        Some("CMD" | "CMD-SHELL") => check.command.len() >= 2,
        Some("NONE") => check.command.len() == 1,
        _ => false,
    };
    if !command_ok {
        return Err(client(format!(
            "{prefix} 'command' must start with CMD or CMD-SHELL followed by the command, or be \
             [\"NONE\"]."
        )));
    }
    let bounds = [
        ("interval", check.interval, 5, 300),
        ("timeout", check.timeout, 2, 60),
        ("retries", check.retries, 1, 10),
        ("startPeriod", check.start_period, 0, 300),
    ];
    for (field, value, lo, hi) in bounds {
        if !in_range(value, lo, hi) {
            return Err(client(format!(
                "{prefix} '{field}' must be between {lo} and {hi}."
            )));
        }
    }
    Ok(())
}

fn is_absolute(path: &str) -> bool {
    path.starts_with('/')
}

fn check_container_storage(
    c: &ContainerDefinition,
    task: &TaskContext<'_>,
) -> Result<(), TaskDefError> {
    let name = c.name();
    for mount in c.mount_points.as_deref().unwrap_or_default() {
        let source = mount.source_volume.as_deref().unwrap_or_default();
        if source.is_empty() {
            return Err(client(format!(
                "Invalid mount point for container '{name}'. 'sourceVolume' must be specified."
            )));
        }
        if !task.volumes.contains(source) {
            return Err(client(format!("Unknown volume '{source}'.")));
        }
        let path = mount.container_path.as_deref().unwrap_or_default();
        if !is_absolute(path) {
            return Err(client(format!(
                "Invalid mount point for container '{name}'. 'containerPath' must be an absolute \
                 path."
            )));
        }
    }
    for from in c.volumes_from.as_deref().unwrap_or_default() {
        let source = from.source_container.as_deref().unwrap_or_default();
        if source == name || !task.containers.contains_key(source) {
            return Err(client(format!(
                "Invalid 'volumesFrom' setting for container '{name}'. Container '{source}' is \
                 not another container of the task definition."
            )));
        }
    }
    if let Some(linux) = &c.linux_parameters {
        let prefix = format!("Invalid 'linuxParameters' setting for container '{name}'.");
        if !in_range(linux.swappiness, 0, 100) {
            return Err(client(format!(
                "{prefix} 'swappiness' must be between 0 and 100."
            )));
        }
        if linux.max_swap.is_some_and(|v| v < 0) {
            return Err(client(format!("{prefix} 'maxSwap' must be 0 or greater.")));
        }
        if linux.shared_memory_size.is_some_and(|v| v <= 0) {
            return Err(client(format!(
                "{prefix} 'sharedMemorySize' must be greater than 0."
            )));
        }
        for tmpfs in linux.tmpfs.as_deref().unwrap_or_default() {
            if !is_absolute(&tmpfs.container_path) || tmpfs.size <= 0 {
                return Err(client(format!(
                    "{prefix} A tmpfs mount needs an absolute 'containerPath' and a 'size' \
                     greater than 0."
                )));
            }
        }
        for device in linux.devices.as_deref().unwrap_or_default() {
            let container_path_ok = device.container_path.as_deref().is_none_or(is_absolute);
            if !is_absolute(&device.host_path) || !container_path_ok {
                return Err(client(format!("{prefix} Device paths must be absolute.")));
            }
        }
    }
    Ok(())
}

fn check_container_misc(c: &ContainerDefinition) -> Result<(), TaskDefError> {
    let name = c.name();
    for variable in c.environment.as_deref().unwrap_or_default() {
        if variable.name.as_deref().unwrap_or_default().is_empty() {
            return Err(client(format!(
                "Invalid 'environment' setting for container '{name}'. The name of an \
                 environment variable should not be null or empty."
            )));
        }
    }
    let files = c.environment_files.as_deref().unwrap_or_default();
    if files.len() > MAX_ENVIRONMENT_FILES {
        return Err(client(format!(
            "Invalid 'environmentFiles' setting for container '{name}'. At most \
             {MAX_ENVIRONMENT_FILES} environment files are allowed."
        )));
    }
    if files.iter().any(|f| !f.value.starts_with("arn:")) {
        return Err(client("Invalid arn syntax."));
    }
    for secret in c.secrets.as_deref().unwrap_or_default() {
        if secret.name.is_empty() || secret.value_from.is_empty() {
            return Err(client(format!(
                "Invalid 'secrets' setting for container '{name}'. 'name' and 'valueFrom' should \
                 not be empty."
            )));
        }
    }
    if let Some(log) = &c.log_configuration {
        let has = |key: &str| log.options.as_ref().is_some_and(|o| o.contains_key(key));
        if log.log_driver == LogDriver::Awslogs && !has("awslogs-group") {
            return Err(client("Log driver awslogs requires options: awslogs-group"));
        }
    }
    if let Some(policy) = &c.restart_policy {
        let prefix = format!("Invalid 'restartPolicy' setting for container '{name}'.");
        if policy
            .ignored_exit_codes
            .as_ref()
            .is_some_and(|v| v.len() > 50)
        {
            return Err(client(format!(
                "{prefix} At most 50 exit codes can be ignored."
            )));
        }
        if !in_range(policy.restart_attempt_period, 60, 1800) {
            return Err(client(format!(
                "{prefix} 'restartAttemptPeriod' must be between 60 and 1800 seconds."
            )));
        }
    }
    if c.credential_specs.as_ref().is_some_and(|v| v.len() > 1) {
        return Err(client(format!(
            "Invalid 'credentialSpecs' setting for container '{name}'. At most 1 credential spec \
             is allowed."
        )));
    }
    for control in c.system_controls.as_deref().unwrap_or_default() {
        if control.namespace.as_deref().unwrap_or_default().is_empty() {
            return Err(client(format!(
                "Invalid 'systemControls' setting for container '{name}'. 'namespace' should not \
                 be null or empty."
            )));
        }
    }
    Ok(())
}

fn check_volumes(volumes: &[Volume]) -> Result<HashSet<&str>, TaskDefError> {
    let mut names = HashSet::new();
    let mut at_launch = 0;
    for volume in volumes {
        let name = volume.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err(client("Volume name should not be null or empty."));
        }
        if name.chars().count() > 255 || !name.chars().all(is_name_char) {
            return Err(client(format!(
                "Volume name '{name}' contains invalid characters."
            )));
        }
        if !names.insert(name) {
            return Err(client(format!(
                "Volume name '{name}' is used more than once in the task definition."
            )));
        }
        let kinds = [
            volume.host.is_some(),
            volume.docker_volume_configuration.is_some(),
            volume.efs_volume_configuration.is_some(),
            volume.s3files_volume_configuration.is_some(),
            volume
                .fsx_windows_file_server_volume_configuration
                .is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(client(format!(
                "Invalid setting for volume '{name}'. Specify at most one of host, \
                 dockerVolumeConfiguration, efsVolumeConfiguration, s3filesVolumeConfiguration \
                 and fsxWindowsFileServerVolumeConfiguration."
            )));
        }
        let source_path = volume.host.as_ref().and_then(|h| h.source_path.as_deref());
        if source_path.is_some_and(|p| !p.is_empty() && !is_absolute(p)) {
            return Err(client(format!(
                "Invalid 'sourcePath' setting for volume '{name}'. It must be an absolute path."
            )));
        }
        if let Some(docker) = &volume.docker_volume_configuration {
            if docker.autoprovision == Some(true)
                && docker.scope != Some(super::model::Scope::Shared)
            {
                return Err(client(format!(
                    "Invalid 'dockerVolumeConfiguration' setting for volume '{name}'. \
                     'autoprovision' is only supported when 'scope' is 'shared'."
                )));
            }
        }
        if volume.configured_at_launch == Some(true) {
            at_launch += 1;
        }
    }
    if at_launch > 1 {
        return Err(client(
            "A task definition can have at most one volume that is configured at launch.",
        ));
    }
    Ok(names)
}

fn check_dependencies(
    containers: &[ContainerDefinition],
    by_name: &HashMap<&str, &ContainerDefinition>,
) -> Result<(), TaskDefError> {
    for c in containers {
        for dep in c.depends_on.as_deref().unwrap_or_default() {
            let target_name = dep.container_name.as_str();
            let Some(target) = by_name.get(target_name) else {
                return Err(client(format!(
                    "Cannot depend on container {target_name} because it does not exist."
                )));
            };
            match dep.condition {
                ContainerCondition::Healthy if target.health_check.is_none() => {
                    return Err(client(
                        "A dependency container with HEALTHY condition must have health check \
                         configured.",
                    ));
                }
                ContainerCondition::Complete | ContainerCondition::Success
                    if target.is_essential() =>
                {
                    return Err(client(
                        "A dependency container with SUCCESS or COMPLETE condition cannot be an \
                         essential container.",
                    ));
                }
                _ => {}
            }
        }
    }
    // Cycles, by depth-first search (0 unvisited, 1 on the stack, 2 done).
    let index: HashMap<&str, usize> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name(), i))
        .collect();
    let edges: Vec<Vec<usize>> = containers
        .iter()
        .map(|c| {
            c.depends_on
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|d| index.get(d.container_name.as_str()).copied())
                .collect()
        })
        .collect();
    let mut state = vec![0u8; containers.len()];
    for start in 0..containers.len() {
        if let Some(at) = find_cycle(start, &edges, &mut state) {
            let name = containers.get(at).map_or("", ContainerDefinition::name);
            return Err(client(format!(
                "Container dependencies contain a cycle through container '{name}'."
            )));
        }
    }
    Ok(())
}

fn find_cycle(node: usize, edges: &[Vec<usize>], state: &mut [u8]) -> Option<usize> {
    match state.get(node) {
        Some(1) => return Some(node),
        Some(2) | None => return None,
        _ => {}
    }
    if let Some(s) = state.get_mut(node) {
        *s = 1;
    }
    for &next in edges.get(node).map(Vec::as_slice).unwrap_or_default() {
        if let Some(at) = find_cycle(next, edges, state) {
            return Some(at);
        }
    }
    if let Some(s) = state.get_mut(node) {
        *s = 2;
    }
    None
}

fn check_task_sums(
    containers: &[ContainerDefinition],
    cpu_units: Option<u32>,
    memory_mib: Option<u32>,
) -> Result<(), TaskDefError> {
    if let Some(task_cpu) = cpu_units {
        let sum: u64 = containers
            .iter()
            .map(|c| u64::from(c.reserved_cpu_units()))
            .sum();
        if sum > u64::from(task_cpu) {
            return Err(client(
                "The sum of the 'cpu' settings of the containers is greater than the 'cpu' \
                 setting of the task.",
            ));
        }
    }
    if let Some(task_memory) = memory_mib {
        let sum: u64 = containers
            .iter()
            .map(|c| u64::from(c.reserved_memory_mib()))
            .sum();
        if sum > u64::from(task_memory) {
            return Err(client(
                "The sum of the memory reservations of the containers is greater than the \
                 'memory' setting of the task.",
            ));
        }
    }
    Ok(())
}

/// Why this task definition cannot run on Fargate, in ECS's words; `None` when it can. Kept
/// simple: network mode, task size, and the volume and container features Fargate lacks.
pub(super) fn fargate_incompatibility(
    request: &RegisterTaskDefinitionRequest,
    cpu_units: Option<u32>,
    memory_mib: Option<u32>,
) -> Option<String> {
    if request.network_mode != Some(NetworkMode::Awsvpc) {
        return Some("Fargate only supports network mode \u{2018}awsvpc\u{2019}.".to_owned());
    }
    let Some(cpu) = cpu_units else {
        return Some("Fargate requires that 'cpu' be defined at the task level.".to_owned());
    };
    let Some(memory) = memory_mib else {
        return Some("Fargate requires that 'memory' be defined at the task level.".to_owned());
    };
    if !size::is_fargate_size(cpu, memory) {
        return Some("No Fargate configuration exists for given values.".to_owned());
    }
    for volume in request.volumes.as_deref().unwrap_or_default() {
        if volume
            .host
            .as_ref()
            .is_some_and(|h| h.source_path.is_some())
        {
            return Some(
                "Fargate compatible task definitions do not support sourcePath".to_owned(),
            );
        }
        if volume.docker_volume_configuration.is_some() {
            return Some(
                "Fargate compatible task definitions do not support dockerVolumeConfiguration"
                    .to_owned(),
            );
        }
    }
    for c in &request.container_definitions {
        let linux = c.linux_parameters.as_ref();
        let unsupported = [
            (c.privileged == Some(true), "privileged"),
            (linux.is_some_and(|l| l.devices.is_some()), "devices"),
            (
                linux.is_some_and(|l| l.shared_memory_size.is_some()),
                "sharedMemorySize",
            ),
            (linux.is_some_and(|l| l.tmpfs.is_some()), "tmpfs"),
            (linux.is_some_and(|l| l.max_swap.is_some()), "maxSwap"),
            (linux.is_some_and(|l| l.swappiness.is_some()), "swappiness"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(set, _)| *set) {
            return Some(format!(
                "Fargate compatible task definitions do not support {what}"
            ));
        }
    }
    None
}

fn check_placement_constraints(
    request: &RegisterTaskDefinitionRequest,
) -> Result<(), TaskDefError> {
    let constraints = request.placement_constraints.as_deref().unwrap_or_default();
    if constraints.len() > MAX_PLACEMENT_CONSTRAINTS {
        return Err(client(format!(
            "Too many placement constraints. The maximum is {MAX_PLACEMENT_CONSTRAINTS}."
        )));
    }
    for constraint in constraints {
        let member_of = constraint.kind == Some(TaskDefinitionPlacementConstraintType::MemberOf);
        if !member_of
            || constraint
                .expression
                .as_deref()
                .unwrap_or_default()
                .trim()
                .is_empty()
        {
            return Err(client(
                "Invalid placement constraint. A task definition placement constraint must be of \
                 type memberOf with an expression.",
            ));
        }
    }
    Ok(())
}

/// `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`, the model's pattern for tag keys and values.
fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

fn check_tags(tags: &[Tag]) -> Result<(), TaskDefError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!(
            "Too many tags. A resource can have at most {MAX_TAGS} tags."
        )));
    }
    let mut keys = HashSet::new();
    for tag in tags {
        let key = tag.key.as_deref().unwrap_or_default();
        let value = tag.value.as_deref().unwrap_or_default();
        if !(1..=128).contains(&key.chars().count()) {
            return Err(invalid(
                "Tag keys must be between 1 and 128 characters long.",
            ));
        }
        if value.chars().count() > 256 {
            return Err(invalid(format!(
                "The value of tag '{key}' is too long. The maximum is 256 characters."
            )));
        }
        if !key.chars().all(is_tag_char) || !value.chars().all(is_tag_char) {
            return Err(invalid(format!("Tag '{key}' contains invalid characters.")));
        }
        if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(invalid(format!(
                "Tag key '{key}' uses the reserved prefix 'aws:'."
            )));
        }
        if !keys.insert(key) {
            return Err(invalid(format!("Duplicate tag key '{key}'.")));
        }
    }
    Ok(())
}

/// ECS's defaults, made explicit the way `DescribeTaskDefinition` echoes them.
fn normalize(request: &mut RegisterTaskDefinitionRequest) {
    if let Some(units) = request.cpu.as_deref().and_then(size::parse_task_cpu) {
        request.cpu = Some(units.to_string());
    }
    if let Some(mib) = request.memory.as_deref().and_then(size::parse_task_memory) {
        request.memory = Some(mib.to_string());
    }
    let mode = request.network_mode.unwrap_or(NetworkMode::Bridge);
    for c in &mut request.container_definitions {
        c.cpu.get_or_insert(0);
        c.essential.get_or_insert(true);
        c.environment.get_or_insert_with(Vec::new);
        c.mount_points.get_or_insert_with(Vec::new);
        c.volumes_from.get_or_insert_with(Vec::new);
        for mapping in c.port_mappings.get_or_insert_with(Vec::new) {
            mapping.protocol.get_or_insert(TransportProtocol::Tcp);
            if let Some(container_port) = mapping.container_port {
                let dynamic = mapping.host_port.is_none_or(|p| p == 0);
                match mode {
                    NetworkMode::Host | NetworkMode::Awsvpc if dynamic => {
                        mapping.host_port = Some(container_port);
                    }
                    _ => {
                        mapping.host_port.get_or_insert(0);
                    }
                }
            }
        }
        if let Some(check) = &mut c.health_check {
            check.interval.get_or_insert(30);
            check.timeout.get_or_insert(5);
            check.retries.get_or_insert(3);
        }
    }
}
