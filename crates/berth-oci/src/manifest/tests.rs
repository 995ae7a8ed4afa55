use serde_json::json;

use super::*;
use crate::media_type::*;

const CONFIG: &str = "sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910";
const LAYER1: &str = "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2";
const LAYER2: &str = "sha256:95cf1a2e1698fe3ca1fcc3f653119146b271d0b62e487ec264441e886a11bd06";
const FOREIGN: &str = "sha256:656771905e1ef731f65cd0a0d9fb061238380a1a012e6abdf846ecc7d2ea36fd";
const AMD64: &str = "sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51";
const ARM64: &str = "sha256:f69162950f235e3cdbbad33f1f912d1a504be90d8a37d002c735d6f3e3882265";
const ARMV7: &str = "sha256:5ba6c8710dd1369ce61603ab9b7a81b25f92d4a9f74956ab72a7ea75884f07ee";
const SUBJECT: &str = "sha256:a9491f4c1bf7b0cffbadcba2db8f028e4b3f2867cb59e1f3a0bc1968f3c51242";
const SBOM: &str = "sha256:98f3ae1ef67113d8140d4f6cb8d2830070e21ea48f091be519659846c771a374";
const EMPTY: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn d(s: &str) -> Digest {
    s.parse().unwrap()
}

fn parse(ct: Option<&str>, body: &str) -> ParsedManifest {
    match parse_manifest(ct, body.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("unexpected rejection: {e}\n{body}"),
    }
}

fn blob_digests(m: &ParsedManifest) -> Vec<&str> {
    m.blob_references().map(|d| d.digest.as_str()).collect()
}

/// `skopeo copy docker-archive:... docker://...` with `--format oci`.
const SKOPEO_OCI: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {
    "mediaType": "application/vnd.oci.image.config.v1+json",
    "digest": "sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910",
    "size": 1469
  },
  "layers": [
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
      "digest": "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2",
      "size": 2818413
    },
    {
      "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
      "digest": "sha256:95cf1a2e1698fe3ca1fcc3f653119146b271d0b62e487ec264441e886a11bd06",
      "size": 127,
      "annotations": {"io.github.containers.zstd-chunked.manifest-position": "1:2:3:4"}
    }
  ],
  "annotations": {
    "org.opencontainers.image.created": "2024-01-30T11:56:33Z",
    "org.opencontainers.image.base.name": "docker.io/library/busybox:latest"
  }
}"#;

/// `docker push` of a classic image (Docker schema 2).
const DOCKER_SCHEMA2: &str = r#"{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1457,
      "digest": "sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 772788,
         "digest": "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2"
      }
   ]
}"#;

/// A Windows image: the base layer is foreign and fetched from Microsoft's URLs.
const DOCKER_WINDOWS: &str = r#"{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 2313,
      "digest": "sha256:b79606fb3afea5bd1609ed40b622142f1c98125abcfe89a76a661b0e8e343910"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
         "size": 1654613376,
         "digest": "sha256:656771905e1ef731f65cd0a0d9fb061238380a1a012e6abdf846ecc7d2ea36fd",
         "urls": [
            "https://mcr.microsoft.com/v2/windows/servercore/blobs/sha256:656771905e1ef731f65cd0a0d9fb061238380a1a012e6abdf846ecc7d2ea36fd"
         ]
      },
      {
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
         "size": 1024,
         "digest": "sha256:95cf1a2e1698fe3ca1fcc3f653119146b271d0b62e487ec264441e886a11bd06"
      },
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 4096,
         "digest": "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2",
         "urls": ["https://example.com/ignored-for-distributable-layers"]
      }
   ]
}"#;

/// `docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 --push`.
const DOCKER_LIST: &str = r#"{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
   "manifests": [
      {
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "size": 528,
         "digest": "sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51",
         "platform": {"architecture": "amd64", "os": "linux"}
      },
      {
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "size": 528,
         "digest": "sha256:f69162950f235e3cdbbad33f1f912d1a504be90d8a37d002c735d6f3e3882265",
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}
      },
      {
         "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
         "size": 528,
         "digest": "sha256:5ba6c8710dd1369ce61603ab9b7a81b25f92d4a9f74956ab72a7ea75884f07ee",
         "platform": {"architecture": "arm", "os": "linux", "variant": "v7", "features": ["sse4"]}
      }
   ]
}"#;

/// An OCI index mixing a Linux image, a Windows image and a buildx attestation manifest.
const OCI_WINDOWS_INDEX: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.index.v1+json",
  "manifests": [
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51",
      "size": 1024,
      "platform": {"architecture": "amd64", "os": "linux"}
    },
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:f69162950f235e3cdbbad33f1f912d1a504be90d8a37d002c735d6f3e3882265",
      "size": 2048,
      "platform": {
        "architecture": "amd64",
        "os": "windows",
        "os.version": "10.0.17763.1040",
        "os.features": ["win32k"]
      }
    },
    {
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "digest": "sha256:5ba6c8710dd1369ce61603ab9b7a81b25f92d4a9f74956ab72a7ea75884f07ee",
      "size": 566,
      "annotations": {
        "vnd.docker.reference.digest": "sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51",
        "vnd.docker.reference.type": "attestation-manifest"
      },
      "platform": {"architecture": "unknown", "os": "unknown"}
    }
  ],
  "annotations": {"org.opencontainers.image.ref.name": "v1"}
}"#;

