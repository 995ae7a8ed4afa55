//! OCI distribution spec v1.1 conformance, endpoint by endpoint, over real HTTP: each test runs
//! its own registry on a loopback port in a temporary directory and drives it with reqwest (or
//! raw HTTP/1.1 where a client would normalise the request).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use berth_registry::gc::GcOptions;
use berth_registry::meta::TagMutability;
use common::*;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde_json::{json, Value};

const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

// ---- base endpoint and auth ---------------------------------------------------------------------

#[tokio::test]
async fn ping_challenges_anonymous_and_accepts_credentials() {
    let (_dir, s) = setup().await;
    for path in ["/v2/", "/v2"] {
        let r = s.anon().get(path).await;
        let (h, _) = expect_error(r, 401, "UNAUTHORIZED").await;
        assert_eq!(hdr(&h, "docker-distribution-api-version"), "registry/2.0");
        assert_eq!(
            hdr(&h, "www-authenticate"),
            format!("Bearer realm=\"{}/token\",service=\"{SERVICE}\"", s.base)
        );
    }
    let (h, body) = check(s.api().get("/v2/").await, 200).await;
    assert_eq!(hdr(&h, "docker-distribution-api-version"), "registry/2.0");
    assert_eq!(hdr(&h, "content-type"), "application/json");
    assert_eq!(body, b"{}");
    // Bad password: 401 with a challenge, never 200.
    let (h, _) = expect_error(
        s.basic(AKID, "wrong").get("/v2/").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert!(hdr(&h, "www-authenticate").starts_with("Bearer realm="));
    // The admin and token endpoints carry the version header too.
    let (h, _) = check(s.anon().get("/token").await, 200).await;
    assert_eq!(hdr(&h, "docker-distribution-api-version"), "registry/2.0");
}

#[tokio::test]
async fn token_flow() {
    let (_dir, s) = setup().await;
    // Basic credentials + scope -> JWT with exactly the requested rights.
    let (h, body) = check(s.api().token(&["repository:tok/app:pull,push"]).await, 200).await;
    assert_eq!(hdr(&h, "content-type"), "application/json");
    let v: Value = serde_json::from_slice(&body).unwrap();
    let tok = v["token"].as_str().unwrap().to_string();
    assert_eq!(v["access_token"], tok.as_str());
    assert!(v["expires_in"].as_u64().unwrap() >= 60);
    assert!(v["issued_at"].is_string());
    let c = claims(&tok);
    assert_eq!(c["aud"], SERVICE);
    assert_eq!(
        c["access"],
        json!([{ "type": "repository", "name": "tok/app", "actions": ["pull", "push"] }])
    );

    // The token pushes and pulls.
    let rw = s.bearer(&tok);
    check(rw.get("/v2/").await, 200).await;
    let img = push_image(&rw, "tok/app", "v1").await;
    check(rw.get("/v2/tok/app/manifests/v1").await, 200).await;

    // A pull-only token: pull works, push is challenged for the missing scope.
    let v: Value = s
        .api()
        .token(&["repository:tok/app:pull"])
        .await
        .json()
        .await
        .unwrap();
    let ro = s.bearer(v["token"].as_str().unwrap());
    check(
        ro.get(&format!("/v2/tok/app/manifests/{}", img.digest))
            .await,
        200,
    )
    .await;
    let (h, _) = expect_error(
        ro.send(Method::POST, "/v2/tok/app/blobs/uploads/").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let c = hdr(&h, "www-authenticate");
    assert!(
        c.starts_with(&format!(
            "Bearer realm=\"{}/token\",service=\"{SERVICE}\"",
            s.base
        )),
        "{c}"
    );
    assert!(c.contains("scope=\"repository:tok/app:pull,push\""), "{c}");
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    // ... and is challenged for other repositories.
    let (h, _) = expect_error(ro.get("/v2/tok/other/tags/list").await, 401, "UNAUTHORIZED").await;
    let c = hdr(&h, "www-authenticate");
    assert!(c.contains("scope=\"repository:tok/other:pull\""), "{c}");
    assert!(c.contains("error=\"insufficient_scope\""), "{c}");
    // Manifest DELETE needs the delete action.
    let (h, _) = expect_error(
        rw.delete(&format!("/v2/tok/app/manifests/{}", img.digest))
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    assert!(hdr(&h, "www-authenticate").contains("scope=\"repository:tok/app:pull,delete\""));

    // Bad password at the token endpoint.
    expect_error(
        s.basic(AKID, "nope")
            .token(&["repository:tok/app:pull"])
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;

    // Tampered tokens: changed claims with the old signature, a changed signature, alg none,
    // garbage.
    let parts: Vec<&str> = tok.split('.').collect();
    let mut forged = claims(&tok);
    forged["access"][0]["name"] = json!("tok/other");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    let mut sig = parts[2].to_string();
    let last = sig.pop().unwrap();
    sig.push(if last == 'A' { 'B' } else { 'A' });
    let resigned = format!("{}.{}.{sig}", parts[0], parts[1]);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    for bad in [forged.as_str(), &resigned, &none, "garbage", "a.b.c"] {
        let (h, _) = expect_error(
            s.bearer(bad).get("/v2/tok/app/tags/list").await,
            401,
            "UNAUTHORIZED",
        )
        .await;
        assert!(hdr(&h, "www-authenticate").contains("error=\"invalid_token\""));
    }

    // OAuth2 password grant (POST /token), as docker login does.
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let form = format!(
        "grant_type=password&service={SERVICE}&client_id=conformance&username={}&password={}&scope={}",
        enc(AKID),
        enc(SECRET),
        enc("repository:tok/app:pull")
    );
    let r = s
        .anon()
        .req(Method::POST, "/token")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let (_, body) = check(r, 200).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    let oauth = s.bearer(v["access_token"].as_str().unwrap());
    check(oauth.get("/v2/tok/app/tags/list").await, 200).await;
    expect_error(
        oauth.send(Method::POST, "/v2/tok/app/blobs/uploads/").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let r = s
        .anon()
        .req(Method::POST, "/token")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=password&username={}&password=wrong&scope=x",
            enc(AKID)
        ))
        .send()
        .await
        .unwrap();
    expect_error(r, 401, "UNAUTHORIZED").await;
    let r = s
        .anon()
        .req(Method::POST, "/token")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("grant_type=authorization_code&code=x")
        .send()
        .await
        .unwrap();
    check(r, 400).await;

    // Anonymous tokens carry no rights on private repositories.
    let v: Value = s
        .anon()
        .token(&["repository:tok/app:pull"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(claims(v["token"].as_str().unwrap())["access"], json!([]));
    expect_error(
        s.bearer(v["token"].as_str().unwrap())
            .get("/v2/tok/app/tags/list")
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn users_grants_and_public_repositories() {
    let (_dir, s) = setup().await;
    let api = s.api();
    s.add_user(
        "alice",
        "alice-password",
        json!([{ "repository": "team/*", "actions": ["pull", "push"] }]),
    )
    .await;
    s.add_user(
        "bob",
        "bob-password",
        json!([{ "repository": "team/*", "actions": ["pull"] }]),
    )
    .await;
    s.add_user(
        "carol",
        "carol-password",
        json!([{ "repository": "team/app", "actions": ["pull", "delete"] }]),
    )
    .await;
    let team = push_image(&api, "team/app", "v1").await;
    let other = push_image(&api, "other/app", "v1").await;
    let alice = s.basic("alice", "alice-password");
    let bob = s.basic("bob", "bob-password");
    let carol = s.basic("carol", "carol-password");

    // Pull allowed by the grant, denied elsewhere.
    check(alice.get("/v2/").await, 200).await;
    check(alice.get("/v2/team/app/manifests/v1").await, 200).await;
    check(
        alice
            .head(&format!("/v2/team/app/blobs/{}", team.blobs[1].0))
            .await,
        200,
    )
    .await;
    expect_error(alice.get("/v2/other/app/manifests/v1").await, 403, "DENIED").await;
    expect_error(
        alice
            .get(&format!("/v2/other/app/blobs/{}", other.blobs[1].0))
            .await,
        403,
        "DENIED",
    )
    .await;
    // Push allowed by the grant (new repositories included), denied elsewhere.
    push_image(&alice, "team/new", "v1").await;
    expect_error(
        alice
            .send(Method::POST, "/v2/other/app/blobs/uploads/")
            .await,
        403,
        "DENIED",
    )
    .await;
    expect_error(
        alice
            .put_manifest("other/app", "evil", OCI_MANIFEST, &other.manifest)
            .await,
        403,
        "DENIED",
    )
    .await;
    // Pull-only user: push denied.
    check(bob.get("/v2/team/app/tags/list").await, 200).await;
    expect_error(
        bob.send(Method::POST, "/v2/team/app/blobs/uploads/").await,
        403,
        "DENIED",
    )
    .await;
    expect_error(
        bob.put_manifest("team/app", "v2", OCI_MANIFEST, &team.manifest)
            .await,
        403,
        "DENIED",
    )
    .await;
    // Delete right.
    expect_error(
        alice
            .delete(&format!("/v2/team/app/manifests/{}", team.digest))
            .await,
        403,
        "DENIED",
    )
    .await;
    check(
        carol
            .delete(&format!("/v2/team/app/manifests/{}", team.digest))
            .await,
        202,
    )
    .await;
    expect_error(
        carol
            .delete(&format!("/v2/team/new/blobs/{}", team.blobs[0].0))
            .await,
        403,
        "DENIED",
    )
    .await;
    // Wrong password.
    expect_error(
        s.basic("alice", "wrong-password")
            .get("/v2/team/app/tags/list")
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    // User tokens are narrowed to the user's rights.
    let v: Value = alice
        .token(&[
            "repository:team/app:pull,push,delete",
            "repository:other/app:pull",
        ])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims(v["token"].as_str().unwrap())["access"],
        json!([{ "type": "repository", "name": "team/app", "actions": ["pull", "push"] }])
    );
    // The admin API is for admins only.
    let r = alice
        .req(Method::PUT, "/berth/v1/users/mallory")
        .json(&json!({ "password": "mallory-password", "admin": true }))
        .send()
        .await
        .unwrap();
    check(r, 403).await;
    let r = s
        .anon()
        .req(Method::POST, "/berth/v1/visibility")
        .json(&json!({ "repository": "other/app", "public": true }))
        .send()
        .await
        .unwrap();
    let (h, _) = check(r, 401).await;
    assert!(hdr(&h, "www-authenticate").starts_with("Basic"));

    // Public repositories: anonymous pull, never push.
    let anon = s.anon();
    let (h, _) = expect_error(
        anon.get("/v2/other/app/manifests/v1").await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let c = hdr(&h, "www-authenticate");
    assert!(c.contains("scope=\"repository:other/app:pull\""), "{c}");
    let r = api
        .req(Method::POST, "/berth/v1/visibility")
        .json(&json!({ "repository": "other/app", "public": true }))
        .send()
        .await
        .unwrap();
    check(r, 204).await;
    let (_, body) = check(anon.get("/v2/other/app/manifests/v1").await, 200).await;
    assert_eq!(body, other.manifest);
    let (_, body) = check(
        anon.get(&format!("/v2/other/app/blobs/{}", other.blobs[1].0))
            .await,
        200,
    )
    .await;
    assert_eq!(body, other.blobs[1].1);
    check(anon.get("/v2/other/app/tags/list").await, 200).await;
    let (h, _) = expect_error(
        anon.send(Method::POST, "/v2/other/app/blobs/uploads/")
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    let c = hdr(&h, "www-authenticate");
    assert!(
        c.contains("scope=\"repository:other/app:pull,push\""),
        "{c}"
    );
    expect_error(
        anon.put_manifest("other/app", "v2", OCI_MANIFEST, &other.manifest)
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    expect_error(
        anon.delete(&format!("/v2/other/app/manifests/{}", other.digest))
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;
    // ... users without a grant may pull it too, and anonymous tokens get pull only.
    check(bob.get("/v2/other/app/manifests/v1").await, 200).await;
    let v: Value = anon
        .token(&["repository:other/app:pull,push"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        claims(v["token"].as_str().unwrap())["access"],
        json!([{ "type": "repository", "name": "other/app", "actions": ["pull"] }])
    );
}

// ---- blob uploads -------------------------------------------------------------------------------

#[tokio::test]
async fn blob_monolithic_post() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(5000);
    let d = sha256(&data);
    let (h, body) = check(api.upload_mono("up/mono", &d, &data).await, 201).await;
    assert!(body.is_empty());
    assert_eq!(hdr(&h, "location"), format!("/v2/up/mono/blobs/{d}"));
    assert_eq!(hdr(&h, "docker-content-digest"), d);
    let (h, body) = check(api.head(&hdr(&h, "location")).await, 200).await;
    assert!(body.is_empty());
    assert_eq!(hdr(&h, "content-length"), "5000");
    assert_eq!(hdr(&h, "docker-content-digest"), d);
    let (h, body) = check(api.get(&format!("/v2/up/mono/blobs/{d}")).await, 200).await;
    assert_eq!(hdr(&h, "content-length"), "5000");
    assert_eq!(hdr(&h, "docker-content-digest"), d);
    assert_eq!(body, data);
    // Not visible from another repository.
    expect_error(
        api.get(&format!("/v2/up/other/blobs/{d}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    check(api.head(&format!("/v2/up/other/blobs/{d}")).await, 404).await;
    // An invalid digest.
    expect_error(
        api.upload_mono("up/mono", "sha256:xyz", &data).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    expect_error(
        api.get("/v2/up/mono/blobs/sha256:1234").await,
        400,
        "DIGEST_INVALID",
    )
    .await;
}

#[tokio::test]
async fn blob_post_then_put() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(70_000);
    let d = sha256(&data);
    let (h, _) = check(
        api.send(Method::POST, "/v2/up/two/blobs/uploads/").await,
        202,
    )
    .await;
    let loc = hdr(&h, "location");
    let uuid = hdr(&h, "docker-upload-uuid");
    assert!(!uuid.is_empty());
    assert!(loc.starts_with("/v2/up/two/blobs/uploads/"), "{loc}");
    assert!(loc.ends_with(&uuid), "{loc}");
    assert_eq!(hdr(&h, "range"), "0-0");
    let (h, _) = check(api.finish(&loc, &d, &data).await, 201).await;
    assert_eq!(hdr(&h, "location"), format!("/v2/up/two/blobs/{d}"));
    assert_eq!(hdr(&h, "docker-content-digest"), d);
    let (_, body) = check(api.get(&format!("/v2/up/two/blobs/{d}")).await, 200).await;
    assert_eq!(body, data);
    // The session is over.
    expect_error(api.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // PUT without a digest is refused and leaves the session usable.
    let loc = api.start_upload("up/two").await;
    let r = api
        .req(Method::PUT, &loc)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "DIGEST_INVALID").await;
    check(api.finish(&loc, &d, &data).await, 201).await;
}

#[tokio::test]
async fn blob_chunked_in_order() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(3000);
    let d = sha256(&data);
    let loc = api.start_upload("up/chunked").await;
    let mut off = 0u64;
    for chunk in data.chunks(1000) {
        let end = off + chunk.len() as u64 - 1;
        let (h, _) = check(api.patch(&loc, Some((off, end)), chunk).await, 202).await;
        assert_eq!(hdr(&h, "location"), loc);
        assert_eq!(hdr(&h, "range"), format!("0-{end}"));
        assert!(loc.ends_with(&hdr(&h, "docker-upload-uuid")));
        off = end + 1;
    }
    let (h, body) = check(api.get(&loc).await, 204).await;
    assert!(body.is_empty());
    assert_eq!(hdr(&h, "range"), "0-2999");
    assert_eq!(hdr(&h, "location"), loc);
    assert!(loc.ends_with(&hdr(&h, "docker-upload-uuid")));
    let (h, _) = check(api.finish(&loc, &d, b"").await, 201).await;
    assert_eq!(hdr(&h, "docker-content-digest"), d);
    assert_eq!(hdr(&h, "location"), format!("/v2/up/chunked/blobs/{d}"));
    let (_, body) = check(api.get(&format!("/v2/up/chunked/blobs/{d}")).await, 200).await;
    assert_eq!(body, data);
    // The last chunk may come with the PUT, with its Content-Range.
    let loc = api.start_upload("up/chunked").await;
    check(api.patch(&loc, Some((0, 1999)), &data[..2000]).await, 202).await;
    let r = api
        .req(Method::PUT, &with_query(&loc, "digest", &d))
        .header("content-range", "2000-2999")
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(data[2000..].to_vec())
        .send()
        .await
        .unwrap();
    check(r, 201).await;
}

#[tokio::test]
async fn blob_chunk_out_of_order() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(3000);
    let d = sha256(&data);
    let loc = api.start_upload("up/ooo").await;
    check(api.patch(&loc, Some((0, 999)), &data[..1000]).await, 202).await;
    // Skipping ahead, and re-sending the first chunk, are both out of order.
    for (a, z) in [(2000u64, 2999u64), (0, 999), (999, 1998)] {
        let chunk = &data[a as usize..=z as usize];
        let (h, _) = expect_error(
            api.patch(&loc, Some((a, z)), chunk).await,
            416,
            "RANGE_INVALID",
        )
        .await;
        assert_eq!(hdr(&h, "range"), "0-999");
        assert_eq!(hdr(&h, "location"), loc);
    }
    let (h, _) = check(api.get(&loc).await, 204).await;
    assert_eq!(hdr(&h, "range"), "0-999");
    check(
        api.patch(&loc, Some((1000, 1999)), &data[1000..2000]).await,
        202,
    )
    .await;
    check(
        api.patch(&loc, Some((2000, 2999)), &data[2000..]).await,
        202,
    )
    .await;
    check(api.finish(&loc, &d, b"").await, 201).await;
    let (_, body) = check(api.get(&format!("/v2/up/ooo/blobs/{d}")).await, 200).await;
    assert_eq!(body, data);
}

#[tokio::test]
async fn blob_streamed_patch() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(3 << 20);
    let d = sha256(&data);
    let loc = api.start_upload("up/stream").await;
    // Two streamed (chunked transfer encoding) PATCHes without Content-Range or Length.
    let mut off = 0usize;
    for part in [&data[..1 << 20], &data[1 << 20..(5 << 20) / 2]] {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            part.chunks(100_000).map(|c| Ok(c.to_vec())).collect();
        let r = api
            .req(Method::PATCH, &loc)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
            .send()
            .await
            .unwrap();
        off += part.len();
        let (h, _) = check(r, 202).await;
        assert_eq!(hdr(&h, "range"), format!("0-{}", off - 1));
    }
    let (h, _) = check(api.get(&loc).await, 204).await;
    assert_eq!(hdr(&h, "range"), format!("0-{}", off - 1));
    // The rest with the PUT.
    check(api.finish(&loc, &d, &data[off..]).await, 201).await;
    let (h, body) = check(api.get(&format!("/v2/up/stream/blobs/{d}")).await, 200).await;
    assert_eq!(hdr(&h, "content-length"), data.len().to_string());
    assert!(body == data, "streamed blob content differs");
}

#[tokio::test]
async fn blob_upload_cancel() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(100);
    let loc = api.start_upload("up/cancel").await;
    check(api.patch(&loc, Some((0, 99)), &data).await, 202).await;
    let (_, body) = check(api.delete(&loc).await, 204).await;
    assert!(body.is_empty());
    expect_error(api.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        api.patch(&loc, None, &data).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(
        api.finish(&loc, &sha256(&data), b"").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(api.delete(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    check(
        api.head(&format!("/v2/up/cancel/blobs/{}", sha256(&data)))
            .await,
        404,
    )
    .await;
    assert_eq!(
        std::fs::read_dir(s.reg.store.uploads_dir())
            .unwrap()
            .count(),
        0
    );
    // A session is bound to its repository.
    let loc = api.start_upload("up/cancel").await;
    let id = loc.rsplit('/').next().unwrap();
    expect_error(
        api.get(&format!("/v2/up/elsewhere/blobs/uploads/{id}"))
            .await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    check(api.get(&loc).await, 204).await;
}

#[tokio::test]
async fn blob_wrong_digest_stores_nothing() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(2000);
    let actual = sha256(&data);
    let claimed = sha256(b"something else");
    // Session upload.
    let loc = api.start_upload("up/wrong").await;
    check(api.patch(&loc, Some((0, 1999)), &data).await, 202).await;
    let (_, v) = expect_error(api.finish(&loc, &claimed, b"").await, 400, "DIGEST_INVALID").await;
    assert_eq!(v["errors"][0]["detail"]["digest"], claimed.as_str());
    for d in [&actual, &claimed] {
        check(api.head(&format!("/v2/up/wrong/blobs/{d}")).await, 404).await;
        assert!(!s.blob_file(d).exists());
    }
    expect_error(api.get(&loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    // Monolithic upload.
    expect_error(
        api.upload_mono("up/wrong", &claimed, &data).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    for d in [&actual, &claimed] {
        check(api.head(&format!("/v2/up/wrong/blobs/{d}")).await, 404).await;
        assert!(!s.blob_file(d).exists());
    }
    // Wrong algorithm for the content is wrong too.
    expect_error(
        api.upload_mono("up/wrong", &sha512(b"x"), &data).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    assert_eq!(
        std::fs::read_dir(s.reg.store.uploads_dir())
            .unwrap()
            .count(),
        0
    );
    // Nothing was created.
    expect_error(api.get("/v2/up/wrong/tags/list").await, 404, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn blob_sha512() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(10_000);
    let d = sha512(&data);
    check(api.upload_mono("up/sha512", &d, &data).await, 201).await;
    let (h, _) = check(api.head(&format!("/v2/up/sha512/blobs/{d}")).await, 200).await;
    assert_eq!(hdr(&h, "docker-content-digest"), d);
    assert_eq!(hdr(&h, "content-length"), "10000");
    let (_, body) = check(api.get(&format!("/v2/up/sha512/blobs/{d}")).await, 200).await;
    assert_eq!(body, data);
    // Chunked, then referenced from a manifest.
    let data2 = random_bytes(4000);
    let d2 = sha512(&data2);
    api.upload_chunked("up/sha512", &d2, &data2, 1500).await;
    let (_, body) = check(api.get(&format!("/v2/up/sha512/blobs/{d2}")).await, 200).await;
    assert_eq!(body, data2);
    let config = random_config();
    let cd = api.upload("up/sha512", &config).await;
    let m = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &cd, config.len()),
        vec![
            desc(OCI_LAYER, &d, data.len()),
            desc(OCI_LAYER, &d2, data2.len()),
        ],
    ));
    // And the manifest itself addressed by sha512.
    let md = sha512(&m);
    let (h, _) = check(
        api.put_manifest("up/sha512", &md, OCI_MANIFEST, &m).await,
        201,
    )
    .await;
    assert_eq!(hdr(&h, "docker-content-digest"), md);
    let (h, body) = check(api.get(&format!("/v2/up/sha512/manifests/{md}")).await, 200).await;
    assert_eq!(hdr(&h, "docker-content-digest"), md);
    assert_eq!(body, m);
}

#[tokio::test]
async fn blob_zero_length() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let empty = sha256(b"");
    assert_eq!(
        empty,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    check(api.upload_mono("up/zero", &empty, b"").await, 201).await;
    let (h, _) = check(api.head(&format!("/v2/up/zero/blobs/{empty}")).await, 200).await;
    assert_eq!(hdr(&h, "content-length"), "0");
    assert_eq!(hdr(&h, "docker-content-digest"), empty);
    let (h, body) = check(api.get(&format!("/v2/up/zero/blobs/{empty}")).await, 200).await;
    assert_eq!(hdr(&h, "content-length"), "0");
    assert!(body.is_empty());
    // Session with no data at all.
    let loc = api.start_upload("up/zero2").await;
    check(api.finish(&loc, &empty, b"").await, 201).await;
    check(api.head(&format!("/v2/up/zero2/blobs/{empty}")).await, 200).await;
}

#[tokio::test]
async fn blob_cross_repository_mount() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(3000);
    let d = api.upload("mnt/src", &data).await;
    // Source has it: 201 Created, no data sent.
    let r = api
        .req(Method::POST, "/v2/mnt/dst/blobs/uploads/")
        .query(&[("mount", d.as_str()), ("from", "mnt/src")])
        .send()
        .await
        .unwrap();
    let (h, _) = check(r, 201).await;
    assert_eq!(hdr(&h, "location"), format!("/v2/mnt/dst/blobs/{d}"));
    assert_eq!(hdr(&h, "docker-content-digest"), d);
    let (_, body) = check(api.get(&format!("/v2/mnt/dst/blobs/{d}")).await, 200).await;
    assert_eq!(body, data);
    // Source lacks it: 202 with a usable new session.
    let other = random_bytes(100);
    let od = sha256(&other);
    let r = api
        .req(Method::POST, "/v2/mnt/dst/blobs/uploads/")
        .query(&[("mount", od.as_str()), ("from", "mnt/src")])
        .send()
        .await
        .unwrap();
    let (h, _) = check(r, 202).await;
    let loc = hdr(&h, "location");
    assert!(loc.starts_with("/v2/mnt/dst/blobs/uploads/"), "{loc}");
    assert!(!hdr(&h, "docker-upload-uuid").is_empty());
    check(api.finish(&loc, &od, &other).await, 201).await;
    // Mount without `from`: a plain session.
    let r = api
        .req(Method::POST, "/v2/mnt/dst/blobs/uploads/")
        .query(&[("mount", d.as_str())])
        .send()
        .await
        .unwrap();
    check(r, 202).await;
    // A user may not mount from a repository they cannot read, and learns nothing.
    s.add_user(
        "alice",
        "alice-password",
        json!([{ "repository": "team/*", "actions": ["pull", "push"] }]),
    )
    .await;
    let secret = random_bytes(64);
    let sd = api.upload("secret/x", &secret).await;
    let alice = s.basic("alice", "alice-password");
    for (from, digest) in [("secret/x", &sd), ("secret/x", &od)] {
        let r = alice
            .req(Method::POST, "/v2/team/app/blobs/uploads/")
            .query(&[("mount", digest.as_str()), ("from", from)])
            .send()
            .await
            .unwrap();
        let (h, _) = check(r, 202).await;
        assert!(hdr(&h, "location").starts_with("/v2/team/app/blobs/uploads/"));
    }
    check(alice.head(&format!("/v2/team/app/blobs/{sd}")).await, 404).await;
    check(api.head(&format!("/v2/team/app/blobs/{sd}")).await, 404).await;
    // Public repositories are readable, so mounting from them works.
    let r = api
        .req(Method::POST, "/berth/v1/visibility")
        .json(&json!({ "repository": "secret/x", "public": true }))
        .send()
        .await
        .unwrap();
    check(r, 204).await;
    let r = alice
        .req(Method::POST, "/v2/team/app/blobs/uploads/")
        .query(&[("mount", sd.as_str()), ("from", "secret/x")])
        .send()
        .await
        .unwrap();
    check(r, 201).await;
    check(alice.head(&format!("/v2/team/app/blobs/{sd}")).await, 200).await;
}

#[tokio::test]
async fn blob_range_get() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(1000);
    let d = api.upload("up/range", &data).await;
    let path = format!("/v2/up/range/blobs/{d}");
    let (h, _) = check(api.get(&path).await, 200).await;
    assert_eq!(hdr(&h, "accept-ranges"), "bytes");
    for (range, a, z) in [
        ("bytes=0-99", 0usize, 99usize),
        ("bytes=990-", 990, 999),
        ("bytes=-10", 990, 999),
        ("bytes=995-2000", 995, 999),
        ("bytes=500-500", 500, 500),
        ("bytes=-5000", 0, 999),
    ] {
        let r = api
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        let (h, body) = check(r, 206).await;
        assert_eq!(
            hdr(&h, "content-range"),
            format!("bytes {a}-{z}/1000"),
            "{range}"
        );
        assert_eq!(
            hdr(&h, "content-length"),
            (z - a + 1).to_string(),
            "{range}"
        );
        assert_eq!(hdr(&h, "docker-content-digest"), d);
        assert_eq!(body, &data[a..=z], "{range}");
    }
    for range in ["bytes=1000-", "bytes=2000-3000", "bytes=-0", "bytes=5-1"] {
        let r = api
            .req(Method::GET, &path)
            .header("range", range)
            .send()
            .await
            .unwrap();
        let (h, _) = check(r, 416).await;
        assert_eq!(hdr(&h, "content-range"), "bytes */1000", "{range}");
    }
}

#[tokio::test]
async fn blob_delete() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let data = random_bytes(300);
    let d = api.upload("up/del", &data).await;
    let path = format!("/v2/up/del/blobs/{d}");
    let (_, body) = check(api.delete(&path).await, 202).await;
    assert!(body.is_empty());
    check(api.head(&path).await, 404).await;
    expect_error(api.get(&path).await, 404, "BLOB_UNKNOWN").await;
    expect_error(api.delete(&path).await, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn upload_session_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(3000);
    let d = sha256(&data);
    let s = start(dir.path()).await;
    let api = s.api();
    let kept = random_bytes(500);
    let kd = api.upload("up/restart", &kept).await;
    let loc = api.start_upload("up/restart").await;
    check(api.patch(&loc, Some((0, 999)), &data[..1000]).await, 202).await;
    drop(api);
    s.shutdown().await;

    let s = start(dir.path()).await;
    let api = s.api();
    let (h, _) = check(api.get(&loc).await, 204).await;
    assert_eq!(hdr(&h, "range"), "0-999");
    expect_error(
        api.patch(&loc, Some((500, 999)), &data[500..1000]).await,
        416,
        "RANGE_INVALID",
    )
    .await;
    let (h, _) = check(
        api.patch(&loc, Some((1000, 1999)), &data[1000..2000]).await,
        202,
    )
    .await;
    assert_eq!(hdr(&h, "range"), "0-1999");
    check(api.finish(&loc, &d, &data[2000..]).await, 201).await;
    let (_, body) = check(api.get(&format!("/v2/up/restart/blobs/{d}")).await, 200).await;
    assert_eq!(body, data);
    let (_, body) = check(api.get(&format!("/v2/up/restart/blobs/{kd}")).await, 200).await;
    assert_eq!(body, kept);
    drop(api);
    s.shutdown().await;
}

// ---- manifests ----------------------------------------------------------------------------------

/// GETs and HEADs a manifest by `reference`, checking the headers; returns the body.
async fn fetch_manifest(api: &Api, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
    let digest = sha256(body);
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = api
        .req(Method::GET, &path)
        .header(ACCEPT, ACCEPT_ALL)
        .send()
        .await
        .expect("request");
    let (h, got) = check(r, 200).await;
    assert_eq!(hdr(&h, "content-type"), media_type, "{path}");
    assert_eq!(hdr(&h, "docker-content-digest"), digest, "{path}");
    assert_eq!(hdr(&h, "content-length"), body.len().to_string(), "{path}");
    assert_eq!(got, body, "{path}");
    let r = api
        .req(Method::HEAD, &path)
        .header(ACCEPT, ACCEPT_ALL)
        .send()
        .await
        .expect("request");
    let (h, got) = check(r, 200).await;
    assert_eq!(hdr(&h, "content-type"), media_type, "{path}");
    assert_eq!(hdr(&h, "docker-content-digest"), digest, "{path}");
    assert_eq!(
        hdr(&h, "content-length"),
        body.len().to_string(),
        "HEAD {path}"
    );
    assert!(got.is_empty());
}

#[tokio::test]
async fn manifest_kinds_round_trip() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let repo = "man/kinds";
    let config = random_config();
    let layer = random_bytes(2048);
    let cd = api.upload(repo, &config).await;
    let ld = api.upload(repo, &layer).await;

    // OCI image manifest, by tag.
    let oci = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &cd, config.len()),
        vec![desc(OCI_LAYER, &ld, layer.len())],
    ));
    let od = sha256(&oci);
    let (h, body) = check(api.put_manifest(repo, "oci", OCI_MANIFEST, &oci).await, 201).await;
    assert!(body.is_empty());
    assert_eq!(hdr(&h, "location"), format!("/v2/{repo}/manifests/{od}"));
    assert_eq!(hdr(&h, "docker-content-digest"), od);
    assert!(hdr(&h, "oci-subject").is_empty());
    fetch_manifest(&api, repo, "oci", OCI_MANIFEST, &oci).await;
    fetch_manifest(&api, repo, &od, OCI_MANIFEST, &oci).await;

    // Docker schema 2, by digest (pretty-printed: the bytes are kept as pushed).
    let docker = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": desc(DOCKER_CONFIG, &cd, config.len()),
        "layers": [desc(DOCKER_LAYER, &ld, layer.len())],
    }))
    .unwrap();
    let dd = sha256(&docker);
    let (h, _) = check(
        api.put_manifest(repo, &dd, DOCKER_MANIFEST, &docker).await,
        201,
    )
    .await;
    assert_eq!(hdr(&h, "location"), format!("/v2/{repo}/manifests/{dd}"));
    assert_eq!(hdr(&h, "docker-content-digest"), dd);
    fetch_manifest(&api, repo, &dd, DOCKER_MANIFEST, &docker).await;
    // Tag it afterwards by pushing the same bytes by tag.
    check(
        api.put_manifest(repo, "docker", DOCKER_MANIFEST, &docker)
            .await,
        201,
    )
    .await;
    fetch_manifest(&api, repo, "docker", DOCKER_MANIFEST, &docker).await;

    // OCI index, by tag.
    let mut entry = desc(OCI_MANIFEST, &od, oci.len());
    entry["platform"] = json!({ "architecture": "amd64", "os": "linux" });
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry],
        "annotations": { "org.opencontainers.image.ref.name": "x" },
    }));
    check(
        api.put_manifest(repo, "index", OCI_INDEX, &index).await,
        201,
    )
    .await;
    fetch_manifest(&api, repo, "index", OCI_INDEX, &index).await;
    fetch_manifest(&api, repo, &sha256(&index), OCI_INDEX, &index).await;

    // Docker manifest list, by digest and tag.
    let mut entry = desc(DOCKER_MANIFEST, &dd, docker.len());
    entry["platform"] = json!({ "architecture": "arm64", "os": "linux", "variant": "v8" });
    let list = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [entry],
    }));
    let listd = sha256(&list);
    check(
        api.put_manifest(repo, &listd, DOCKER_LIST, &list).await,
        201,
    )
    .await;
    check(
        api.put_manifest(repo, "list", DOCKER_LIST, &list).await,
        201,
    )
    .await;
    fetch_manifest(&api, repo, "list", DOCKER_LIST, &list).await;
    fetch_manifest(&api, repo, &listd, DOCKER_LIST, &list).await;

    // Without a Content-Type the body's mediaType decides.
    let r = api
        .req(Method::PUT, &format!("/v2/{repo}/manifests/untyped"))
        .body(oci.clone())
        .send()
        .await
        .unwrap();
    check(r, 201).await;
    fetch_manifest(&api, repo, "untyped", OCI_MANIFEST, &oci).await;

    let (_, body) = check(api.get(&format!("/v2/{repo}/tags/list")).await, 200).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({ "name": repo, "tags": ["docker", "index", "list", "oci", "untyped"] })
    );
    // Unknown references.
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/nope")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/{}", sha256(b"nope")))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    check(api.head(&format!("/v2/{repo}/manifests/nope")).await, 404).await;
}

