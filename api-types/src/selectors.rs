//! Label and field selectors, as upstream kube-apiserver parses, validates, prints and evaluates them
//! (k8s.io/apimachinery `pkg/labels`, `pkg/fields`, and `metav1.LabelSelectorAsSelector`).
//!
//! Error texts are upstream's (Kubernetes 1.33, the k8s-openapi feature this workspace pins) because
//! kubectl and client-go users read them verbatim inside 400 BadRequest Statuses, and tests in the
//! wild grep for them. Quirks are kept on purpose: the `<nil>` field path on a bad key in a selector
//! string, the double space in `'MyName',  or`, a rune printed as its code point.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

use crate::resources::ResourceDef;

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
fn go_quote(s: &str) -> String {
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

// ---------------------------------------------------------------------------------------------------
// Label key and value validation (k8s.io/apimachinery/pkg/util/validation, 1.33 wording)
// ---------------------------------------------------------------------------------------------------

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start \
                                  and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, \
                               '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                                     characters, '-' or '.', and must start and end with an alphanumeric \
                                     character";
const NAME_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

/// Upstream's `RegexError`, including its `'x',  or 'y'` double space, which users see verbatim.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{ex}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, anchored: dot-separated
/// non-empty labels of lowercase alphanumerics and inner dashes. (Upstream does not cap each label's
/// length here, only the whole.)
fn is_dns1123_subdomain(s: &str) -> bool {
    let lower_alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.split('.').all(|label| {
        let b = label.as_bytes();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                lower_alnum(first) && lower_alnum(last) && b.iter().all(|c| lower_alnum(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

/// Upstream's `IsQualifiedName`: why `key` is not a valid label key (empty when it is).
pub fn label_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > SUBDOMAIN_MAX {
                    errs.push(format!("prefix part {}", max_len_error(SUBDOMAIN_MAX)));
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, &["example.com"])
                    ));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > NAME_MAX {
        errs.push(format!("name part {}", max_len_error(NAME_MAX)));
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    errs
}

/// Upstream's `IsValidLabelValue`: why `value` is not a valid label value (empty when it is).
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > NAME_MAX {
        errs.push(max_len_error(NAME_MAX));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(LABEL_VALUE_ERR, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    errs
}

// ---------------------------------------------------------------------------------------------------
// Label selector requirements
// ---------------------------------------------------------------------------------------------------

/// A label selector operator (upstream `selection.Operator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// Upstream's name of the operator (`selection.Operator` string).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One `key op values` term of a label selector. Built only through validation (`Requirement::new`,
/// parsing, conversion) or from a label set, so its invariants hold: In/NotIn have values,
/// (Not)Equals/Gt/Lt have exactly one, Exists/DoesNotExist none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

/// Upstream `NewRequirement`'s checks, in its order (key, operator arity, Gt/Lt integers, values).
fn requirement_errors(key: &str, op: Operator, values: &[String]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let key_errs = label_key_errors(key);
    if !key_errs.is_empty() {
        errs.push(FieldError {
            field: "key".into(),
            bad_value: BadValue::Str(key.into()),
            detail: key_errs.join("; "),
        });
    }
    let arity = |detail: &str| FieldError {
        field: "values".into(),
        bad_value: BadValue::List(values.to_vec()),
        detail: detail.into(),
    };
    match op {
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                errs.push(arity("for 'in', 'notin' operators, values set can't be empty"));
            }
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
            if values.len() != 1 {
                errs.push(arity("exact-match compatibility requires one single value"));
            }
        }
        Operator::Exists | Operator::DoesNotExist => {
            if !values.is_empty() {
                errs.push(arity("values set must be empty for exists and does not exist"));
            }
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errs.push(arity("for 'Gt', 'Lt' operators, exactly one value is required"));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(FieldError {
                        field: format!("values[{i}]"),
                        bad_value: BadValue::Str(v.clone()),
                        detail: "for 'Gt', 'Lt' operators, the value must be an integer".into(),
                    });
                }
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let value_errs = label_value_errors(v);
        if !value_errs.is_empty() {
            errs.push(FieldError {
                field: format!("values[{i}][{key}]"),
                bad_value: BadValue::Str(v.clone()),
                detail: value_errs.join("; "),
            });
        }
    }
    errs
}

impl Requirement {
    /// Upstream `NewRequirement`: validates the key, the number of values for the operator, Gt/Lt
    /// integers, and each value.
    pub fn new(key: impl Into<String>, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let key = key.into();
        let errs = requirement_errors(&key, operator, &values);
        if errs.is_empty() {
            Ok(Requirement { key, operator, values })
        } else {
            Err(SelectorError::InvalidRequirement(FieldErrors(errs)))
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values in the order given (parsing yields them sorted and deduplicated, as upstream).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement. NotIn/!= match when the key is absent; Gt/Lt
    /// need the key present with an integer value.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let has = |v: &String| self.values.contains(v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => labels.get(&self.key).is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !labels.get(&self.key).is_some_and(has),
            Operator::Exists => labels.contains_key(&self.key),
            Operator::DoesNotExist => !labels.contains_key(&self.key),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(actual)) = labels.get(&self.key).map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Ok(bound) = bound.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Upstream's `Requirement.String`: `!k`, `k`, `k=v`, `k==v`, `k!=v`, `k>v`, `k<v`,
    /// `k in (a,b)`, `k notin (a,b)`, with set values sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// Label selector string lexer and parser (a port of upstream's, so that every accepted input, every
// rejected one, and every error message agree with kube-apiserver)
// ---------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Error,
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(lit: &[u8]) -> Option<Token> {
    Some(match lit {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::DoesNotExist,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"in" => Token::In,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"notin" => Token::NotIn,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Byte lexer. Like upstream's, `read` returns 0 both at the end and for a NUL byte in the input, so
/// a NUL ends a token (or the whole selector, at a token start) exactly as it does there.
struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn read(&mut self) -> u8 {
        match self.s.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => 0,
        }
    }

    fn unread(&mut self) {
        self.pos = self.pos.saturating_sub(1);
    }

    fn scan_id_or_keyword(&mut self) -> (Token, String) {
        let mut buf = Vec::new();
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if is_special(ch) || is_whitespace(ch) {
                self.unread();
                break;
            }
            buf.push(ch);
        }
        (keyword(&buf).unwrap_or(Token::Identifier), lossy(&buf))
    }

    /// Longest run of special characters that still spells an operator (`!=` not `!` `=`).
    fn scan_special_symbol(&mut self) -> (Token, String) {
        let mut buf = Vec::new();
        let mut last: Option<(Token, String)> = None;
        loop {
            let ch = self.read();
            if ch == 0 {
                break;
            }
            if !is_special(ch) {
                self.unread();
                break;
            }
            buf.push(ch);
            if let Some(tok) = keyword(&buf) {
                last = Some((tok, lossy(&buf)));
            } else if last.is_some() {
                self.unread();
                break;
            }
        }
        last.unwrap_or_else(|| (Token::Error, format!("error expected: keyword found '{}'", lossy(&buf))))
    }

    fn lex(&mut self) -> (Token, String) {
        let mut ch = self.read();
        while is_whitespace(ch) {
            ch = self.read();
        }
        if ch == 0 {
            return (Token::EndOfString, String::new());
        }
        self.unread();
        if is_special(ch) {
            self.scan_special_symbol()
        } else {
            self.scan_id_or_keyword()
        }
    }
}

/// Where the parser is: `in`/`notin` are operators after a key but plain words among values (so
/// `x in (in)` and `x=notin` parse).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

impl Parser {
    fn new(s: &str) -> Self {
        let mut lexer = Lexer { s: s.as_bytes(), pos: 0 };
        let mut items = Vec::new();
        loop {
            let item = lexer.lex();
            let end = item.0 == Token::EndOfString;
            items.push(item);
            if end {
                break;
            }
        }
        Parser { items, position: 0 }
    }

    fn adjust(tok: Token, ctx: Ctx) -> Token {
        match tok {
            Token::In | Token::NotIn if ctx == Ctx::Values => Token::Identifier,
            t => t,
        }
    }

    // Past the end the parser sees end-of-string forever; upstream never reads that far, but this
    // keeps us panic-free regardless.
    fn lookahead(&self, ctx: Ctx) -> (Token, String) {
        match self.items.get(self.position) {
            Some((tok, lit)) => (Self::adjust(*tok, ctx), lit.clone()),
            None => (Token::EndOfString, String::new()),
        }
    }

    fn consume(&mut self, ctx: Ctx) -> (Token, String) {
        let item = self.lookahead(ctx);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(self.parse_requirement().map_err(SelectorError::Requirement)?);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(SelectorError::LabelSyntax(format!(
                                    "found '{l2}', expected: identifier after ','"
                                )));
                            }
                        }
                        _ => {
                            return Err(SelectorError::LabelSyntax(format!(
                                "found '{l}', expected: ',' or 'end of string'"
                            )))
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(SelectorError::LabelSyntax(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    )))
                }
            }
        }
    }

    /// Errors are the message after upstream's `unable to parse requirement: ` prefix.
    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        let build = |key: String, op, values: Vec<String>| match Requirement::new(key, op, values) {
            Ok(r) => Ok(r),
            Err(SelectorError::InvalidRequirement(errs)) => Err(errs.to_string()),
            Err(other) => Err(other.to_string()),
        };
        // A leading `!` makes DoesNotExist whatever follows; what follows then fails as trailing junk.
        if let Some(op) = inferred {
            return build(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        // Set semantics, as upstream's sets.String: sorted and deduplicated.
        build(key, op, values.into_iter().collect())
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = label_key_errors(&lit);
        if !errs.is_empty() {
            // Upstream validates against a nil field path here, which prints as `<nil>`.
            let e =
                FieldError { field: "<nil>".into(), bad_value: BadValue::Str(lit), detail: errs.join("; ") };
            return Err(e.to_string());
        }
        let (next, _) = self.lookahead(Ctx::Values);
        if (next == Token::EndOfString || next == Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: in, notin, =, ==, !=, gt, lt")),
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.parse_identifiers_list()?;
                if self.consume(Ctx::Values).0 != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            // `()` is the set holding only the empty value.
            Token::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A comma-separated list where an empty slot (`(,a)`, `(a,,b)`, `(a,)`) is the empty value.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit);
                    let (t2, l2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    match self.lookahead(Ctx::Values).0 {
                        Token::ClosedPar => {
                            set.insert(String::new());
                            return Ok(set);
                        }
                        Token::Comma => {
                            set.insert(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    /// The one value after `=`, `==`, `!=`, `>`, `<`; nothing before `,` or the end is "".
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Token::EndOfString || tok == Token::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Token::Identifier {
            Ok(BTreeSet::from([lit]))
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Label selector
// ---------------------------------------------------------------------------------------------------

/// A label selector: the AND of its requirements, kept sorted by key (stable) as upstream does, so
/// `Display` is canonical. `Default` is the empty selector, which matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    // Upstream's `labels.Nothing()`: what a nil `*metav1.LabelSelector` converts to.
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every label set (an empty `labelSelector`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches nothing (upstream `labels.Nothing()`; prints as "").
    pub fn nothing() -> Self {
        LabelSelector { requirements: Vec::new(), nothing: true }
    }

    /// Parse a `labelSelector` query string (upstream `labels.Parse`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let requirements = Parser::new(s).parse()?;
        Ok(Self::from_requirements(requirements))
    }

    /// The AND of `requirements`, sorted by key.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements, nothing: false }
    }

    /// `key=value` for every entry, unvalidated, as upstream `SelectorFromSet` (used for the plain
    /// map selectors of Services and ReplicationControllers). An empty set matches everything.
    pub fn from_set(set: &BTreeMap<String, String>) -> Self {
        let requirements = set
            .iter()
            .map(|(k, v)| Requirement { key: k.clone(), operator: Operator::Equals, values: vec![v.clone()] })
            .collect();
        LabelSelector { requirements, nothing: false }
    }

    /// Upstream `metav1.LabelSelectorAsSelector` on a non-nil selector: matchLabels become `=`,
    /// matchExpressions In/NotIn/Exists/DoesNotExist; an empty selector matches everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k.clone(), Operator::Equals, vec![v.clone()])?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::InvalidOperator(other.to_string())),
            };
            requirements.push(Requirement::new(expr.key.clone(), op, expr.values.clone().unwrap_or_default())?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Like `from_k8s`, but an absent selector matches nothing, as upstream converts a nil pointer
    /// (what workload controllers rely on so that a selector-less object adopts no pods).
    pub fn from_k8s_opt(selector: Option<&metav1::LabelSelector>) -> Result<Self, SelectorError> {
        match selector {
            Some(s) => Self::from_k8s(s),
            None => Ok(Self::nothing()),
        }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the selector does not restrict anything (matches every label set).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for `nothing()`.
    pub fn matches_nothing(&self) -> bool {
        self.nothing
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The one value `key` must have, when the first requirement on `key` is `=`, `==` or a one-value
    /// `in` (upstream `RequiresExactMatch`; lets a caller narrow a list before matching).
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream's canonical string: requirements joined by `,` in key order; "" for everything and
    /// for nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&metav1::LabelSelector> for LabelSelector {
    type Error = SelectorError;

    fn try_from(selector: &metav1::LabelSelector) -> Result<Self, Self::Error> {
        Self::from_k8s(selector)
    }
}

/// An object's `metadata.labels` (non-string values, which a valid object never has, are skipped).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

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
fn split_terms(s: &str) -> Vec<&str> {
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
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
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
fn unescape_value(s: &str) -> Result<String, SelectorError> {
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

fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, seg| v.get(seg))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// core/v1 and events.k8s.io/v1 Events share storage, and upstream converts a field label between
/// the two versions, so a selector written for either form must read the object in either form.
fn event_alias(path: &str) -> Option<String> {
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
        _ => read(path).or_else(|| event_alias(path).and_then(|a| read(&a))),
    };
    found.unwrap_or_else(|| {
        match path {
            "spec.unschedulable" | "spec.hostNetwork" => "false",
            "status.replicas" => "0",
            _ => "",
        }
        .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAME_PART_ERR: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
        start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used \
        for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
    const VALUE_ERR: &str =
        "a valid label must be an empty string or consist of alphanumeric characters, '-', \
        '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
        '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn parse_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(sel) => panic!("{s:?} parsed as {sel}"),
            Err(e) => e.to_string(),
        }
    }

    fn one(s: &str) -> (String, Operator, Vec<String>) {
        let sel = parse(s);
        assert_eq!(sel.requirements().len(), 1, "{s}");
        let r = &sel.requirements()[0];
        (r.key().to_string(), r.operator(), r.values().to_vec())
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_each_operator() {
        assert_eq!(one("a=b"), ("a".into(), Operator::Equals, strs(&["b"])));
        assert_eq!(one("a==b"), ("a".into(), Operator::DoubleEquals, strs(&["b"])));
        assert_eq!(one("a!=b"), ("a".into(), Operator::NotEquals, strs(&["b"])));
        assert_eq!(one("a in (c,b)"), ("a".into(), Operator::In, strs(&["b", "c"])));
        assert_eq!(one("a notin (b)"), ("a".into(), Operator::NotIn, strs(&["b"])));
        assert_eq!(one("a"), ("a".into(), Operator::Exists, vec![]));
        assert_eq!(one("!a"), ("a".into(), Operator::DoesNotExist, vec![]));
        assert_eq!(one("a>5"), ("a".into(), Operator::GreaterThan, strs(&["5"])));
        assert_eq!(one("a<5"), ("a".into(), Operator::LessThan, strs(&["5"])));
        assert_eq!(one("example.com/app=x"), ("example.com/app".into(), Operator::Equals, strs(&["x"])));
        // An empty value is allowed after any exact-match operator.
        assert_eq!(one("a="), ("a".into(), Operator::Equals, strs(&[""])));
        assert_eq!(one("a!="), ("a".into(), Operator::NotEquals, strs(&[""])));
    }

    #[test]
    fn set_values_are_sorted_deduplicated_and_allow_empty_slots() {
        assert_eq!(one("x in (foo,,baz)").2, strs(&["", "baz", "foo"]));
        assert_eq!(one("x in (b,a,b)").2, strs(&["a", "b"]));
        assert_eq!(one("x notin ()").2, strs(&[""]));
        assert_eq!(one("x in (,a)").2, strs(&["", "a"]));
        assert_eq!(one("x in (a,)").2, strs(&["", "a"]));
        // `in`/`notin` are plain words among values, and as keys.
        assert_eq!(one("x in (in,notin)").2, strs(&["in", "notin"]));
        assert_eq!(one("x=notin").2, strs(&["notin"]));
        assert_eq!(one("in=a").0, "in");
    }

    #[test]
    fn commas_inside_parentheses_do_not_split_requirements_and_whitespace_is_free() {
        let sel = parse("  tier  in  ( b , a ) ,\tapp = web ,\n!gone , x notin(y,z)");
        let got: Vec<(String, Operator)> =
            sel.requirements().iter().map(|r| (r.key().to_string(), r.operator())).collect();
        assert_eq!(
            got,
            vec![
                ("app".into(), Operator::Equals),
                ("gone".into(), Operator::DoesNotExist),
                ("tier".into(), Operator::In),
                ("x".into(), Operator::NotIn),
            ]
        );
        assert_eq!(sel.requirements()[2].values(), strs(&["a", "b"]).as_slice());
        // `!=` is one operator, not `!` then `=`; `>=` is `>` then a junk `=`.
        assert_eq!(one("a!=b").1, Operator::NotEquals);
        assert_eq!(parse_err("a>=1"), "unable to parse requirement: found '=', expected: identifier");
        assert!(parse("").is_empty());
        assert!(parse("   ").is_empty());
    }

    #[test]
    fn syntax_errors_are_upstreams() {
        let cases = [
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
            ("a in (b,", "unable to parse requirement: found '', expected: ',', or identifier"),
            ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
            ("a in (b))", "found ')', expected: ',' or 'end of string'"),
            ("a in b)", "unable to parse requirement: found 'b' expected: '('"),
            ("a in", "unable to parse requirement: found '' expected: '('"),
            ("a notin (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a=(", "unable to parse requirement: found '(', expected: identifier"),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
            ("!", "unable to parse requirement: found '', expected: identifier"),
            ("a,", "found '', expected: identifier after ','"),
            ("a,,b", "found ',', expected: identifier after ','"),
            (",a", "found ',', expected: !, identifier, or 'end of string'"),
            ("=a", "found '=', expected: !, identifier, or 'end of string'"),
            ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_err(input), want, "{input:?}");
        }
    }

    #[test]
    fn key_and_value_validation_errors_are_upstreams() {
        assert_eq!(
            parse_err("-bad=x"),
            format!("unable to parse requirement: <nil>: Invalid value: \"-bad\": {NAME_PART_ERR}")
        );
        assert_eq!(
            parse_err("app=-bad"),
            format!("unable to parse requirement: values[0][app]: Invalid value: \"-bad\": {VALUE_ERR}")
        );
        // Several bad values aggregate, in sorted value order.
        assert_eq!(
            parse_err("app in (-y,-x)"),
            format!(
                "unable to parse requirement: [values[0][app]: Invalid value: \"-x\": {VALUE_ERR}, \
                 values[1][app]: Invalid value: \"-y\": {VALUE_ERR}]"
            )
        );
        assert_eq!(
            parse_err("/a"),
            format!("unable to parse requirement: <nil>: Invalid value: \"/a\": prefix part must be non-empty")
        );
        assert_eq!(
            parse_err("a/"),
            format!(
                "unable to parse requirement: <nil>: Invalid value: \"a/\": name part must be non-empty; \
                 {NAME_PART_ERR}"
            )
        );
        assert!(parse_err("Example.com/a").contains(
            "\"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
             (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ));
        assert!(parse_err("a/b/c").contains(
            "\"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must \
             start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex \
             used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS \
             subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
        let long = "k".repeat(64);
        assert_eq!(
            parse_err(&long),
            format!("unable to parse requirement: <nil>: Invalid value: \"{long}\": name part must be no more than 63 characters")
        );
        assert!(parse(&"k".repeat(63)).matches(&labels(&[(&"k".repeat(63), "")])));
        assert_eq!(
            parse_err(&format!("a={long}")),
            format!("unable to parse requirement: values[0][a]: Invalid value: \"{long}\": must be no more than 63 characters")
        );
        // Non-ASCII is neither a special character nor valid: it fails validation, quoted as Go does.
        assert!(parse_err("a=é").contains("values[0][a]: Invalid value: \"é\": a valid label"));
        assert!(parse_err("a=x\"y").contains("Invalid value: \"x\\\"y\""));
    }

    #[test]
    fn gt_lt_need_an_integer() {
        assert_eq!(
            parse_err("a>b"),
            "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value \
             must be an integer"
        );
        assert_eq!(
            parse_err("a<"),
            "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value \
             must be an integer"
        );
        assert!(parse_err("a>1.5").contains("the value must be an integer"));
        // A negative bound is an integer but not a valid label value, as upstream.
        assert_eq!(
            parse_err("a<-1"),
            format!("unable to parse requirement: values[0][a]: Invalid value: \"-1\": {VALUE_ERR}")
        );
        assert!(parse_err("a>99999999999999999999").contains("the value must be an integer"));
    }

    #[test]
    fn matching() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "7"), ("word", "seven")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("missing=", false),
            ("app in (db,web)", true),
            ("app in (db)", false),
            ("missing in (x)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("n>6", true),
            ("n>7", false),
            ("n<8", true),
            ("n<7", false),
            ("missing>1", false),
            ("word>1", false),
            ("word<1", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("app in (web),!missing,n>0,tier notin (back)", true),
        ];
        for (sel, want) in cases {
            assert_eq!(parse(sel).matches(&l), want, "{sel:?}");
        }
        assert!(!LabelSelector::nothing().matches(&l));
        assert!(!LabelSelector::nothing().matches(&BTreeMap::new()));
        assert!(LabelSelector::everything().matches(&BTreeMap::new()));
        assert!(parse("a in ()").matches(&labels(&[("a", "")])));
        assert!(!parse("a in ()").matches(&labels(&[("a", "x")])));
    }

    #[test]
    fn nul_byte_behaves_as_upstreams_lexer() {
        // A NUL at a token start ends the selector; inside a token it ends just that token.
        assert_eq!(parse("a=b \0 garbage").to_string(), "a=b");
        assert_eq!(parse_err("a=b\0c"), "found 'c', expected: ',' or 'end of string'");
    }

    #[test]
    fn canonical_display() {
        let cases = [
            ("tier in (b,a),app=nginx", "app=nginx,tier in (a,b)"),
            ("  b==1 , a!=2", "a!=2,b==1"),
            ("!z,y,x notin (q,p)", "x notin (p,q),y,!z"),
            ("n>5,m<3", "m<3,n>5"),
            ("a in (,b)", "a in (,b)"),
            ("a=", "a="),
            ("", ""),
        ];
        for (input, want) in cases {
            let sel = parse(input);
            assert_eq!(sel.to_string(), want, "{input:?}");
            // The canonical form parses back to the same selector.
            assert_eq!(parse(want), sel, "{want:?}");
        }
        // Same key twice: stable order keeps input order within the key.
        assert_eq!(parse("a!=2,b=1,a!=1").to_string(), "a!=2,a!=1,b=1");
        assert_eq!(LabelSelector::nothing().to_string(), "");
    }

    fn k8s(labels: &[(&str, &str)], exprs: &[(&str, &str, Option<&[&str]>)]) -> metav1::LabelSelector {
        metav1::LabelSelector {
            match_labels: if labels.is_empty() {
                None
            } else {
                Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
            },
            match_expressions: if exprs.is_empty() {
                None
            } else {
                Some(
                    exprs
                        .iter()
                        .map(|(k, op, vals)| metav1::LabelSelectorRequirement {
                            key: k.to_string(),
                            operator: op.to_string(),
                            values: vals.map(strs),
                        })
                        .collect(),
                )
            },
        }
    }

    #[test]
    fn converts_metav1_label_selector() {
        let sel = LabelSelector::from_k8s(&k8s(
            &[("app", "web")],
            &[
                ("tier", "In", Some(&["front", "back"])),
                ("env", "NotIn", Some(&["prod"])),
                ("canary", "DoesNotExist", None),
                ("team", "Exists", Some(&[])),
            ],
        ))
        .unwrap();
        assert_eq!(sel.to_string(), "app=web,!canary,env notin (prod),team,tier in (back,front)");
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "front"), ("team", "x")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "front"), ("team", "x"), ("canary", "1")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "front"), ("team", "x"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert_eq!(sel.requires_exact_match("app"), Some("web"));
        assert_eq!(sel.requires_exact_match("tier"), None);
        // The string form of a converted selector parses to an equivalent selector.
        assert_eq!(parse(&sel.to_string()).to_string(), sel.to_string());

        let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(&BTreeMap::new()));
        assert_eq!(empty.to_string(), "");
        assert!(LabelSelector::from_k8s_opt(None).unwrap().matches_nothing());
        let via_try: LabelSelector = (&k8s(&[("a", "b")], &[])).try_into().unwrap();
        assert_eq!(via_try.to_string(), "a=b");
    }

    #[test]
    fn metav1_conversion_errors_are_upstreams() {
        let err = |sel: metav1::LabelSelector| LabelSelector::from_k8s(&sel).unwrap_err().to_string();
        assert_eq!(
            err(k8s(&[], &[("a", "Equals", Some(&["b"]))])),
            "\"Equals\" is not a valid label selector operator"
        );
        assert_eq!(
            err(k8s(&[], &[("a", "In", None)])),
            "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            err(k8s(&[], &[("a", "Exists", Some(&["x", "y"]))])),
            "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
        );
        assert_eq!(err(k8s(&[("-bad", "x")], &[])), format!("key: Invalid value: \"-bad\": {NAME_PART_ERR}"));
        assert_eq!(
            err(k8s(&[("a", "-bad")], &[])),
            format!("values[0][a]: Invalid value: \"-bad\": {VALUE_ERR}")
        );
        // Key and value errors together aggregate.
        assert_eq!(
            err(k8s(&[], &[("", "NotIn", Some(&["ok", "-v"]))])),
            format!(
                "[key: Invalid value: \"\": name part must be non-empty; {NAME_PART_ERR}, \
                 values[1][]: Invalid value: \"-v\": {VALUE_ERR}]"
            )
        );
        match Requirement::new("a", Operator::GreaterThan, strs(&["1", "2"])) {
            Err(SelectorError::InvalidRequirement(FieldErrors(errs))) => {
                assert_eq!(errs.len(), 1);
                assert_eq!(errs[0].detail, "for 'Gt', 'Lt' operators, exactly one value is required");
            }
            other => panic!("{other:?}"),
        }
        assert!(Requirement::new("a", Operator::Equals, vec![]).is_err());
    }

    #[test]
    fn from_set_matches_exactly() {
        let sel = LabelSelector::from_set(&labels(&[("b", "2"), ("a", "1")]));
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(sel.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
        assert!(!sel.matches(&labels(&[("a", "1")])));
        assert!(LabelSelector::from_set(&BTreeMap::new()).matches(&BTreeMap::new()));
    }

    #[test]
    fn labels_of_reads_metadata_labels() {
        let obj = json!({"metadata": {"name": "p", "labels": {"app": "web", "weird": 1}}});
        assert_eq!(labels_of(&obj), labels(&[("app", "web")]));
        assert!(labels_of(&json!({"metadata": {"name": "p"}})).is_empty());
        assert!(labels_of(&json!("not an object")).is_empty());
    }

    fn fparse(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn fterms(s: &str) -> Vec<(String, FieldOperator, String)> {
        fparse(s).terms().iter().map(|t| (t.field.clone(), t.operator, t.value.clone())).collect()
    }

    #[test]
    fn parses_field_selectors() {
        use FieldOperator::*;
        assert_eq!(fterms("metadata.name=a"), vec![("metadata.name".into(), Equals, "a".into())]);
        assert_eq!(fterms("metadata.name==a"), vec![("metadata.name".into(), Equals, "a".into())]);
        assert_eq!(fterms("status.phase!=Running"), vec![("status.phase".into(), NotEquals, "Running".into())]);
        assert_eq!(fterms("spec.nodeName="), vec![("spec.nodeName".into(), Equals, "".into())]);
        // Terms are sorted as raw text; empty terms are skipped.
        assert_eq!(
            fterms("b=2,,a!=1,"),
            vec![("a".into(), NotEquals, "1".into()), ("b".into(), Equals, "2".into())]
        );
        assert!(fparse("").is_empty());
        // The key is not trimmed or unescaped, as upstream.
        assert_eq!(fterms(" a =b")[0].0, " a ");
        assert_eq!(fparse("b=2,a==1,c!=x").to_string(), "a=1,b=2,c!=x");
    }

    #[test]
    fn field_value_escapes() {
        assert_eq!(fterms(r"a=x\,y")[0].2, "x,y");
        assert_eq!(fterms(r"a=x\=y")[0].2, "x=y");
        assert_eq!(fterms(r"a=x\\y")[0].2, r"x\y");
        // An escaped comma does not split terms; `\\,` is an escaped backslash then a real comma.
        assert_eq!(fterms(r"a=1\,2,b=3").len(), 2);
        assert_eq!(fterms(r"a=1\\,b=3")[0].2, r"1\");
        let sel = fparse(r"a=x\,y\=z\\w");
        assert_eq!(sel.to_string(), r"a=x\,y\=z\\w");
        assert_eq!(fparse(&sel.to_string()), sel);
        assert_eq!(escape_field_value(r"a,b=c\"), r"a\,b\=c\\");
    }

    #[test]
    fn field_selector_errors_are_upstreams() {
        let err = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
        assert_eq!(err("abc"), "invalid selector: 'abc'; can't understand 'abc'");
        assert_eq!(err("a=1,bogus"), "invalid selector: 'a=1,bogus'; can't understand 'bogus'");
        assert_eq!(err("a=x=y"), "invalid field selector: unescaped character in value: 61");
        assert_eq!(err("a==="), "invalid field selector: unescaped character in value: 61");
        assert_eq!(err(r"a=x\y"), r"invalid field selector: invalid escape sequence: \y");
        assert_eq!(err(r"a=x\"), r"invalid field selector: invalid escape sequence: \");
    }

    #[test]
    fn validates_field_labels_per_resource() {
        let pods = crate::resources::lookup("", "v1", "pods").unwrap();
        let cms = crate::resources::lookup("", "v1", "configmaps").unwrap();
        let sel = fparse("spec.nodeName=n1,metadata.namespace=default");
        assert_eq!(sel.validate_for(pods), Ok(()));
        assert_eq!(sel.validate_for(cms).unwrap_err().to_string(), "field label not supported: spec.nodeName");
        assert_eq!(fparse("metadata.name=x").validate(&[]), Ok(()));
        assert_eq!(
            fparse("spec.foo=bar").validate(&["spec.nodeName"]),
            Err(SelectorError::FieldLabelNotSupported("spec.foo".into()))
        );
        // The first unsupported term in sorted order is reported.
        assert_eq!(fparse("z=1,y=2").validate(&[]).unwrap_err().to_string(), "field label not supported: y");
    }

    #[test]
    fn field_matching() {
        let scheduled = json!({
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}
        });
        let pending = json!({"metadata": {"name": "p2", "namespace": "default"}, "spec": {}, "status": {}});
        let cases = [
            ("spec.nodeName=", false, true),
            ("spec.nodeName!=", true, false),
            ("spec.nodeName=n1", true, false),
            ("metadata.name=p1,metadata.namespace=default", true, false),
            ("metadata.namespace=default", true, true),
            ("status.phase!=Running", false, true),
            ("status.podIP=10.0.0.5", true, false),
            ("spec.hostNetwork=true", true, false),
            ("spec.hostNetwork=false", false, true),
            ("spec.restartPolicy==Always", true, false),
            ("", true, true),
        ];
        for (sel, want_scheduled, want_pending) in cases {
            let s = fparse(sel);
            assert_eq!(s.matches(&scheduled), want_scheduled, "{sel:?} scheduled");
            assert_eq!(s.matches(&pending), want_pending, "{sel:?} pending");
        }
        assert_eq!(
            fparse("spec.nodeName=n1,metadata.name=p1").requires_exact_match("spec.nodeName"),
            Some("n1")
        );
        assert_eq!(fparse("spec.nodeName!=n1").requires_exact_match("spec.nodeName"), None);

        // Cluster-scoped objects have no namespace: it reads as "".
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        assert!(fparse("spec.unschedulable=false,metadata.namespace=").matches(&node));
        assert!(fparse("spec.unschedulable=true").matches(&json!({"spec": {"unschedulable": true}})));
        assert!(fparse("status.replicas=0").matches(&json!({"status": {}})));
        assert!(fparse("status.replicas=3").matches(&json!({"status": {"replicas": 3}})));
        assert!(fparse("type=kubernetes.io/tls").matches(&json!({"type": "kubernetes.io/tls"})));
    }

    #[test]
    fn event_fields() {
        let core = json!({
            "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
            "reason": "Scheduled", "type": "Normal",
            "source": {"component": "default-scheduler"},
            "reportingComponent": "kplane-scheduler"
        });
        assert!(fparse("involvedObject.kind=Pod,involvedObject.name=p1,reason=Scheduled,type=Normal")
            .matches(&core));
        assert!(fparse("source=default-scheduler").matches(&core));
        assert!(fparse("reportingComponent=kplane-scheduler").matches(&core));
        // events.k8s.io/v1 names read a core/v1-shaped object, and the other way round.
        assert!(fparse("regarding.kind=Pod,reportingController=kplane-scheduler").matches(&core));
        let new = json!({"regarding": {"kind": "Node"}, "reportingController": "kubelet"});
        assert!(fparse("involvedObject.kind=Node,regarding.kind=Node").matches(&new));
        // With no source.component, `source` falls back to the reporting controller.
        assert!(fparse("source=kubelet").matches(&new));
        assert!(fparse("source=").matches(&json!({})));
    }

    #[test]
    fn go_quote_matches_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{1}\u{7f}é"), "\"\\t\\n\\x01\\x7fé\"");
    }
}