/// `oras attach --artifact-type application/vnd.example.sbom.v1 registry/app@sha256:... sbom.json`
const ORAS_ARTIFACT: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "artifactType": "application/vnd.example.sbom.v1",
  "config": {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
    "data": "e30="
  },
  "layers": [
    {
      "mediaType": "application/spdx+json",
      "digest": "sha256:98f3ae1ef67113d8140d4f6cb8d2830070e21ea48f091be519659846c771a374",
      "size": 3165,
      "annotations": {"org.opencontainers.image.title": "sbom.json"}
    }
  ],
  "subject": {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:a9491f4c1bf7b0cffbadcba2db8f028e4b3f2867cb59e1f3a0bc1968f3c51242",
    "size": 1234
  },
  "annotations": {"org.opencontainers.image.created": "2024-02-01T08:00:00Z"}
}"#;

/// A valid OCI manifest to mutate in rejection tests.
fn base() -> Value {
    serde_json::from_str(SKOPEO_OCI).unwrap()
}

/// A valid OCI index to mutate in rejection tests.
fn base_index() -> Value {
    serde_json::from_str(OCI_WINDOWS_INDEX).unwrap()
}

fn mutate(mut v: Value, f: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
    f(v.as_object_mut().unwrap());
    serde_json::to_vec(&v).unwrap()
}

fn err(ct: Option<&str>, body: &[u8]) -> ManifestError {
    match parse_manifest(ct, body) {
        Ok(m) => panic!("accepted: {m:?}\n{}", String::from_utf8_lossy(body)),
        Err(e) => e,
    }
}