#[tokio::test]
async fn manifest_put_errors() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let repo = "man/err";
    let config = random_config();
    let layer = random_bytes(100);
    let cd = api.upload(repo, &config).await;
    let ld = api.upload(repo, &layer).await;
    let good = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &cd, config.len()),
        vec![desc(OCI_LAYER, &ld, layer.len())],
    ));

    // By digest with a body that has another digest.
    let other = sha256(b"{}");
    expect_error(
        api.put_manifest(repo, &other, OCI_MANIFEST, &good).await,
        400,
        "DIGEST_INVALID",
    )
    .await;
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/{other}")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/{}", sha256(&good)))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // A layer the registry does not have.
    let missing = sha256(b"missing layer");
    let bad = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, &cd, config.len()),
        vec![desc(OCI_LAYER, &missing, 13)],
    ));
    let (_, v) = expect_error(
        api.put_manifest(repo, "bad", OCI_MANIFEST, &bad).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(v["errors"][0]["detail"]["digest"], missing.as_str());
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/bad")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/{}", sha256(&bad)))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // A blob that exists, but in another repository only.
    let (_, body) = check(api.get(&format!("/v2/{repo}/tags/list")).await, 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["tags"],
        json!([])
    );
    expect_error(
        api.put_manifest("man/elsewhere", "x", OCI_MANIFEST, &good)
            .await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    // ... and the failed push created nothing.
    expect_error(
        api.get("/v2/man/elsewhere/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;

    // An index whose child manifest is missing.
    let index = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &sha256(&good), good.len())],
    }));
    expect_error(
        api.put_manifest(repo, "idx", OCI_INDEX, &index).await,
        400,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/idx")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // Malformed manifests.
    let schema1 = to_bytes(&json!({
        "schemaVersion": 1, "name": repo, "tag": "v1", "architecture": "amd64",
        "fsLayers": [{ "blobSum": ld }], "history": [{ "v1Compatibility": "{}" }],
    }));
    let no_config = to_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [desc(OCI_LAYER, &ld, layer.len())],
    }));
    let bad_digest = to_bytes(&oci_manifest(
        desc(OCI_CONFIG, "sha256:abc", config.len()),
        vec![],
    ));
    let wrong_type = to_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
    }));
    for (body, ct) in [
        (b"{not json".to_vec(), OCI_MANIFEST),
        (b"[]".to_vec(), OCI_MANIFEST),
        (schema1.clone(), DOCKER_SCHEMA1),
        (
            schema1,
            "application/vnd.docker.distribution.manifest.v1+json",
        ),
        (no_config, OCI_MANIFEST),
        (bad_digest, OCI_MANIFEST),
        (wrong_type, OCI_MANIFEST),
        (good.clone(), "text/plain"),
    ] {
        expect_error(
            api.put_manifest(repo, "broken", ct, &body).await,
            400,
            "MANIFEST_INVALID",
        )
        .await;
    }
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/broken")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // The 4 MiB limit: exactly 4 MiB is accepted, one byte more (or far more) is 413.
    let padded = |len: usize| {
        let mut m = oci_manifest(desc(OCI_CONFIG, &cd, config.len()), vec![]);
        m["annotations"] = json!({ "pad": "" });
        let overhead = to_bytes(&m).len();
        m["annotations"] = json!({ "pad": "x".repeat(len - overhead) });
        let m = to_bytes(&m);
        assert_eq!(m.len(), len);
        m
    };
    for len in [(4 << 20) + 1, 16 << 20] {
        let huge = padded(len);
        let (_, body) = check(
            api.put_manifest(repo, "huge", OCI_MANIFEST, &huge).await,
            413,
        )
        .await;
        error_body(&body, "SIZE_INVALID");
        expect_error(
            api.get(&format!("/v2/{repo}/manifests/huge")).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    let max = padded(4 << 20);
    check(api.put_manifest(repo, "max", OCI_MANIFEST, &max).await, 201).await;
    let (_, body) = check(api.get(&format!("/v2/{repo}/manifests/max")).await, 200).await;
    assert!(body == max);
    // Invalid tag.
    let r = api
        .put_manifest(repo, &"t".repeat(200), OCI_MANIFEST, &good)
        .await;
    assert_eq!(r.status(), 400);
    // The server is fine, and a good push still works.
    check(
        api.put_manifest(repo, "good", OCI_MANIFEST, &good).await,
        201,
    )
    .await;
}

#[tokio::test]
async fn manifest_delete() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let repo = "man/del";
    let a = push_image(&api, repo, "a").await;
    check(
        api.put_manifest(repo, "a2", OCI_MANIFEST, &a.manifest)
            .await,
        201,
    )
    .await;
    let b = push_image(&api, repo, "b").await;

    // By digest: the manifest and every tag on it go.
    let (_, body) = check(
        api.delete(&format!("/v2/{repo}/manifests/{}", a.digest))
            .await,
        202,
    )
    .await;
    assert!(body.is_empty());
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/{}", a.digest)).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    check(
        api.head(&format!("/v2/{repo}/manifests/{}", a.digest))
            .await,
        404,
    )
    .await;
    for t in ["a", "a2"] {
        expect_error(
            api.get(&format!("/v2/{repo}/manifests/{t}")).await,
            404,
            "MANIFEST_UNKNOWN",
        )
        .await;
    }
    let (_, body) = check(api.get(&format!("/v2/{repo}/tags/list")).await, 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["tags"],
        json!(["b"])
    );
    expect_error(
        api.delete(&format!("/v2/{repo}/manifests/{}", a.digest))
            .await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // By tag: the tag goes, the manifest stays.
    check(api.delete(&format!("/v2/{repo}/manifests/b")).await, 202).await;
    expect_error(
        api.get(&format!("/v2/{repo}/manifests/b")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    let (_, body) = check(
        api.get(&format!("/v2/{repo}/manifests/{}", b.digest)).await,
        200,
    )
    .await;
    assert_eq!(body, b.manifest);
    let (_, body) = check(api.get(&format!("/v2/{repo}/tags/list")).await, 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["tags"],
        json!([])
    );
    expect_error(
        api.delete(&format!("/v2/{repo}/manifests/b")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // Deleting a manifest leaves its blobs alone (GC decides).
    check(
        api.get(&format!("/v2/{repo}/blobs/{}", a.blobs[1].0)).await,
        200,
    )
    .await;
    // A deleted manifest can be pushed again.
    check(
        api.put_manifest(repo, "a", OCI_MANIFEST, &a.manifest).await,
        201,
    )
    .await;
    check(api.get(&format!("/v2/{repo}/manifests/a")).await, 200).await;
}

// ---- names, tags, catalog -----------------------------------------------------------------------

#[tokio::test]
async fn invalid_and_unknown_names() {
    let (_dir, s) = setup().await;
    let auth = format!("Authorization: {}\r\n", basic_header(AKID, SECRET));
    let long = "a".repeat(300);
    let names = [
        "../x",
        "UPPER",
        long.as_str(),
        "a//b",
        "%2e%2e/x",
        "x/%2E%2E/y",
        "-x",
        "a/",
    ];
    for name in names {
        for (method, suffix) in [
            ("GET", "tags/list"),
            ("GET", "manifests/latest"),
            ("PUT", "manifests/latest"),
            (
                "HEAD",
                "blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            ("POST", "blobs/uploads/"),
            (
                "GET",
                "referrers/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ] {
            let target = format!("/v2/{name}/{suffix}");
            let (status, _, body) = raw(s.addr, method, &target, auth.as_bytes(), b"").await;
            assert_eq!(
                status,
                400,
                "{method} {target}: {}",
                String::from_utf8_lossy(&body)
            );
            if method != "HEAD" {
                error_body(&body, "NAME_INVALID");
            }
        }
    }
    // Unknown repository.
    expect_error(
        s.api().get("/v2/no/such/repo/tags/list").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    // The data directory was not touched by the dot segments.
    assert!(s.reg.store.uploads_dir().exists());
}

#[tokio::test]
async fn tags_list_pagination() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let repo = "pg/app";
    let img = push_image(&api, repo, "seed").await;
    check(api.delete(&format!("/v2/{repo}/manifests/seed")).await, 202).await;
    let mut all: Vec<String> = (0..25).map(|i| format!("v{i}")).collect();
    for t in &all {
        check(
            api.put_manifest(repo, t, OCI_MANIFEST, &img.manifest).await,
            201,
        )
        .await;
    }
    all.sort();
    // Unpaginated.
    let (h, body) = check(api.get(&format!("/v2/{repo}/tags/list")).await, 200).await;
    assert!(next_link(&h).is_none());
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({ "name": repo, "tags": all })
    );
    // Pages of 10, following Link.
    let mut got: Vec<String> = Vec::new();
    let mut url = format!("/v2/{repo}/tags/list?n=10");
    let mut pages = 0;
    loop {
        let (h, body) = check(api.get(&url).await, 200).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["name"], repo);
        let tags: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
        pages += 1;
        assert!(tags.len() <= 10);
        got.extend(tags.iter().cloned());
        match next_link(&h) {
            Some(next) => {
                assert_eq!(
                    next,
                    format!("/v2/{repo}/tags/list?last={}&n=10", tags.last().unwrap())
                );
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(got, all, "lexical order, no duplicates, nothing missing");
    // Exactly n left: no Link.
    let (h, body) = check(api.get(&format!("/v2/{repo}/tags/list?n=25")).await, 200).await;
    assert!(next_link(&h).is_none());
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["tags"]
            .as_array()
            .unwrap()
            .len(),
        25
    );
    // `last` alone, and a `last` that is not a tag.
    let (_, body) = check(api.get(&format!("/v2/{repo}/tags/list?last=v5")).await, 200).await;
    let tags: Vec<String> =
        serde_json::from_value(serde_json::from_slice::<Value>(&body).unwrap()["tags"].clone())
            .unwrap();
    assert_eq!(
        tags,
        all.iter()
            .filter(|t| t.as_str() > "v5")
            .cloned()
            .collect::<Vec<_>>()
    );
    let (_, body) = check(
        api.get(&format!("/v2/{repo}/tags/list?last=v19z&n=2"))
            .await,
        200,
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["tags"],
        json!(["v2", "v20"])
    );
    // Other repositories' tags never leak in (prefix names).
    push_image(&api, "pg/app2", "zzz").await;
    push_image(&api, "pg", "aaa").await;
    let (_, body) = check(api.get(&format!("/v2/{repo}/tags/list?last=v9")).await, 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["tags"],
        json!([])
    );
}

#[tokio::test]
async fn catalog_pagination() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let mut all = Vec::new();
    for i in 0..12 {
        let repo = if i % 3 == 0 {
            format!("team/r{i}")
        } else {
            format!("cat/r{i}")
        };
        api.upload(&repo, format!("blob {i}").as_bytes()).await;
        all.push(repo);
    }
    all.sort();
    let (h, body) = check(api.get("/v2/_catalog").await, 200).await;
    assert!(next_link(&h).is_none());
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({ "repositories": all })
    );
    let mut got: Vec<String> = Vec::new();
    let mut url = "/v2/_catalog?n=5".to_string();
    loop {
        let (h, body) = check(api.get(&url).await, 200).await;
        let repos: Vec<String> = serde_json::from_value(
            serde_json::from_slice::<Value>(&body).unwrap()["repositories"].clone(),
        )
        .unwrap();
        assert!(repos.len() <= 5);
        got.extend(repos.iter().cloned());
        match next_link(&h) {
            Some(next) => {
                assert_eq!(
                    next,
                    format!("/v2/_catalog?last={}&n=5", repos.last().unwrap())
                );
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(got, all);
    // A user sees only what they may pull, still paginated.
    s.add_user(
        "alice",
        "alice-password",
        json!([{ "repository": "team/*", "actions": ["pull"] }]),
    )
    .await;
    let alice = s.basic("alice", "alice-password");
    let (h, body) = check(alice.get("/v2/_catalog?n=2").await, 200).await;
    let repos = serde_json::from_slice::<Value>(&body).unwrap()["repositories"].clone();
    assert_eq!(repos, json!(["team/r0", "team/r3"]));
    let next = next_link(&h).unwrap();
    let (h, body) = check(alice.get(&next).await, 200).await;
    assert!(next_link(&h).is_none());
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["repositories"],
        json!(["team/r6", "team/r9"])
    );

    // The token flow (crane, regctl): an admin's token with `registry:catalog:*` lists every
    // repository; other users get no registry scope.
    let v: Value = api
        .token(&["registry:catalog:*"])
        .await
        .json()
        .await
        .unwrap();
    let tok = s.bearer(v["token"].as_str().unwrap());
    let (_, body) = check(tok.get("/v2/_catalog").await, 200).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({ "repositories": all })
    );
    let v: Value = alice
        .token(&["registry:catalog:*"])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(claims(v["token"].as_str().unwrap())["access"], json!([]));
}

// ---- referrers ----------------------------------------------------------------------------------

#[tokio::test]
async fn referrers_api() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let repo = "ref/app";
    let img = push_image(&api, repo, "v1").await;
    let empty = api.upload(repo, b"{}").await;
    assert_eq!(
        empty,
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let subject = desc(OCI_MANIFEST, &img.digest, img.manifest.len());
    let artifact = |artifact_type: &str, note: &str, subject: &Value| {
        to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": desc(OCI_EMPTY, &empty, 2),
            "layers": [desc(OCI_EMPTY, &empty, 2)],
            "subject": subject,
            "annotations": { "org.example.note": note },
        }))
    };
    let sbom_type = "application/vnd.example.sbom.v1+json";
    let sig_type = "application/vnd.example.signature.v1+json";
    let sbom = artifact(sbom_type, "sbom", &subject);
    let sig = artifact(sig_type, "sig", &subject);
    for a in [&sbom, &sig] {
        let d = sha256(a);
        let (h, _) = check(api.put_manifest(repo, &d, OCI_MANIFEST, a).await, 201).await;
        assert_eq!(hdr(&h, "oci-subject"), img.digest);
        assert_eq!(hdr(&h, "docker-content-digest"), d);
    }
    let referrers = |q: Option<&str>| {
        let api = api.clone();
        let mut path = format!("/v2/{repo}/referrers/{}", img.digest);
        if let Some(t) = q {
            path = with_query(&path, "artifactType", t);
        }
        async move {
            let (h, body) = check(api.get(&path).await, 200).await;
            assert_eq!(hdr(&h, "content-type"), OCI_INDEX);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["schemaVersion"], 2);
            assert_eq!(v["mediaType"], OCI_INDEX);
            (
                hdr(&h, "oci-filters-applied"),
                v["manifests"].as_array().unwrap().clone(),
            )
        }
    };
    let (filters, mut found) = referrers(None).await;
    assert!(filters.is_empty());
    found.sort_by_key(|d| d["artifactType"].as_str().unwrap().to_string());
    let expect = |body: &[u8], t: &str, note: &str| {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": sha256(body),
            "size": body.len(),
            "artifactType": t,
            "annotations": { "org.example.note": note },
        })
    };
    assert_eq!(
        found,
        vec![
            expect(&sbom, sbom_type, "sbom"),
            expect(&sig, sig_type, "sig")
        ]
    );
    let (filters, found) = referrers(Some(sbom_type)).await;
    assert_eq!(filters, "artifactType");
    assert_eq!(found, vec![expect(&sbom, sbom_type, "sbom")]);
    let (filters, found) = referrers(Some("application/vnd.example.none")).await;
    assert_eq!(filters, "artifactType");
    assert!(found.is_empty());

    // Without artifactType the config media type is the artifact type.
    let config_type = "application/vnd.example.config.v1+json";
    let cfg = api.upload(repo, b"{\"k\":1}").await;
    let plain = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(config_type, &cfg, 7),
        "layers": [],
        "subject": subject,
    }));
    let (h, _) = check(
        api.put_manifest(repo, "plain", OCI_MANIFEST, &plain).await,
        201,
    )
    .await;
    assert_eq!(hdr(&h, "oci-subject"), img.digest);
    let (_, found) = referrers(Some(config_type)).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["digest"], sha256(&plain).as_str());
    assert_eq!(found[0]["artifactType"], config_type);

    // Unknown digest: an empty index, not 404.
    let (h, body) = check(
        api.get(&format!("/v2/{repo}/referrers/{}", sha256(b"unknown")))
            .await,
        200,
    )
    .await;
    assert_eq!(hdr(&h, "content-type"), OCI_INDEX);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"], json!([]));
    assert_eq!(v["schemaVersion"], 2);
    expect_error(
        api.get(&format!("/v2/{repo}/referrers/latest")).await,
        400,
        "DIGEST_INVALID",
    )
    .await;

    // A subject that is not (yet) in the registry is accepted.
    let ghost = desc(OCI_MANIFEST, &sha256(b"ghost"), 5);
    let early = artifact(sbom_type, "early", &ghost);
    let (h, _) = check(
        api.put_manifest(repo, &sha256(&early), OCI_MANIFEST, &early)
            .await,
        201,
    )
    .await;
    assert_eq!(hdr(&h, "oci-subject"), sha256(b"ghost"));
    let (_, body) = check(
        api.get(&format!("/v2/{repo}/referrers/{}", sha256(b"ghost")))
            .await,
        200,
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"][0]["digest"], sha256(&early).as_str());

    // Deleting a referrer removes it from the list.
    check(
        api.delete(&format!("/v2/{repo}/manifests/{}", sha256(&sbom)))
            .await,
        202,
    )
    .await;
    let (_, found) = referrers(None).await;
    let digests: BTreeSet<String> = found
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests, BTreeSet::from([sha256(&sig), sha256(&plain)]));
    // Referrers are per repository.
    let (_, body) = check(
        api.get(&format!("/v2/ref/other/referrers/{}", img.digest))
            .await,
        200,
    )
    .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["manifests"],
        json!([])
    );
}

