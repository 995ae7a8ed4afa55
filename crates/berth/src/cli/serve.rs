//! `berth serve` and the shared server plumbing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use berth_aws::credentials::{self, Credentials, StaticKeys};
use berth_aws::json::{AwsEndpoint, JsonApi};
use berth_aws::query::QueryApi;
use berth_registry::{Config, Registry};
use clap::Args;

use super::{parse_addr, AccountArgs, RegistryServerArgs};

pub const DEFAULT_DATA: &str = "/var/lib/berth";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the AWS APIs (ECS, ECR, ELBv2).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub api_addr: String,
    /// Cluster the local agent joins (created if missing, as the ECS agent does for `default`).
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// Run the control plane and registry only, without a local agent.
    #[arg(long)]
    pub no_agent: bool,
    /// The local agent runs EC2 tasks of its cluster only, not Fargate tasks (by default it
    /// is also this host's Fargate platform capacity: attribute `berth.platform`).
    #[arg(long)]
    pub no_platform: bool,
    /// The local agent's engine root (default: <data>/engine).
    #[arg(long)]
    pub engine_root: Option<PathBuf>,
    /// Region of the local agent (the region its cluster lives in).
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Seconds after which an agent that stopped polling is agentConnected=false.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_grace: u64,
    /// Seconds an agent may stay disconnected before its tasks are marked STOPPED.
    #[arg(long, default_value_t = 120)]
    pub agent_timeout: u64,
    /// Seconds the local agent keeps a stopped task's containers (logs) before removing them.
    #[arg(long, default_value_t = 60)]
    pub task_cleanup_wait: u64,
    /// Address of the OCI registry.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub registry_addr: String,
    /// Host address load balancer listeners bind on (and every load balancer's DNSName).
    #[arg(long, default_value = "127.0.0.1")]
    pub lb_host: std::net::IpAddr,
    /// Worker threads of the load balancer's data plane (default: half the CPUs, at least
    /// one; each runs its own event loop with its own listening sockets, like haproxy's
    /// nbthread).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub lb_threads: Option<u16>,
    #[command(flatten)]
    pub account: AccountArgs,
    #[command(flatten)]
    pub registry: RegistryServerArgs,
}

/// The access key: from flags/env, else `<data>/credentials` (generated on first start).
pub fn account_credentials(data: &Path, a: &AccountArgs) -> anyhow::Result<Credentials> {
    match (&a.access_key_id, &a.secret_access_key) {
        (Some(id), Some(secret)) => Ok(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        }),
        (None, None) => {
            let path = data.join("credentials");
            let (c, created) = credentials::load_or_create(&path)
                .with_context(|| format!("credentials file {}", path.display()))?;
            if created {
                eprintln!(
                    "berth: generated an access key in {} (AWS shared-credentials format)",
                    path.display()
                );
            }
            eprintln!(
                "berth: credentials: {}  (export AWS_SHARED_CREDENTIALS_FILE={} AWS_DEFAULT_REGION=us-east-1)",
                path.display(),
                path.display()
            );
            Ok(c)
        }
        _ => anyhow::bail!("--access-key-id and --secret-access-key must be given together"),
    }
}

/// Opens the registry in `data` with the shared settings.
pub fn open_registry(
    data: PathBuf,
    creds: Credentials,
    account: &AccountArgs,
    r: &RegistryServerArgs,
    public_url: String,
) -> anyhow::Result<Arc<Registry>> {
    let mut cfg = Config::new(data);
    cfg.account_id = account.account_id.clone();
    cfg.credentials = Some(creds);
    cfg.public_url = Some(r.public_url.clone().unwrap_or(public_url));
    cfg.auto_create_repos = !r.no_auto_create;
    cfg.gc_grace = Duration::from_secs(r.gc_grace);
    let reg = Registry::open(cfg).context("opening the registry")?;
    if r.gc_interval > 0 {
        reg.spawn_gc_schedule(Duration::from_secs(r.gc_interval));
        spawn_lifecycle_schedule(&reg, Duration::from_secs(r.gc_interval));
    }
    Ok(reg)
}

/// Applies every repository's ECR lifecycle policy every `interval`.
fn spawn_lifecycle_schedule(reg: &Arc<Registry>, interval: Duration) {
    let reg = reg.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            match berth_registry::lifecycle::apply_lifecycle_policies(&reg).await {
                Ok(n) if n > 0 => tracing::info!(expired = n, "lifecycle policies applied"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "lifecycle policies failed"),
            }
        }
    });
}

/// The AWS JSON APIs this process serves, behind SigV4 with the account's key: ECR, and with
/// a control plane, ECS and the agent protocol.
pub fn aws_endpoint(
    reg: &Arc<Registry>,
    control: Option<&Arc<berth_control::Control>>,
    creds: &Credentials,
    account_id: &str,
) -> Arc<AwsEndpoint> {
    aws_endpoint_with(reg, control, None, Vec::new(), creds, account_id)
}

