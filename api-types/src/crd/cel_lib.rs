//! The Kubernetes CEL libraries (`k8s.io/apiserver/pkg/cel/library`) on the `cel` crate, for
//! `x-kubernetes-validations`: lists (`isSorted`, `sum`, `min`, `max`, `indexOf`,
//! `lastIndexOf`), cel-go's sets (`sets.contains`, `sets.equivalent`, `sets.intersects`), regex
//! (`find`, `findAll`), URLs (`url`, `isURL`, `getScheme`, `getHost`,
//! `getHostname`, `getPort`, `getEscapedPath`, `getQuery`), IP addresses and CIDRs (`ip`, `isIP`,
//! `ip.isCanonical`, `family`, `isUnspecified`, `isLoopback`, `isLinkLocalMulticast`,
//! `isLinkLocalUnicast`, `isGlobalUnicast`, `cidr`, `isCIDR`, `containsIP`, `containsCIDR`,
//! `prefixLength`, `masked`, `ip()` of a CIDR, `string()` of both) and quantities (`quantity`,
//! `isQuantity`, `sign`, `isGreaterThan`, `isLessThan`, `compareTo`, `add`, `sub`, `asInteger`,
//! `isInteger`, `asApproximateFloat`); plus upstream's escaping of property names
//! ([`escape`]). Each overload checks its arguments and answers an error (never a panic) on a
//! wrong type or value. The string extension itself is the crate's (`cel::extensions::strings`).

use std::any::Any;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::net::IpAddr;

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelString, Kind, Type, LIST_TYPE, STRING_TYPE,
};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

/// Registers every library of this module on `env`.
pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    lists(env)?;
    sets(env)?;
    regex(env)?;
    urls(env)?;
    ips(env)?;
    quantities(env)?;
    super::cel_time::register(env)?;
    Ok(())
}

fn err(function: &str, msg: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, msg)
}

fn take<'b, 'v, const N: usize>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
) -> Result<[CowVal<'b, 'v>; N], ExecutionError> {
    let n = args.len();
    args.try_into().map_err(|_| err(function, format!("expected {N} arguments, got {n}")))
}

/// The elements of a list, borrowed.
type Items<'b, 'v> = Vec<&'b (dyn Val + 'v)>;

fn items<'b, 'v>(function: &str, list: &'b (dyn Val + 'v)) -> Result<Items<'b, 'v>, ExecutionError> {
    let it = list
        .as_iterable()
        .ok_or_else(|| ExecutionError::no_such_overload(function, vec![list.get_type().name().to_string()]))?;
    let mut it = it.iter();
    let mut out = Vec::new();
    while let Some(x) = it.next() {
        out.push(x);
    }
    Ok(out)
}

fn compare(function: &str, a: &dyn Val, b: &dyn Val) -> Result<Ordering, ExecutionError> {
    a.as_comparer()
        .ok_or_else(|| ExecutionError::no_such_overload(function, vec![a.get_type().name().to_string()]))?
        .compare(b)
}

// ---------------------------------------------------------------------------------------------
// Lists.

fn lists(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload("isSorted", "list_is_sorted_bool", LIST_TYPE, vec![], is_sorted)?;
    env.add_member_overload("sum", "list_sum", LIST_TYPE, vec![], sum)?;
    env.add_member_overload("min", "list_min", LIST_TYPE, vec![], list_min)?;
    env.add_member_overload("max", "list_max", LIST_TYPE, vec![], list_max)?;
    env.add_member_overload(
        "indexOf",
        "list_a_index_of_int",
        LIST_TYPE,
        vec![cel::common::types::DYN_TYPE],
        index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_a_last_index_of_int",
        LIST_TYPE,
        vec![cel::common::types::DYN_TYPE],
        last_index_of,
    )?;
    Ok(())
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take("isSorted", args)?;
    let xs = items("isSorted", list.as_ref())?;
    for w in xs.windows(2) {
        if compare("isSorted", w[0], w[1])? == Ordering::Greater {
            return Ok(CowVal::owned(CelBool::from(false)));
        }
    }
    Ok(CowVal::owned(CelBool::from(true)))
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take("sum", args)?;
    let xs = items("sum", list.as_ref())?;
    let Some((first, rest)) = xs.split_first() else {
        // Without static types the element type of an empty list is unknown: int, as `[].sum()`.
        return Ok(CowVal::owned(CelInt::from(0)));
    };
    let numeric = |v: &dyn Val| {
        matches!(v.get_type().kind(), Kind::Int | Kind::UInt | Kind::Double | Kind::Duration)
            || v.get_type().name() == super::cel_time::DURATION_NAME
    };
    if !numeric(*first) {
        return Err(ExecutionError::no_such_overload("sum", vec![first.get_type().name().to_string()]));
    }
    let mut acc: Box<dyn Val + 'v> = first.clone_as_boxed();
    for x in rest {
        let adder = acc
            .as_adder()
            .ok_or_else(|| ExecutionError::no_such_overload("sum", vec![acc.get_type().name().to_string()]))?;
        let next = adder.add(*x)?.into_owned();
        acc = next;
    }
    Ok(CowVal::Owned(acc))
}

