//! Upstream's documented examples of each function, with their results.

use std::sync::Arc;

use cel::{Context, Env, Value as Cel};

use super::*;

fn env() -> Arc<Env> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings).unwrap();
    env.add_extension(register).unwrap();
    Arc::new(env)
}

fn eval(src: &str) -> Result<Cel, String> {
    let env = env();
    let p = env.compile(src).map_err(|e| e.to_string())?;
    let ctx = Context::with_env(env.clone());
    p.execute(&ctx).map_err(|e| e.to_string())
}

/// Each expression evaluates to true.
fn all_true(exprs: &[&str]) {
    for e in exprs {
        assert_eq!(eval(e), Ok(Cel::Bool(true)), "{e}");
    }
}

/// Each expression evaluates to an error containing the text.
fn all_err(cases: &[(&str, &str)]) {
    for (e, want) in cases {
        match eval(e) {
            Err(m) => assert!(m.contains(want), "{e}: {m}"),
            Ok(v) => panic!("{e}: {v:?}"),
        }
    }
}

#[test]
fn lists() {
    all_true(&[
        "[1, 2, 3].isSorted()",
        "['a', 'b', 'b', 'c'].isSorted()",
        "![2.0, 1.0].isSorted()",
        "[1].isSorted()",
        "[].isSorted()",
        "[1, 3].sum() == 4",
        "[1.0, 3.0].sum() == 4.0",
        "[1u, 3u].sum() == 4u",
        "[].sum() == 0",
        "[1, 3].min() == 1",
        "[1, 3].max() == 3",
        "[1].min() == 1",
        "([0] + []).min() == 0",
        "['b', 'a', 'c'].max() == 'c'",
        "[1, 2, 2, 3].indexOf(2) == 1",
        "['a', 'b', 'b', 'c'].lastIndexOf('b') == 2",
        "[1.0].indexOf(1.1) == -1",
        "[].indexOf('string') == -1",
        // The string overloads are still there.
        "'abcb'.indexOf('b') == 1 && 'abcb'.lastIndexOf('b') == 3",
    ]);
    all_err(&[
        ("[].min()", "min called on empty list"),
        ("[].max()", "max called on empty list"),
        ("[1, 'a'].isSorted()", ""),
        ("['a', 'b'].sum()", "sum"),
        ("[{}, {}].max()", "max"),
        ("[1, 2].sum(3)", ""),
    ]);
}

#[test]
fn sets() {
    all_true(&[
        "sets.contains([], [])",
        "sets.contains([1], [])",
        "sets.contains([1, 2, 3, 4], [2, 3])",
        "!sets.contains([1, 2, 3], [4])",
        "sets.contains(['a', 'b'], ['b', 'b'])",
        "sets.equivalent([], [])",
        "sets.equivalent([1], [1, 1])",
        "sets.equivalent([1, 2, 3], [3, 2, 1])",
        "!sets.equivalent([1, 2], [2, 2, 2])",
        "sets.intersects([1], [1])",
        "sets.intersects([1, 2, 3], [3, 4])",
        "!sets.intersects([], [])",
        "!sets.intersects([1], [])",
        "!sets.intersects([1, 2], [3])",
    ]);
    all_err(&[("sets.contains(1, [1])", ""), ("sets.intersects([1])", "")]);
}

#[test]
fn strings_and_regex() {
    all_true(&[
        "'hello'.charAt(4) == 'o'",
        "'hello mellow'.indexOf('ello') == 1",
        "'hello mellow'.lastIndexOf('ello') == 7",
        "'TacoCat'.lowerAscii() == 'tacocat'",
        "'TacoCat'.upperAscii() == 'TACOCAT'",
        "'hello hello'.replace('he', 'we') == 'wello wello'",
        "'hello hello hello'.split(' ') == ['hello', 'hello', 'hello']",
        "'tacocat'.substring(4) == 'cat'",
        "'tacocat'.substring(0, 4) == 'taco'",
        "'  \\ttrim\\n    '.trim() == 'trim'",
        "['hello', 'mellow'].join(' ') == 'hello mellow'",
        "'abc 123'.find('[0-9]+') == '123'",
        "'abc 123'.find('xyz') == ''",
        "'123 abc 456'.findAll('[0-9]+') == ['123', '456']",
        "'123 abc 456'.findAll('[0-9]+', 1) == ['123']",
        "'123 abc 456'.findAll('xyz') == []",
        "'hello'.matches('^h.*o$')",
        "'%s has %d items'.format(['list', 3]) == 'list has 3 items'",
        "strings.quote('a\"b') == '\"a\\\\\"b\"'",
        "'a,b,c'.split(',', 2) == ['a', 'b,c']",
        "'aaa'.replace('a', 'b', 2) == 'bba'",
        "'tacocat'.substring(4).reverse() == 'tac'",
    ]);
    all_err(&[
        ("'abc'.find('[')", "error parsing regexp"),
        ("'abc'.findAll('(', 2)", "error parsing regexp"),
        ("'hello'.charAt(40)", "index out of range"),
    ]);
}

