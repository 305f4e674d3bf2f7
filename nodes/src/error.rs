//! The crate's error type.

/// Why a node or the scheduler could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed where no retry makes sense (e.g. registration refused).
    #[error("API request failed: {context}")]
    Api {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// The kubelet's HTTP endpoint could not listen.
    #[error("kubelet server cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn api(context: impl Into<String>, source: kube::Error) -> Error {
        Error::Api { context: context.into(), source }
    }
}