fn extreme<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    prefer: Ordering,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list] = take(function, args)?;
    let xs = items(function, list.as_ref())?;
    let Some((first, rest)) = xs.split_first() else {
        return Err(err(function, format!("{function} called on empty list")));
    };
    let mut best = *first;
    compare(function, best, best)?;
    for x in rest {
        if compare(function, best, *x)? == prefer {
            best = *x;
        }
    }
    Ok(CowVal::Owned(best.clone_as_boxed()))
}

fn list_min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("min", args, Ordering::Greater)
}

fn list_max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    extreme("max", args, Ordering::Less)
}

fn position<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    last: bool,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [list, item] = take(function, args)?;
    let xs = items(function, list.as_ref())?;
    let eq = |x: &&(dyn Val + 'v)| x.equals(item.as_ref());
    let found = if last { xs.iter().rposition(eq) } else { xs.iter().position(eq) };
    Ok(CowVal::owned(CelInt::from(found.map_or(-1, |i| i as i64))))
}

fn index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position("indexOf", args, false)
}

fn last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    position("lastIndexOf", args, true)
}

// ---------------------------------------------------------------------------------------------
// Sets (cel-go's `ext.Sets`, which Kubernetes enables).

fn sets(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("sets.contains", "list_sets_contains_list", vec![LIST_TYPE, LIST_TYPE], sets_contains)?;
    env.add_overload(
        "sets.equivalent",
        "list_sets_equivalent_list",
        vec![LIST_TYPE, LIST_TYPE],
        sets_equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "list_sets_intersects_list",
        vec![LIST_TYPE, LIST_TYPE],
        sets_intersects,
    )?;
    Ok(())
}

/// Whether every element of `b` equals some element of `a`.
fn includes_all(a: &[&dyn Val], b: &[&dyn Val]) -> bool {
    b.iter().all(|y| a.iter().any(|x| x.equals(*y)))
}

fn two_lists<'b, 'v>(
    function: &str,
    args: &'b [CowVal<'b, 'v>; 2],
) -> Result<(Items<'b, 'v>, Items<'b, 'v>), ExecutionError> {
    Ok((items(function, args[0].as_ref())?, items(function, args[1].as_ref())?))
}

fn sets_contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let args: [CowVal<'b, 'v>; 2] = take("sets.contains", args)?;
    let (a, b) = two_lists("sets.contains", &args)?;
    Ok(CowVal::owned(CelBool::from(includes_all(&a, &b))))
}

fn sets_equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let args: [CowVal<'b, 'v>; 2] = take("sets.equivalent", args)?;
    let (a, b) = two_lists("sets.equivalent", &args)?;
    Ok(CowVal::owned(CelBool::from(includes_all(&a, &b) && includes_all(&b, &a))))
}

fn sets_intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let args: [CowVal<'b, 'v>; 2] = take("sets.intersects", args)?;
    let (a, b) = two_lists("sets.intersects", &args)?;
    Ok(CowVal::owned(CelBool::from(b.iter().any(|y| a.iter().any(|x| x.equals(*y))))))
}

// ---------------------------------------------------------------------------------------------
// Regex.

fn regex(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload("find", "string_find_string", STRING_TYPE, vec![STRING_TYPE], find)?;
    env.add_member_overload("findAll", "string_find_all_string", STRING_TYPE, vec![STRING_TYPE], find_all)?;
    env.add_member_overload(
        "findAll",
        "string_find_all_string_int",
        STRING_TYPE,
        vec![STRING_TYPE, cel::common::types::INT_TYPE],
        find_all_n,
    )?;
    Ok(())
}

fn str_arg<'a>(function: &str, v: &'a dyn Val) -> Result<&'a str, ExecutionError> {
    v.downcast_ref::<CelString<'_>>()
        .map(|s| s.inner())
        .ok_or_else(|| ExecutionError::no_such_overload(function, vec![v.get_type().name().to_string()]))
}

