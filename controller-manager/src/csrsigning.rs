//! The CSR signing controller (upstream's `csrsigning` for the `kubernetes.io/kube-apiserver-client`
//! signer): an approved CertificateSigningRequest of that signer, not denied or failed and without a
//! certificate yet, gets one signed by the cluster CA (`--cluster-signing-cert-file`/`-key-file`;
//! `kplane up` passes its own CA), valid for `spec.expirationSeconds` or
//! `--cluster-signing-duration`, written through the `status` subresource. A request the signer
//! may not sign (usages beyond client authentication, a CA, an unreadable request) gets upstream's
//! `Failed` condition with reason `SignerValidationFailure` instead. Only the API is used: the CA
//! is the controller-manager's own configuration, as upstream's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use crate::context::{drive, Ctx, ReconcileError};
use crate::queue::Controller;
use crate::Stop;

pub const CONTROLLER: &str = "csrsigning-controller";

/// The one signer kplane signs for.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// The CA the controller signs with (PEM); the key is never printed.
#[derive(Clone)]
pub struct ClusterSigning {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSigning").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

pub async fn run(ctx: Arc<Ctx>, stop: Stop) {
    if ctx.config.cluster_signing.is_none() {
        return;
    }
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    drive(CONTROLLER, controller, stop, 1, reconcile, ctx).await;
}

/// What to do with a request: nothing, sign it, or fail it with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Skip,
    Sign,
    Fail(String),
}

/// Upstream's checks: our signer, approved, not denied or failed, no certificate yet; then the
/// kube-apiserver-client signer's usages (client auth required; digital signature and key
/// encipherment allowed).
pub fn decide(csr: &CertificateSigningRequest) -> Decision {
    let spec = &csr.spec;
    if spec.signer_name != KUBE_APISERVER_CLIENT {
        return Decision::Skip;
    }
    let status = csr.status.as_ref();
    if status.and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty()) {
        return Decision::Skip;
    }
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let has = |t: &str| conditions.iter().any(|c| c.type_ == t);
    if !has("Approved") || has("Denied") || has("Failed") {
        return Decision::Skip;
    }
    let usages = spec.usages.as_deref().unwrap_or_default();
    let allowed = ["digital signature", "key encipherment", "client auth"];
    if let Some(bad) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Decision::Fail(format!("invalid usage for client certificate: {bad}"));
    }
    if !usages.iter().any(|u| u == "client auth") {
        return Decision::Fail("missing required usages: client auth".into());
    }
    Decision::Sign
}

