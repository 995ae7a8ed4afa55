//! `berth registry`: run the registry alone, or manage a running one through its admin API.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use super::serve::{
    account_credentials, aws_endpoint, bind, open_registry, serve_http, DEFAULT_DATA,
};
use super::{AccountArgs, RegistryServerArgs};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RegistryArgs {
    #[command(subcommand)]
    pub cmd: Option<RegistryCmd>,
    /// Address to listen on (OCI distribution API, token endpoint, ECR API on POST /).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub addr: String,
    #[command(flatten)]
    pub account: AccountArgs,
    #[command(flatten)]
    pub registry: RegistryServerArgs,
}

#[derive(Subcommand, Debug)]
pub enum RegistryCmd {
    /// Collect unreferenced blobs now (safe while pushes continue).
    Gc {
        #[command(flatten)]
        client: ClientArgs,
        /// Report what would be deleted without deleting.
        #[arg(long)]
        dry_run: bool,
        /// Override the grace period (seconds) for this run.
        #[arg(long)]
        grace: Option<u64>,
    },
    /// Manage registry users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Make a repository public (anonymous pull) or private.
    Repo {
        #[command(subcommand)]
        cmd: RepoCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create or replace a user. The password is read from standard input.
    Add {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
        /// Full rights on every repository.
        #[arg(long)]
        admin: bool,
        /// PATTERN=ACTIONS, e.g. 'team/*=pull,push' (actions: pull, push, delete, *). Repeatable.
        #[arg(long)]
        grant: Vec<String>,
    },
    /// Delete a user.
    Rm {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List users.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum RepoCmd {
    /// Allow anonymous pulls.
    Public {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Require credentials for pulls.
    Private {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Registry URL.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    pub server: String,
    /// Data directory whose `credentials` file holds the access key (else BERTH_ACCESS_KEY_ID /
    /// BERTH_SECRET_ACCESS_KEY).
    #[arg(long, default_value = DEFAULT_DATA)]
    pub data: PathBuf,
}

pub async fn run(a: RegistryArgs) -> anyhow::Result<()> {
    match a.cmd {
        None => serve(a).await,
        Some(RegistryCmd::Gc {
            client,
            dry_run,
            grace,
        }) => {
            let body = json!({ "dry_run": dry_run, "grace_seconds": grace });
            let out = call(&client, reqwest::Method::POST, "/berth/v1/gc", Some(body)).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Some(RegistryCmd::User { cmd }) => match cmd {
            UserCmd::Add {
                name,
                client,
                admin,
                grant,
            } => {
                let mut grants = Vec::new();
                for g in grant {
                    let Some((pattern, actions)) = g.split_once('=') else {
                        bail!("--grant {g:?}: expected PATTERN=ACTIONS");
                    };
                    grants.push(json!({ "repository": pattern, "actions": actions.split(',').collect::<Vec<_>>() }));
                }
                let mut password = String::new();
                std::io::stdin()
                    .read_to_string(&mut password)
                    .context("reading the password from stdin")?;
                let password = password.trim_end_matches(['\n', '\r']).to_string();
                let body = json!({ "password": password, "admin": admin, "grants": grants });
                call(
                    &client,
                    reqwest::Method::PUT,
                    &format!("/berth/v1/users/{name}"),
                    Some(body),
                )
                .await?;
                Ok(())
            }
            UserCmd::Rm { name, client } => {
                call(
                    &client,
                    reqwest::Method::DELETE,
                    &format!("/berth/v1/users/{name}"),
                    None,
                )
                .await?;
                Ok(())
            }
            UserCmd::Ls { client } => {
                let out = call(&client, reqwest::Method::GET, "/berth/v1/users", None).await?;
                println!("{}", serde_json::to_string_pretty(&out)?);
                Ok(())
            }
        },
        Some(RegistryCmd::Repo { cmd }) => {
            let (name, client, public) = match cmd {
                RepoCmd::Public { name, client } => (name, client, true),
                RepoCmd::Private { name, client } => (name, client, false),
            };
            let body = json!({ "repository": name, "public": public });
            call(
                &client,
                reqwest::Method::POST,
                "/berth/v1/visibility",
                Some(body),
            )
            .await?;
            Ok(())
        }
    }
}

async fn serve(a: RegistryArgs) -> anyhow::Result<()> {
    let data = a
        .registry
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA).join("registry"));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let creds = account_credentials(&data, &a.account)?;
    let listener = bind(&a.addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let reg = open_registry(data, creds.clone(), &a.account, &a.registry, url.clone())?;
    let aws = aws_endpoint(&reg, None, &creds, &a.account.account_id);
    eprintln!("berth: registry (and ECR API) on {url}");
    serve_http(listener, reg.router().merge(aws.root_router())).await
}

async fn call(
    c: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let (id, secret) = match (
        std::env::var("BERTH_ACCESS_KEY_ID"),
        std::env::var("BERTH_SECRET_ACCESS_KEY"),
    ) {
        (Ok(i), Ok(s)) => (i, s),
        _ => {
            let path = c.data.join("credentials");
            let cr = berth_aws::credentials::load(&path).with_context(|| {
                format!(
                    "reading {} (or set BERTH_ACCESS_KEY_ID/BERTH_SECRET_ACCESS_KEY)",
                    path.display()
                )
            })?;
            (cr.access_key_id, cr.secret_access_key)
        }
    };
    let url = format!("{}{}", c.server.trim_end_matches('/'), path);
    let mut req = reqwest::Client::new()
        .request(method, &url)
        .basic_auth(id, Some(secret));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{url}: {status}: {text}");
    }
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{url}: invalid JSON response"))
}
