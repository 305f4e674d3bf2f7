//! `x-kubernetes-validations`: CEL validation rules of CRD schemas, as upstream's
//! `apiextensions-apiserver` `pkg/apiserver/schema/cel` runs them, on the `cel` crate (cel-rust).
//!
//! - CRD time ([`check_schema`]): every rule (and `messageExpression`) is compiled; a rule that does
//!   not compile, an `optionalOldSelf` on a rule without `oldSelf`, a bad `fieldPath` or `reason`
//!   and a rule whose estimated cost exceeds upstream's per-rule limit (10,000,000, with the
//!   schema's `maxItems`/`maxLength`/`maxProperties` as sizes) make the CRD invalid, with
//!   upstream's paths and words.
//! - Custom resource time ([`validate`]): each rule runs with `self` = the value at its schema node
//!   (the node's items, properties and additionalProperties are walked as upstream does); rules
//!   using `oldSelf` (transition rules) run only on update where an old value correlates (object
//!   properties by name, `x-kubernetes-list-type: map` items by their keys), or always with
//!   `optionalOldSelf` (then `oldSelf` is an optional). A false result is upstream's field error
//!   (`message`, or `failed rule: <rule>`; `messageExpression`; `reason`; `fieldPath`).
//!
//! Hostile rules. The crate passed a check of malformed and hostile rules (syntax errors,
//! division by zero, overflow, out-of-range string functions, type mismatches) with errors, never
//! a panic. What it cannot bound by itself is (a) recursion: a long left-associative chain
//! (`1+1+…`) builds a deep tree that overflows a small stack, and (b) work: the interpreter has no
//! cost counter or cancellation. So: (a) rules are compiled and run on one dedicated thread with a
//! 256 MiB stack (reserved, not resident), after a lexical check that refuses rules with more than
//! [`MAX_OPERATORS`] operators; (b) before running, each rule's cost is bounded from its syntax
//! tree and the sizes of the actual data ([`estimate`]: comprehensions multiply their body by the
//! size of what they iterate, concatenation and `replace` grow sizes) and a rule over the per-call
//! limit is not run: upstream's "call cost exceeds limit" error instead. Should the thread ever
//! die, the evaluation answers an error and the next one starts a new thread; the server goes on.
//!
//! Supported: the CEL standard library and macros (`has`, `all`, `exists`, `exists_one`, `map`,
//! `filter`), `size`, `matches`, `startsWith`/`endsWith`/`contains`, the strings extension
//! (`charAt`, `indexOf`, `lastIndexOf`, `lowerAscii`, `upperAscii`, `replace`, `split`,
//! `substring`, `trim`, `join`, `format`, `reverse`, `strings.quote`), optionals (`self.?x`,
//! `orValue`), and the Kubernetes libraries of [`super::cel_lib`]: lists (`isSorted`, `sum`,
//! `min`, `max`, `indexOf`, `lastIndexOf`), sets (`sets.contains`/`equivalent`/`intersects`),
//! regex `find`/`findAll`, URLs, IPs and CIDRs, quantities; timestamps and durations
//! ([`super::cel_time`]; `format: date-time`/`duration` strings reach rules as those values).
//! Object properties are seen under upstream's escaped names (`a-b` as `a__dash__b`,
//! `namespace` as `__namespace__`; names that cannot be escaped are not visible); a reserved word
//! used as a name (`self.namespace`) is refused at CRD time as cel-go's parser refuses it.
//! Not supported (a call is a runtime "no such overload"/undeclared error): the Kubernetes
//! `format.*`, `authz`, `semver`, `image` and `lists.includes` libraries, quantity
//! `mul`/`div`/`divInt`; IANA zone names in timestamp accessors; static type checking (a type
//! error shows at evaluation, not at CRD creation).
//!

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelOptional, CelString, CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, ExecutionError, Program, Value as Cel};
use serde_json::{json, Value};

use super::Violation;

/// Upstream's per-rule static cost limit (`StaticEstimatedCostLimit`).
pub const STATIC_COST_LIMIT: f64 = 10_000_000.0;
/// Upstream's per-call runtime limit (`PerCallLimit`).
pub const PER_CALL_LIMIT: f64 = 1_000_000.0;
/// Upstream's budget for all rules of one object (`RuntimeCELCostBudget`).
pub const RUNTIME_BUDGET: f64 = 10_000_000.0;
/// The size assumed for a string, list or map the schema does not bound (about what fits in
/// upstream's 3 MiB request limit).
const UNBOUNDED: f64 = 1_500_000.0;
/// kplane's limit on a rule's operators (bounds the depth of its syntax tree).
pub const MAX_OPERATORS: usize = 1_000;
/// Upstream's limit on an evaluated `messageExpression` (`MaxEvaluatedMessageExpressionSizeBytes`).
const MAX_MESSAGE: usize = 5 * 1024;

/// One `x-kubernetes-validations` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub rule: String,
    pub message: String,
    pub message_expression: String,
    pub reason: Option<String>,
    pub field_path: String,
    pub optional_old_self: bool,
}

impl Rule {
    fn from_json(v: &Value) -> Rule {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Rule {
            rule: s("rule"),
            message: s("message"),
            message_expression: s("messageExpression"),
            reason: v.get("reason").and_then(Value::as_str).map(str::to_string),
            field_path: s("fieldPath"),
            optional_old_self: v.get("optionalOldSelf").and_then(Value::as_bool) == Some(true),
        }
    }

    /// Go's `%#v` of an `apiextensions.ValidationRule`, as upstream's field error prints it.
    fn go_string(&self) -> String {
        let reason = match &self.reason {
            Some(r) => format!("(*apiextensions.FieldValueErrorReason)({r:?})"),
            None => "(*apiextensions.FieldValueErrorReason)(nil)".to_string(),
        };
        let oos = if self.optional_old_self { "(*bool)(true)" } else { "(*bool)(nil)" };
        format!(
            "apiextensions.ValidationRule{{Rule:{:?}, Message:{:?}, MessageExpression:{:?}, Reason:{reason}, FieldPath:{:?}, OptionalOldSelf:{oos}}}",
            self.rule, self.message, self.message_expression, self.field_path
        )
    }