fn invalid_msg(ct: Option<&str>, body: &[u8]) -> String {
    match err(ct, body) {
        ManifestError::Invalid(msg) => msg,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn skopeo_oci_manifest() {
    let m = parse(Some(OCI_MANIFEST), SKOPEO_OCI);
    assert_eq!(m.media_type, OCI_MANIFEST);
    assert_eq!(m.kind, ManifestKind::Image);
    let config = m.config.as_ref().unwrap();
    assert_eq!(config.media_type, OCI_CONFIG);
    assert_eq!(config.digest, d(CONFIG));
    assert_eq!(config.size, 1469);
    assert_eq!(m.layers.len(), 2);
    assert_eq!(m.layers[0].media_type, OCI_LAYER_GZIP);
    assert_eq!(m.layers[0].size, 2_818_413);
    assert_eq!(m.layers[1].media_type, OCI_LAYER_ZSTD);
    assert_eq!(
        m.layers[1].annotations["io.github.containers.zstd-chunked.manifest-position"],
        "1:2:3:4"
    );
    assert!(m.manifests.is_empty());
    assert!(m.subject.is_none());
    assert!(m.artifact_type.is_none());
    assert_eq!(
        m.annotations["org.opencontainers.image.base.name"],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(m.effective_artifact_type(), Some(OCI_CONFIG));
    assert_eq!(blob_digests(&m), [CONFIG, LAYER1, LAYER2]);
    assert_eq!(m.manifest_references().count(), 0);

    // The same bytes without a Content-Type are typed by the body.
    assert_eq!(parse(None, SKOPEO_OCI), m);
}

#[test]
fn oci_manifest_without_media_type_field() {
    // image-spec 1.0 manifests (older skopeo/umoci) have no mediaType in the body.
    let body = mutate(base(), |o| {
        o.remove("mediaType");
    });
    for ct in [
        OCI_MANIFEST,
        "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
        " Application/VND.OCI.Image.Manifest.v1+JSON ",
    ] {
        let m = parse_manifest(Some(ct), &body).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST, "{ct}");
        assert_eq!(m.kind, ManifestKind::Image);
    }
    // No type anywhere: detected from `config`.
    for ct in [
        None,
        Some(""),
        Some(JSON),
        Some(OCTET_STREAM),
        Some("application/json; charset=utf-8"),
    ] {
        let m = parse_manifest(ct, &body).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST, "{ct:?}");
        assert_eq!(m.kind, ManifestKind::Image);
    }
}

#[test]
fn oci_index_without_media_type_field() {
    let body = mutate(base_index(), |o| {
        o.remove("mediaType");
    });
    let m = parse_manifest(Some(OCI_INDEX), &body).unwrap();
    assert_eq!(m.kind, ManifestKind::Index);
    let m = parse_manifest(None, &body).unwrap();
    assert_eq!(m.media_type, OCI_INDEX);
    assert_eq!(m.kind, ManifestKind::Index);
    assert_eq!(m.manifests.len(), 3);
}

#[test]
fn generic_content_type_uses_body_media_type() {
    for ct in [
        None,
        Some(""),
        Some(JSON),
        Some(OCTET_STREAM),
        Some("  ; charset=utf-8"),
    ] {
        let m = parse(ct, DOCKER_SCHEMA2);
        assert_eq!(m.media_type, DOCKER_MANIFEST, "{ct:?}");
    }
}

#[test]
fn docker_schema2_manifest() {
    let m = parse(Some(DOCKER_MANIFEST), DOCKER_SCHEMA2);
    assert_eq!(m.media_type, DOCKER_MANIFEST);
    assert_eq!(m.kind, ManifestKind::Image);
    assert_eq!(m.config.as_ref().unwrap().media_type, DOCKER_CONFIG);
    assert_eq!(m.layers[0].media_type, DOCKER_LAYER);
    assert_eq!(m.effective_artifact_type(), Some(DOCKER_CONFIG));
    assert_eq!(blob_digests(&m), [CONFIG, LAYER1]);
}

#[test]
fn docker_foreign_layers_are_not_blob_references() {
    let m = parse(Some(DOCKER_MANIFEST), DOCKER_WINDOWS);
    assert_eq!(m.layers.len(), 3);
    assert_eq!(m.layers[0].media_type, DOCKER_FOREIGN_LAYER);
    assert_eq!(m.layers[0].size, 1_654_613_376);
    assert_eq!(m.layers[0].urls.len(), 1);
    assert!(m.layers[0].is_external());
    // A foreign layer without urls and a distributable layer with urls must both be present.
    assert!(!m.layers[1].is_external());
    assert!(!m.layers[2].is_external());
    assert_eq!(blob_digests(&m), [CONFIG, LAYER2, LAYER1]);
    assert!(!blob_digests(&m).contains(&FOREIGN));
}

#[test]
fn oci_nondistributable_layers_with_urls_are_not_blob_references() {
    for mt in [
        OCI_LAYER_NONDISTRIBUTABLE,
        OCI_LAYER_NONDISTRIBUTABLE_GZIP,
        OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    ] {
        let body = mutate(base(), |o| {
            o["layers"][0]["mediaType"] = json!(mt);
            o["layers"][0]["urls"] = json!(["https://example.com/layer"]);
        });
        let m = parse_manifest(None, &body).unwrap();
        assert_eq!(blob_digests(&m), [CONFIG, LAYER2], "{mt}");
        // Without urls the layer must be in the registry.
        let body = mutate(base(), |o| {
            o["layers"][0]["mediaType"] = json!(mt);
        });
        let m = parse_manifest(None, &body).unwrap();
        assert_eq!(blob_digests(&m), [CONFIG, LAYER1, LAYER2], "{mt}");
    }
}

#[test]
fn docker_manifest_list_with_platforms() {
    let m = parse(Some(DOCKER_MANIFEST_LIST), DOCKER_LIST);
    assert_eq!(m.media_type, DOCKER_MANIFEST_LIST);
    assert_eq!(m.kind, ManifestKind::Index);
    assert!(m.config.is_none());
    assert!(m.layers.is_empty());
    assert_eq!(m.blob_references().count(), 0);
    let children: Vec<&str> = m.manifest_references().map(|d| d.digest.as_str()).collect();
    assert_eq!(children, [AMD64, ARM64, ARMV7]);
    let platforms: Vec<&Platform> = m
        .manifests
        .iter()
        .map(|d| d.platform.as_ref().unwrap())
        .collect();
    assert_eq!(
        *platforms[0],
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Platform::default()
        }
    );
    assert_eq!(platforms[1].variant.as_deref(), Some("v8"));
    assert_eq!(platforms[2].architecture, "arm");
    assert_eq!(platforms[2].variant.as_deref(), Some("v7"));
    assert_eq!(m.effective_artifact_type(), None);
}

