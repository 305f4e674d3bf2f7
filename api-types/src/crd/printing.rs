//! The JSONPath subset `additionalPrinterColumns` (and `scale` paths) use: `.a.b`, `['a.b']`,
//! `[n]` (negative counts from the end), `[*]`, `..`-free filters `[?(@.k=="v")]` / `[?(@.k)]`.
//! [`first`] answers what upstream's column printer takes: the first result.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum Seg {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.path == value)]` (value None: the path exists).
    Filter(Vec<String>, Option<Value>),
}

/// Parses a column's `jsonPath` (optionally wrapped in `{}`), or says why not.
pub fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    let p = path.trim();
    let p = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(p);
    let p = p.strip_prefix('$').unwrap_or(p);
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if name.is_empty() {
                    return Err(format!("unrecognized character in action: {path}"));
                }
                out.push(Seg::Field(name));
            }
            '[' => {
                let close = chars[i..].iter().position(|c| *c == ']').map(|n| n + i);
                let Some(close) = close else { return Err("unterminated array".into()) };
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                i = close + 1;
                if inner == "*" {
                    out.push(Seg::All);
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                    let (lhs, rhs) = match f.split_once("==") {
                        Some((l, r)) => (l.trim(), Some(r.trim())),
                        None => (f.trim(), None),
                    };
                    let lhs = lhs.strip_prefix('@').ok_or_else(|| format!("unrecognized filter: {f}"))?;
                    let fields: Vec<String> =
                        lhs.split('.').filter(|s| !s.is_empty()).map(str::to_string).collect();
                    let value = match rhs {
                        None => None,
                        Some(r) => {
                            Some(if let Some(s) = r.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                                Value::String(s.to_string())
                            } else if let Some(s) = r.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                                Value::String(s.to_string())
                            } else {
                                serde_json::from_str(r)
                                    .map_err(|_| format!("unrecognized filter value: {r}"))?
                            })
                        }
                    };
                    out.push(Seg::Filter(fields, value));
                } else if let Some(s) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                    out.push(Seg::Field(s.to_string()));
                } else if let Ok(n) = inner.parse::<i64>() {
                    out.push(Seg::Index(n));
                } else {
                    return Err(format!("invalid array index {inner}"));
                }
            }
            _ => return Err(format!("unrecognized character in action: {path}")),
        }
    }
    Ok(out)
}

fn step<'a>(seg: &Seg, v: &'a Value, out: &mut Vec<&'a Value>) {
    match (seg, v) {
        (Seg::Field(f), Value::Object(m)) => out.extend(m.get(f)),
        (Seg::Index(n), Value::Array(a)) => {
            let i = if *n < 0 { a.len() as i64 + n } else { *n };
            if i >= 0 {
                out.extend(a.get(i as usize));
            }
        }
        (Seg::All, Value::Array(a)) => out.extend(a.iter()),
        (Seg::All, Value::Object(m)) => out.extend(m.values()),
        (Seg::Filter(path, want), Value::Array(a)) => {
            for item in a {
                let mut cur = Some(item);
                for p in path {
                    cur = cur.and_then(|c| c.get(p));
                }
                let hit = match (cur, want) {
                    (Some(got), Some(w)) => got == w,
                    (Some(_), None) => true,
                    _ => false,
                };
                if hit {
                    out.push(item);
                }
            }
        }
        _ => {}
    }
}

/// Every value the path selects in `obj`.
pub fn find<'a>(path: &[Seg], obj: &'a Value) -> Vec<&'a Value> {
    let mut cur = vec![obj];
    for seg in path {
        let mut next = Vec::new();
        for v in cur {
            step(seg, v, &mut next);
        }
        cur = next;
    }
    cur
}

/// The first value the path selects, None when it selects nothing or does not parse.
pub fn first<'a>(path: &str, obj: &'a Value) -> Option<&'a Value> {
    let segs = parse_path(path).ok()?;
    find(&segs, obj).into_iter().next()
}

/// Sets the value at a plain `.a.b.c` path (scale's specReplicasPath), creating objects on the way.
pub fn set(path: &str, obj: &mut Value, value: Value) -> bool {
    let Ok(segs) = parse_path(path) else { return false };
    let mut cur = obj;
    for (i, seg) in segs.iter().enumerate() {
        let Seg::Field(f) = seg else { return false };
        let Some(map) = cur.as_object_mut() else { return false };
        if i == segs.len() - 1 {
            map.insert(f.clone(), value);
            return true;
        }
        cur = map.entry(f.clone()).or_insert_with(|| Value::Object(Default::default()));
    }
    false
}