#[tokio::test]
async fn immutable_tags() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let repo = "imm/app";
    let first = push_image(&api, repo, "v1").await;
    s.reg
        .meta
        .update_repo(repo, |r| {
            r.tag_mutability = TagMutability::Immutable;
            Ok(())
        })
        .unwrap();
    let second = stage_image(&api, repo).await;
    expect_error(
        api.put_manifest(repo, "v1", OCI_MANIFEST, &second.manifest)
            .await,
        400,
        "TAG_INVALID",
    )
    .await;
    let (h, _) = check(api.get(&format!("/v2/{repo}/manifests/v1")).await, 200).await;
    assert_eq!(hdr(&h, "docker-content-digest"), first.digest);
    // Same digest again, a new tag and a push by digest are all fine.
    check(
        api.put_manifest(repo, "v1", OCI_MANIFEST, &first.manifest)
            .await,
        201,
    )
    .await;
    check(
        api.put_manifest(repo, "v2", OCI_MANIFEST, &second.manifest)
            .await,
        201,
    )
    .await;
    check(
        api.put_manifest(repo, &second.digest, OCI_MANIFEST, &second.manifest)
            .await,
        201,
    )
    .await;
    let (h, _) = check(api.get(&format!("/v2/{repo}/manifests/v1")).await, 200).await;
    assert_eq!(hdr(&h, "docker-content-digest"), first.digest);
}