#[test]
fn oci_index_with_windows_platform() {
    let m = parse(None, OCI_WINDOWS_INDEX);
    assert_eq!(m.media_type, OCI_INDEX);
    let win = m.manifests[1].platform.as_ref().unwrap();
    assert_eq!(win.os, "windows");
    assert_eq!(win.os_version.as_deref(), Some("10.0.17763.1040"));
    assert_eq!(win.os_features, ["win32k"]);
    assert_eq!(
        m.manifests[2].annotations["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(m.annotations["org.opencontainers.image.ref.name"], "v1");
    assert_eq!(m.manifest_references().count(), 3);
}

#[test]
fn oras_artifact_manifest() {
    let m = parse(Some(OCI_MANIFEST), ORAS_ARTIFACT);
    assert_eq!(m.kind, ManifestKind::Image);
    assert_eq!(
        m.artifact_type.as_deref(),
        Some("application/vnd.example.sbom.v1")
    );
    assert_eq!(
        m.effective_artifact_type(),
        Some("application/vnd.example.sbom.v1")
    );
    let config = m.config.as_ref().unwrap();
    assert_eq!(config.media_type, OCI_EMPTY);
    assert_eq!(config.digest, Digest::sha256_of(b"{}"));
    assert_eq!(config.size, 2);
    let subject = m.subject.as_ref().unwrap();
    assert_eq!(subject.digest, d(SUBJECT));
    assert_eq!(subject.media_type, OCI_MANIFEST);
    assert_eq!(subject.size, 1234);
    assert_eq!(
        m.layers[0].annotations["org.opencontainers.image.title"],
        "sbom.json"
    );
    // The empty config is a blob like any other; the subject is not required to exist.
    assert_eq!(blob_digests(&m), [EMPTY, SBOM]);
    assert!(!blob_digests(&m).contains(&SUBJECT));
}

#[test]
fn oras_artifact_with_empty_layer_list_and_empty_layer() {
    let body = mutate(serde_json::from_str(ORAS_ARTIFACT).unwrap(), |o| {
        o["layers"] = json!([]);
    });
    let m = parse_manifest(Some(OCI_MANIFEST), &body).unwrap();
    assert!(m.layers.is_empty());
    assert_eq!(blob_digests(&m), [EMPTY]);

    let body = mutate(serde_json::from_str(ORAS_ARTIFACT).unwrap(), |o| {
        o["layers"] = json!([{"mediaType": OCI_EMPTY, "digest": EMPTY, "size": 2, "data": "e30="}]);
    });
    let m = parse_manifest(Some(OCI_MANIFEST), &body).unwrap();
    assert_eq!(blob_digests(&m), [EMPTY, EMPTY]);
}

#[test]
fn legacy_artifact_type_comes_from_config() {
    // oras 0.x / image-spec 1.0 style: the artifact type is the config's media type.
    let body = mutate(serde_json::from_str(ORAS_ARTIFACT).unwrap(), |o| {
        o.remove("artifactType");
        o["config"]["mediaType"] = json!("application/vnd.cncf.helm.config.v1+json");
    });
    let m = parse_manifest(None, &body).unwrap();
    assert!(m.artifact_type.is_none());
    assert_eq!(
        m.effective_artifact_type(),
        Some("application/vnd.cncf.helm.config.v1+json")
    );

    // An empty artifactType is treated as absent.
    let body = mutate(serde_json::from_str(ORAS_ARTIFACT).unwrap(), |o| {
        o["artifactType"] = json!("");
    });
    let m = parse_manifest(None, &body).unwrap();
    assert!(m.artifact_type.is_none());
    assert_eq!(m.effective_artifact_type(), Some(OCI_EMPTY));
}

#[test]
fn index_with_artifact_type_and_subject() {
    let body = mutate(base_index(), |o| {
        o.insert(
            "artifactType".into(),
            json!("application/vnd.example.signatures"),
        );
        o.insert(
            "subject".into(),
            json!({"mediaType": OCI_INDEX, "digest": SUBJECT, "size": 999}),
        );
    });
    let m = parse_manifest(Some(OCI_INDEX), &body).unwrap();
    assert_eq!(
        m.effective_artifact_type(),
        Some("application/vnd.example.signatures")
    );
    assert_eq!(m.subject.unwrap().media_type, OCI_INDEX);
}

#[test]
fn null_optional_fields_and_unknown_fields() {
    let body = mutate(base(), |o| {
        o.insert("subject".into(), Value::Null);
        o.insert("artifactType".into(), Value::Null);
        o.insert("annotations".into(), Value::Null);
        o.insert("x-vendor-extension".into(), json!({"anything": [1, 2, 3]}));
        o["layers"][0]["urls"] = Value::Null;
        o["layers"][0]["annotations"] = Value::Null;
        o["layers"][0]["platform"] = Value::Null;
        o["layers"][0]["unknown"] = json!(true);
    });
    let m = parse_manifest(None, &body).unwrap();
    assert!(m.subject.is_none());
    assert!(m.annotations.is_empty());
    assert!(m.layers[0].urls.is_empty());
}

#[test]
fn large_sizes() {
    let body = mutate(base(), |o| {
        o["layers"][0]["size"] = json!(i64::MAX);
    });
    let m = parse_manifest(None, &body).unwrap();
    assert_eq!(m.layers[0].size, i64::MAX as u64);
    let body = mutate(base(), |o| {
        o["layers"][0]["size"] = json!(0);
    });
    assert_eq!(parse_manifest(None, &body).unwrap().layers[0].size, 0);
}

#[test]
fn sha512_digests() {
    let digest = Digest::of(crate::Algorithm::Sha512, b"layer");
    let body = mutate(base(), |o| {
        o["layers"][0]["digest"] = json!(digest.as_str());
    });
    let m = parse_manifest(None, &body).unwrap();
    assert_eq!(m.layers[0].digest, digest);
}

#[test]
fn rejects_non_objects_and_bad_json() {
    for body in [&b"[]"[..], b"\"x\"", b"42", b"null", b"true"] {
        let msg = invalid_msg(Some(OCI_MANIFEST), body);
        assert!(msg.starts_with("expected a JSON object, found"), "{msg}");
    }
    for body in [
        &b""[..],
        b"{",
        b"{\"schemaVersion\": 2,}",
        b"\xef\xbb\xbf{}",
        b"{\"a\": \"\xff\xfe\"}",
        b"{} {}",
    ] {
        let msg = invalid_msg(Some(OCI_MANIFEST), body);
        assert!(msg.starts_with("invalid JSON: "), "{msg}");
    }
    // Deeply nested input hits serde_json's recursion limit instead of the stack.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(invalid_msg(None, deep.as_bytes()).starts_with("invalid JSON: "));
}

#[test]
fn rejects_media_type_mismatch() {
    assert_eq!(
        invalid_msg(Some(OCI_INDEX), SKOPEO_OCI.as_bytes()),
        format!("mediaType \"{OCI_MANIFEST}\" does not match the Content-Type \"{OCI_INDEX}\"")
    );
    assert!(matches!(
        err(Some(DOCKER_MANIFEST), SKOPEO_OCI.as_bytes()),
        ManifestError::Invalid(_)
    ));
    assert!(matches!(
        err(Some(OCI_MANIFEST), DOCKER_SCHEMA2.as_bytes()),
        ManifestError::Invalid(_)
    ));
    // An unknown Content-Type that differs from the body is a mismatch too.
    assert!(matches!(
        err(Some("text/plain"), SKOPEO_OCI.as_bytes()),
        ManifestError::Invalid(_)
    ));
    let body = mutate(base(), |o| {
        o["mediaType"] = json!(2);
    });
    assert_eq!(
        invalid_msg(Some(OCI_MANIFEST), &body),
        "mediaType: expected a string, found a number"
    );
}

#[test]
fn rejects_schema1() {
    let schema1 = r#"{
       "schemaVersion": 1,
       "name": "library/busybox",
       "tag": "latest",
       "architecture": "amd64",
       "fsLayers": [{"blobSum": "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2"}],
       "history": [{"v1Compatibility": "{}"}],
       "signatures": []
    }"#;
    for ct in [Some(DOCKER_SCHEMA1), Some(DOCKER_SCHEMA1_SIGNED)] {
        assert_eq!(
            err(ct, schema1.as_bytes()),
            ManifestError::Unsupported(ct.unwrap().to_owned())
        );
    }
    assert_eq!(
        err(None, schema1.as_bytes()),
        ManifestError::Unsupported(DOCKER_SCHEMA1.to_owned())
    );
    let with_type = schema1.replacen(
        "\"schemaVersion\": 1,",
        "\"schemaVersion\": 1, \"mediaType\": \"application/vnd.docker.distribution.manifest.v1+prettyjws\",",
        1,
    );
    assert_eq!(
        err(Some(JSON), with_type.as_bytes()),
        ManifestError::Unsupported(DOCKER_SCHEMA1_SIGNED.to_owned())
    );
    assert_eq!(
        err(Some(DOCKER_SCHEMA1_SIGNED), schema1.as_bytes()).to_string(),
        "manifest media type \"application/vnd.docker.distribution.manifest.v1+prettyjws\" is not supported"
    );
}

#[test]
fn rejects_unknown_media_types() {
    assert_eq!(
        err(
            Some("application/vnd.example.thing"),
            b"{\"schemaVersion\": 2}"
        ),
        ManifestError::UnknownMediaType("application/vnd.example.thing".into())
    );
    let body = mutate(base(), |o| {
        o["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    });
    let e = err(None, &body);
    assert_eq!(e, ManifestError::UnknownMediaType(OCI_CONFIG.into()));
    assert_eq!(
        e.to_string(),
        "unknown manifest media type \"application/vnd.oci.image.config.v1+json\""
    );
    // The removed OCI artifact manifest (image-spec 1.1 release candidates) is unknown.
    assert!(matches!(
        err(
            Some("application/vnd.oci.artifact.manifest.v1+json"),
            SKOPEO_OCI.as_bytes()
        ),
        ManifestError::Invalid(_)
    ));
    let body = mutate(base(), |o| {
        o.remove("mediaType");
    });
    assert_eq!(
        err(Some("application/vnd.oci.artifact.manifest.v1+json"), &body),
        ManifestError::UnknownMediaType("application/vnd.oci.artifact.manifest.v1+json".into())
    );
}

#[test]
fn rejects_undeterminable_type() {
    for body in [&b"{}"[..], b"{\"schemaVersion\": 2}", b"{\"layers\": []}"] {
        assert_eq!(
            invalid_msg(None, body),
            "cannot determine the manifest type: no Content-Type, mediaType, config or manifests"
        );
    }
}

#[test]
fn rejects_bad_schema_version() {
    let cases: [(Option<Value>, &str); 6] = [
        (None, "schemaVersion: missing"),
        (Some(Value::Null), "schemaVersion: missing"),
        (Some(json!(1)), "schemaVersion: expected 2, found 1"),
        (Some(json!(3)), "schemaVersion: expected 2, found 3"),
        (Some(json!(2.0)), "schemaVersion: expected 2, found 2.0"),
        (
            Some(json!("2")),
            "schemaVersion: expected the number 2, found a string",
        ),
    ];
    for (value, msg) in cases {
        let body = mutate(base(), |o| match value {
            None => {
                o.remove("schemaVersion");
            }
            Some(v) => {
                o["schemaVersion"] = v;
            }
        });
        assert_eq!(invalid_msg(Some(OCI_MANIFEST), &body), msg);
    }
}

#[test]
fn rejects_bad_image_structure() {
    type Edit = fn(&mut Map<String, Value>);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |o| {
                o.remove("config");
            },
            "config: missing",
        ),
        (
            |o| {
                o["config"] = Value::Null;
            },
            "config: missing",
        ),
        (
            |o| {
                o["config"] = json!("sha256:abc");
            },
            "config: expected an object, found a string",
        ),
        (
            |o| {
                o["config"] = json!([]);
            },
            "config: expected an object, found an array",
        ),
        (
            |o| {
                o.remove("layers");
            },
            "layers: missing",
        ),
        (
            |o| {
                o["layers"] = json!({});
            },
            "layers: expected an array, found an object",
        ),
        (
            |o| {
                o["layers"][1] = json!(7);
            },
            "layers[1]: expected an object, found a number",
        ),
        (
            |o| {
                o.insert("manifests".into(), json!([]));
            },
            "manifests: not allowed in an image manifest",
        ),
        (
            |o| {
                o.insert(
                    "subject".into(),
                    json!({"mediaType": OCI_MANIFEST, "size": 1}),
                );
            },
            "subject.digest: missing",
        ),
        (
            |o| {
                o.insert("subject".into(), json!(true));
            },
            "subject: expected an object, found a boolean",
        ),
        (
            |o| {
                o.insert("artifactType".into(), json!(5));
            },
            "artifactType: expected a string, found a number",
        ),
        (
            |o| {
                o.insert("artifactType".into(), json!("sbom"));
            },
            "artifactType: invalid media type \"sbom\"",
        ),
        (
            |o| {
                o["annotations"] = json!([]);
            },
            "annotations: expected an object, found an array",
        ),
        (
            |o| {
                o["annotations"]["org.example.n"] = json!(1);
            },
            "annotations[\"org.example.n\"]: expected a string, found a number",
        ),
    ];
    for (edit, msg) in cases {
        let body = mutate(base(), edit);
        assert_eq!(invalid_msg(Some(OCI_MANIFEST), &body), msg);
    }
}

#[test]
fn rejects_bad_index_structure() {
    type Edit = fn(&mut Map<String, Value>);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |o| {
                o.remove("manifests");
            },
            "manifests: missing",
        ),
        (
            |o| {
                o["manifests"] = json!("x");
            },
            "manifests: expected an array, found a string",
        ),
        (
            |o| {
                o.insert("config".into(), json!({}));
            },
            "config: not allowed in an image index",
        ),
        (
            |o| {
                o.insert("layers".into(), json!([]));
            },
            "layers: not allowed in an image index",
        ),
        (
            |o| {
                o["manifests"][0]["platform"] = json!("linux/amd64");
            },
            "manifests[0].platform: expected an object, found a string",
        ),
        (
            |o| {
                o["manifests"][0]["platform"] = json!({"architecture": "amd64"});
            },
            "manifests[0].platform.os: missing",
        ),
        (
            |o| {
                o["manifests"][0]["platform"] = json!({"os": "linux"});
            },
            "manifests[0].platform.architecture: missing",
        ),
        (
            |o| {
                o["manifests"][1]["platform"]["os.version"] = json!(10);
            },
            "manifests[1].platform.os.version: expected a string, found a number",
        ),
        (
            |o| {
                o["manifests"][1]["platform"]["os.features"] = json!("win32k");
            },
            "manifests[1].platform.os.features: expected an array, found a string",
        ),
        (
            |o| {
                o["manifests"][1]["platform"]["os.features"] = json!([null]);
            },
            "manifests[1].platform.os.features[0]: expected a string, found null",
        ),
        (
            |o| {
                o["manifests"][0]["platform"]["variant"] = json!(8);
            },
            "manifests[0].platform.variant: expected a string, found a number",
        ),
        (
            |o| {
                o["manifests"][2]["annotations"] = json!("x");
            },
            "manifests[2].annotations: expected an object, found a string",
        ),
    ];
    for (edit, msg) in cases {
        let body = mutate(base_index(), edit);
        assert_eq!(invalid_msg(None, &body), msg);
    }
}

