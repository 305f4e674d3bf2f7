//! Selector errors, formatted as upstream formats them.

use super::*;

// ---------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------

/// Every way a label or field selector can be rejected. `Display` is upstream's message; the API
/// server puts it, unchanged, in a 400 BadRequest Status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector string breaks the grammar between requirements.
    #[error("{0}")]
    LabelSyntax(String),
    /// One requirement of a label selector string failed to parse or validate (upstream wraps both
    /// kinds of failure in the same prefix).
    #[error("unable to parse requirement: {0}")]
    Requirement(String),
    /// A requirement built from structured input (`metav1.LabelSelector`, `Requirement::new`) is
    /// invalid; upstream returns the bare aggregated field errors, without a prefix.
    #[error("{0}")]
    InvalidRequirement(FieldErrors),
    /// A `matchExpressions[].operator` other than In, NotIn, Exists, DoesNotExist.
    #[error("{} is not a valid label selector operator", go_quote(.0))]
    InvalidOperator(String),
    /// A field selector term with no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    FieldSyntax { selector: String, term: String },
    /// A backslash in a field selector value not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscapeSequence(String),
    /// A bare `,` or `=` in a field selector value. Upstream formats the rune with `%v`, which prints
    /// its code point (`61` for `=`), so we do too.
    #[error("invalid field selector: unescaped character in value: {}", u32::from(*.0))]
    UnescapedRune(char),
    /// A field selector key the resource does not support.
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
}

/// The value an upstream `field.Error` reports as bad; it decides how the value is printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadValue {
    /// Printed Go-quoted (`%q`).
    Str(String),
    /// A `[]string`, printed as Go's `%#v` does.
    List(Vec<String>),
}

/// One upstream `field.Error` of type Invalid: `<field>: Invalid value: <value>: <detail>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub bad_value: BadValue,
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: Invalid value: ", self.field)?;
        match &self.bad_value {
            BadValue::Str(s) => f.write_str(&go_quote(s))?,
            // Only structured input reaches a list-valued error, and there upstream copies the values
            // with `append([]string(nil), ...)`, so an empty list is a nil slice.
            BadValue::List(v) if v.is_empty() => f.write_str("[]string(nil)")?,
            BadValue::List(v) => {
                let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
                write!(f, "[]string{{{}}}", items.join(", "))?;
            }
        }
        write!(f, ": {}", self.detail)
    }
}

/// An upstream aggregate of field errors: one error prints bare, several print as `[a, b]` with
/// duplicate messages dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut seen: Vec<String> = Vec::new();
        for e in &self.0 {
            let msg = e.to_string();
            if !seen.contains(&msg) {
                seen.push(msg);
            }
        }
        if seen.len() == 1 {
            f.write_str(&seen.concat())
        } else if seen.is_empty() {
            Ok(())
        } else {
            write!(f, "[{}]", seen.join(", "))
        }
    }
}

/// Go's `strconv.Quote`, which upstream's `%q` uses: it differs from Rust's `{:?}` on control
/// characters, and the messages must match byte for byte.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
