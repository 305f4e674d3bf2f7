//! The cluster's certificates, kept in `<data-dir>/tls/` (every file mode 0600): a CA generated on
//! first start, the API server's serving certificate, and client certificates for the admin and for
//! each component. Later starts reuse the CA and any certificate that still has the SANs it needs.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// The CA and where its files live.
pub struct Pki {
    dir: PathBuf,
    pub ca: CertPair,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Writes `data` to `path` readable by the owner only, atomically (temporary file, then rename).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    let io = |source| PkiError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl Pki {
    /// Loads the existing CA from `dir`.
    pub fn load(dir: &Path) -> Result<Pki, PkiError> {
        let io = |path: PathBuf| move |source| PkiError::Io { path, source };
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(key_path))?;
        Ok(Pki { dir: dir.to_path_buf(), ca: CertPair { cert_pem, key_pem } })
    }

    /// Loads the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Pki, PkiError> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path), read(&key_path)) {
            return Ok(Pki { dir: dir.to_path_buf(), ca: CertPair { cert_pem, key_pem } });
        }
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = dn("kplane-ca", &[]);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key)?;
        let ca = CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
        write_private(&key_path, ca.key_pem.as_bytes())?;
        write_private(&cert_path, ca.cert_pem.as_bytes())?;
        Ok(Pki { dir: dir.to_path_buf(), ca })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn issue(&self, params: CertificateParams) -> Result<CertPair, PkiError> {
        let ca_key = KeyPair::from_pem(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The serving certificate for `names` (DNS names and IPs), reused from `<name>.crt` if it
    /// still covers them.
    pub fn serving(&self, file: &str, names: &[String]) -> Result<CertPair, PkiError> {
        let (cert_path, key_path) =
            (self.dir.join(format!("{file}.crt")), self.dir.join(format!("{file}.key")));
        if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path), read(&key_path)) {
            if covers(&cert_pem, names) {
                return Ok(CertPair { cert_pem, key_pem });
            }
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for n in names {
            params.subject_alt_names.push(match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into()?),
            });
        }
        params.distinguished_name = dn("kube-apiserver", &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let pair = self.issue(params)?;
        write_private(&key_path, pair.key_pem.as_bytes())?;
        write_private(&cert_path, pair.cert_pem.as_bytes())?;
        Ok(pair)
    }

    /// A client certificate for user `cn` in `groups`, reused from `<file>.crt` if it names them.
    pub fn client(&self, file: &str, cn: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
        let (cert_path, key_path) =
            (self.dir.join(format!("{file}.crt")), self.dir.join(format!("{file}.key")));
        if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path), read(&key_path)) {
            if subject_of_pem(&cert_pem).is_some_and(|(c, g)| c == cn && g == groups) {
                return Ok(CertPair { cert_pem, key_pem });
            }
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn(cn, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let pair = self.issue(params)?;
        write_private(&key_path, pair.key_pem.as_bytes())?;
        write_private(&cert_path, pair.cert_pem.as_bytes())?;
        Ok(pair)
    }
}

fn dn(cn: &str, orgs: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn covers(cert_pem: &str, names: &[String]) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else { return false };
    let Ok(cert) = pem.parse_x509() else { return false };
    let Ok(Some(san)) = cert.subject_alternative_name() else { return false };
    let have: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.iter().all(|n| have.contains(n))
}

/// (CN, O values) of a DER certificate: how upstream's x509 authenticator names a user and groups.
pub fn subject_of_der(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((cn, groups))
}

fn subject_of_pem(pem: &str) -> Option<(String, Vec<String>)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    subject_of_der(&pem.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_server_and_client_certs_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let names =
            vec!["127.0.0.1".to_string(), "localhost".to_string(), "kubernetes.default.svc".to_string()];
        let server = pki.serving("apiserver", &names).unwrap();
        let admin = pki.client("admin", "kubernetes-admin", &["system:masters"]).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(admin.cert_pem.as_bytes()).unwrap();
        assert_eq!(
            subject_of_der(&pem.contents),
            Some(("kubernetes-admin".into(), vec!["system:masters".into()]))
        );
        // A second start reuses everything.
        let again = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(again.ca.cert_pem, pki.ca.cert_pem);
        assert_eq!(again.serving("apiserver", &names).unwrap().cert_pem, server.cert_pem);
        assert_eq!(
            again.client("admin", "kubernetes-admin", &["system:masters"]).unwrap().cert_pem,
            admin.cert_pem
        );
        // A new SAN means a new serving certificate.
        let more = [names.clone(), vec!["127.96.0.1".to_string()]].concat();
        assert_ne!(again.serving("apiserver", &more).unwrap().cert_pem, server.cert_pem);
        #[cfg(unix)]
        for f in ["ca.key", "ca.crt", "apiserver.key", "admin.key"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}