    /// `ruleErrorString`: the message if set, else the rule.
    fn error_string(&self) -> &str {
        if self.message.trim().is_empty() {
            self.rule.trim()
        } else {
            self.message.trim()
        }
    }
}

fn rules_of(schema: &Value) -> Vec<Rule> {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

/// Whether any node of `schema` has rules (custom resources without any never reach the CEL thread).
pub fn has_rules(schema: &Value) -> bool {
    match schema {
        Value::Object(m) => {
            m.get("x-kubernetes-validations").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
                || ["properties", "additionalProperties", "items"].iter().any(|k| match m.get(*k) {
                    Some(Value::Object(p)) if *k == "properties" => p.values().any(has_rules),
                    Some(v) => has_rules(v),
                    None => false,
                })
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The CEL thread.

type Job = Box<dyn FnOnce() + Send>;

fn worker() -> &'static Mutex<Option<mpsc::Sender<Job>>> {
    static W: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
    &W
}

fn spawn_worker() -> Option<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("kplane-cel".into())
        .stack_size(256 << 20)
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })
        .ok()?;
    Some(tx)
}

/// Runs `f` on the CEL thread and waits for it. Err when the thread is gone (it is replaced for
/// the next call).
fn on_cel_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, String> {
    let (rtx, rrx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let _ = rtx.send(f());
    });
    let sender = {
        let mut w = match worker().lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        if w.is_none() {
            *w = spawn_worker();
        }
        w.clone()
    };
    let Some(sender) = sender else { return Err("the CEL evaluator could not start".into()) };
    if sender.send(job).is_err() {
        drop_worker();
        return Err("the CEL evaluator stopped".into());
    }
    match rrx.recv() {
        Ok(r) => Ok(r),
        Err(_) => {
            drop_worker();
            Err("the CEL evaluator stopped".into())
        }
    }
}

fn drop_worker() {
    if let Ok(mut w) = worker().lock() {
        *w = None;
    }
}

thread_local! {
    static ENV: Arc<Env> = Arc::new(make_env());
    /// Compiled programs by source, on the CEL thread (programs never leave it).
    static PROGRAMS: RefCell<HashMap<String, Result<Arc<Compiled>, String>>> = RefCell::new(HashMap::new());
}

fn make_env() -> Env {
    let mut env = Env::stdlib();
    // The strings extension is what cel-go's ext.Strings registers, which Kubernetes includes.
    let _ = env.add_extension(cel::extensions::strings);
    // The Kubernetes libraries (lists, regex, URLs, IPs/CIDRs, quantities).
    let _ = env.add_extension(super::cel_lib::register);
    env
}

struct Compiled {
    program: Program,
    uses_old_self: bool,
}

/// Counts the operators of a rule's text outside string literals.
fn operator_count(src: &str) -> usize {
    let mut n = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in src.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '.' | '[' | '(' | '{' | '+' | '-' | '*' | '/' | '%' | '<' | '>' | '=' | '!' | '&' | '|' | '?'
            | ',' => n += 1,
            _ => {}
        }
    }
    n
}

/// Compiles on the CEL thread (cached there).
fn compile_here(src: &str) -> Result<Arc<Compiled>, String> {
    if let Some(hit) = PROGRAMS.with(|p| p.borrow().get(src).cloned()) {
        return hit;
    }
    let result = if operator_count(src) > MAX_OPERATORS {
        Err(format!("ERROR: <input>:1:1: expression too complex: more than {MAX_OPERATORS} operators"))
    } else {
        ENV.with(|env| env.compile(src)).map_err(|e| e.to_string()).and_then(|program| {
            if let Some(word) = reserved_use(program.expression()) {
                return Err(format!("ERROR: <input>:1:{}: reserved identifier: {word}", column_of(src, word)));
            }
            let uses_old_self = program.references().has_variable("oldSelf");
            Ok(Arc::new(Compiled { program, uses_old_self }))
        })
    };
    PROGRAMS.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() > 10_000 {
            p.clear();
        }
        p.insert(src.to_string(), result.clone());
    });
    result
}

/// A CEL reserved word used as an identifier or field name (`self.namespace`), which cel-go's
/// parser refuses and the crate's accepts; upstream's escaped form is `self.__namespace__`.
fn reserved_use(e: &cel::IdedExpr) -> Option<&'static str> {
    let reserved = |n: &str| super::cel_lib::RESERVED.iter().copied().find(|r| *r == n);
    match &e.expr {
        Expr::Ident(n) => reserved(n),
        Expr::Select(s) => reserved(&s.field).or_else(|| reserved_use(&s.operand)),
        Expr::Call(c) => {
            c.target.as_deref().and_then(reserved_use).or_else(|| c.args.iter().find_map(reserved_use))
        }
        Expr::List(l) => l.elements.iter().find_map(reserved_use),
        Expr::Map(m) => m.entries.iter().find_map(|x| match &x.expr {
            EntryExpr::MapEntry(m) => reserved_use(&m.key).or_else(|| reserved_use(&m.value)),
            EntryExpr::StructField(f) => reserved_use(&f.value),
        }),
        Expr::Struct(s) => s.entries.iter().find_map(|x| match &x.expr {
            EntryExpr::MapEntry(m) => reserved_use(&m.key).or_else(|| reserved_use(&m.value)),
            EntryExpr::StructField(f) => reserved_use(&f.value),
        }),
        Expr::Comprehension(c) => [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
            .into_iter()
            .find_map(reserved_use),
        Expr::Literal(_) | Expr::Unspecified => None,
    }
}

/// The 1-based column of the first whole-word `word` outside string literals (1 if not found).
fn column_of(src: &str, word: &str) -> usize {
    let b = src.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == b'\\' {
                i += 1;
            } else if c == q {
                quote = None;
            }
        } else if c == b'\'' || c == b'"' {
            quote = Some(c);
        } else if src.get(i..).is_some_and(|r| r.starts_with(word))
            && (i == 0 || !ident(b[i - 1]))
            && b.get(i + word.len()).is_none_or(|n| !ident(*n))
        {
            return src.get(..i).map_or(0, |p| p.chars().count()) + 1;
        }
        i += 1;
    }
    1
}