#[test]
fn urls() {
    all_true(&[
        "isURL('https://user:pass@example.com:80/path?query=val#fragment')",
        "isURL('/absolute-path')",
        "!isURL('https://a:b:c/')",
        "!isURL('../relative-path')",
        "!isURL('example.com')",
        "url('/path').getScheme() == ''",
        "url('https://example.com/').getScheme() == 'https'",
        "url('https://example.com:80/').getHost() == 'example.com:80'",
        "url('https://example.com/').getHost() == 'example.com'",
        "url('https://[::1]:80/').getHost() == '[::1]:80'",
        "url('https://[::1]/').getHost() == '[::1]'",
        "url('/path').getHost() == ''",
        "url('https://example.com:80/').getHostname() == 'example.com'",
        "url('https://127.0.0.1:80/').getHostname() == '127.0.0.1'",
        "url('https://[::1]:80/').getHostname() == '::1'",
        "url('/path').getHostname() == ''",
        "url('https://example.com:80/').getPort() == '80'",
        "url('https://example.com/').getPort() == ''",
        "url('/path').getPort() == ''",
        "url('https://example.com/path').getEscapedPath() == '/path'",
        "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
        "url('https://example.com').getEscapedPath() == ''",
        "url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}",
        "url('https://example.com/path?key with spaces=value with spaces').getQuery() == {'key with spaces': ['value with spaces']}",
        "url('https://example.com/path?').getQuery() == {}",
        "url('https://example.com/path').getQuery() == {}",
        "url('https://user:pass@example.com:80/path?query=val#fragment').getQuery() == {'query': ['val']}",
    ]);
    all_err(&[
        ("url('https://a:b:c/')", "URL parse error during conversion from string"),
        ("url('../relative-path')", "invalid URI for request"),
        ("url(1)", ""),
        ("'https://x/'.getHost()", ""),
    ]);
}

#[test]
fn ips_and_cidrs() {
    all_true(&[
        "isIP('127.0.0.1')",
        "isIP('::1')",
        "!isIP('127.0.0.256')",
        "!isIP(':::1')",
        "!isIP('127.0.0.1/24')",
        "!isIP('::ffff:1.2.3.4')",
        "!isIP('fe80::1%eth0')",
        "ip.isCanonical('127.0.0.1')",
        "ip.isCanonical('2001:db8::abcd')",
        "!ip.isCanonical('2001:DB8::ABCD')",
        "!ip.isCanonical('2001:db8::0:0:0:abcd')",
        "ip('127.0.0.1').family() == 4",
        "ip('::1').family() == 6",
        "ip('0.0.0.0').isUnspecified()",
        "!ip('127.0.0.1').isUnspecified()",
        "ip('::').isUnspecified()",
        "ip('127.0.0.1').isLoopback()",
        "!ip('1.2.3.4').isLoopback()",
        "ip('::1').isLoopback()",
        "ip('224.0.0.1').isLinkLocalMulticast()",
        "!ip('224.0.1.1').isLinkLocalMulticast()",
        "ip('ff02::1').isLinkLocalMulticast()",
        "!ip('fd00::1').isLinkLocalMulticast()",
        "ip('169.254.169.254').isLinkLocalUnicast()",
        "!ip('192.168.0.1').isLinkLocalUnicast()",
        "ip('fe80::1').isLinkLocalUnicast()",
        "!ip('fd80::1').isLinkLocalUnicast()",
        "ip('192.168.0.1').isGlobalUnicast()",
        "!ip('255.255.255.255').isGlobalUnicast()",
        "ip('2001:db8::abcd').isGlobalUnicast()",
        "!ip('ff00::1').isGlobalUnicast()",
        "string(ip('127.0.0.1')) == '127.0.0.1'",
        "ip('127.0.0.1') == ip('127.0.0.1')",
        "ip('127.0.0.1') != ip('127.0.0.2')",
        "isCIDR('192.168.0.0/16')",
        "isCIDR('::1/128')",
        "!isCIDR('192.168.0.0/33')",
        "!isCIDR('192.168.0.0')",
        "cidr('192.168.0.0/24').containsIP(ip('192.168.0.1'))",
        "!cidr('192.168.0.0/24').containsIP(ip('192.168.1.1'))",
        "cidr('192.168.0.0/24').containsIP('192.168.0.1')",
        "!cidr('192.168.0.0/24').containsIP(ip('::1'))",
        "cidr('192.168.0.0/24').containsCIDR(cidr('192.168.0.0/25'))",
        "cidr('192.168.0.0/24').containsCIDR('192.168.0.0/25')",
        "!cidr('192.168.0.0/24').containsCIDR(cidr('192.168.0.0/23'))",
        "!cidr('192.168.0.0/24').containsCIDR(cidr('192.168.1.0/24'))",
        "cidr('192.168.0.1/24').ip() == ip('192.168.0.1')",
        "cidr('192.168.0.0/24').ip().family() == 4",
        "cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')",
        "cidr('192.168.0.1/24') != cidr('192.168.0.0/24')",
        "cidr('::1/128').masked() == cidr('::1/128')",
        "cidr('192.168.0.0/24').prefixLength() == 24",
        "string(cidr('192.168.0.0/24')) == '192.168.0.0/24'",
        "string(cidr('2001:db8::/32')) == '2001:db8::/32'",
    ]);
    all_err(&[
        ("ip('127.0.0.256')", "IP Address \"127.0.0.256\" parse error during conversion from string: ParseAddr(\"127.0.0.256\"): unable to parse IP"),
        ("ip('::ffff:1.2.3.4')", "IPv4-mapped IPv6 address \"::ffff:1.2.3.4\" is not allowed"),
        ("ip('fe80::1%eth0')", "IP address \"fe80::1%eth0\" with zone value is not allowed"),
        ("cidr('192.168.0.0/33')", "network address parse error during conversion from string: network address parse error during conversion from string: netip.ParsePrefix(\"192.168.0.0/33\"): prefix length out of range"),
        ("cidr('192.168.0.0')", "netip.ParsePrefix(\"192.168.0.0\"): no '/'"),
        ("cidr('::ffff:1.2.3.4/120')", "IPv4-mapped IPv6 address \"::ffff:1.2.3.4/120\" is not allowed"),
        ("cidr('192.168.0.0/24').containsIP('nope')", "parse error"),
        ("ip('1.2.3.4').prefixLength()", ""),
        ("ip(1)", ""),
    ]);
}