fn int_arg(function: &str, v: &dyn Val) -> Result<i64, ExecutionError> {
    v.downcast_ref::<CelInt>()
        .map(|i| *i.inner())
        .ok_or_else(|| ExecutionError::no_such_overload(function, vec![v.get_type().name().to_string()]))
}

fn compile_regex(function: &str, pattern: &str) -> Result<regex::Regex, ExecutionError> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| err(function, format!("error parsing regexp: {e}")))
}

fn string_list<'v>(xs: impl IntoIterator<Item = String>) -> CelList<'v> {
    let v: Vec<Box<dyn Val + 'v>> =
        xs.into_iter().map(|s| Box::new(CelString::from(s)) as Box<dyn Val + 'v>).collect();
    CelList::from(v)
}

fn find<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s, re] = take("find", args)?;
    let re = compile_regex("find", str_arg("find", re.as_ref())?)?;
    let s = str_arg("find", s.as_ref())?;
    Ok(CowVal::owned(CelString::from(re.find(s).map_or(String::new(), |m| m.as_str().to_string()))))
}

fn all_matches(s: &str, re: &regex::Regex, n: i64) -> Vec<String> {
    let limit = if n < 0 { usize::MAX } else { n as usize };
    re.find_iter(s).take(limit).map(|m| m.as_str().to_string()).collect()
}

fn find_all<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s, re] = take("findAll", args)?;
    let re = compile_regex("findAll", str_arg("findAll", re.as_ref())?)?;
    Ok(CowVal::owned(string_list(all_matches(str_arg("findAll", s.as_ref())?, &re, -1))))
}

fn find_all_n<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s, re, n] = take("findAll", args)?;
    let re = compile_regex("findAll", str_arg("findAll", re.as_ref())?)?;
    let n = int_arg("findAll", n.as_ref())?;
    Ok(CowVal::owned(string_list(all_matches(str_arg("findAll", s.as_ref())?, &re, n))))
}

// ---------------------------------------------------------------------------------------------
// Opaque values.

macro_rules! opaque {
    ($t:ident, $ty:ident, $name:ident) => {
        static $ty: Type = Type::simple_type(Kind::Opaque, $name);
        impl Val for $t {
            fn get_type(&self) -> &Type {
                &$ty
            }
            fn cel_type() -> &'static Type {
                &$ty
            }
            fn equals(&self, other: &dyn Val) -> bool {
                other.downcast_ref::<$t>().is_some_and(|o| o == self)
            }
            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
                Box::new(self.clone())
            }
            fn as_any(&self) -> Option<&dyn Any> {
                Some(self)
            }
        }
        impl StaticVal for $t {}
    };
}

fn opaque_arg<'a, T: Val + StaticVal + 'static>(
    function: &str,
    v: &'a dyn Val,
) -> Result<&'a T, ExecutionError> {
    v.as_any()
        .and_then(|a| a.downcast_ref::<T>())
        .ok_or_else(|| ExecutionError::no_such_overload(function, vec![v.get_type().name().to_string()]))
}

macro_rules! unary {
    ($fname:ident, $cel:literal, $t:ty, |$x:ident| $body:expr) => {
        fn $fname<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
            let [a] = take($cel, args)?;
            let $x: &$t = opaque_arg($cel, a.as_ref())?;
            Ok($body)
        }
    };
}

// ---------------------------------------------------------------------------------------------
// URLs (Go's `url.ParseRequestURI`: an absolute URI or an absolute path).

#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    scheme: String,
    host: String,
    path: String,
    query: String,
}
const URL_NAME: &str = "kubernetes.URL";
opaque!(Url, URL_TYPE, URL_NAME);

fn valid_scheme(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '+' | '-' | '.'))
}

/// Parses as Go's `url.ParseRequestURI` accepts (then components as `url.Parse` splits them).
pub fn parse_url(s: &str) -> Result<Url, String> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("parse {s:?}: net/url: invalid control character in URL"));
    }
    let (scheme, rest) = match s.find(':') {
        Some(0) => return Err(format!("parse {s:?}: missing protocol scheme")),
        Some(i) if valid_scheme(&s[..i]) => (s[..i].to_ascii_lowercase(), &s[i + 1..]),
        _ => (String::new(), s),
    };
    if scheme.is_empty() && !rest.starts_with('/') {
        return Err(format!("parse {s:?}: invalid URI for request"));
    }
    // `url.Parse` strips the fragment; `ParseRequestURI` kept it but upstream reads `Parse`'s.
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (rest, query) = rest.split_once('?').map_or((rest, ""), |(r, q)| (r, q));
    let (host, path) = match rest.strip_prefix("//") {
        Some(r) if !scheme.is_empty() => {
            let end = r.find('/').unwrap_or(r.len());
            let authority = &r[..end];
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            check_host(s, host)?;
            (host.to_string(), &r[end..])
        }
        _ => (String::new(), rest),
    };
    if !scheme.is_empty() && !path.is_empty() && !path.starts_with('/') && host.is_empty() {
        // An opaque URL (`mailto:x`): valid, no path.
        return Ok(Url { scheme, host, path: String::new(), query: query.to_string() });
    }
    Ok(Url { scheme, host, path: path.to_string(), query: query.to_string() })
}

