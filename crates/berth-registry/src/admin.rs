//! Berth's own admin API on the registry port (`/berth/v1/...`): registry users, repository
//! visibility, garbage collection. Only the account (access key) or admin users may call it;
//! the `berth registry ...` subcommands are its client.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{hash_password, Identity};
use crate::gc::GcOptions;
use crate::meta::{now_ms, Grant, MetaError, RepoRecord, UserRecord};
use crate::Registry;

type Reg = Arc<Registry>;

pub(crate) fn router() -> Router<Reg> {
    Router::new()
        .route("/berth/v1/users", get(list_users))
        .route("/berth/v1/users/{name}", put(put_user).delete(delete_user))
        .route("/berth/v1/visibility", post(set_visibility))
        .route("/berth/v1/gc", post(run_gc))
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

async fn admin(reg: &Reg, headers: &axum::http::HeaderMap) -> Result<Identity, Response> {
    let h = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match reg.auth.identify(h.as_deref()).await {
        Ok(id) if id.is_admin() => Ok(id),
        Ok(Identity::Anonymous) | Err(_) => {
            let mut r = err(StatusCode::UNAUTHORIZED, "admin credentials required");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"berth\""),
            );
            Err(r)
        }
        Ok(_) => Err(err(StatusCode::FORBIDDEN, "admin rights required")),
    }
}

async fn body_json<T: for<'de> Deserialize<'de>>(req: Request) -> Result<T, Response> {
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?;
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))
}

fn internal(e: impl std::error::Error) -> Response {
    tracing::error!(error = %crate::error::error_chain(&e), "admin request failed");
    err(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

async fn list_users(State(reg): State<Reg>, req: Request) -> Response {
    if let Err(r) = admin(&reg, req.headers()).await {
        return r;
    }
    match reg.meta.list_users() {
        Ok(users) => Json(json!({
            "users": users.into_iter().map(|(name, u)| json!({
                "name": name, "admin": u.admin, "grants": u.grants, "createdAt": u.created_at,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct PutUser {
    password: String,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    grants: Vec<Grant>,
}

fn valid_user_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n != "AWS"
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

async fn put_user(State(reg): State<Reg>, Path(name): Path<String>, req: Request) -> Response {
    if let Err(r) = admin(&reg, req.headers()).await {
        return r;
    }
    if !valid_user_name(&name) || name == reg.credentials.access_key_id {
        return err(
            StatusCode::BAD_REQUEST,
            format!("invalid user name {name:?}"),
        );
    }
    let body: PutUser = match body_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.password.len() < 8 {
        return err(
            StatusCode::BAD_REQUEST,
            "password must have at least 8 characters",
        );
    }
    const ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];
    if let Some(bad) = body
        .grants
        .iter()
        .flat_map(|g| g.actions.iter())
        .find(|a| !ACTIONS.contains(&a.as_str()))
    {
        return err(
            StatusCode::BAD_REQUEST,
            format!("unknown action {bad:?} (pull, push, delete, *)"),
        );
    }
    let hashed = match tokio::task::spawn_blocking(move || hash_password(&body.password)).await {
        Ok(Ok(h)) => h,
        _ => return err(StatusCode::INTERNAL_SERVER_ERROR, "hashing password failed"),
    };
    let rec = UserRecord {
        password_hash: hashed,
        admin: body.admin,
        grants: body.grants,
        created_at: now_ms(),
    };
    if let Err(e) = reg.meta.put_user(&name, &rec) {
        return internal(e);
    }
    reg.auth.invalidate_cache();
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_user(State(reg): State<Reg>, Path(name): Path<String>, req: Request) -> Response {
    if let Err(r) = admin(&reg, req.headers()).await {
        return r;
    }
    match reg.meta.delete_user(&name) {
        Ok(true) => {
            reg.auth.invalidate_cache();
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => err(StatusCode::NOT_FOUND, format!("user {name} not found")),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct Visibility {
    repository: String,
    public: bool,
}

async fn set_visibility(State(reg): State<Reg>, req: Request) -> Response {
    if let Err(r) = admin(&reg, req.headers()).await {
        return r;
    }
    let body: Visibility = match body_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.repository.parse::<berth_oci::RepoName>().is_err() {
        return err(
            StatusCode::BAD_REQUEST,
            format!("invalid repository name {:?}", body.repository),
        );
    }
    let res = reg.meta.update_repo(&body.repository, |r| {
        r.public = body.public;
        Ok(())
    });
    let res = match res {
        Err(MetaError::RepoNotFound(_)) => {
            let rec = RepoRecord {
                public: body.public,
                ..RepoRecord::new()
            };
            reg.meta.create_repo(&body.repository, &rec).map(|_| rec)
        }
        other => other,
    };
    match res {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize, Default)]
struct GcRequest {
    #[serde(default)]
    dry_run: bool,
    grace_seconds: Option<u64>,
}

async fn run_gc(State(reg): State<Reg>, req: Request) -> Response {
    if let Err(r) = admin(&reg, req.headers()).await {
        return r;
    }
    let body: GcRequest = match body_json(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let opts = GcOptions {
        grace: body
            .grace_seconds
            .map(Duration::from_secs)
            .unwrap_or(reg.cfg.gc_grace),
        dry_run: body.dry_run,
    };
    match reg.gc(opts).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => internal(e),
    }
}
