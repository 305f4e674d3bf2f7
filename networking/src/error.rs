/// Errors that end a networking component. Per-object problems (a port that cannot be bound, a bad
/// Ingress) are reported as Events and logs instead, and never end the component.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket the component cannot run without (DNS, ingress) could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// A call to the API server failed where the component cannot go on without it.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The configuration given to the component is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}
