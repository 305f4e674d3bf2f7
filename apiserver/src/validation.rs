//! Name and field validation with upstream's messages (k8s.io/apimachinery/pkg/util/validation).

use crate::error::Cause;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";

fn is_label(s: &str, first_alpha: bool) -> bool {
    let b = s.as_bytes();
    let ok_inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let ok_end = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            (if first_alpha { f.is_ascii_lowercase() } else { ok_end(f) })
                && ok_end(l)
                && b.iter().all(ok_inner)
        }
        _ => false,
    }
}

/// RFC 1123 label: namespaces, most label-like names. Empty means valid.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_label(s, false) {
        errs.push(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '{DNS1123_LABEL_FMT}')"
        ));
    }
    errs
}

/// RFC 1123 subdomain: most object names.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if s.is_empty() || !s.split('.').all(|part| is_label(part, false)) {
        errs.push(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '{DNS1123_SUBDOMAIN_FMT}')"
        ));
    }
    errs
}

/// RFC 1035 label: service names.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_label(s, true) {
        errs.push(format!(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"
        ));
    }
    errs
}

/// Path-segment names (events): anything but `.`/`..` and names with `/` or `%`.
pub fn path_segment(s: &str) -> Vec<String> {
    match s {
        "." | ".." => vec![format!("may not be '{s}'")],
        _ if s.contains('/') => vec!["may not contain '/'".to_string()],
        _ if s.contains('%') => vec!["may not contain '%'".to_string()],
        _ => Vec::new(),
    }
}

/// Causes for an invalid `metadata.name` (or `metadata.generateName` prefix).
pub fn name_causes(field: &str, name: &str, check: fn(&str) -> Vec<String>) -> Vec<Cause> {
    check(name).into_iter().map(|msg| Cause::invalid(field, format!("\"{name}\""), &msg)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("nginx-3449338310-140d3").is_empty());
        assert!(dns1123_subdomain("a.b.c").is_empty());
        assert!(!dns1123_subdomain("Bad_Name").is_empty());
        assert!(!dns1123_subdomain("").is_empty());
        assert!(dns1123_label("kube-system").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(dns1035_label("nginx-svc").is_empty());
    }
}