#[test]
fn rejects_bad_descriptors() {
    let sha = &LAYER1[7..];
    let cases: Vec<(Value, String)> = vec![
        (json!(null), "layers[3].mediaType: missing".into()),
        (
            json!(""),
            "layers[3].mediaType: invalid media type \"\"".into(),
        ),
        (
            json!(42),
            "layers[3].mediaType: expected a string, found a number".into(),
        ),
        (
            json!("tar"),
            "layers[3].mediaType: invalid media type \"tar\"".into(),
        ),
        (
            json!("/gzip"),
            "layers[3].mediaType: invalid media type \"/gzip\"".into(),
        ),
        (
            json!("application/"),
            "layers[3].mediaType: invalid media type \"application/\"".into(),
        ),
    ];
    for (mt, msg) in cases {
        let body = mutate(base(), |o| {
            let layers = o["layers"].as_array_mut().unwrap();
            layers.push(layers[0].clone());
            let mut layer = layers[0].clone();
            if mt.is_null() {
                layer.as_object_mut().unwrap().remove("mediaType");
            } else {
                layer["mediaType"] = mt;
            }
            layers.push(layer);
        });
        assert_eq!(invalid_msg(None, &body), msg);
    }

    let digest_cases: Vec<(Option<Value>, String)> = vec![
        (None, "layers[0].digest: missing".into()),
        (
            Some(json!("sha256:xyz")),
            "layers[0].digest: invalid digest \"sha256:xyz\"".into(),
        ),
        (
            Some(json!(format!("sha256:{}", sha.to_uppercase()))),
            format!(
                "layers[0].digest: invalid digest \"sha256:{}\"",
                sha.to_uppercase()
            ),
        ),
        (
            Some(json!(format!("sha256:{}", &sha[1..]))),
            format!("layers[0].digest: invalid digest \"sha256:{}\"", &sha[1..]),
        ),
        (
            Some(json!(sha)),
            format!("layers[0].digest: invalid digest \"{sha}\""),
        ),
        (
            Some(json!("md5:d41d8cd98f00b204e9800998ecf8427e")),
            "layers[0].digest: unsupported digest algorithm \"md5\"".into(),
        ),
        (
            Some(json!(["sha256"])),
            "layers[0].digest: expected a string, found an array".into(),
        ),
    ];
    for (digest, msg) in digest_cases {
        let body = mutate(base(), |o| match digest {
            None => {
                o["layers"][0].as_object_mut().unwrap().remove("digest");
            }
            Some(v) => o["layers"][0]["digest"] = v,
        });
        assert_eq!(invalid_msg(None, &body), msg);
    }

    let size_cases: Vec<(Option<&str>, &str)> = vec![
        (None, "config.size: missing"),
        (Some("-1"), "config.size: must not be negative, found -1"),
        (
            Some("-9223372036854775808"),
            "config.size: must not be negative, found -9223372036854775808",
        ),
        (
            Some("9223372036854775808"),
            "config.size: 9223372036854775808 is too large",
        ),
        (
            Some("18446744073709551615"),
            "config.size: 18446744073709551615 is too large",
        ),
        (
            Some("18446744073709551616"),
            "config.size: expected an integer, found 1.8446744073709552e+19",
        ),
        (Some("1.5"), "config.size: expected an integer, found 1.5"),
        (
            Some("1e3"),
            "config.size: expected an integer, found 1000.0",
        ),
        (
            Some("\"1469\""),
            "config.size: expected a number, found a string",
        ),
        (
            Some("true"),
            "config.size: expected a number, found a boolean",
        ),
    ];
    for (size, msg) in size_cases {
        // Splice the raw number text in, so serde_json's own number handling is exercised.
        let text = SKOPEO_OCI.replacen(
            "\"size\": 1469",
            &size.map_or("\"x\": 0".to_owned(), |s| format!("\"size\": {s}")),
            1,
        );
        assert_eq!(invalid_msg(None, text.as_bytes()), msg);
    }

    let url_cases: Vec<(Value, &str)> = vec![
        (
            json!("https://x"),
            "layers[0].urls: expected an array, found a string",
        ),
        (
            json!(["https://x", 1]),
            "layers[0].urls[1]: expected a string, found a number",
        ),
    ];
    for (urls, msg) in url_cases {
        let body = mutate(base(), |o| o["layers"][0]["urls"] = urls);
        assert_eq!(invalid_msg(None, &body), msg);
    }

    let body = mutate(base(), |o| o["layers"][0]["artifactType"] = json!(false));
    assert_eq!(
        invalid_msg(None, &body),
        "layers[0].artifactType: expected a string, found a boolean"
    );
    let body = mutate(base(), |o| {
        o["config"]["annotations"] = json!({"k": {"v": 1}})
    });
    assert_eq!(
        invalid_msg(None, &body),
        "config.annotations[\"k\"]: expected a string, found an object"
    );
}