// ---------------------------------------------------------------------------------------------
// Cost.

#[derive(Clone, Copy, Debug)]
struct Est {
    cost: f64,
    /// An upper bound of any length (string bytes, list items, map entries) in the value.
    size: f64,
}

/// An upper bound of the cost of evaluating `e`, where `self`/`oldSelf` hold values no longer
/// than `data` (in string bytes, list items or map entries, at any depth). Comprehensions cost
/// their body times the size of their range; `+`, `replace`, `join`, `format` grow sizes.
fn estimate(e: &cel::IdedExpr, vars: &mut Vec<(String, f64)>, data: f64) -> Est {
    let one = |size: f64| Est { cost: 1.0, size };
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => one(s.len().max(1) as f64),
        Expr::Literal(LiteralValue::Bytes(b)) => one(b.len().max(1) as f64),
        Expr::Literal(_) | Expr::Unspecified => one(1.0),
        Expr::Ident(name) => match vars.iter().rev().find(|(n, _)| n == name) {
            Some((_, s)) => one(*s),
            None if name == "self" || name == "oldSelf" => one(data),
            None => one(1.0),
        },
        Expr::Select(s) => {
            let o = estimate(&s.operand, vars, data);
            Est { cost: o.cost + 1.0, size: o.size }
        }
        Expr::List(l) => {
            let mut out = Est { cost: 1.0, size: l.elements.len() as f64 };
            for el in &l.elements {
                let x = estimate(el, vars, data);
                out.cost += x.cost;
                out.size = out.size.max(x.size);
            }
            out
        }
        Expr::Map(m) => entries(m.entries.iter(), vars, data),
        Expr::Struct(s) => entries(s.entries.iter(), vars, data),
        Expr::Call(call) => {
            let mut parts: Vec<Est> = Vec::new();
            if let Some(t) = &call.target {
                parts.push(estimate(t, vars, data));
            }
            for a in &call.args {
                parts.push(estimate(a, vars, data));
            }
            let cost: f64 = parts.iter().map(|p| p.cost).sum::<f64>() + 1.0;
            let max = parts.iter().map(|p| p.size).fold(1.0, f64::max);
            let size_of = |i: usize| parts.get(i).map_or(1.0, |p| p.size);
            match call.func_name.as_str() {
                "_+_" => {
                    let size = parts.iter().map(|p| p.size).sum::<f64>();
                    Est { cost: cost + size, size }
                }
                "replace" => {
                    let (s, new) = (size_of(0), size_of(2));
                    let size = s * (new + 1.0) + new;
                    Est { cost: cost + size, size }
                }
                "join" => {
                    let size = size_of(0) * (size_of(0) + size_of(1));
                    Est { cost: cost + size, size }
                }
                "format" => {
                    let size = size_of(0) * (size_of(1) + 1.0) * size_of(1).max(1.0);
                    Est { cost: cost + size, size }
                }
                "matches" => Est { cost: cost + 0.25 * size_of(0) * size_of(1) + size_of(1), size: 1.0 },
                "find" | "findAll" => {
                    Est { cost: cost + 0.25 * size_of(0) * size_of(1) + size_of(1), size: size_of(0) }
                }
                // One step per element (list library) or character (strings).
                "isSorted" | "sum" | "min" | "max" | "indexOf" | "lastIndexOf" => {
                    Est { cost: cost + size_of(0), size: max }
                }
                // Pairwise (sets library).
                "sets.contains" | "sets.equivalent" | "sets.intersects" => {
                    Est { cost: cost + size_of(0) * size_of(1), size: 1.0 }
                }
                "split" => Est { cost: cost + size_of(0), size: size_of(0) },
                // Comparisons stop at the shorter operand; these give a bool or a number.
                "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" | "@in" | "contains" | "startsWith"
                | "endsWith" => {
                    let min = parts.iter().map(|p| p.size).fold(f64::INFINITY, f64::min).max(1.0);
                    Est { cost: cost + 0.1 * min, size: 1.0 }
                }
                "_&&_"
                | "_||_"
                | "!_"
                | "-_"
                | "_-_"
                | "_*_"
                | "_/_"
                | "_%_"
                | "size"
                | "int"
                | "uint"
                | "double"
                | "bool"
                | "@not_strictly_false"
                | "hasValue" => Est { cost, size: 1.0 },
                _ => Est { cost: cost + 0.1 * max, size: max },
            }
        }
        Expr::Comprehension(c) => {
            let range = estimate(&c.iter_range, vars, data);
            let init = estimate(&c.accu_init, vars, data);
            let n = range.size;
            vars.push((c.iter_var.clone(), range.size));
            if let Some(v2) = &c.iter_var2 {
                vars.push((v2.clone(), range.size));
            }
            // First pass with the initial accumulator, to see how much one step can add.
            vars.push((c.accu_var.clone(), init.size));
            let step0 = estimate(&c.loop_step, vars, data);
            vars.pop();
            // An accumulator grows only where a step builds on it (`map`, `filter`); a boolean
            // fold (`all`, `exists`) stays the size it starts with.
            let accu = if step0.size > init.size { init.size + n * step0.size } else { init.size };
            vars.push((c.accu_var.clone(), accu));
            let cond = estimate(&c.loop_cond, vars, data);
            let step = estimate(&c.loop_step, vars, data);
            let result = estimate(&c.result, vars, data);
            vars.pop();
            if c.iter_var2.is_some() {
                vars.pop();
            }
            vars.pop();
            Est {
                cost: range.cost + init.cost + n * (cond.cost + step.cost + 1.0) + result.cost,
                size: result.size.max(1.0),
            }
        }
    }
}

fn entries<'a>(
    it: impl Iterator<Item = &'a cel::common::ast::IdedEntryExpr>,
    vars: &mut Vec<(String, f64)>,
    data: f64,
) -> Est {
    let mut out = Est { cost: 1.0, size: 0.0 };
    for e in it {
        out.size += 1.0;
        let parts = match &e.expr {
            EntryExpr::MapEntry(m) => vec![estimate(&m.key, vars, data), estimate(&m.value, vars, data)],
            EntryExpr::StructField(f) => vec![estimate(&f.value, vars, data)],
        };
        for p in parts {
            out.cost += p.cost;
            out.size = out.size.max(p.size);
        }
    }
    out.size = out.size.max(1.0);
    out
}

