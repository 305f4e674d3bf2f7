//! Follows a request through the objects that decide its path. (Being written.)

use serde::Serialize;

use crate::Stored;

/// What to follow.
#[derive(Debug, Clone)]
pub enum Target {
    /// An HTTP request to the ingress controller for `host` and `path`.
    Host { host: String, path: String },
    /// A connection to a Service's ClusterIP (one port, or each of them).
    Service { namespace: String, name: String, port: Option<String> },
    /// A URL: `http://<clusterIP or node IP>:<port>/...`, or an ingress host.
    Url(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("asking the API server: {0}")]
    Api(#[from] kube::Error),
}

/// The path a request takes, hop by hop, and what would make it fail.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    pub objects: Vec<Stored>,
    /// Why traffic would fail, in plain words; empty when the path is whole.
    pub problems: Vec<String>,
}

pub async fn trace(_client: &kube::Client, _target: &Target) -> Result<Route, Error> {
    Err(Error::Invalid("xray route is being written".into()))
}
