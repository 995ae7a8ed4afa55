//! Content digests (`sha256:<hex>`, `sha512:<hex>`) as defined by the OCI image spec.
//!
//! Grammar (image-spec `descriptor.md`):
//!
//! ```text
//! digest                ::= algorithm ":" encoded
//! algorithm             ::= algorithm-component (algorithm-separator algorithm-component)*
//! algorithm-component   ::= [a-z0-9]+
//! algorithm-separator   ::= [+._-]
//! encoded               ::= [a-zA-Z0-9=_-]+
//! ```
//!
//! Registered algorithms restrict `encoded` further: `sha256` to `[a-f0-9]{64}` and `sha512` to
//! `[a-f0-9]{128}`. A digest that fits the grammar but names another algorithm is reported as
//! [`DigestError::UnsupportedAlgorithm`]; everything else that fails is [`DigestError::Invalid`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize, Serializer};
use sha2::Digest as _;

/// Longest piece of untrusted input echoed back in an error message.
const MAX_ECHO: usize = 160;

/// Errors from parsing a digest or a digest algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string is not a well-formed digest (grammar, hex case or length).
    #[error("invalid digest {0:?}")]
    Invalid(String),
    /// The string is well-formed but names an algorithm this crate does not implement.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
}

/// Truncates untrusted input before it is placed in an error message.
pub(crate) fn echo(s: &str) -> String {
    if s.len() <= MAX_ECHO {
        return s.to_owned();
    }
    let mut end = MAX_ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A digest algorithm registered with the OCI image spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default and the only algorithm most registries accept.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears before the `:` of a digest.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Number of lowercase hex characters in an encoded digest of this algorithm.
    pub const fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(echo(other))),
        }
    }
}

/// A validated content digest, e.g. `sha256:e3b0c442...b855`.
///
/// The encoded part is always lowercase hex of the algorithm's exact length. Ordering and
/// equality are those of the string form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Digest {
    // Field order matters for the derived `Ord`: the algorithm decides the prefix of `value`,
    // so ordering by (algorithm, value) is the same as ordering by `value`.
    algorithm: Algorithm,
    /// The full `algorithm:hex` string.
    value: String,
}

impl Digest {
    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding (the part after `:`).
    pub fn hex(&self) -> &str {
        self.value
            .get(self.algorithm.as_str().len() + 1..)
            .unwrap_or_default()
    }

    /// The full `algorithm:hex` form.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// Digests `data` with `alg`.
    pub fn of(alg: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = Hasher::new(alg);
        hasher.update(data);
        hasher.finalize()
    }

    /// Digests `data` with SHA-256.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    /// Whether `data` hashes to this digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        Digest::of(self.algorithm, data) == *self
    }

    /// Validates `s` and returns its algorithm.
    fn validate(s: &str) -> Result<Algorithm, DigestError> {
        let invalid = || DigestError::Invalid(echo(s));
        let (alg, encoded) = s.split_once(':').ok_or_else(invalid)?;
        if !is_algorithm_grammar(alg) || !is_encoded_grammar(encoded) {
            return Err(invalid());
        }
        let algorithm: Algorithm = alg.parse()?;
        if encoded.len() != algorithm.hex_len()
            || !encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(invalid());
        }
        Ok(algorithm)
    }
}

/// `algorithm-component (algorithm-separator algorithm-component)*`
fn is_algorithm_grammar(s: &str) -> bool {
    let mut previous_was_separator = true; // also rejects a leading separator
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => previous_was_separator = false,
            b'+' | b'.' | b'_' | b'-' if !previous_was_separator => previous_was_separator = true,
            _ => return false,
        }
    }
    !previous_was_separator // rejects empty and a trailing separator
}

/// `[a-zA-Z0-9=_-]+`
fn is_encoded_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let algorithm = Digest::validate(s)?;
        Ok(Digest {
            algorithm,
            value: s.to_owned(),
        })
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let algorithm = Digest::validate(&value)?;
        Ok(Digest { algorithm, value })
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.value
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Digest").field(&self.value).finish()
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.value)
    }
}