/// Signs `request` (a PEM PKCS#10 request) with the CA for `validity`, from now (backdated five
/// minutes for clock skew, as upstream's signer).
pub fn sign(
    ca: &ClusterSigning,
    request: &[u8],
    usages: &[String],
    validity: Duration,
) -> Result<String, String> {
    let pem = std::str::from_utf8(request).map_err(|_| "the request is not PEM".to_string())?;
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| format!("unable to parse the certificate request: {e}"))?;
    if !matches!(csr.params.is_ca, rcgen::IsCa::NoCa | rcgen::IsCa::ExplicitNoCa) {
        return Err("a CA certificate may not be requested".into());
    }
    let now = SystemTime::now();
    csr.params.not_before = (now - Duration::from_secs(300)).into();
    csr.params.not_after = (now + validity).into();
    csr.params.is_ca = rcgen::IsCa::ExplicitNoCa;
    csr.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    csr.params.key_usages = usages
        .iter()
        .filter_map(|u| match u.as_str() {
            "digital signature" => Some(rcgen::KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(rcgen::KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    csr.params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::from_pem(&ca.key_pem).map_err(|e| format!("the signing key: {e}"))?;
    let issuer =
        rcgen::Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| format!("the signing CA: {e}"))?;
    let cert = csr.signed_by(&issuer).map_err(|e| format!("signing: {e}"))?;
    Ok(cert.pem())
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let Some(ca) = ctx.config.cluster_signing.as_ref() else { return Ok(Action::await_change()) };
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let name = csr.name_any();
    let outcome = match decide(&csr) {
        Decision::Skip => return Ok(Action::await_change()),
        Decision::Fail(why) => Err(why),
        Decision::Sign => {
            let validity = csr
                .spec
                .expiration_seconds
                .filter(|s| *s >= 600)
                .map(|s| Duration::from_secs(s as u64).min(ctx.config.cluster_signing_duration))
                .unwrap_or(ctx.config.cluster_signing_duration);
            sign(ca, &csr.spec.request.0, csr.spec.usages.as_deref().unwrap_or_default(), validity)
        }
    };
    // The resourceVersion read makes the write conditional: a request changed meanwhile (denied,
    // signed by another leader) is judged again from the watch.
    let rv = csr.resource_version();
    let patch = match outcome {
        Ok(pem) => {
            tracing::info!(csr = %name, "signed a kube-apiserver-client certificate");
            json!({"metadata": {"resourceVersion": rv}, "status": {"certificate": ByteString(pem.into_bytes())}})
        }
        Err(why) => {
            tracing::info!(csr = %name, %why, "refused to sign");
            let mut conditions: Vec<serde_json::Value> = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(|c| c.iter().filter_map(|c| serde_json::to_value(c).ok()).collect())
                .unwrap_or_default();
            conditions.push(json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                                   "message": why}));
            json!({"metadata": {"resourceVersion": rv}, "status": {"conditions": conditions}})
        }
    };
    match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    fn ca() -> ClusterSigning {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "test-ca");
        let cert = params.self_signed(&key).unwrap();
        ClusterSigning { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    fn request(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "dev");
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(signer: &str, usages: &[&str], conditions: &[&str]) -> CertificateSigningRequest {
        let mut c = CertificateSigningRequest::default();
        c.spec.signer_name = signer.into();
        c.spec.request = ByteString(request("jane").into_bytes());
        c.spec.usages = Some(usages.iter().map(|u| u.to_string()).collect());
        c.status = Some(CertificateSigningRequestStatus {
            conditions: Some(
                conditions
                    .iter()
                    .map(|t| CertificateSigningRequestCondition {
                        type_: t.to_string(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            certificate: None,
        });
        c
    }

    #[test]
    fn only_approved_client_requests_of_our_signer_are_signed() {
        assert_eq!(decide(&csr(KUBE_APISERVER_CLIENT, &["client auth"], &["Approved"])), Decision::Sign);
        assert_eq!(decide(&csr(KUBE_APISERVER_CLIENT, &["client auth"], &[])), Decision::Skip);
        assert_eq!(
            decide(&csr(KUBE_APISERVER_CLIENT, &["client auth"], &["Approved", "Failed"])),
            Decision::Skip
        );
        assert_eq!(decide(&csr("example.com/other", &["client auth"], &["Approved"])), Decision::Skip);
        assert_eq!(
            decide(&csr(KUBE_APISERVER_CLIENT, &["client auth", "server auth"], &["Approved"])),
            Decision::Fail("invalid usage for client certificate: server auth".into())
        );
        assert_eq!(
            decide(&csr(KUBE_APISERVER_CLIENT, &["digital signature"], &["Approved"])),
            Decision::Fail("missing required usages: client auth".into())
        );
    }

    #[test]
    fn the_certificate_names_the_requester_and_chains_to_the_ca() {
        let ca = ca();
        let usages = vec!["client auth".to_string(), "digital signature".to_string()];
        let pem = sign(&ca, request("jane").as_bytes(), &usages, Duration::from_secs(3600)).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = der.parse_x509().unwrap();
        let cn: Vec<&str> = cert.subject().iter_common_name().filter_map(|c| c.as_str().ok()).collect();
        assert_eq!(cn, ["jane"]);
        let org: Vec<&str> = cert.subject().iter_organization().filter_map(|c| c.as_str().ok()).collect();
        assert_eq!(org, ["dev"]);
        let (_, ca_der) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).unwrap();
        let ca_cert = ca_der.parse_x509().unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300);
        assert!(sign(&ca, b"not a request", &usages, Duration::from_secs(3600)).is_err());
    }
}
