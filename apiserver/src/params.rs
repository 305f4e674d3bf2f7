//! Query parameters, parsed once, with upstream's errors for values that do not parse.

use std::collections::HashMap;

use crate::error::{ApiError, ApiResult};

/// The query of one request.
#[derive(Clone, Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>) -> ApiResult<Params> {
        let Some(q) = query else { return Ok(Params::default()) };
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(q)?;
        Ok(Params(pairs.into_iter().collect()))
    }

    /// A copy without the given keys.
    pub fn clone_without(&self, keys: &[&str]) -> Params {
        Params(
            self.0
                .iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.0.insert(k.to_string(), v.to_string());
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
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
}