// ---- garbage collection -------------------------------------------------------------------------

fn gc_opts(grace: Duration) -> GcOptions {
    GcOptions {
        grace,
        dry_run: false,
    }
}

#[tokio::test]
async fn gc_offline() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let repo = "gc/app";
    let orphan = random_bytes(1000);
    let od = api.upload(repo, &orphan).await;
    let img = push_image(&api, repo, "v1").await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    // Dry run reports, deletes nothing.
    let report = s
        .reg
        .gc(GcOptions {
            grace: Duration::ZERO,
            dry_run: true,
        })
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, vec![od.clone()]);
    assert!(s.blob_file(&od).exists());
    check(api.head(&format!("/v2/{repo}/blobs/{od}")).await, 200).await;

    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = s.reg.gc(gc_opts(Duration::ZERO)).await.unwrap();
    assert_eq!(report.blobs_deleted, vec![od.clone()]);
    assert_eq!(report.bytes_freed, 1000);
    assert!(!s.blob_file(&od).exists(), "unreferenced blob file must go");
    check(api.head(&format!("/v2/{repo}/blobs/{od}")).await, 404).await;
    expect_error(
        api.get(&format!("/v2/{repo}/blobs/{od}")).await,
        404,
        "BLOB_UNKNOWN",
    )
    .await;
    // Referenced blobs survive.
    for (d, data) in &img.blobs {
        assert!(s.blob_file(d).exists());
        let (_, body) = check(api.get(&format!("/v2/{repo}/blobs/{d}")).await, 200).await;
        assert_eq!(&body, data);
    }
    // A blob within the grace period survives.
    let young = random_bytes(10);
    let yd = api.upload(repo, &young).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = s.reg.gc(gc_opts(Duration::from_secs(3600))).await.unwrap();
    assert!(report.blobs_deleted.is_empty());
    assert!(s.blob_file(&yd).exists());
    check(api.head(&format!("/v2/{repo}/blobs/{yd}")).await, 200).await;
    // The orphan can be uploaded again after GC.
    api.upload(repo, &orphan).await;
    let (_, body) = check(api.get(&format!("/v2/{repo}/blobs/{od}")).await, 200).await;
    assert_eq!(body, orphan);
    // Once the manifest is deleted its blobs become garbage.
    check(
        api.delete(&format!("/v2/{repo}/manifests/{}", img.digest))
            .await,
        202,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = s.reg.gc(gc_opts(Duration::ZERO)).await.unwrap();
    let deleted: BTreeSet<&String> = report.blobs_deleted.iter().collect();
    for (d, _) in &img.blobs {
        assert!(deleted.contains(d), "{d} should be collected");
        assert!(!s.blob_file(d).exists());
    }
    // A blob shared with another repository's manifest survives deletion in one of them.
    let shared = push_image(&api, "gc/a", "v1").await;
    let r = api
        .req(Method::POST, "/v2/gc/b/blobs/uploads/")
        .query(&[("mount", shared.blobs[1].0.as_str()), ("from", "gc/a")])
        .send()
        .await
        .unwrap();
    check(r, 201).await;
    let r = api
        .req(Method::POST, "/v2/gc/b/blobs/uploads/")
        .query(&[("mount", shared.blobs[0].0.as_str()), ("from", "gc/a")])
        .send()
        .await
        .unwrap();
    check(r, 201).await;
    check(
        api.put_manifest("gc/b", "v1", OCI_MANIFEST, &shared.manifest)
            .await,
        201,
    )
    .await;
    check(
        api.delete(&format!("/v2/gc/a/manifests/{}", shared.digest))
            .await,
        202,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    s.reg.gc(gc_opts(Duration::ZERO)).await.unwrap();
    for (d, data) in &shared.blobs {
        let (_, body) = check(api.get(&format!("/v2/gc/b/blobs/{d}")).await, 200).await;
        assert_eq!(&body, data);
    }
}

#[tokio::test]
async fn gc_spares_uploads_in_progress_and_expires_idle_sessions() {
    let (_dir, s) = setup().await;
    let api = s.api();
    // A monolithic upload whose body is still arriving while GC (grace 0) runs.
    let data = random_bytes(100_000);
    let d = sha256(&data);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let req = api
        .req(Method::POST, "/v2/gc/up/blobs/uploads/")
        .query(&[("digest", d.as_str())])
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let pending = tokio::spawn(req);
    tx.send(Ok(data[..50_000].to_vec())).await.unwrap();
    // An idle chunked session, within the upload TTL.
    let loc = api.start_upload("gc/up").await;
    check(
        api.patch(&loc, Some((0, 49_999)), &data[..50_000]).await,
        202,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = s.reg.gc(gc_opts(Duration::ZERO)).await.unwrap();
    assert_eq!(report.stale_uploads_removed, 0);
    tx.send(Ok(data[50_000..].to_vec())).await.unwrap();
    drop(tx);
    check(pending.await.unwrap().unwrap(), 201).await;
    let (_, got) = check(api.get(&format!("/v2/gc/up/blobs/{d}")).await, 200).await;
    assert!(got == data);
    let (h, _) = check(api.get(&loc).await, 204).await;
    assert_eq!(hdr(&h, "range"), "0-49999");
    check(api.finish(&loc, &d, &data[50_000..]).await, 201).await;
    drop(api);
    s.shutdown().await;

    // Sessions idle past the upload TTL are removed, live in memory or not.
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), |c| c.upload_ttl = Duration::ZERO).await;
    let api = s.api();
    let idle = api.start_upload("gc/ttl").await;
    check(api.patch(&idle, Some((0, 9)), &data[..10]).await, 202).await;
    let empty = api.start_upload("gc/ttl").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = s.reg.gc(gc_opts(Duration::from_secs(3600))).await.unwrap();
    assert_eq!(report.stale_uploads_removed, 2);
    for loc in [&idle, &empty] {
        expect_error(api.get(loc).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
        expect_error(api.patch(loc, None, b"x").await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    }
    assert_eq!(
        std::fs::read_dir(s.reg.store.uploads_dir())
            .unwrap()
            .count(),
        0
    );
    drop(api);
    s.shutdown().await;
}

/// What a pusher did with one image.
struct Outcome {
    repo: String,
    digest: String,
    manifest: Vec<u8>,
    blobs: Vec<String>,
}

/// Uploads `data` either monolithically or in chunks; asserts success.
async fn upload_any(api: &Api, repo: &str, data: &[u8], chunked: bool) -> String {
    let d = sha256(data);
    if chunked {
        api.upload_chunked(repo, &d, data, data.len() / 3 + 1).await;
    } else {
        let r = api.upload_mono(repo, &d, data).await;
        check(r, 201).await;
    }
    d
}

async fn pusher(api: Api, id: usize, rounds: usize, base: Arc<Vec<u8>>) -> (Vec<Outcome>, usize) {
    let repo = format!("online/p{id}");
    let base_d = sha256(&base);
    let mut done = Vec::new();
    let mut gave_up = 0;
    for n in 0..rounds {
        let config = random_config();
        let layer = random_bytes(1024 + (rand::random::<usize>() % (256 << 10)));
        let cd = upload_any(&api, &repo, &config, n % 2 == 1).await;
        let ld = upload_any(&api, &repo, &layer, n % 3 == 1).await;
        // The shared base layer: skip it when the registry says it has it, else mount it from
        // the base repository, else upload it (as docker does).
        if api
            .head(&format!("/v2/{repo}/blobs/{base_d}"))
            .await
            .status()
            != 200
        {
            let r = api
                .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
                .query(&[("mount", base_d.as_str()), ("from", "online/base")])
                .send()
                .await
                .expect("request");
            match r.status().as_u16() {
                201 => {}
                202 => {
                    let loc = hdr(r.headers(), "location");
                    check(api.finish(&loc, &base_d, &base).await, 201).await;
                }
                other => panic!("mount: {other}"),
            }
        }
        let manifest = to_bytes(&oci_manifest(
            desc(OCI_CONFIG, &cd, config.len()),
            vec![
                desc(OCI_LAYER, &base_d, base.len()),
                desc(OCI_LAYER, &ld, layer.len()),
            ],
        ));
        let blobs = [(&cd, &config), (&base_d, &*base), (&ld, &layer)];
        let mut tries = 0;
        loop {
            let r = api
                .put_manifest(&repo, &format!("t{n}"), OCI_MANIFEST, &manifest)
                .await;
            if r.status() == 201 {
                done.push(Outcome {
                    repo: repo.clone(),
                    digest: sha256(&manifest),
                    manifest: manifest.clone(),
                    blobs: blobs.iter().map(|(d, _)| d.to_string()).collect(),
                });
                break;
            }
            // GC (grace 0) collected a blob before the manifest committed: re-upload what is
            // missing and retry, as a client would.
            let (_, body) = check(r, 400).await;
            error_body(&body, "MANIFEST_BLOB_UNKNOWN");
            tries += 1;
            if tries == 5 {
                gave_up += 1;
                break;
            }
            for (d, data) in blobs {
                if api.head(&format!("/v2/{repo}/blobs/{d}")).await.status() != 200 {
                    upload_any(&api, &repo, data, false).await;
                }
            }
        }
    }
    (done, gave_up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_online_with_concurrent_pushes() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let base = Arc::new(random_bytes(64 << 10));
    api.upload("online/base", &base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let gc = {
        let (reg, stop) = (s.reg.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut runs, mut deleted) = (0u64, 0usize);
            while !stop.load(Ordering::SeqCst) {
                let r = reg.gc(gc_opts(Duration::ZERO)).await.unwrap();
                deleted += r.blobs_deleted.len();
                runs += 1;
                tokio::time::sleep(Duration::from_millis(runs % 13)).await;
            }
            (runs, deleted)
        })
    };
    let pushers: Vec<_> = (0..3)
        .map(|i| tokio::spawn(pusher(api.clone(), i, 30, base.clone())))
        .collect();
    let mut outcomes = Vec::new();
    let mut gave_up = 0;
    for p in pushers {
        let (o, g) = p.await.unwrap();
        outcomes.extend(o);
        gave_up += g;
    }
    stop.store(true, Ordering::SeqCst);
    let (runs, deleted) = gc.await.unwrap();
    s.reg.gc(gc_opts(Duration::ZERO)).await.unwrap();
    eprintln!(
        "online gc: {} manifests pushed, {gave_up} given up, {runs} gc runs, {deleted} blobs collected",
        outcomes.len()
    );
    assert!(!outcomes.is_empty());
    assert!(runs > 0);
    // Every manifest that got 201 is complete.
    for o in &outcomes {
        let (_, body) = check(
            api.get(&format!("/v2/{}/manifests/{}", o.repo, o.digest))
                .await,
            200,
        )
        .await;
        assert_eq!(body, o.manifest);
        for d in &o.blobs {
            let r = api.get(&format!("/v2/{}/blobs/{d}", o.repo)).await;
            let (h, body) = check(r, 200).await;
            assert_eq!(&hdr(&h, "docker-content-digest"), d);
            assert_eq!(
                &sha256(&body),
                d,
                "blob {d} of {} in {} is corrupt",
                o.digest,
                o.repo
            );
        }
    }
}

// ---- bad input ----------------------------------------------------------------------------------

#[tokio::test]
async fn bad_input_keeps_the_server_serving() {
    let (_dir, s) = setup().await;
    let api = s.api();
    let img = push_image(&api, "bad/app", "v1").await;

    // Garbage Authorization headers: 401, never a crash or a 500.
    let garbage: [&[u8]; 8] = [
        b"Authorization: Basic !!!notbase64\r\n",
        b"Authorization: Basic bm9jb2xvbg==\r\n",
        b"Authorization: Basic\r\n",
        b"Authorization: Bearer a.b.c\r\n",
        b"Authorization: Bearer \r\n",
        b"Authorization: Digest username=x\r\n",
        b"Authorization: Basic \xff\xfe\r\n",
        b"Authorization: \r\n",
    ];
    for h in garbage {
        let (status, _, _) = raw(s.addr, "GET", "/v2/bad/app/tags/list", h, b"").await;
        assert!(
            status == 401 || status == 400,
            "{}: {status}",
            String::from_utf8_lossy(h)
        );
    }

    // Malformed Content-Range: 400, and the upload is still usable.
    let data = random_bytes(3000);
    let d = sha256(&data);
    let loc = api.start_upload("bad/app").await;
    check(api.patch(&loc, Some((0, 999)), &data[..1000]).await, 202).await;
    for cr in [
        "bytes=abc",
        "5-1",
        "-",
        "1000-",
        "x-y",
        "99999999999999999999999-1",
    ] {
        let r = api
            .req(Method::PATCH, &loc)
            .header("content-range", cr)
            .body(data[1000..2000].to_vec())
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "BLOB_UPLOAD_INVALID").await;
    }
    // A Content-Range that does not match the body length: rejected, nothing appended.
    let r = api
        .req(Method::PATCH, &loc)
        .header("content-range", "1000-2999")
        .body(data[1000..2000].to_vec())
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "BLOB_UPLOAD_INVALID").await;
    let (h, _) = check(api.get(&loc).await, 204).await;
    assert_eq!(hdr(&h, "range"), "0-999");
    check(
        api.patch(&loc, Some((1000, 1999)), &data[1000..2000]).await,
        202,
    )
    .await;
    check(
        api.patch(&loc, Some((2000, 2999)), &data[2000..]).await,
        202,
    )
    .await;
    check(api.finish(&loc, &d, b"").await, 201).await;
    let (_, body) = check(api.get(&format!("/v2/bad/app/blobs/{d}")).await, 200).await;
    assert!(
        body == data,
        "upload content corrupted after rejected chunks"
    );

    // Page sizes.
    for n in ["1000000000", "99999999999999999999999999"] {
        let (_, body) = check(api.get(&format!("/v2/bad/app/tags/list?n={n}")).await, 200).await;
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["tags"],
            json!(["v1"])
        );
        check(api.get(&format!("/v2/_catalog?n={n}")).await, 200).await;
    }
    for n in ["-1", "abc", "1e3"] {
        check(api.get(&format!("/v2/bad/app/tags/list?n={n}")).await, 400).await;
    }

    // Unknown upload ids.
    let unknown = format!("/v2/bad/app/blobs/uploads/{}", "0".repeat(32));
    expect_error(
        api.patch(&unknown, None, b"x").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(api.get(&unknown).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    expect_error(
        api.finish(&unknown, &d, b"x").await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    expect_error(
        api.patch("/v2/bad/app/blobs/uploads/not-an-id", None, b"x")
            .await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;

    // Dot segments, encoded or not, never reach the filesystem.
    let auth = format!("Authorization: {}\r\n", basic_header(AKID, SECRET));
    for target in [
        "/v2/%2e%2e/%2e%2e/blobs/uploads/x",
        "/v2/bad/app/blobs/uploads/%2e%2e%2f%2e%2e%2fmeta.redb",
        "/v2/bad/app/blobs/uploads/%2e%2e",
        "/v2/bad/app/blobs/uploads/..%2f..%2fsecret",
        "/v2/bad/app/blobs/sha256:..%2f..%2fsecret",
        "/v2/bad/app/manifests/%2e%2e",
        "/v2/%2e%2e",
        "/v2/bad/%ff/tags/list",
    ] {
        for method in ["GET", "PATCH", "PUT", "DELETE"] {
            let (status, _, body) = raw(s.addr, method, target, auth.as_bytes(), b"data").await;
            assert!(
                (400..500).contains(&status),
                "{method} {target}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    // Unknown routes and methods.
    expect_error(api.get("/v2/bad/app/nothing").await, 404, "NAME_UNKNOWN").await;
    expect_error(
        api.send(Method::POST, "/v2/bad/app/manifests/v1").await,
        405,
        "UNSUPPORTED",
    )
    .await;

    // Still serving, data intact.
    check(api.get("/v2/").await, 200).await;
    let (_, body) = check(api.get("/v2/bad/app/manifests/v1").await, 200).await;
    assert_eq!(body, img.manifest);
    for (d, data) in &img.blobs {
        let (_, body) = check(api.get(&format!("/v2/bad/app/blobs/{d}")).await, 200).await;
        assert_eq!(&body, data);
    }
}
