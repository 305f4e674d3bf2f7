//! Field selectors.

use super::*;

// ---------------------------------------------------------------------------------------------------
// Field selector
// ---------------------------------------------------------------------------------------------------

/// A field selector comparison. Upstream keeps `==` and `=` as the same term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    Equals,
    NotEquals,
}

/// One `field=value` / `field!=value` term, with the value unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

/// A field selector: the AND of its terms, in upstream's order (terms sorted as raw text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldRequirement>,
}

/// Split on commas not escaped by a backslash; the backslashes stay (values are unescaped later).
pub(crate) fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(s.get(start..i).unwrap_or(""));
            start = i + 1;
        }
    }
    terms.push(s.get(start..).unwrap_or(""));
    terms
}

/// Split a term at the first operator. The key cannot be escaped, so the first `!=`, `==` or `=`
/// wins; `==` is tried before `=` so that it leaves no `=` on the value.
pub(crate) fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = term.get(i..)?;
        for (op, kind) in
            [("!=", FieldOperator::NotEquals), ("==", FieldOperator::Equals), ("=", FieldOperator::Equals)]
        {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((term.get(..i)?, kind, value));
            }
        }
    }
    None
}

/// Upstream `fields.UnescapeValue`: `\\`, `\,`, `\=` are the only escapes, and a bare `,` or `=`
/// is an error.
pub(crate) fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => return Err(SelectorError::InvalidEscapeSequence(format!("\\{c}"))),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedRune(c)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscapeSequence("\\".into()));
    }
    Ok(out)
}

/// Upstream `fields.EscapeValue`, the inverse of `unescape_value`.
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl FieldSelector {
    /// Parse a `fieldSelector` query string (upstream `fields.ParseSelector`). Keys are not checked
    /// here; see `validate`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_term(part) else {
                return Err(SelectorError::FieldSyntax { selector: s.into(), term: part.into() });
            };
            terms.push(FieldRequirement { field: field.into(), operator, value: unescape_value(raw)? });
        }
        Ok(FieldSelector { terms })
    }

    pub fn terms(&self) -> &[FieldRequirement] {
        &self.terms
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Reject keys outside `metadata.name`, `metadata.namespace` and `allowed` (a resource's
    /// `field_selectors`), reporting the first in term order, as upstream's field label conversion.
    pub fn validate(&self, allowed: &[&str]) -> Result<(), SelectorError> {
        for t in &self.terms {
            let f = t.field.as_str();
            if f != "metadata.name" && f != "metadata.namespace" && !allowed.contains(&f) {
                return Err(SelectorError::FieldLabelNotSupported(t.field.clone()));
            }
        }
        Ok(())
    }

    /// `validate` against a resource's field selectors.
    pub fn validate_for(&self, def: &ResourceDef) -> Result<(), SelectorError> {
        self.validate(def.field_selectors)
    }

    /// Whether an object (its JSON) satisfies every term; see `field_value` for how a path reads.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let actual = field_value(obj, &t.field);
            match t.operator {
                FieldOperator::Equals => actual == t.value,
                FieldOperator::NotEquals => actual != t.value,
            }
        })
    }

    /// The value `field` must equal, if some `=` term pins it (upstream `RequiresExactMatch`; e.g.
    /// `metadata.name` turns a list into a get, `spec.nodeName` a kubelet's watch).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// Upstream's string: terms joined by `,`, `==` written `=`, values re-escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", t.field, escape_field_value(&t.value))?;
        }
        Ok(())
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

pub(crate) fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, seg| v.get(seg))
}

pub(crate) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// core/v1 and events.k8s.io/v1 Events share storage, and upstream converts a field label between
/// the two versions, so a selector written for either form must read the object in either form.
pub(crate) fn event_alias(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("regarding.") {
        return Some(format!("involvedObject.{rest}"));
    }
    if let Some(rest) = path.strip_prefix("involvedObject.") {
        return Some(format!("regarding.{rest}"));
    }
    match path {
        "reportingController" => Some("reportingComponent".into()),
        "reportingComponent" => Some("reportingController".into()),
        _ => None,
    }
}

/// The string a field selector compares for `path` on an object's JSON, as upstream's per-resource
/// field sets compute it: scalars as text (`true`/`false`, decimal numbers); a missing value is its
/// Go zero value, "" for strings but "false" for the boolean fields and "0" for the integer ones
/// (so `spec.unschedulable=false` selects a node that never set it, as upstream).
pub fn field_value(obj: &Value, path: &str) -> String {
    let read = |p: &str| lookup(obj, p).and_then(scalar);
    let found = match path {
        // Upstream events: `source` is source.component, falling back to the reporting controller.
        "source" => ["source.component", "reportingComponent", "reportingController"]
            .into_iter()
            .filter_map(read)
            .find(|s| !s.is_empty()),
        // Upstream pods read the first of status.podIPs; status.podIP mirrors it in v1 JSON.
        "status.podIP" => read("status.podIP").or_else(|| obj.pointer("/status/podIPs/0/ip").and_then(scalar)),
        // Upstream Jobs name `status.succeeded` `status.successful` in their field set.
        "status.successful" => read("status.succeeded"),
        _ => read(path).or_else(|| event_alias(path).and_then(|a| read(&a))),
    };
    found.unwrap_or_else(|| {
        match path {
            "spec.unschedulable" | "spec.hostNetwork" => "false",
            "status.replicas" | "status.successful" => "0",
            _ => "",
        }
        .to_string()
    })
}