#[test]
fn quantities() {
    all_true(&[
        "isQuantity('1.3G')",
        "isQuantity('1Mi')",
        "isQuantity('500m')",
        "!isQuantity('1.3Gi ')",
        "!isQuantity('-1.3xz')",
        "!isQuantity('')",
        "quantity('50k').isGreaterThan(quantity('50M')) == false",
        "quantity('50M').isGreaterThan(quantity('50k'))",
        "quantity('50k').isLessThan(quantity('50M'))",
        "quantity('50M').compareTo(quantity('50k')) == 1",
        "quantity('50k').compareTo(quantity('50k')) == 0",
        "quantity('50k').compareTo(quantity('50M')) == -1",
        "quantity('1Gi').isGreaterThan(quantity('1G'))",
        "quantity('50k').add(quantity('20')) == quantity('50.02k')",
        "quantity('50k').add(20) == quantity('50020')",
        "quantity('50k').sub(quantity('20')) == quantity('49980')",
        "quantity('50k').sub(20) == quantity('49980')",
        "quantity('50M').asInteger() == 50000000",
        "quantity('50k').isInteger()",
        "!quantity('50m').isInteger()",
        "quantity('50.5').asApproximateFloat() == 50.5",
        "quantity('1Gi').asInteger() == 1073741824",
        "quantity('-5').sign() == -1",
        "quantity('0').sign() == 0",
        "quantity('5m').sign() == 1",
    ]);
    all_err(&[
        ("quantity('1.3ii')", "unable to parse quantity's suffix"),
        ("quantity('1.3xz')", "quantities must match the regular expression"),
        ("quantity('nope')", "quantities must match the regular expression"),
        ("quantity('50m').asInteger()", "cannot convert value to integer"),
        ("quantity('9E').add(quantity('9E'))", "quantity overflow"),
        ("quantity('1').isGreaterThan(1.0)", ""),
    ]);
}

#[test]
fn escaping_as_upstream() {
    for (name, want) in [
        ("metadata", Some("metadata")),
        ("a-b", Some("a__dash__b")),
        ("a.b", Some("a__dot__b")),
        ("a/b", Some("a__slash__b")),
        ("a__b", Some("a__underscores__b")),
        ("a___b", Some("a__underscores___b")),
        ("namespace", Some("__namespace__")),
        ("if", Some("__if__")),
        ("x-kubernetes-foo", Some("x__dash__kubernetes__dash__foo")),
        ("_a", Some("_a")),
        ("1a", None),
        ("a b", None),
        ("a:b", None),
        ("", None),
    ] {
        assert_eq!(escape(name).as_deref(), want, "{name}");
    }
}