/// The longest string, list or map in `v` (at any depth), at least 1.
fn data_size(v: &Value) -> f64 {
    match v {
        Value::String(s) => s.len().max(1) as f64,
        Value::Array(a) => a.iter().map(data_size).fold(a.len().max(1) as f64, f64::max),
        Value::Object(m) => m.values().map(data_size).fold(m.len().max(1) as f64, f64::max),
        _ => 1.0,
    }
}

/// The largest size the schema allows for any string, list or map at or under it (its
/// maxLength/maxItems/maxProperties; [`UNBOUNDED`] where one is missing).
fn schema_size(s: &Value) -> f64 {
    let bound = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(UNBOUNDED);
    let preserve = s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    let own = match s.get("type").and_then(Value::as_str).unwrap_or("") {
        "string" => bound("maxLength"),
        "array" => bound("maxItems"),
        "object" if s.get("additionalProperties").is_some_and(Value::is_object) || preserve => {
            bound("maxProperties")
        }
        "object" => s.get("properties").and_then(Value::as_object).map_or(1.0, |p| p.len() as f64),
        "" if preserve || s.get("x-kubernetes-int-or-string").is_some() => UNBOUNDED,
        _ => 1.0,
    };
    let mut max = own;
    if let Some(p) = s.get("properties").and_then(Value::as_object) {
        for c in p.values() {
            max = max.max(schema_size(c));
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(c) = s.get(k).filter(|c| c.is_object()) {
            max = max.max(schema_size(c));
        }
    }
    max
}

/// Upstream's `getCostErrorMessage`.
fn cost_error(name: &str, cost: f64, limit: f64) -> String {
    let f = cost / limit;
    let factor = if f > 100.0 {
        "more than 100x".to_string()
    } else if f < 1.5 {
        format!("{f:.6}x")
    } else {
        format!("{f:.1}x")
    };
    format!("{name} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)")
}

// ---------------------------------------------------------------------------------------------
// CRD time.

/// The CRD-time errors of the rules in `schema` (a version's `openAPIV3Schema`, at path `at`).
pub fn check_schema(schema: &Value, at: &str) -> Vec<Violation> {
    if !has_rules(schema) {
        return Vec::new();
    }
    let schema = schema.clone();
    let (at, at_err) = (at.to_string(), at.to_string());
    match on_cel_thread(move || {
        let mut out = Vec::new();
        check_node(&schema, &at, &mut out);
        out
    }) {
        Ok(v) => v,
        Err(e) => vec![Violation::invalid(at_err, &json!("object"), &e)],
    }
}

fn check_node(s: &Value, at: &str, out: &mut Vec<Violation>) {
    let rules = rules_of(s);
    for (i, r) in rules.iter().enumerate() {
        let rat = format!("{at}.x-kubernetes-validations[{i}]");
        if r.rule.trim().is_empty() {
            out.push(Violation::required(format!("{rat}.rule"), ""));
            continue;
        }
        match compile_here(&r.rule) {
            Err(e) => out.push(Violation::invalid(
                format!("{rat}.rule"),
                &json!(r.go_string()),
                &format!("compilation failed: {e}"),
            )),
            Ok(c) => {
                if r.optional_old_self && !c.uses_old_self {
                    out.push(Violation::invalid(
                        format!("{rat}.optionalOldSelf"),
                        &json!(true),
                        "may not be set if oldSelf is not used in rule",
                    ));
                }
                let cost = estimate(c.program.expression(), &mut Vec::new(), schema_size(s)).cost;
                if cost > STATIC_COST_LIMIT {
                    out.push(Violation::forbidden(
                        format!("{rat}.rule"),
                        &cost_error("estimated rule cost", cost, STATIC_COST_LIMIT),
                    ));
                }
            }
        }
        if !r.message_expression.trim().is_empty() {
            if let Err(e) = compile_here(&r.message_expression) {
                out.push(Violation::invalid(
                    format!("{rat}.messageExpression"),
                    &json!(r.message_expression),
                    &format!("messageExpression compilation failed: {e}"),
                ));
            }
        }
        if r.message.contains('\n') {
            out.push(Violation::invalid(
                format!("{rat}.message"),
                &json!(r.message),
                "message must not contain line breaks",
            ));
        }
        if let Some(reason) = &r.reason {
            let allowed =
                ["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"];
            if !allowed.contains(&reason.as_str()) {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                out.push(Violation::not_supported(format!("{rat}.reason"), &json!(reason), &list));
            }
        }
        if !r.field_path.is_empty() && field_path(s, &r.field_path).is_err() {
            out.push(Violation::invalid(
                format!("{rat}.fieldPath"),
                &json!(r.field_path),
                "fieldPath must be a valid path",
            ));
        }
    }
    if let Some(p) = s.get("properties").and_then(Value::as_object) {
        for (k, c) in p {
            check_node(c, &format!("{at}.properties[{k}]"), out);
        }
    }
    if let Some(c) = s.get("items").filter(|c| c.is_object()) {
        check_node(c, &format!("{at}.items"), out);
    }
    if let Some(c) = s.get("additionalProperties").filter(|c| c.is_object()) {
        check_node(c, &format!("{at}.additionalProperties"), out);
    }
}

/// A rule's `fieldPath` (`.a.b`, `['a.b']`) under its node's schema, as the field path suffix
/// upstream reports (`a.b`, `a[b]` for map keys).
fn field_path(schema: &Value, path: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut s = schema;
    let mut rest = path;
    let step = |name: &str, out: &mut String, s: &mut &Value| -> Result<(), String> {
        if let Some(c) = s.get("properties").and_then(|p| p.get(name)) {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            *s = c;
            Ok(())
        } else if let Some(c) = s.get("additionalProperties").filter(|a| a.is_object()) {
            out.push_str(&format!("[{name}]"));
            *s = c;
            Ok(())
        } else {
            Err("does not refer to a valid field".into())
        }
    };
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']").ok_or("unexpected end of JSON path")?;
            step(&r[..end], &mut out, &mut s)?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return Err("unexpected end of JSON path".into());
            }
            step(&r[..end], &mut out, &mut s)?;
            rest = &r[end..];
        } else {
            return Err("expected [ or .".into());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Custom resource time.

/// The rule violations of `obj` (and, on update, against `old`) under `schema`.
pub fn validate(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Violation> {
    if !has_rules(schema) {
        return Vec::new();
    }
    let (schema, obj, old) = (schema.clone(), obj.clone(), old.cloned());
    match on_cel_thread(move || {
        let mut out = Vec::new();
        let mut budget = RUNTIME_BUDGET;
        walk(&schema, &obj, old.as_ref(), "", &mut budget, &mut out);
        out
    }) {
        Ok(v) => v,
        Err(e) => vec![Violation::invalid("", &json!("object"), &e)],
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Runs the rules of node `s` on `v`, then its children. False once the budget is spent.
fn walk(
    s: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    budget: &mut f64,
    out: &mut Vec<Violation>,
) -> bool {
    if v.is_null() {
        return true;
    }
    if !run_rules(s, v, old, path, budget, out) {
        return false;
    }
    match v {
        Value::Object(map) => {
            let atomic = s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
            let props = s.get("properties").and_then(Value::as_object);
            let addl = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in map {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let (cs, cpath) = match (props.and_then(|p| p.get(k)), addl) {
                    (Some(cs), _) => (cs, join(path, k)),
                    (None, Some(a)) => (a, format!("{path}[{k}]")),
                    _ => continue,
                };
                let cold = if atomic { None } else { old.and_then(|o| o.get(k)) };
                if !walk(cs, child, cold, &cpath, budget, out) {
                    return false;
                }
            }
        }
        Value::Array(items) => {
            let Some(is) = s.get("items").filter(|i| i.is_object()) else { return true };
            let keys: Vec<&str> = if s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                s.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            for (i, item) in items.iter().enumerate() {
                let cold = if keys.is_empty() {
                    None
                } else {
                    old.and_then(Value::as_array)
                        .and_then(|o| o.iter().find(|oi| keys.iter().all(|k| oi.get(*k) == item.get(*k))))
                };
                if !walk(is, item, cold, &format!("{path}[{i}]"), budget, out) {
                    return false;
                }
            }
        }
        _ => {}
    }
    true
}

/// The CEL value of `v` typed by schema `s` (`number` as double, `integer` as int, strings of
/// `format: date-time`/`duration` as timestamps/durations).
fn to_cel(v: &Value, s: Option<&Value>) -> Box<dyn Val> {
    let ty = s.and_then(|s| s.get("type")).and_then(Value::as_str).unwrap_or("");
    match v {
        Value::Null => Box::new(CelNull),
        Value::Bool(b) => Box::new(CelBool::from(*b)),
        Value::Number(n) => {
            if ty == "number" {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(0.0)))
            } else if let Some(i) = n.as_i64() {
                Box::new(CelInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Box::new(CelUInt::from(u))
            } else {
                Box::new(CelDouble::from(n.as_f64().unwrap_or(0.0)))
            }
        }
        Value::String(t) => {
            let format = s.and_then(|s| s.get("format")).and_then(Value::as_str).unwrap_or("");
            super::cel_time::from_schema_string(format, t)
                .unwrap_or_else(|| Box::new(CelString::from(t.clone())))
        }
        Value::Array(a) => {
            let is = s.and_then(|s| s.get("items"));
            let items: Vec<Box<dyn Val>> = a.iter().map(|x| to_cel(x, is)).collect();
            Box::new(CelList::from(items))
        }
        Value::Object(m) => {
            let props = s.and_then(|s| s.get("properties"));
            let addl = s.and_then(|s| s.get("additionalProperties")).filter(|a| a.is_object());
            // Declared properties are seen under their escaped names (`a-b` as `a__dash__b`; a
            // name that cannot be escaped is not accessible); additionalProperties keys as they are.
            let map: HashMap<CelMapKey<'static>, Box<dyn Val>> = m
                .iter()
                .filter_map(|(k, x)| match props.and_then(|p| p.get(k)) {
                    Some(ps) => super::cel_lib::escape(k).map(|e| (CelMapKey::from(e), to_cel(x, Some(ps)))),
                    None => Some((CelMapKey::from(k.clone()), to_cel(x, addl))),
                })
                .collect();
            Box::new(CelMap::from(map))
        }
    }
}

/// `self` and `oldSelf` of one node, lent to each rule's context without copies.
struct Vars {
    this: Box<dyn Val>,
    old: Option<Box<dyn Val>>,
    optional_old: bool,
}

impl VariableResolver for Vars {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "self" => Some(CowVal::Borrowed(self.this.as_ref())),
            "oldSelf" if self.optional_old => Some(CowVal::owned(match &self.old {
                Some(o) => CelOptional::of(o.clone_as_boxed()),
                None => CelOptional::none(),
            })),
            "oldSelf" => self.old.as_deref().map(CowVal::Borrowed),
            _ => None,
        }
    }
}

/// Upstream's words for an evaluation error (cel-go's).
fn eval_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::DivisionByZero(_) => "division by zero".into(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".into(),
        ExecutionError::Overflow(..) => "integer overflow".into(),
        ExecutionError::IndexOutOfBounds(i) => match i {
            Cel::Int(i) => format!("index out of bounds: {i}"),
            other => format!("index out of bounds: {other:?}"),
        },
        ExecutionError::FunctionError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn type_of(s: &Value) -> Value {
    json!(s.get("type").and_then(Value::as_str).unwrap_or("object"))
}

/// Runs the rules of node `s`; false once the budget is spent (no further rules run).
fn run_rules(
    s: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    budget: &mut f64,
    out: &mut Vec<Violation>,
) -> bool {
    let rules = rules_of(s);
    if rules.is_empty() {
        return true;
    }
    let ty = type_of(s);
    if *budget <= 0.0 {
        out.push(Violation::invalid(
            path,
            &ty,
            "validation failed due to running out of cost budget, no further validation rules will be run",
        ));
        return false;
    }
    let data = data_size(v).max(old.map_or(1.0, data_size));
    let env = ENV.with(Arc::clone);
    let mut vars = Vars { this: to_cel(v, Some(s)), old: old.map(|o| to_cel(o, Some(s))), optional_old: false };
    for r in &rules {
        let c = match compile_here(&r.rule) {
            Ok(c) => c,
            Err(e) => {
                out.push(Violation::invalid(
                    path,
                    &ty,
                    &format!("rule compile error: compilation failed: {e}"),
                ));
                continue;
            }
        };
        if c.uses_old_self && vars.old.is_none() && !r.optional_old_self {
            continue;
        }
        let cost = estimate(c.program.expression(), &mut Vec::new(), data).cost;
        if cost > PER_CALL_LIMIT {
            out.push(Violation::invalid(path, &ty, &format!(
                "'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {}",
                r.error_string()
            )));
            return false;
        }
        if cost > *budget {
            out.push(Violation::invalid(
                path,
                &ty,
                "validation failed due to running out of cost budget, no further validation rules will be run",
            ));
            return false;
        }
        *budget -= cost;
        vars.optional_old = r.optional_old_self;
        let mut ctx = Context::with_env(env.clone());
        ctx.set_variable_resolver(&vars);
        let detail_path = if r.field_path.is_empty() {
            path.to_string()
        } else {
            match field_path(s, &r.field_path) {
                Ok(suffix) if suffix.starts_with('[') => format!("{path}{suffix}"),
                Ok(suffix) => join(path, &suffix),
                Err(_) => path.to_string(),
            }
        };
        match c.program.execute(&ctx) {
            Ok(Cel::Bool(true)) => {}
            Ok(Cel::Bool(false)) => {
                let detail = message_of(r, &ctx, data, budget).unwrap_or_else(|| {
                    if r.message.trim().is_empty() {
                        format!("failed rule: {}", r.error_string())
                    } else {
                        r.message.trim().to_string()
                    }
                });
                out.push(match r.reason.as_deref() {
                    Some("FieldValueForbidden") => Violation::forbidden(detail_path, &detail),
                    Some("FieldValueRequired") => Violation::required(detail_path, &detail),
                    Some("FieldValueDuplicate") => Violation {
                        reason: "FieldValueDuplicate",
                        field: detail_path,
                        message: format!("Duplicate value: {}", super::go_value(&ty)),
                    },
                    _ => Violation::invalid(detail_path, &ty, &detail),
                });
            }
            Ok(_) => out.push(Violation::invalid(
                path,
                &ty,
                &format!("cel expression must evaluate to a bool evaluating rule: {}", r.error_string()),
            )),
            Err(ExecutionError::NoSuchOverload(o)) => out.push(Violation::invalid(
                path,
                &ty,
                &format!(
                    "'no such overload: {o}': call arguments did not match a supported operator, function or macro signature for rule: {}",
                    r.error_string()
                ),
            )),
            Err(e) => out.push(Violation::invalid(
                path,
                &ty,
                &format!("{} evaluating rule: {}", eval_error(&e), r.error_string()),
            )),
        }
    }
    true
}

/// The evaluated `messageExpression`, when it gives a usable string.
fn message_of(r: &Rule, ctx: &Context<'_, '_>, data: f64, budget: &mut f64) -> Option<String> {
    if r.message_expression.trim().is_empty() {
        return None;
    }
    let c = compile_here(&r.message_expression).ok()?;
    let cost = estimate(c.program.expression(), &mut Vec::new(), data).cost;
    if cost > PER_CALL_LIMIT || cost > *budget {
        return None;
    }
    *budget -= cost;
    match c.program.execute(ctx) {
        Ok(Cel::String(s)) => {
            let t = s.trim();
            (!t.is_empty() && !t.contains('\n') && t.len() <= MAX_MESSAGE).then(|| t.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(rules: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": rules,
            "properties": {"replicas": {"type": "integer"}, "max": {"type": "integer"},
                           "name": {"type": "string", "maxLength": 64},
                           "items": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 10}}}}}})
    }

    #[test]
    fn a_false_rule_is_upstreams_invalid_with_its_message() {
        let s =
            schema(json!([{"rule": "self.replicas <= self.max", "message": "replicas must not exceed max"},
                              {"rule": "self.name.startsWith('a')"}]));
        let v = validate(&s, &json!({"spec": {"replicas": 5, "max": 3, "name": "bob"}}), None);
        let msgs: Vec<String> = v.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        assert_eq!(
            msgs,
            vec![
                "spec: Invalid value: \"object\": replicas must not exceed max".to_string(),
                "spec: Invalid value: \"object\": failed rule: self.name.startsWith('a')".to_string()
            ]
        );
        assert!(validate(&s, &json!({"spec": {"replicas": 1, "max": 3, "name": "al"}}), None).is_empty());
    }

    #[test]
    fn transition_rules_run_only_with_an_old_value() {
        let s = schema(json!([{"rule": "self.replicas >= oldSelf.replicas", "message": "may not shrink"}]));
        let new = json!({"spec": {"replicas": 1}});
        assert!(validate(&s, &new, None).is_empty());
        let v = validate(&s, &new, Some(&json!({"spec": {"replicas": 2}})));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].message, "Invalid value: \"object\": may not shrink");
        let s = schema(json!([{"rule": "!oldSelf.hasValue() || self.replicas >= oldSelf.value().replicas",
                               "optionalOldSelf": true}]));
        assert!(validate(&s, &new, None).is_empty());
        assert_eq!(validate(&s, &new, Some(&json!({"spec": {"replicas": 2}}))).len(), 1);
    }

    #[test]
    fn bad_rules_are_refused_at_crd_time_with_upstreams_words() {
        let s = schema(
            json!([{"rule": "self.x =="}, {"rule": ""}, {"rule": "self.replicas > 0", "optionalOldSelf": true},
                              {"rule": "true", "reason": "Nope"}, {"rule": "true", "fieldPath": ".nothere"}]),
        );
        let v = check_schema(&s, "spec.validation.openAPIV3Schema");
        let text: Vec<String> = v.iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
        let at = "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations";
        assert!(
            text[0].starts_with(&format!(
                "{at}[0].rule: Invalid value: \"apiextensions.ValidationRule{{Rule:\\\"self.x ==\\\""
            )),
            "{text:?}"
        );
        assert!(text[0].contains(": compilation failed: ERROR: <input>:1:10: Syntax error:"), "{text:?}");
        assert_eq!(text[1], format!("{at}[1].rule: Required value"));
        assert_eq!(
            text[2],
            format!(
                "{at}[2].optionalOldSelf: Invalid value: true: may not be set if oldSelf is not used in rule"
            )
        );
        assert!(text[3].starts_with(&format!("{at}[3].reason: Unsupported value: \"Nope\"")), "{text:?}");
        assert_eq!(
            text[4],
            format!("{at}[4].fieldPath: Invalid value: \".nothere\": fieldPath must be a valid path")
        );
        assert_eq!(v.len(), 5);
    }

    #[test]
    fn expensive_rules_are_refused_by_cost() {
        // Unbounded nested iteration: refused at CRD time.
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.l.all(x, self.l.all(y, x == y))"}],
            "properties": {"l": {"type": "array", "items": {"type": "integer"}}}}}});
        let v = check_schema(&s, "s");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message
                .starts_with("Forbidden: estimated rule cost exceeds budget by factor of more than 100x"),
            "{v:?}"
        );
        // The library functions are costed by their input: a list search inside a loop over an
        // unbounded list is quadratic and refused, over a list of 10 it is fine.
        for (rule, max_items, refused) in [
            ("self.l.all(x, self.l.indexOf(x) >= 0)", None, true),
            ("self.l.all(x, sets.contains(self.l, [x]))", None, true),
            ("self.l.all(x, self.l.indexOf(x) >= 0) && self.l.isSorted() && self.l.sum() > 0", Some(10), false),
        ] {
            let mut l = json!({"type": "array", "items": {"type": "integer"}});
            if let Some(m) = max_items {
                l["maxItems"] = json!(m);
            }
            let s = json!({"type": "object", "properties": {"spec": {"type": "object",
                "x-kubernetes-validations": [{"rule": rule}], "properties": {"l": l}}}});
            assert_eq!(!check_schema(&s, "s").is_empty(), refused, "{rule}");
        }
        // Exponential string growth, whatever the data: not run.
        let rule = format!("self.name{}.size() > 0", ".replace('a', 'aaaaaaaaaa')".repeat(12));
        let s = schema(json!([{"rule": rule}]));
        let v = validate(&s, &json!({"spec": {"name": "a"}}), None);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.contains("call cost exceeds limit for rule"), "{v:?}");
    }

    #[test]
    fn pairwise_rule_costs() {
        let env = make_env();
        let p = env.compile("self.all(x, self.all(y, x == y || x != y))").unwrap();
        let cost = |n: f64| estimate(p.expression(), &mut Vec::new(), n).cost;
        // Quadratic in the list's size: fine on a few items, over the per-call limit on 300 (what
        // tests/crd_cel.rs relies on), over the static limit on 1000.
        assert!(cost(3.0) < 1_000.0, "{}", cost(3.0));
        assert!(cost(300.0) > PER_CALL_LIMIT && cost(300.0) < STATIC_COST_LIMIT, "{}", cost(300.0));
        assert!(cost(1000.0) > STATIC_COST_LIMIT);
        assert!(cost(300.0) > 50.0 * cost(30.0));
    }

    #[test]
    fn hostile_rules_answer_errors() {
        let deep = format!("{}1{}", "(".repeat(3000), ")".repeat(3000));
        let chain = vec!["1"; 2000].join(" + ") + " > 0";
        let nested_ok = vec!["1"; 900].join(" + ") + " > 0";
        for (rule, want) in [
            (deep.as_str(), "compilation failed"),
            (chain.as_str(), "expression too complex"),
            ("self.replicas / 0 == 1", ""),
            ("self.x ==", "compilation failed"),
        ] {
            let s = schema(json!([{"rule": rule}]));
            let v = check_schema(&s, "s");
            if want.is_empty() {
                assert!(v.is_empty(), "{v:?}");
            } else {
                assert!(v.iter().any(|v| v.message.contains(want)), "{rule:.40}: {v:?}");
            }
        }
        assert!(check_schema(&schema(json!([{"rule": nested_ok}])), "s").is_empty());
        let s = schema(
            json!([{"rule": "self.replicas / 0 == 1"}, {"rule": "self.max + 9223372036854775807 > 0"},
                              {"rule": "self.name.substring(99) == ''"}, {"rule": "self.replicas.startsWith('a')"},
                              {"rule": "self.nothere == 1"}]),
        );
        let v = validate(&s, &json!({"spec": {"replicas": 1, "max": 5, "name": "x"}}), None);
        let msgs: Vec<&str> = v.iter().map(|v| v.message.as_str()).collect();
        assert_eq!(
            msgs[0],
            "Invalid value: \"object\": division by zero evaluating rule: self.replicas / 0 == 1"
        );
        assert_eq!(
            msgs[1],
            "Invalid value: \"object\": integer overflow evaluating rule: self.max + 9223372036854775807 > 0"
        );
        assert!(msgs[2].contains("evaluating rule: self.name.substring(99) == ''"), "{msgs:?}");
        assert!(msgs[3].contains("call arguments did not match a supported operator"), "{msgs:?}");
        assert_eq!(
            msgs[4],
            "Invalid value: \"object\": no such key: nothere evaluating rule: self.nothere == 1"
        );
    }

    #[test]
    fn property_names_are_escaped_as_upstream() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.__dash__x == 'ok'", "message": "leading dash"},
                {"rule": "self.a__dot__b > 0", "message": "dot"},
                {"rule": "self.__namespace__ == 'ns'", "message": "reserved"},
                {"rule": "!has(self.labels) || self.labels['app.kubernetes.io/name'] != ''", "message": "map keys as they are"},
                {"rule": "self.size() == 4", "message": "unescapable names are not seen"}],
            "properties": {"-x": {"type": "string"}, "a.b": {"type": "integer"}, "namespace": {"type": "string"},
                           "has space": {"type": "string"},
                           "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}}});
        let good = json!({"spec": {"-x": "ok", "a.b": 1, "namespace": "ns", "has space": "x",
                                   "labels": {"app.kubernetes.io/name": "a"}}});
        assert!(validate(&s, &good, None).is_empty(), "{:?}", validate(&s, &good, None));
        let bad = json!({"spec": {"-x": "no", "a.b": 0, "namespace": "other", "has space": "x",
                                  "labels": {"app.kubernetes.io/name": ""}}});
        let msgs: Vec<String> = validate(&s, &bad, None).into_iter().map(|v| v.message).collect();
        assert_eq!(
            msgs,
            ["leading dash", "dot", "reserved", "map keys as they are"]
                .map(|m| format!("Invalid value: \"object\": {m}"))
        );
    }

    #[test]
    fn kubernetes_libraries_in_rules() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.ports.isSorted() && self.ports.sum() < 100000 && self.ports.max() <= 65535"},
                {"rule": "url(self.endpoint).getScheme() == 'https'", "messageExpression": "'scheme of ' + self.endpoint"},
                {"rule": "cidr(self.cidr).containsIP(self.ip)"},
                {"rule": "quantity(self.memory).isLessThan(quantity('1Gi'))"},
                {"rule": "self.name.findAll('[0-9]+').size() <= 1"}],
            "properties": {"ports": {"type": "array", "maxItems": 10, "items": {"type": "integer"}},
                           "endpoint": {"type": "string", "maxLength": 100}, "cidr": {"type": "string", "maxLength": 50},
                           "ip": {"type": "string", "maxLength": 50}, "memory": {"type": "string", "maxLength": 20},
                           "name": {"type": "string", "maxLength": 20}}}}});
        assert!(check_schema(&s, "s").is_empty(), "{:?}", check_schema(&s, "s"));
        let good = json!({"spec": {"ports": [80, 443], "endpoint": "https://x.example/", "cidr": "10.0.0.0/8",
                                   "ip": "10.1.2.3", "memory": "512Mi", "name": "web1"}});
        assert!(validate(&s, &good, None).is_empty(), "{:?}", validate(&s, &good, None));
        let bad = json!({"spec": {"ports": [443, 80], "endpoint": "http://x.example/", "cidr": "10.0.0.0/8",
                                  "ip": "11.1.2.3", "memory": "2Gi", "name": "w1e2"}});
        let msgs: Vec<String> = validate(&s, &bad, None).into_iter().map(|v| v.message).collect();
        assert_eq!(msgs.len(), 5, "{msgs:?}");
        assert_eq!(msgs[1], "Invalid value: \"object\": scheme of http://x.example/");
        // Bad values are evaluation errors, not panics.
        let worse = json!({"spec": {"ports": [], "endpoint": "x", "cidr": "10.0.0.0/99", "ip": "1.2.3.4",
                                    "memory": "lots", "name": "a"}});
        let msgs: Vec<String> = validate(&s, &worse, None).into_iter().map(|v| v.message).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs[0].contains("max called on empty list evaluating rule"), "{msgs:?}");
        assert!(msgs[1].contains("URL parse error during conversion from string"), "{msgs:?}");
        assert!(msgs[2].contains("parse error during conversion from string"), "{msgs:?}");
        assert!(msgs[3].contains("quantities must match the regular expression"), "{msgs:?}");
    }

    #[test]
    fn reserved_words_are_refused_at_crd_time() {
        let s = schema(
            json!([{"rule": "self.name != 'a' && self.namespace == 'x'"}, {"rule": "has(self.__namespace__)"},
                              {"rule": "self.items.all(x, x != 'namespace')"}]),
        );
        let v = check_schema(&s, "s");
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].message.ends_with(": compilation failed: ERROR: <input>:1:26: reserved identifier: namespace"),
            "{v:?}"
        );
        let s = schema(json!([{"rule": "self.name != 'é' && self.if == 'x'"}]));
        let v = check_schema(&s, "s");
        assert!(v[0].message.ends_with("ERROR: <input>:1:26: reserved identifier: if"), "{v:?}");
    }

    #[test]
    fn date_time_and_duration_fields_are_timestamps_and_durations() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "self.end > self.start", "message": "end after start"},
                {"rule": "self.end - self.start <= self.maxLength", "message": "too long"},
                {"rule": "!has(self.plain) || self.plain.startsWith('2023')", "message": "plain strings stay strings"}],
            "properties": {"start": {"type": "string", "format": "date-time"},
                           "end": {"type": "string", "format": "date-time"},
                           "maxLength": {"type": "string", "format": "duration"},
                           "plain": {"type": "string"}}}}});
        let ok = json!({"spec": {"start": "2023-08-26T10:00:00Z", "end": "2023-08-26T12:00:00+01:00",
                                 "maxLength": "2h", "plain": "2023"}});
        assert!(validate(&s, &ok, None).is_empty(), "{:?}", validate(&s, &ok, None));
        let bad = json!({"spec": {"start": "2023-08-26T10:00:00Z", "end": "2023-08-26T09:00:00Z", "maxLength": "-2h"}});
        let msgs: Vec<String> = validate(&s, &bad, None).into_iter().map(|v| v.message).collect();
        assert_eq!(msgs, ["Invalid value: \"object\": end after start", "Invalid value: \"object\": too long"]);
    }

    #[test]
    fn field_path_reason_and_message_expression() {
        let s = schema(
            json!([{"rule": "self.replicas <= self.max", "fieldPath": ".replicas", "reason": "FieldValueForbidden",
                               "messageExpression": "'replicas ' + string(self.replicas) + ' above ' + string(self.max)"}]),
        );
        let v = validate(&s, &json!({"spec": {"replicas": 5, "max": 3}}), None);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].field, "spec.replicas");
        assert_eq!(v[0].message, "Forbidden: replicas 5 above 3");
        // Rules on list items and map-keyed correlation of old items.
        let s = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "x-kubernetes-validations": [{"rule": "self.port == oldSelf.port", "message": "immutable"}],
                                "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}}}});
        let old = json!({"spec": {"ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}]}});
        let new = json!({"spec": {"ports": [{"name": "b", "port": 3}, {"name": "c", "port": 4}, {"name": "a", "port": 1}]}});
        let v = validate(&s, &new, Some(&old));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "spec.ports[0]");
    }
}
