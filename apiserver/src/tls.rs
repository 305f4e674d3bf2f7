//! HTTPS serving: rustls with the cluster CA's serving certificate. Client certificates are
//! requested, not required, and are verified against the CA *after* the handshake, as Go's
//! `RequestClientCert` plus upstream's x509 authenticator do: a client without one, or with one
//! that is expired or from another CA, completes the handshake and then gets upstream's 401 Status
//! rather than a TLS alert. (The handshake still checks the client's signature, so a client has to
//! hold the key of the certificate it presents.) A verified certificate's subject becomes the
//! request's [`Authenticated`] identity; a request cannot claim one any other way.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tower::ServiceExt;

use crate::auth::{Authenticated, BadClientCertificate, UserInfo};

/// The serving certificate, its key, and the CA that client certificates must chain to.
#[derive(Clone)]
pub struct TlsServing {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
}

impl std::fmt::Debug for TlsServing {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServing").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Accepts any client certificate during the handshake (checking only the handshake signature made
/// with its key); the chain is verified per connection by [`Served::client_identity`].
#[derive(Debug)]
struct RequestClientCert {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The rustls configuration and the verifier that checks client certificate chains.
#[derive(Clone, Debug)]
pub struct Served {
    pub config: Arc<rustls::ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl Served {
    /// The identity a presented certificate chain establishes, and until when (the leaf's notAfter,
    /// Unix seconds): Ok(None) without a certificate, Err when the chain does not verify against
    /// the CA at this moment (expired, another CA).
    fn client_identity(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
    ) -> Result<Option<(UserInfo, i64)>, String> {
        let Some((leaf, intermediates)) = certs.and_then(|c| c.split_first()) else { return Ok(None) };
        self.verifier.verify_client_cert(leaf, intermediates, UnixTime::now()).map_err(|e| e.to_string())?;
        let (name, groups) =
            crate::pki::subject_of_der(leaf).ok_or_else(|| "the certificate names no user".to_string())?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
        Ok(Some((UserInfo { name, groups, ..Default::default() }, cert.validity().not_after.timestamp())))
    }
}

pub fn server_config(t: &TlsServing) -> Result<Served, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(t.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(t.key_pem.as_bytes()).map_err(|e| format!("serving key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(t.client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| format!("client CA: {e}"))?;
        roots.add(ca).map_err(|e| format!("client CA: {e}"))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
    let lenient = Arc::new(RequestClientCert { inner: verifier.clone() });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(lenient)
        .with_single_cert(certs, key)
        .map_err(|e| format!("serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Served { config: Arc::new(config), verifier })
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections (watches) get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    served: Served,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(served.config.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        let served = served.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let identity = served.client_identity(tls.get_ref().1.peer_certificates());
            if let Err(e) = &identity {
                tracing::debug!(%peer, error = %e, "client certificate rejected");
            }
            let service = hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                match &identity {
                    // A connection outliving its certificate (a long watch) stops authenticating,
                    // as upstream verifies the certificate on every request.
                    Ok(Some((user, not_after))) if jiff::Timestamp::now().as_second() <= *not_after => {
                        req.extensions_mut().insert(Authenticated(user.clone()));
                    }
                    Ok(None) => {}
                    Ok(Some(_)) | Err(_) => {
                        req.extensions_mut().insert(BadClientCertificate);
                    }
                }
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::debug!("closing connections still open after {DRAIN_TIMEOUT:?}");
    }
}
