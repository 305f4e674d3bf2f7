//! TLS termination: certificates from `kubernetes.io/tls` Secrets, chosen per handshake by SNI from
//! the current routing snapshot (so a new or changed Secret is served without a restart).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::Shared;

#[derive(Debug)]
struct SniResolver(Shared);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI or no certificate for it: the handshake fails (ingress-nginx would serve a fake
        // self-signed certificate instead).
        let sni = hello.server_name()?;
        let routes = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        routes.cert_for(sni)
    }
}

pub(crate) fn server_config(routes: Shared) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(routes)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The certificate and key of a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, PEM).
pub(crate) fn certified_key(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err(format!(
            "type is {:?}, not kubernetes.io/tls",
            secret.type_.as_deref().unwrap_or("Opaque")
        ));
    }
    let data = secret.data.as_ref().ok_or("secret has no data")?;
    let crt = data.get("tls.crt").ok_or("secret has no tls.crt")?;
    let key = data.get("tls.key").ok_or("secret has no tls.key")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&crt.0)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&key.0).map_err(|e| format!("tls.key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("tls.key: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}