fn check_host(s: &str, host: &str) -> Result<(), String> {
    let port = if let Some(r) = host.strip_prefix('[') {
        let Some(end) = r.find(']') else { return Err(format!("parse {s:?}: missing ']' in host")) };
        &r[end + 1..]
    } else {
        host.rfind(':').map_or("", |i| &host[i..])
    };
    let valid =
        port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if !valid {
        return Err(format!("parse {s:?}: invalid port {port:?} after host"));
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`'))
    {
        return Err(format!("parse {s:?}: invalid character {:?} in host name", c.to_string()));
    }
    Ok(())
}

impl Url {
    fn hostname(&self) -> &str {
        let h = &self.host;
        if let Some(r) = h.strip_prefix('[') {
            return r.split_once(']').map_or(r, |(a, _)| a);
        }
        h.rfind(':').map_or(h, |i| &h[..i])
    }

    fn port(&self) -> &str {
        let h = &self.host;
        let after =
            if let Some(r) = h.strip_prefix('[') { r.split_once(']').map_or("", |(_, p)| p) } else { h };
        match after.rfind(':') {
            Some(i) => &after[i + 1..],
            None => "",
        }
    }

    /// Go's `EscapedPath`: the path with bytes outside the path's allowed set %-escaped.
    fn escaped_path(&self) -> String {
        let mut out = String::new();
        for b in self.path.bytes() {
            let keep = b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'$'
                        | b'&'
                        | b'+'
                        | b','
                        | b'/'
                        | b':'
                        | b';'
                        | b'='
                        | b'@'
                        | b'%'
                        | b'!'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                );
            if keep {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// Go's `Query()`: `a=1&b=2&b=3` unescaped into key → values (malformed pairs dropped).
    fn query_map(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for pair in self.query.split('&').filter(|p| !p.is_empty()) {
            if pair.contains(';') {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(k), Some(v)) = (unescape_query(k), unescape_query(v)) else { continue };
            match out.iter_mut().find(|(key, _)| *key == k) {
                Some((_, vs)) => vs.push(v),
                None => out.push((k, vec![v])),
            }
        }
        out
    }
}

fn unescape_query(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn urls(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("url", "string_to_url", vec![STRING_TYPE], to_url)?;
    env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], is_url)?;
    env.add_member_overload(
        "getScheme",
        "url_get_scheme",
        Type::simple_type(Kind::Opaque, URL_NAME),
        vec![],
        url_scheme,
    )?;
    env.add_member_overload(
        "getHost",
        "url_get_host",
        Type::simple_type(Kind::Opaque, URL_NAME),
        vec![],
        url_host,
    )?;
    env.add_member_overload(
        "getHostname",
        "url_get_hostname",
        Type::simple_type(Kind::Opaque, URL_NAME),
        vec![],
        url_hostname,
    )?;
    env.add_member_overload(
        "getPort",
        "url_get_port",
        Type::simple_type(Kind::Opaque, URL_NAME),
        vec![],
        url_port,
    )?;
    env.add_member_overload(
        "getEscapedPath",
        "url_get_escaped_path",
        Type::simple_type(Kind::Opaque, URL_NAME),
        vec![],
        url_path,
    )?;
    env.add_member_overload(
        "getQuery",
        "url_get_query",
        Type::simple_type(Kind::Opaque, URL_NAME),
        vec![],
        url_query,
    )?;
    Ok(())
}

fn to_url<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("url", args)?;
    let s = str_arg("url", s.as_ref())?;
    parse_url(s)
        .map(CowVal::owned)
        .map_err(|e| err("url", format!("URL parse error during conversion from string: {e}")))
}

fn is_url<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("isURL", args)?;
    Ok(CowVal::owned(CelBool::from(parse_url(str_arg("isURL", s.as_ref())?).is_ok())))
}

fn owned_str<'b, 'v>(s: &str) -> CowVal<'b, 'v> {
    CowVal::owned(CelString::from(s.to_string()))
}

unary!(url_scheme, "getScheme", Url, |u| owned_str(&u.scheme));
unary!(url_host, "getHost", Url, |u| owned_str(&u.host));
unary!(url_hostname, "getHostname", Url, |u| owned_str(u.hostname()));
unary!(url_port, "getPort", Url, |u| owned_str(u.port()));
unary!(url_path, "getEscapedPath", Url, |u| owned_str(&u.escaped_path()));
unary!(url_query, "getQuery", Url, |u| {
    let mut m: HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> = HashMap::new();
    for (k, vs) in u.query_map() {
        m.insert(CelMapKey::from(k), Box::new(string_list(vs)));
    }
    CowVal::owned(CelMap::from(m))
});

// ---------------------------------------------------------------------------------------------
// IP addresses and CIDRs (Kubernetes 1.31+: `net.IP`, `net.CIDR`).

#[derive(Clone, Debug, PartialEq)]
pub struct Ip(IpAddr);
const IP_NAME: &str = "net.IP";
opaque!(Ip, IP_TYPE, IP_NAME);

#[derive(Clone, Debug, PartialEq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}
const CIDR_NAME: &str = "net.CIDR";
opaque!(Cidr, CIDR_TYPE, CIDR_NAME);

/// Go's `netip.ParseAddr` with its error, and upstream's refusals of zones and IPv4-mapped IPv6
/// addresses (upstream's `parseIPAddr`, its words).
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let addr = |a: &str| a.parse::<IpAddr>().map_err(|_| format!("ParseAddr({a:?}): unable to parse IP"));
    match s.split_once('%') {
        Some((a, _)) if addr(a).is_ok_and(|a| a.is_ipv6()) => {
            return Err(format!("IP address {s:?} with zone value is not allowed"))
        }
        _ => {}
    }
    let a = addr(s).map_err(|e| format!("IP Address {s:?} parse error during conversion from string: {e}"))?;
    if let IpAddr::V6(v6) = a {
        if v6.to_ipv4_mapped().is_some() {
            return Err(format!("IPv4-mapped IPv6 address {s:?} is not allowed"));
        }
    }
    Ok(a)
}

/// Go's `netip.ParsePrefix` with its errors, and upstream's refusal of IPv4-mapped addresses
/// (upstream's `parseCIDR`, its words).
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let pre = "network address parse error during conversion from string";
    let Some((a, b)) = s.split_once('/') else {
        return Err(format!("{pre}: netip.ParsePrefix({s:?}): no '/'"));
    };
    if a.contains('%') {
        return Err(format!("{pre}: netip.ParsePrefix({s:?}): IPv6 zones cannot be present in a prefix"));
    }
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{pre}: netip.ParsePrefix({s:?}): ParseAddr({a:?}): unable to parse IP"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits: u8 = match b.parse::<u8>() {
        Ok(n) if !b.starts_with('+') && (b == "0" || !b.starts_with('0')) => n,
        _ => return Err(format!("{pre}: netip.ParsePrefix({s:?}): bad bits after slash: {b:?}")),
    };
    if bits > max {
        return Err(format!("{pre}: netip.ParsePrefix({s:?}): prefix length out of range"));
    }
    if let IpAddr::V6(v6) = addr {
        if v6.to_ipv4_mapped().is_some() {
            return Err(format!("IPv4-mapped IPv6 address {s:?} is not allowed"));
        }
    }
    Ok(Cidr { addr, bits })
}

fn mask_addr(a: &IpAddr, bits: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if bits == 0 { 0 } else { u32::MAX << (32 - u32::from(bits)) };
            IpAddr::V4((u32::from(*v) & m).into())
        }
        IpAddr::V6(v) => {
            let m = if bits == 0 { 0 } else { u128::MAX << (128 - u32::from(bits)) };
            IpAddr::V6((u128::from(*v) & m).into())
        }
    }
}

impl Cidr {
    fn contains(&self, a: &IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && mask_addr(a, self.bits) == mask_addr(&self.addr, self.bits)
    }
}

fn link_local_unicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.octets()[0] == 169 && v.octets()[1] == 254,
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }
}

fn link_local_multicast(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v) => v.octets()[0] == 0xff && v.octets()[1] & 0x0f == 0x02,
    }
}

fn global_unicast(a: &IpAddr) -> bool {
    let broadcast = matches!(a, IpAddr::V4(v) if v.is_broadcast());
    !(broadcast || a.is_unspecified() || a.is_loopback() || a.is_multicast() || link_local_unicast(a))
}

fn ips(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("ip", "string_to_ip", vec![STRING_TYPE], to_ip)?;
    env.add_overload("isIP", "is_ip", vec![STRING_TYPE], is_ip)?;
    env.add_overload("ip.isCanonical", "ip_is_canonical", vec![STRING_TYPE], ip_is_canonical)?;
    env.add_overload("string", "ip_to_string", vec![Type::simple_type(Kind::Opaque, IP_NAME)], ip_string)?;
    env.add_member_overload(
        "family",
        "ip_family",
        Type::simple_type(Kind::Opaque, IP_NAME),
        vec![],
        ip_family,
    )?;
    env.add_member_overload(
        "isUnspecified",
        "ip_is_unspecified",
        Type::simple_type(Kind::Opaque, IP_NAME),
        vec![],
        ip_unspecified,
    )?;
    env.add_member_overload(
        "isLoopback",
        "ip_is_loopback",
        Type::simple_type(Kind::Opaque, IP_NAME),
        vec![],
        ip_loopback,
    )?;
    env.add_member_overload(
        "isLinkLocalMulticast",
        "ip_is_link_local_multicast",
        Type::simple_type(Kind::Opaque, IP_NAME),
        vec![],
        ip_llm,
    )?;
    env.add_member_overload(
        "isLinkLocalUnicast",
        "ip_is_link_local_unicast",
        Type::simple_type(Kind::Opaque, IP_NAME),
        vec![],
        ip_llu,
    )?;
    env.add_member_overload(
        "isGlobalUnicast",
        "ip_is_global_unicast",
        Type::simple_type(Kind::Opaque, IP_NAME),
        vec![],
        ip_global,
    )?;
    env.add_overload("cidr", "string_to_cidr", vec![STRING_TYPE], to_cidr)?;
    env.add_overload("isCIDR", "is_cidr", vec![STRING_TYPE], is_cidr)?;
    env.add_overload(
        "string",
        "cidr_to_string",
        vec![Type::simple_type(Kind::Opaque, CIDR_NAME)],
        cidr_string,
    )?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_ip",
        Type::simple_type(Kind::Opaque, CIDR_NAME),
        vec![Type::simple_type(Kind::Opaque, IP_NAME)],
        contains_ip,
    )?;
    env.add_member_overload(
        "containsIP",
        "cidr_contains_ip_string",
        Type::simple_type(Kind::Opaque, CIDR_NAME),
        vec![STRING_TYPE],
        contains_ip,
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr",
        Type::simple_type(Kind::Opaque, CIDR_NAME),
        vec![Type::simple_type(Kind::Opaque, CIDR_NAME)],
        contains_cidr,
    )?;
    env.add_member_overload(
        "containsCIDR",
        "cidr_contains_cidr_string",
        Type::simple_type(Kind::Opaque, CIDR_NAME),
        vec![STRING_TYPE],
        contains_cidr,
    )?;
    env.add_member_overload("ip", "cidr_ip", Type::simple_type(Kind::Opaque, CIDR_NAME), vec![], cidr_ip)?;
    env.add_member_overload(
        "masked",
        "cidr_masked",
        Type::simple_type(Kind::Opaque, CIDR_NAME),
        vec![],
        cidr_masked,
    )?;
    env.add_member_overload(
        "prefixLength",
        "cidr_prefix_length",
        Type::simple_type(Kind::Opaque, CIDR_NAME),
        vec![],
        cidr_prefix,
    )?;
    Ok(())
}

fn to_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("ip", args)?;
    let s = str_arg("ip", s.as_ref())?;
    parse_ip(s).map(|a| CowVal::owned(Ip(a))).map_err(|e| err("ip", e))
}

fn is_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("isIP", args)?;
    Ok(CowVal::owned(CelBool::from(parse_ip(str_arg("isIP", s.as_ref())?).is_ok())))
}

fn ip_is_canonical<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("ip.isCanonical", args)?;
    let s = str_arg("ip.isCanonical", s.as_ref())?;
    let a = parse_ip(s).map_err(|e| err("ip.isCanonical", e))?;
    Ok(CowVal::owned(CelBool::from(a.to_string() == s)))
}

unary!(ip_string, "string", Ip, |ip| owned_str(&ip.0.to_string()));
unary!(ip_family, "family", Ip, |ip| CowVal::owned(CelInt::from(if ip.0.is_ipv4() { 4 } else { 6 })));
unary!(ip_unspecified, "isUnspecified", Ip, |ip| CowVal::owned(CelBool::from(ip.0.is_unspecified())));
unary!(ip_loopback, "isLoopback", Ip, |ip| CowVal::owned(CelBool::from(ip.0.is_loopback())));
unary!(ip_llm, "isLinkLocalMulticast", Ip, |ip| CowVal::owned(CelBool::from(link_local_multicast(&ip.0))));
unary!(ip_llu, "isLinkLocalUnicast", Ip, |ip| CowVal::owned(CelBool::from(link_local_unicast(&ip.0))));
unary!(ip_global, "isGlobalUnicast", Ip, |ip| CowVal::owned(CelBool::from(global_unicast(&ip.0))));

fn to_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("cidr", args)?;
    let s = str_arg("cidr", s.as_ref())?;
    // Upstream wraps parseCIDR's error (which has the same words) once more.
    parse_cidr(s)
        .map(CowVal::owned)
        .map_err(|e| err("cidr", format!("network address parse error during conversion from string: {e}")))
}

fn is_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("isCIDR", args)?;
    Ok(CowVal::owned(CelBool::from(parse_cidr(str_arg("isCIDR", s.as_ref())?).is_ok())))
}

unary!(cidr_string, "string", Cidr, |c| owned_str(&format!("{}/{}", c.addr, c.bits)));
unary!(cidr_ip, "ip", Cidr, |c| CowVal::owned(Ip(c.addr)));
unary!(cidr_masked, "masked", Cidr, |c| CowVal::owned(Cidr { addr: mask_addr(&c.addr, c.bits), bits: c.bits }));
unary!(cidr_prefix, "prefixLength", Cidr, |c| CowVal::owned(CelInt::from(i64::from(c.bits))));

fn contains_ip<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [c, x] = take("containsIP", args)?;
    let c: &Cidr = opaque_arg("containsIP", c.as_ref())?;
    let a = match x.downcast_ref::<CelString<'_>>() {
        Some(s) => parse_ip(s.inner()).map_err(|e| err("containsIP", e))?,
        None => opaque_arg::<Ip>("containsIP", x.as_ref())?.0,
    };
    Ok(CowVal::owned(CelBool::from(c.contains(&a))))
}

fn contains_cidr<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [c, x] = take("containsCIDR", args)?;
    let c: &Cidr = opaque_arg("containsCIDR", c.as_ref())?;
    let other = match x.downcast_ref::<CelString<'_>>() {
        Some(s) => parse_cidr(s.inner()).map_err(|e| {
            err("containsCIDR", format!("network address parse error during conversion from string: {e}"))
        })?,
        None => opaque_arg::<Cidr>("containsCIDR", x.as_ref())?.clone(),
    };
    Ok(CowVal::owned(CelBool::from(c.bits <= other.bits && c.contains(&other.addr))))
}

// ---------------------------------------------------------------------------------------------
// Quantities (`resource.Quantity`, exact in units of 10^-9 as api-types' quantity parser reads them).

#[derive(Clone, Debug, PartialEq)]
pub struct Quantity(i128);
const QUANTITY_NAME: &str = "kubernetes.Quantity";
opaque!(Quantity, QUANTITY_TYPE, QUANTITY_NAME);

pub fn parse_quantity(s: &str) -> Result<Quantity, String> {
    crate::typecheck::parse_quantity(s)?;
    crate::quantity::nanos(s).map(Quantity).ok_or_else(|| "quantity out of range".to_string())
}

const NANO: i128 = 1_000_000_000;

fn quantities(env: &mut Env) -> Result<(), DeclarationError> {
    use cel::common::types::INT_TYPE;
    let q = || Type::simple_type(Kind::Opaque, QUANTITY_NAME);
    env.add_overload("quantity", "string_to_quantity", vec![STRING_TYPE], to_quantity)?;
    env.add_overload("isQuantity", "is_quantity_string", vec![STRING_TYPE], is_quantity)?;
    env.add_member_overload("sign", "quantity_sign", q(), vec![], q_sign)?;
    env.add_member_overload("isInteger", "quantity_is_integer", q(), vec![], q_is_integer)?;
    env.add_member_overload("asInteger", "quantity_as_integer", q(), vec![], q_as_integer)?;
    env.add_member_overload("asApproximateFloat", "quantity_as_float", q(), vec![], q_as_float)?;
    env.add_member_overload("isGreaterThan", "quantity_is_greater_than", q(), vec![q()], q_greater)?;
    env.add_member_overload("isLessThan", "quantity_is_less_than", q(), vec![q()], q_less)?;
    env.add_member_overload("compareTo", "quantity_compare_to", q(), vec![q()], q_compare)?;
    env.add_member_overload("add", "quantity_add", q(), vec![q()], q_add)?;
    env.add_member_overload("add", "quantity_add_int", q(), vec![INT_TYPE], q_add)?;
    env.add_member_overload("sub", "quantity_sub", q(), vec![q()], q_sub)?;
    env.add_member_overload("sub", "quantity_sub_int", q(), vec![INT_TYPE], q_sub)?;
    Ok(())
}

fn to_quantity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("quantity", args)?;
    parse_quantity(str_arg("quantity", s.as_ref())?).map(CowVal::owned).map_err(|e| err("quantity", e))
}

fn is_quantity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [s] = take("isQuantity", args)?;
    Ok(CowVal::owned(CelBool::from(parse_quantity(str_arg("isQuantity", s.as_ref())?).is_ok())))
}

unary!(q_sign, "sign", Quantity, |q| CowVal::owned(CelInt::from(q.0.signum() as i64)));
unary!(q_is_integer, "isInteger", Quantity, |q| CowVal::owned(CelBool::from(
    q.0 % NANO == 0 && i64::try_from(q.0 / NANO).is_ok()
)));
unary!(q_as_float, "asApproximateFloat", Quantity, |q| CowVal::owned(CelDouble::from(
    q.0 as f64 / NANO as f64
)));

fn q_as_integer<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a] = take("asInteger", args)?;
    let q: &Quantity = opaque_arg("asInteger", a.as_ref())?;
    if q.0 % NANO != 0 {
        return Err(err("asInteger", "cannot convert value to integer"));
    }
    i64::try_from(q.0 / NANO)
        .map(|i| CowVal::owned(CelInt::from(i)))
        .map_err(|_| err("asInteger", "cannot convert value to integer"))
}

fn two_quantities<'a>(function: &str, a: &'a dyn Val, b: &'a dyn Val) -> Result<(i128, i128), ExecutionError> {
    let x: &Quantity = opaque_arg(function, a)?;
    let y = match b.downcast_ref::<CelInt>() {
        Some(i) => i128::from(*i.inner()) * NANO,
        None => opaque_arg::<Quantity>(function, b)?.0,
    };
    Ok((x.0, y))
}

fn q_cmp<'b, 'v>(function: &str, args: Vec<CowVal<'b, 'v>>) -> Result<Ordering, ExecutionError> {
    let [a, b] = take(function, args)?;
    let (x, y) = two_quantities(function, a.as_ref(), b.as_ref())?;
    Ok(x.cmp(&y))
}

fn q_greater<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    Ok(CowVal::owned(CelBool::from(q_cmp("isGreaterThan", args)? == Ordering::Greater)))
}

fn q_less<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    Ok(CowVal::owned(CelBool::from(q_cmp("isLessThan", args)? == Ordering::Less)))
}

fn q_compare<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let o = q_cmp("compareTo", args)?;
    Ok(CowVal::owned(CelInt::from(o as i64)))
}

/// Quantities beyond this (about 9.2e18 units) are refused rather than computed.
const Q_LIMIT: i128 = (i64::MAX as i128) * NANO;

fn q_arith<'b, 'v>(
    function: &str,
    args: Vec<CowVal<'b, 'v>>,
    neg: bool,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let [a, b] = take(function, args)?;
    let (x, y) = two_quantities(function, a.as_ref(), b.as_ref())?;
    let r = if neg { x.checked_sub(y) } else { x.checked_add(y) };
    match r {
        Some(r) if r.abs() <= Q_LIMIT => Ok(CowVal::owned(Quantity(r))),
        _ => Err(err(function, "quantity overflow")),
    }
}

fn q_add<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    q_arith("add", args, false)
}

fn q_sub<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    q_arith("sub", args, true)
}

// ---------------------------------------------------------------------------------------------
// Property name escaping (`k8s.io/apiserver/pkg/cel/escaping.go`).

pub(super) const RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The CEL name of an object property: itself when it is an identifier, reserved words as
/// `__word__`, and `__` → `__underscores__`, `.` → `__dot__`, `-` → `__dash__`, `/` →
/// `__slash__`; None when the name has other characters or starts with a digit (such a property
/// is not accessible from CEL).
pub fn escape(name: &str) -> Option<String> {
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    if RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let mut out = String::with_capacity(name.len());
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'_' if b.get(i + 1) == Some(&b'_') => {
                out.push_str("__underscores__");
                i += 2;
                continue;
            }
            b'.' => out.push_str("__dot__"),
            b'-' => out.push_str("__dash__"),
            b'/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == b'_' => out.push(c as char),
            _ => return None,
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