#[test]
fn long_untrusted_values_are_truncated_in_errors() {
    let body = mutate(base(), |o| {
        o["layers"][0]["digest"] = json!(format!("sha256:{}", "a".repeat(1_000_000)));
    });
    let msg = invalid_msg(None, &body);
    assert!(msg.len() < 300, "{}", msg.len());
    let e = err(Some(&format!("application/{}", "x".repeat(100_000))), b"{}");
    assert!(e.to_string().len() < 300);
}

#[test]
fn error_display() {
    assert_eq!(
        ManifestError::Invalid("config: missing".into()).to_string(),
        "config: missing"
    );
    assert_eq!(
        ManifestError::UnknownMediaType("a/b".into()).to_string(),
        "unknown manifest media type \"a/b\""
    );
}

#[test]
fn descriptor_serialization_skips_empty_fields() {
    let desc = Descriptor::new(OCI_LAYER_GZIP, d(LAYER1), 42);
    assert_eq!(
        serde_json::to_value(&desc).unwrap(),
        json!({"mediaType": OCI_LAYER_GZIP, "digest": LAYER1, "size": 42})
    );
    assert!(!desc.is_external());

    let full = Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: d(AMD64),
        size: 7,
        urls: vec!["https://example.com/x".into()],
        annotations: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
        artifact_type: Some("application/vnd.example+json".into()),
        platform: Some(Platform {
            architecture: "amd64".into(),
            os: "windows".into(),
            os_version: Some("10.0.20348.1".into()),
            os_features: vec!["win32k".into()],
            variant: Some("v3".into()),
        }),
    };
    let value = serde_json::to_value(&full).unwrap();
    assert_eq!(
        value,
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": AMD64,
            "size": 7,
            "urls": ["https://example.com/x"],
            "annotations": {"k": "v"},
            "artifactType": "application/vnd.example+json",
            "platform": {
                "architecture": "amd64",
                "os": "windows",
                "os.version": "10.0.20348.1",
                "os.features": ["win32k"],
                "variant": "v3"
            }
        })
    );
    let back: Descriptor = serde_json::from_value(value).unwrap();
    assert_eq!(back, full);

    let minimal_platform = Platform {
        architecture: "arm64".into(),
        os: "linux".into(),
        ..Platform::default()
    };
    assert_eq!(
        serde_json::to_string(&minimal_platform).unwrap(),
        r#"{"architecture":"arm64","os":"linux"}"#
    );

    // Deserializing validates the digest.
    assert!(serde_json::from_value::<Descriptor>(
        json!({"mediaType": "a/b", "digest": "sha256:nope", "size": 1})
    )
    .is_err());
}