#[test]
fn timestamps_and_durations() {
    all_true(&[
        "timestamp('2023-08-26T12:39:00-07:00') == timestamp('2023-08-26T19:39:00Z')",
        "timestamp('2023-08-26T12:39:00Z') < timestamp('2023-08-26T12:39:00.5Z')",
        "timestamp('2023-08-26T12:39:00Z') + duration('1h') == timestamp('2023-08-26T13:39:00Z')",
        "duration('1h') + timestamp('2023-08-26T12:39:00Z') == timestamp('2023-08-26T13:39:00Z')",
        "timestamp('2023-08-26T12:39:00Z') - duration('90m') == timestamp('2023-08-26T11:09:00Z')",
        "timestamp('2023-08-27T00:00:00Z') - timestamp('2023-08-26T00:00:00Z') == duration('24h')",
        "string(timestamp('2023-08-26T12:39:00.120-07:00')) == '2023-08-26T12:39:00.12-07:00'",
        "string(timestamp('2023-08-26T12:39:00+00:00')) == '2023-08-26T12:39:00Z'",
        "string(timestamp('2023-08-26T23:00:00-07:00') + duration('2h')) == '2023-08-27T01:00:00-07:00'",
        "string(timestamp('2023-08-26T12:39:00.120-07:00')) != string(timestamp('2023-08-26T19:39:00.12Z'))",
        "timestamp('2023-08-26T12:39:00-07:00').getHours() == 19",
        "string(duration('1h30m')) == '5400s'",
        "string(duration('-1.5s')) == '-1.5s'",
        "string(duration('300ms')) == '0.3s'",
        "duration('1h') > duration('59m59s')",
        "duration('1.5h') == duration('90m')",
        "duration('1us') == duration('1000ns') && duration('1µs') == duration('1us')",
        "duration('0') == duration('0s')",
        "duration('1h') - duration('30m') == duration('30m')",
        "[duration('1m'), duration('1s')].sum() == duration('1m1s')",
        "[timestamp('2023-01-02T00:00:00Z'), timestamp('2023-01-01T00:00:00Z')].min() == timestamp('2023-01-01T00:00:00Z')",
        "int(timestamp('1970-01-01T00:01:00Z')) == 60",
        "timestamp(60) == timestamp('1970-01-01T00:01:00Z')",
        "duration('2h').getHours() == 2 && duration('2h').getMinutes() == 120",
        "duration('1.5s').getMilliseconds() == 1500 && duration('1.5s').getSeconds() == 1",
        "timestamp('2023-08-26T12:39:07.250Z').getFullYear() == 2023",
        "timestamp('2023-08-26T12:39:07.250Z').getMonth() == 7",
        "timestamp('2023-08-26T12:39:07.250Z').getDate() == 26",
        "timestamp('2023-08-26T12:39:07.250Z').getDayOfMonth() == 25",
        "timestamp('2023-08-26T12:39:07.250Z').getDayOfWeek() == 6",
        "timestamp('2023-01-01T00:00:00Z').getDayOfYear() == 0",
        "timestamp('2023-08-26T12:39:07.250Z').getHours() == 12",
        "timestamp('2023-08-26T12:39:07.250Z').getHours('-07:00') == 5",
        "timestamp('2023-08-26T02:39:07.250Z').getDate('-07:00') == 25",
        "timestamp('2023-08-26T12:39:07.250Z').getMinutes() == 39",
        "timestamp('2023-08-26T12:39:07.250Z').getSeconds() == 7",
        "timestamp('2023-08-26T12:39:07.250Z').getMilliseconds() == 250",
        "timestamp('1969-12-31T23:59:59Z').getFullYear() == 1969",
    ]);
    all_err(&[
        ("timestamp('2023-13-01T00:00:00Z')", "month out of range"),
        ("timestamp('2023-02-29T00:00:00Z')", "day out of range"),
        ("timestamp('yesterday')", "parsing time \"yesterday\""),
        ("timestamp('2023-08-26 12:39:00Z')", "cannot parse"),
        ("duration('1d')", "time: unknown unit \"d\" in duration \"1d\""),
        ("duration('1')", "time: missing unit in duration \"1\""),
        ("duration('')", "time: invalid duration \"\""),
        ("duration('9999999999h')", "time: invalid duration"),
        ("timestamp('9999-12-31T23:59:59Z') + duration('1s')", "overflow"),
        ("duration('1h') + 1", ""),
        ("timestamp('2023-08-26T12:39:00Z') < duration('1h')", ""),
        ("timestamp('2023-08-26T12:39:00Z').getHours('Europe/Paris')", "unknown time zone"),
        ("timestamp('2023-08-26T12:39:00Z')", ""),
    ]);
}
