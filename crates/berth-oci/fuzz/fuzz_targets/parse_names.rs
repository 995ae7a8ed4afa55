#![no_main]

use berth_oci::{Digest, Reference, RepoName, Tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(name) = s.parse::<RepoName>() {
        assert_eq!(name.as_str(), s);
        assert!((1..=255).contains(&name.len()));
        assert!(!s.contains("//") && !s.starts_with('/') && !s.ends_with('/'));
        assert!(!s.bytes().any(|b| b.is_ascii_uppercase()));
        assert_eq!(name.to_string().parse::<RepoName>().ok(), Some(name));
    }

    if let Ok(tag) = s.parse::<Tag>() {
        assert_eq!(tag.as_str(), s);
        assert!((1..=128).contains(&s.len()));
        assert!(!s.contains(':'));
    }

    match s.parse::<Digest>() {
        Ok(digest) => {
            assert_eq!(digest.to_string(), s);
            assert_eq!(digest.hex().len(), digest.algorithm().hex_len());
        }
        Err(e) => {
            // Error messages stay bounded (160 input bytes, escaped) however long the input is.
            assert!(e.to_string().len() < 2048);
        }
    }

    match s.parse::<Reference>() {
        Ok(Reference::Tag(t)) => assert_eq!(t.as_str(), s),
        Ok(Reference::Digest(d)) => assert_eq!(d.as_str(), s),
        Err(e) => assert!(e.to_string().len() < 2048),
    }
});