#[test]
fn parsed_descriptors_round_trip_through_serde() {
    let m = parse(None, OCI_WINDOWS_INDEX);
    let original: Value = serde_json::from_str(OCI_WINDOWS_INDEX).unwrap();
    for (i, desc) in m.manifests.iter().enumerate() {
        assert_eq!(
            serde_json::to_value(desc).unwrap(),
            original["manifests"][i]
        );
    }
}

#[test]
fn build_index_is_canonical() {
    assert_eq!(
        String::from_utf8(build_index(Vec::new())).unwrap(),
        r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
    );

    let mut referrer = Descriptor::new(OCI_MANIFEST, d(SBOM), 812);
    referrer.artifact_type = Some("application/vnd.example.sbom.v1".into());
    referrer.annotations.insert(
        "org.opencontainers.image.created".into(),
        "2024-02-01T08:00:00Z".into(),
    );
    let bytes = build_index(vec![
        referrer.clone(),
        Descriptor::new(OCI_MANIFEST, d(ARM64), 5),
    ]);
    assert_eq!(
        String::from_utf8(bytes.clone()).unwrap(),
        format!(
            concat!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":["#,
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sbom}","size":812,"#,
                r#""annotations":{{"org.opencontainers.image.created":"2024-02-01T08:00:00Z"}},"#,
                r#""artifactType":"application/vnd.example.sbom.v1"}},"#,
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{arm}","size":5}}]}}"#
            ),
            sbom = SBOM,
            arm = ARM64
        )
    );

    // The output is itself a valid index, with or without a Content-Type.
    let m = parse_manifest(Some(OCI_INDEX), &bytes).unwrap();
    assert_eq!(m.kind, ManifestKind::Index);
    assert_eq!(m.manifests[0], referrer);
    assert_eq!(parse_manifest(None, &bytes).unwrap(), m);
}
