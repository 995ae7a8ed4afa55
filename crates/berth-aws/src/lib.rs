//! AWS wire protocols shared by Berth's ECR, ECS and ELBv2 APIs: SigV4 verification, AWS JSON
//! 1.1 and query-protocol dispatch and error shapes, ARNs, and access-key credentials.

pub mod arn;
pub mod client;
pub mod credentials;
pub mod json;
pub mod query;
pub mod sigv4;

pub use arn::{Arn, ArnError};
pub use credentials::{Credentials, CredentialsError, StaticKeys};
pub use json::{AwsEndpoint, AwsError, JsonApi, RequestContext};
pub use query::{Params, QueryApi, XmlWriter};
pub use sigv4::{AuthError, KeyLookup, Verified};

/// Every error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Arn(#[from] ArnError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}
