#![no_main]

use berth_oci::{build_index, media_type, parse_manifest, ManifestKind};
use libfuzzer_sys::fuzz_target;

/// Content-Type headers to pair with the body, chosen by the first input byte.
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some(""),
    Some(media_type::JSON),
    Some(media_type::OCTET_STREAM),
    Some(media_type::OCI_MANIFEST),
    Some(media_type::OCI_INDEX),
    Some(media_type::DOCKER_MANIFEST),
    Some(media_type::DOCKER_MANIFEST_LIST),
    Some(media_type::DOCKER_SCHEMA1_SIGNED),
    Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let Ok(manifest) = parse_manifest(content_type, body) else {
        return;
    };

    // Invariants of an accepted manifest.
    assert!(media_type::is_manifest(&manifest.media_type));
    match manifest.kind {
        ManifestKind::Image => {
            assert!(manifest.config.is_some());
            assert!(manifest.manifests.is_empty());
            assert!(manifest.effective_artifact_type().is_some());
        }
        ManifestKind::Index => {
            assert!(manifest.config.is_none());
            assert!(manifest.layers.is_empty());
        }
    }
    assert!(manifest.blob_references().count() <= 1 + manifest.layers.len());
    for d in manifest
        .layers
        .iter()
        .chain(&manifest.manifests)
        .chain(&manifest.config)
        .chain(&manifest.subject)
    {
        assert!(d.size <= i64::MAX as u64);
        assert!(d.media_type.contains('/'));
    }

    // Re-serialized descriptors form an index that is accepted again, unchanged.
    let index = build_index(manifest.manifests.clone());
    let reparsed = parse_manifest(Some(media_type::OCI_INDEX), &index)
        .expect("build_index output must be a valid index");
    assert_eq!(reparsed.manifests, manifest.manifests);
});
