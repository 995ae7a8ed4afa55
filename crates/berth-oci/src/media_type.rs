//! Media types of OCI and Docker manifests, configs and layers.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image configuration.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI empty descriptor content (`{}`), used as the config of artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// OCI layer, uncompressed tar.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable layer, uncompressed tar (deprecated by image-spec 1.1).
pub const OCI_LAYER_NONDISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip-compressed tar (deprecated by image-spec 1.1).
pub const OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd-compressed tar (deprecated by image-spec 1.1).
pub const OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image configuration.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker layer, gzip-compressed tar.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker foreign layer (e.g. Windows base layers fetched from `urls`).
pub const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker image manifest, schema 1 (unsigned). Not supported.
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker image manifest, schema 1 signed with JWS. Not supported.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Generic JSON; as a manifest Content-Type it names no manifest type.
pub const JSON: &str = "application/json";
/// Generic bytes; as a manifest Content-Type it names no manifest type.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Whether `media_type` is an image manifest type (OCI or Docker schema 2).
pub fn is_image_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// Whether `media_type` is an index type (OCI index or Docker manifest list).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// Whether `media_type` is any manifest type this crate accepts.
pub fn is_manifest(media_type: &str) -> bool {
    is_image_manifest(media_type) || is_index(media_type)
}

/// Whether `media_type` is a Docker schema 1 manifest.
pub fn is_schema1(media_type: &str) -> bool {
    matches!(media_type, DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
}

/// Whether a layer of this type may be left out of a registry when it has `urls`
/// (Docker foreign layers and OCI non-distributable layers).
pub fn is_non_distributable(media_type: &str) -> bool {
    matches!(
        media_type,
        DOCKER_FOREIGN_LAYER
            | OCI_LAYER_NONDISTRIBUTABLE
            | OCI_LAYER_NONDISTRIBUTABLE_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_ZSTD
    )
}

/// The essence of a Content-Type header value: parameters (`; charset=...`) and surrounding
/// whitespace removed, lowercased.
pub fn essence(content_type: &str) -> String {
    let base = content_type
        .split_once(';')
        .map_or(content_type, |(base, _)| base);
    base.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(is_image_manifest(OCI_MANIFEST));
        assert!(is_image_manifest(DOCKER_MANIFEST));
        assert!(!is_image_manifest(OCI_INDEX));
        assert!(is_index(OCI_INDEX));
        assert!(is_index(DOCKER_MANIFEST_LIST));
        assert!(is_manifest(DOCKER_MANIFEST_LIST));
        assert!(!is_manifest(DOCKER_SCHEMA1));
        assert!(is_schema1(DOCKER_SCHEMA1));
        assert!(is_schema1(DOCKER_SCHEMA1_SIGNED));
        for mt in [
            DOCKER_FOREIGN_LAYER,
            OCI_LAYER_NONDISTRIBUTABLE,
            OCI_LAYER_NONDISTRIBUTABLE_GZIP,
            OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
        ] {
            assert!(is_non_distributable(mt), "{mt}");
        }
        for mt in [OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER] {
            assert!(!is_non_distributable(mt), "{mt}");
        }
    }

    #[test]
    fn essence_strips_parameters() {
        assert_eq!(essence(" Application/JSON ; charset=utf-8"), JSON);
        assert_eq!(essence(OCI_MANIFEST), OCI_MANIFEST);
        assert_eq!(essence(""), "");
        assert_eq!(essence(";x=y"), "");
    }
}
