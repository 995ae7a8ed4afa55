//! The input shapes of `RegisterTaskDefinition`, member for member as botocore's ECS model
//! (2014-11-13) has them. The same structs serialize the `ContainerDefinition`, `Volume`, … parts
//! of the `TaskDefinition` output shape, which has the same members.
//!
//! Every optional member is an `Option` and is skipped when absent, so serializing never emits a
//! `null`. Every struct denies unknown fields. Integers are `i32`, as the model's `Integer` is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A string enum of the model: serde names are the wire values, [`as_str`](Self::as_str) too.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// The value on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $wire),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// `NetworkMode`. Absent means `bridge` on Linux.
    NetworkMode { Bridge = "bridge", Host = "host", Awsvpc = "awsvpc", None = "none" }
);
wire_enum!(
    /// `Compatibility` (launch types).
    Compatibility {
        Ec2 = "EC2",
        Fargate = "FARGATE",
        External = "EXTERNAL",
        ManagedInstances = "MANAGED_INSTANCES",
    }
);
wire_enum!(
    /// `TransportProtocol`.
    TransportProtocol { Tcp = "tcp", Udp = "udp" }
);
wire_enum!(
    /// `ApplicationProtocol` (Service Connect only).
    ApplicationProtocol { Http = "http", Http2 = "http2", Grpc = "grpc" }
);
wire_enum!(
    /// `ContainerCondition` of a `dependsOn` entry.
    ContainerCondition {
        Start = "START",
        Complete = "COMPLETE",
        Success = "SUCCESS",
        Healthy = "HEALTHY",
    }
);
wire_enum!(
    /// `UlimitName`.
    UlimitName {
        Core = "core",
        Cpu = "cpu",
        Data = "data",
        Fsize = "fsize",
        Locks = "locks",
        Memlock = "memlock",
        Msgqueue = "msgqueue",
        Nice = "nice",
        Nofile = "nofile",
        Nproc = "nproc",
        Rss = "rss",
        Rtprio = "rtprio",
        Rttime = "rttime",
        Sigpending = "sigpending",
        Stack = "stack",
    }
);
wire_enum!(
    /// `LogDriver`.
    LogDriver {
        JsonFile = "json-file",
        Syslog = "syslog",
        Journald = "journald",
        Gelf = "gelf",
        Fluentd = "fluentd",
        Awslogs = "awslogs",
        Splunk = "splunk",
        Awsfirelens = "awsfirelens",
    }
);
wire_enum!(
    /// `Scope` of a Docker volume.
    Scope { Task = "task", Shared = "shared" }
);
wire_enum!(
    /// `EFSTransitEncryption` and `EFSAuthorizationConfigIAM`.
    EnabledDisabled { Enabled = "ENABLED", Disabled = "DISABLED" }
);
wire_enum!(
    /// `ResourceType`.
    ResourceType { Gpu = "GPU", InferenceAccelerator = "InferenceAccelerator", NeuronDevice = "NeuronDevice" }
);
wire_enum!(
    /// `FirelensConfigurationType`.
    FirelensConfigurationType { Fluentd = "fluentd", Fluentbit = "fluentbit" }
);
wire_enum!(
    /// `EnvironmentFileType`.
    EnvironmentFileType { S3 = "s3" }
);
wire_enum!(
    /// `DeviceCgroupPermission`.
    DeviceCgroupPermission { Read = "read", Write = "write", Mknod = "mknod" }
);
wire_enum!(
    /// `VersionConsistency`.
    VersionConsistency { Enabled = "enabled", Disabled = "disabled" }
);
wire_enum!(
    /// `PidMode`.
    PidMode { Host = "host", Task = "task" }
);
wire_enum!(
    /// `IpcMode`.
    IpcMode { Host = "host", Task = "task", None = "none" }
);
wire_enum!(
    /// `ProxyConfigurationType`.
    ProxyConfigurationType { Appmesh = "APPMESH" }
);
wire_enum!(
    /// `CPUArchitecture`.
    CpuArchitecture { X86_64 = "X86_64", Arm64 = "ARM64" }
);
wire_enum!(
    /// `OSFamily`.
    OsFamily {
        WindowsServer2019Full = "WINDOWS_SERVER_2019_FULL",
        WindowsServer2019Core = "WINDOWS_SERVER_2019_CORE",
        WindowsServer2016Full = "WINDOWS_SERVER_2016_FULL",
        WindowsServer2004Core = "WINDOWS_SERVER_2004_CORE",
        WindowsServer2022Core = "WINDOWS_SERVER_2022_CORE",
        WindowsServer2022Full = "WINDOWS_SERVER_2022_FULL",
        WindowsServer2025Core = "WINDOWS_SERVER_2025_CORE",
        WindowsServer2025Full = "WINDOWS_SERVER_2025_FULL",
        WindowsServer20H2Core = "WINDOWS_SERVER_20H2_CORE",
        Linux = "LINUX",
    }
);
wire_enum!(
    /// `IsolationMode`.
    IsolationMode {
        Shared = "SHARED",
        IsolatedSandbox = "ISOLATED_SANDBOX",
        ConfidentialSandbox = "CONFIDENTIAL_SANDBOX",
    }
);
wire_enum!(
    /// `TaskDefinitionPlacementConstraintType`.
    TaskDefinitionPlacementConstraintType { MemberOf = "memberOf" }
);
wire_enum!(
    /// `TaskDefinitionStatus` (output only).
    TaskDefinitionStatus {
        Active = "ACTIVE",
        Inactive = "INACTIVE",
        DeleteInProgress = "DELETE_IN_PROGRESS",
    }
);

/// `RegisterTaskDefinitionRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterTaskDefinitionRequest {
    pub family: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_constraints: Option<Vec<TaskDefinitionPlacementConstraint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requires_compatibilities: Option<Vec<Compatibility>>,
    /// CPU units or vCPUs (`"256"`, `"0.25 vCPU"`); normalized to units after validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// MiB or GB (`"512"`, `"0.5 GB"`); normalized to MiB after validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<PidMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<IpcMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_configuration: Option<ProxyConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_accelerators: Option<Vec<InferenceAccelerator>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<EphemeralStorage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_platform: Option<RuntimePlatform>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_fault_injection: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_execution_configuration: Option<TrustedExecutionConfiguration>,
}

/// `ContainerDefinition`. The model marks no member required; `name` and `image` are checked by
/// validation with ECS's messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDefinition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_credentials: Option<RepositoryCredentials>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<ContainerRestartPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Vec<KeyValuePair>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_files: Option<Vec<EnvironmentFile>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_points: Option<Vec<MountPoint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes_from: Option<Vec<VolumeFrom>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<LinuxParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<Secret>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<ContainerDependency>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_consistency: Option<VersionConsistency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_networking: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_search_domains: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_hosts: Option<Vec<HostEntry>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_security_options: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pseudo_terminal: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Vec<Ulimit>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<LogConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_controls: Option<Vec<SystemControl>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_requirements: Option<Vec<ResourceRequirement>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firelens_configuration: Option<FirelensConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_specs: Option<Vec<String>>,
}

impl ContainerDefinition {
    /// The container's name (validated specs always have one).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// The container's image (validated specs always have one).
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or_default()
    }

    /// `essential`, defaulting to true as ECS does.
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }

    /// Memory this container reserves on a host: `memoryReservation` if set, else `memory`.
    pub fn reserved_memory_mib(&self) -> u32 {
        let mib = self.memory_reservation.or(self.memory).unwrap_or(0);
        u32::try_from(mib).unwrap_or(0)
    }

    /// CPU units this container reserves (`cpu`, default 0).
    pub fn reserved_cpu_units(&self) -> u32 {
        u32::try_from(self.cpu.unwrap_or(0)).unwrap_or(0)
    }
}

/// `RepositoryCredentials`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositoryCredentials {
    pub credentials_parameter: String,
}

/// `PortMapping`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<TransportProtocol>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<ApplicationProtocol>,
    /// `"<first>-<last>"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_port_range: Option<String>,
}

/// `ContainerRestartPolicy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerRestartPolicy {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored_exit_codes: Option<Vec<i32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_attempt_period: Option<i32>,
}