/// [`aws_endpoint`] plus query-protocol APIs (ELBv2), and the load balancer ECS services may
/// name target groups of.
pub fn aws_endpoint_with(
    reg: &Arc<Registry>,
    control: Option<&Arc<berth_control::Control>>,
    lb: Option<Arc<dyn berth_control::services::TargetRegistry>>,
    query_apis: Vec<Arc<dyn QueryApi>>,
    creds: &Credentials,
    account_id: &str,
) -> Arc<AwsEndpoint> {
    let host = reg
        .cfg
        .public_url
        .as_deref()
        .map(|u| {
            u.trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
        })
        .unwrap_or("127.0.0.1:5000")
        .to_string();
    let mut apis: Vec<Arc<dyn JsonApi>> = vec![berth_registry::ecr::ecr_api(reg, host)];
    if let Some(c) = control {
        apis.push(berth_control::ecs::ecs_api(c, lb));
        apis.push(berth_control::agent_api::agent_api(c));
        apis.push(berth_control::ecs::fargate_api(c));
    }
    let mut keys = StaticKeys::new();
    keys.insert(creds);
    Arc::new(AwsEndpoint::new(apis, Arc::new(keys), account_id).with_query_apis(query_apis))
}

pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let a = parse_addr(addr)?;
    tokio::net::TcpListener::bind(a)
        .await
        .with_context(|| format!("cannot listen on {a}"))
}

/// Serves `router` on `listener` until SIGINT/SIGTERM.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> anyhow::Result<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("http server")
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down");
}

/// Opens the control plane's state in `<data>/control.redb` and starts its monitor.
fn open_control(data: &Path, a: &ServeArgs) -> anyhow::Result<Arc<berth_control::Control>> {
    let path = data.join("control.redb");
    let store = berth_control::store::RedbStore::open(&path)
        .with_context(|| format!("opening the control plane's store {}", path.display()))?;
    let cfg = berth_control::ControlConfig {
        account_id: a.account.account_id.clone(),
        heartbeat_grace: Duration::from_secs(a.heartbeat_grace.max(1)),
        agent_timeout: Duration::from_secs(a.agent_timeout.max(1)),
        ..Default::default()
    };
    let control = berth_control::Control::open(Arc::new(store), cfg)
        .context("loading the control plane's state")?;
    berth_control::ecs::clusters::ensure_cluster(
        &control,
        &a.region,
        &a.account.account_id,
        &a.cluster,
    )
    .map_err(|e| anyhow::anyhow!("creating cluster {}: {e}", a.cluster))?;
    control.spawn_monitor();
    Ok(control)
}

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let data = a
        .registry
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let creds = account_credentials(&data, &a.account)?;
    let reg_listener = bind(&a.registry_addr).await?;
    let api_listener = bind(&a.api_addr).await?;
    let reg_url = format!("http://{}", reg_listener.local_addr()?);
    let api_url = format!("http://{}", api_listener.local_addr()?);
    let reg = open_registry(
        data.join("registry"),
        creds.clone(),
        &a.account,
        &a.registry,
        reg_url.clone(),
    )?;
    let control = open_control(&data, &a)?;
    let mut lb_opts = berth_lb::Options::default();
    if let Some(n) = a.lb_threads {
        lb_opts.threads = usize::from(n);
    }
    let data_plane = Arc::new(berth_lb::DataPlane::with_options(lb_opts));
    let elbv2 = berth_control::elbv2::Elbv2::new(control.clone(), data_plane.clone(), a.lb_host);
    if let Err(e) = elbv2.apply_stored().await {
        tracing::error!(error = %berth_control::error_chain(&e),
            "the stored load balancer listeners cannot be served");
    }
    let lb: Arc<dyn berth_control::services::TargetRegistry> = elbv2.clone();
    berth_control::services::spawn_controller(&control, Some(lb.clone()));
    let aws = aws_endpoint_with(
        &reg,
        Some(&control),
        Some(lb),
        vec![berth_control::elbv2::elbv2_api(&elbv2)],
        &creds,
        &a.account.account_id,
    );
    let registry_router = reg.router().merge(aws.clone().root_router());
    let api_router = aws.router();
    eprintln!(
        "berth: registry on {reg_url}, AWS APIs (ECS, ECR, ELBv2) on {api_url}, load balancer listeners on {}",
        a.lb_host
    );
    let agent = if a.no_agent {
        None
    } else {
        let exe = std::env::current_exe().context("locating the berth binary")?;
        let mut cfg = berth_agent::AgentConfig::new(a.cluster.clone(), api_url.clone(), creds, exe);
        cfg.data_dir = data.join("agent");
        cfg.engine_root = a.engine_root.clone().unwrap_or_else(|| data.join("engine"));
        cfg.region = a.region.clone();
        cfg.task_cleanup_wait = Duration::from_secs(a.task_cleanup_wait);
        cfg.platform = !a.no_platform;
        eprintln!(
            "berth: local agent joins cluster {} (engine root {})",
            a.cluster,
            cfg.engine_root.display()
        );
        Some(tokio::spawn(async move {
            if let Err(e) = berth_agent::run(cfg, shutdown_signal()).await {
                tracing::error!(error = %berth_agent::error_chain(&e), "the local agent stopped");
            }
        }))
    };
    tokio::try_join!(
        serve_http(reg_listener, registry_router),
        serve_http(api_listener, api_router)
    )?;
    if let Some(agent) = agent {
        let _ = agent.await;
    }
    data_plane.shutdown().await;
    Ok(())
}
