//! Query parameters, parsed once, with upstream's errors for values that do not parse.
//!
//! Like Go's `url.Values`, a key may repeat: [`Params::get`] is `Values.Get`, the *first* value;
//! [`Params::all`] every value, in order (the list-valued options, `dryRun`).

use std::collections::HashMap;

use crate::error::{ApiError, ApiResult, Cause};

/// The query of one request: each key's values in the order given.
#[derive(Clone, Debug, Default)]
pub struct Params(HashMap<String, Vec<String>>);

/// The only `dryRun` value upstream accepts (`metav1.DryRunAll`).
pub const DRY_RUN_ALL: &str = "All";

impl Params {
    pub fn parse(query: Option<&str>) -> ApiResult<Params> {
        let Some(q) = query else { return Ok(Params::default()) };
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in serde_urlencoded_pairs(q)? {
            map.entry(k).or_default().push(v);
        }
        Ok(Params(map))
    }

    /// A copy without the given keys.
    pub fn clone_without(&self, keys: &[&str]) -> Params {
        Params(
            self.0
                .iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, vs)| (k.clone(), vs.clone()))
                .collect(),
        )
    }

    /// Replaces every value of `k` with `v`.
    pub fn set(&mut self, k: &str, v: &str) {
        self.0.insert(k.to_string(), vec![v.to_string()]);
    }

    /// The first value of `k`, as Go's `url.Values.Get`.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|vs| vs.first()).map(String::as_str)
    }

    /// Every value of `k`, in the order given.
    pub fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether a write is a dry run: `?dryRun=All`, validated as upstream's `ValidateDryRun` for the
    /// request's options kind (`CreateOptions`, `UpdateOptions`, `PatchOptions`, `DeleteOptions`).
    /// The one parser of `dryRun` for every verb; [`dry_run_of`] checks a list from a body.
    pub fn dry_run(&self, options_kind: &str) -> ApiResult<bool> {
        dry_run_of(options_kind, self.all("dryRun"))
    }

    pub fn bool(&self, k: &str) -> ApiResult<bool> {
        match self.get(k) {
            None | Some("") | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(v) => {
                Err(ApiError::bad_request(format!("invalid boolean value \"{v}\" for query parameter {k}")))
            }
        }
    }

    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid integer value \"{v}\" for query parameter {k}"))
            }),
        }
    }
}

/// Validates a `dryRun` list as upstream's `ValidateDryRun` (any value but `All` is 422 Invalid on
/// the options kind, group `meta.k8s.io`) and tells whether it asks for a dry run.
pub fn dry_run_of<S: AsRef<str>>(options_kind: &str, values: &[S]) -> ApiResult<bool> {
    if values.iter().any(|v| v.as_ref() != DRY_RUN_ALL) {
        let listed = values.iter().map(|v| format!("{:?}", v.as_ref())).collect::<Vec<_>>().join(", ");
        let cause = Cause::not_supported("dryRun", format!("[]string{{{listed}}}"), &[DRY_RUN_ALL]);
        return Err(ApiError::invalid_options(options_kind, cause));
    }
    Ok(!values.is_empty())
}

/// `a=b&c=d` with percent-decoding and `+` as space, as Go's url.ParseQuery.
fn serde_urlencoded_pairs(q: &str) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

fn decode(s: &str) -> ApiResult<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => out.push(b),
                    None => return Err(ApiError::bad_request(format!("invalid URL escape in query \"{s}\""))),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let p = Params::parse(Some("labelSelector=app%3Dnginx%2Ctier+in+(a)&limit=5&watch=true")).unwrap();
        assert_eq!(p.get("labelSelector"), Some("app=nginx,tier in (a)"));
        assert_eq!(p.int("limit").unwrap(), Some(5));
        assert!(p.bool("watch").unwrap());
        assert_eq!(Params::parse(Some("limit=abc")).unwrap().int("limit").unwrap_err().code, 400);
        assert_eq!(Params::parse(Some("a=%zz")).unwrap_err().code, 400);
    }

    #[test]
    fn the_first_of_repeated_keys_wins_like_url_values_get() {
        let p = Params::parse(Some("limit=5&limit=7&watch=true&watch=false&x")).unwrap();
        assert_eq!(p.int("limit").unwrap(), Some(5));
        assert!(p.bool("watch").unwrap());
        assert_eq!(p.all("limit"), ["5", "7"]);
        assert_eq!(p.get("x"), Some(""));
        assert!(p.all("absent").is_empty());
        let mut p = p;
        p.set("limit", "9");
        assert_eq!(p.all("limit"), ["9"]);
    }

    #[test]
    fn dry_run_accepts_only_all() {
        assert!(!Params::parse(None).unwrap().dry_run("CreateOptions").unwrap());
        assert!(Params::parse(Some("dryRun=All")).unwrap().dry_run("CreateOptions").unwrap());
        assert!(Params::parse(Some("dryRun=All&dryRun=All")).unwrap().dry_run("PatchOptions").unwrap());
        for q in ["dryRun=all", "dryRun=", "dryRun=All&dryRun=Server"] {
            let e = Params::parse(Some(q)).unwrap().dry_run("UpdateOptions").unwrap_err();
            assert_eq!((e.code, e.reason), (422, "Invalid"), "{q}");
        }
        let e = Params::parse(Some("dryRun=foo")).unwrap().dry_run("DeleteOptions").unwrap_err();
        assert_eq!(
            e.message,
            "DeleteOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"foo\"}: supported values: \"All\""
        );
        let d = e.details.unwrap();
        assert_eq!((d["group"].as_str(), d["kind"].as_str()), (Some("meta.k8s.io"), Some("DeleteOptions")));
        assert_eq!(d["causes"][0]["field"], "dryRun");
    }
}