/// `KeyValuePair` (environment variables, proxy properties).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValuePair {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `EnvironmentFile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentFile {
    pub value: String,
    #[serde(rename = "type")]
    pub kind: EnvironmentFileType,
}

/// `MountPoint`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountPoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_volume: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// `VolumeFrom`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeFrom {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_container: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

/// `LinuxParameters`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinuxParameters {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<KernelCapabilities>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<Device>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_process_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_memory_size: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<Vec<Tmpfs>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_swap: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swappiness: Option<i32>,
}

/// `KernelCapabilities`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelCapabilities {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<Vec<String>>,
}

/// `Device`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Device {
    pub host_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<DeviceCgroupPermission>>,
}

/// `Tmpfs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tmpfs {
    pub container_path: String,
    pub size: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount_options: Option<Vec<String>>,
}

/// `Secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub name: String,
    pub value_from: String,
}

/// `ContainerDependency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDependency {
    pub container_name: String,
    pub condition: ContainerCondition,
}

/// `HostEntry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEntry {
    pub hostname: String,
    pub ip_address: String,
}

/// `Ulimit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ulimit {
    pub name: UlimitName,
    pub soft_limit: i32,
    pub hard_limit: i32,
}

/// `LogConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogConfiguration {
    pub log_driver: LogDriver,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_options: Option<Vec<Secret>>,
}

/// `HealthCheck`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i32>,
}

/// `SystemControl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SystemControl {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `ResourceRequirement`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirement {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(rename = "type")]
    pub kind: ResourceType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing_strategy: Option<SharingStrategy>,
}

/// `SharingStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SharingStrategy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvidia_mps: Option<NvidiaMpsAllocation>,
}

/// `NvidiaMpsAllocation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NvidiaMpsAllocation {
    pub memory: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_compute_percent: Option<i32>,
}

/// `FirelensConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirelensConfiguration {
    #[serde(rename = "type")]
    pub kind: FirelensConfigurationType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

/// `Volume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolumeProperties>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efs_volume_configuration: Option<EfsVolumeConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3files_volume_configuration: Option<S3FilesVolumeConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsx_windows_file_server_volume_configuration:
        Option<FsxWindowsFileServerVolumeConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configured_at_launch: Option<bool>,
}

impl Volume {
    /// The volume's name (validated specs always have one).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }
}

/// `HostVolumeProperties`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostVolumeProperties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
}

/// `DockerVolumeConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerVolumeConfiguration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoprovision: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `EFSVolumeConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EfsVolumeConfiguration {
    pub file_system_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit_encryption: Option<EnabledDisabled>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit_encryption_port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_config: Option<EfsAuthorizationConfig>,
}

/// `EFSAuthorizationConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EfsAuthorizationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_point_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iam: Option<EnabledDisabled>,
}

/// `S3FilesVolumeConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3FilesVolumeConfiguration {
    pub file_system_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_directory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transit_encryption_port: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_point_arn: Option<String>,
}

/// `FSxWindowsFileServerVolumeConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FsxWindowsFileServerVolumeConfiguration {
    pub file_system_id: String,
    pub root_directory: String,
    pub authorization_config: FsxWindowsFileServerAuthorizationConfig,
}

/// `FSxWindowsFileServerAuthorizationConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FsxWindowsFileServerAuthorizationConfig {
    pub credentials_parameter: String,
    pub domain: String,
}

/// `TaskDefinitionPlacementConstraint`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinitionPlacementConstraint {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<TaskDefinitionPlacementConstraintType>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// `Tag`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tag {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `ProxyConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfiguration {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ProxyConfigurationType>,
    pub container_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Vec<KeyValuePair>>,
}

/// `InferenceAccelerator`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceAccelerator {
    pub device_name: String,
    pub device_type: String,
}

/// `EphemeralStorage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EphemeralStorage {
    #[serde(rename = "sizeInGiB")]
    pub size_in_gib: i32,
}

/// `RuntimePlatform`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimePlatform {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_architecture: Option<CpuArchitecture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operating_system_family: Option<OsFamily>,
}

/// `TrustedExecutionConfiguration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrustedExecutionConfiguration {
    pub isolation_mode: IsolationMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation_policy: Option<String>,
}