/// An incremental hasher producing a [`Digest`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher for `alg`.
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds `data` into the hash.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// Finishes the hash.
    pub fn finalize(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest {
            algorithm,
            value: format!("{}:{hex}", algorithm.as_str()),
        }
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Hasher").field(&self.algorithm()).finish()
    }
}

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const EMPTY_SHA512: &str = "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";
    /// The OCI empty descriptor's content is `{}`.
    const EMPTY_JSON_SHA256: &str =
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn algorithm_properties() {
        assert_eq!(Algorithm::Sha256.as_str(), "sha256");
        assert_eq!(Algorithm::Sha512.as_str(), "sha512");
        assert_eq!(Algorithm::Sha256.hex_len(), 64);
        assert_eq!(Algorithm::Sha512.hex_len(), 128);
        assert_eq!("sha512".parse::<Algorithm>(), Ok(Algorithm::Sha512));
        assert_eq!(Algorithm::Sha256.to_string(), "sha256");
        assert_eq!(
            "md5".parse::<Algorithm>(),
            Err(DigestError::UnsupportedAlgorithm("md5".into()))
        );
    }

    #[test]
    fn known_vectors() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY_SHA256);
        assert_eq!(Digest::of(Algorithm::Sha512, b"").to_string(), EMPTY_SHA512);
        assert_eq!(Digest::sha256_of(b"{}").to_string(), EMPTY_JSON_SHA256);
    }

    #[test]
    fn parses_valid_digests() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.as_str(), EMPTY_SHA256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert!(d.matches(b""));
        assert!(!d.matches(b"x"));

        let d = Digest::try_from(EMPTY_SHA512.to_owned()).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha512);
        assert_eq!(d.hex().len(), 128);
        assert_eq!(String::from(d), EMPTY_SHA512);
    }

    #[test]
    fn rejects_invalid_digests() {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases = [
            String::new(),
            "sha256".into(),
            "sha256:".into(),
            ":".into(),
            format!(":{sha}"),
            sha.into(),
            "sha256:xyz".into(),
            // uppercase hex
            format!("sha256:{}", sha.to_uppercase()),
            format!("sha256:{}A", &sha[..63]),
            // wrong lengths
            format!("sha256:{}", &sha[..63]),
            format!("sha256:{sha}0"),
            format!("sha512:{sha}"),
            // grammar
            format!("SHA256:{sha}"),
            format!("sha256 :{sha}"),
            format!("sha256: {sha}"),
            format!("sha256:{sha}\n"),
            format!("sha256:{sha}:"),
            format!("-sha256:{sha}"),
            format!("sha256-:{sha}"),
            format!("sha++256:{sha}"),
            "foo:!!!".into(),
            "foo:".into(),
            format!("sha256:{}g", &sha[..63]),
        ];
        for case in cases {
            match case.parse::<Digest>() {
                Err(DigestError::Invalid(_)) => {}
                other => panic!("{case:?}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_algorithms_are_unsupported() {
        for (case, alg) in [
            ("md5:d41d8cd98f00b204e9800998ecf8427e", "md5"),
            ("blake3:abc", "blake3"),
            ("sha384:abcd", "sha384"),
            (
                "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
                "multihash+base58",
            ),
            (
                "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
                "sha256+b64u",
            ),
        ] {
            assert_eq!(
                case.parse::<Digest>(),
                Err(DigestError::UnsupportedAlgorithm(alg.into())),
                "{case}"
            );
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            "sha256:xyz".parse::<Digest>().unwrap_err().to_string(),
            "invalid digest \"sha256:xyz\""
        );
        assert_eq!(
            "md5:abc".parse::<Digest>().unwrap_err().to_string(),
            "unsupported digest algorithm \"md5\""
        );
        // Long input is truncated in the message.
        let long = format!("sha256:{}", "z".repeat(10_000));
        let msg = long.parse::<Digest>().unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
        assert!(msg.ends_with("...\""), "{msg}");
        // Truncation respects char boundaries.
        let multibyte = "é".repeat(200);
        assert!(echo(&multibyte).ends_with("..."));
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::sha256_of(b"hello");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        let err = serde_json::from_str::<Digest>("\"sha256:nope\"").unwrap_err();
        assert!(err.to_string().contains("invalid digest"), "{err}");
        assert!(serde_json::from_str::<Digest>("42").is_err());
    }

    #[test]
    fn ordering_matches_string_order() {
        let mut digests = [
            Digest::of(Algorithm::Sha512, b"a"),
            Digest::sha256_of(b"b"),
            Digest::sha256_of(b"a"),
            Digest::of(Algorithm::Sha512, b"b"),
        ];
        digests.sort();
        let strings: Vec<String> = digests.iter().map(ToString::to_string).collect();
        let mut sorted = strings.clone();
        sorted.sort();
        assert_eq!(strings, sorted);
    }

    #[test]
    fn hasher_is_incremental_and_cloneable() {
        let data = b"the quick brown fox jumps over the lazy dog";
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = Hasher::new(alg);
            assert_eq!(h.algorithm(), alg);
            h.update(&data[..10]);
            let snapshot = h.clone();
            h.update(&data[10..]);
            assert_eq!(h.finalize(), Digest::of(alg, data));
            assert_eq!(snapshot.finalize(), Digest::of(alg, &data[..10]));
        }
        let mut h = Hasher::new(Algorithm::Sha256);
        std::io::copy(&mut &data[..], &mut h).unwrap();
        assert_eq!(h.finalize(), Digest::sha256_of(data));
    }
}
