//! `berth agent`: this host as an ECS container instance of a Berth control plane.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_agent::AgentConfig;
use berth_aws::credentials::{self, Credentials};
use clap::Args;

/// Where `berth serve` keeps its generated key (`<data>/credentials`, default data dir).
const SERVE_CREDENTIALS: &str = "/var/lib/berth/credentials";

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Cluster to join (name or ARN).
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// URL of the control plane's AWS API, e.g. http://10.0.0.1:7000.
    #[arg(long, env = "BERTH_CONTROL_URL")]
    pub control: String,
    /// Agent state directory (instance ARN, task records).
    #[arg(long, default_value = berth_agent::DEFAULT_DATA_DIR)]
    pub data: PathBuf,
    /// Engine state directory (images, containers).
    #[arg(long, env = "BERTH_ROOT", default_value = berth_engine::DEFAULT_ROOT)]
    pub engine_root: PathBuf,
    /// SigV4 region of the requests.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Container instance attribute NAME[=VALUE] (repeatable), for placement constraints.
    #[arg(long = "attribute", value_name = "NAME[=VALUE]")]
    pub attributes: Vec<String>,
    /// The address other hosts reach this host's published ports on (instance attribute
    /// `berth.address`; default: the local address of the route to the control plane).
    #[arg(long, env = "BERTH_AGENT_ADDRESS")]
    pub address: Option<std::net::IpAddr>,
    /// Also offer Fargate platform capacity: register with the instance attribute
    /// `berth.platform=true` (FARGATE tasks may be placed here; images are prepulled).
    #[arg(long)]
    pub platform: bool,
    /// Seconds a stopped task's containers are kept before they are removed.
    #[arg(long, default_value_t = 60)]
    pub task_cleanup_wait: u64,
    /// Access key id the requests are signed with.
    #[arg(long, env = "BERTH_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret access key matching --access-key-id.
    #[arg(long, env = "BERTH_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// AWS shared-credentials file with the key ([default] profile), as `berth serve` writes
    /// to <data>/credentials (default: /var/lib/berth/credentials when no key is given).
    #[arg(long)]
    pub credentials_file: Option<PathBuf>,
}

fn agent_credentials(a: &AgentArgs) -> anyhow::Result<Credentials> {
    // An empty value (e.g. `BERTH_ACCESS_KEY_ID=`) counts as not given.
    let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let (id, secret) = (given(&a.access_key_id), given(&a.secret_access_key));
    match (&id, &secret, &a.credentials_file) {
        (Some(id), Some(secret), _) => Ok(Credentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        }),
        (Some(_), None, _) | (None, Some(_), _) => {
            anyhow::bail!("--access-key-id and --secret-access-key must be given together")
        }
        (None, None, Some(path)) => {
            credentials::load(path).with_context(|| format!("credentials file {}", path.display()))
        }
        (None, None, None) => credentials::load(std::path::Path::new(SERVE_CREDENTIALS))
            .with_context(|| {
                format!(
                    "no access key: give --access-key-id and --secret-access-key (or \
                     BERTH_ACCESS_KEY_ID/BERTH_SECRET_ACCESS_KEY) or --credentials-file; \
                     {SERVE_CREDENTIALS} could not be used"
                )
            }),
    }
}

/// `NAME[=VALUE]`.
fn parse_attribute(s: &str) -> anyhow::Result<(String, Option<String>)> {
    let (name, value) = match s.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.to_string())),
        None => (s.trim(), None),
    };
    anyhow::ensure!(!name.is_empty(), "invalid --attribute {s:?}: empty name");
    Ok((name.to_string(), value))
}

pub async fn run(a: AgentArgs) -> anyhow::Result<()> {
    let creds = agent_credentials(&a)?;
    let exe = std::env::current_exe().context("cannot find the berth binary")?;
    let mut cfg = AgentConfig::new(a.cluster.clone(), a.control.clone(), creds, exe);
    cfg.data_dir = a.data.clone();
    cfg.engine_root = a.engine_root.clone();
    cfg.region = a.region.clone();
    cfg.task_cleanup_wait = Duration::from_secs(a.task_cleanup_wait);
    cfg.address = a.address;
    cfg.platform = a.platform;
    cfg.attributes = a
        .attributes
        .iter()
        .map(|s| parse_attribute(s))
        .collect::<anyhow::Result<_>>()?;
    tracing::info!(cluster = %cfg.cluster, control = %cfg.control_url,
        data = %cfg.data_dir.display(), engine = %cfg.engine_root.display(), "berth agent starting");
    berth_agent::run(cfg, shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("shutting down (containers keep running)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes() {
        assert_eq!(
            parse_attribute("zone=a=b").expect("attr"),
            ("zone".to_string(), Some("a=b".to_string()))
        );
        assert_eq!(
            parse_attribute("gpu").expect("attr"),
            ("gpu".to_string(), None)
        );
        assert!(parse_attribute("=x").is_err());
    }
}
