//! The programs a container can run, busybox-style (one name each, busybox's messages).
//! They see only the sandbox: its filesystem, environment and cluster network.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::shell::{Io, Shell};
use super::vfs::Kind;
use super::{net, tar};

/// The programs found on the container's PATH.
pub const PROGRAMS: &[&str] = &[
    "echo", "printf", "cat", "sleep", "env", "printenv", "hostname", "ls", "true", "false", ":", "test", "[",
    "date", "mkdir", "rm", "rmdir", "touch", "head", "tail", "wc", "grep", "pwd", "id", "whoami", "uname",
    "seq", "basename", "dirname", "yes", "tee", "nslookup", "curl", "wget", "tar", "sh", "ash", "bash", "cp",
    "mv",
];

/// Runs an applet; an unknown program is `sh: x: not found`, exit 127.
pub async fn run(sh: &mut Shell, name: &str, prog: &str, args: &[String], io: &Io) -> i32 {
    match name {
        "true" | ":" => 0,
        "false" => 1,
        "echo" => echo(args, io).await,
        "printf" => printf(args, io).await,
        "cat" => cat(sh, args, io).await,
        "sleep" => sleep(args, io).await,
        "env" | "printenv" => {
            let env = sh.environ();
            if name == "printenv" && !args.is_empty() {
                let mut code = 0;
                for a in args {
                    match env.iter().find(|(k, _)| k == a) {
                        Some((_, v)) => {
                            io.out(&format!("{v}\n")).await;
                        }
                        None => code = 1,
                    }
                }
                return code;
            }
            let mut s = String::new();
            for (k, v) in env {
                s.push_str(&format!("{k}={v}\n"));
            }
            io.out(&s).await;
            0
        }
        "hostname" => {
            io.out(&format!("{}\n", sh.sb.hostname)).await;
            0
        }
        "pwd" => {
            io.out(&format!("{}\n", sh.cwd)).await;
            0
        }
        "id" => {
            io.out("uid=0(root) gid=0(root) groups=0(root)\n").await;
            0
        }
        "whoami" => {
            io.out("root\n").await;
            0
        }
        "uname" => {
            let s = if args.iter().any(|a| a == "-a") {
                format!("Linux {} 6.1.0-kplane #1 SMP x86_64 GNU/Linux\n", sh.sb.hostname)
            } else {
                "Linux\n".into()
            };
            io.out(&s).await;
            0
        }
        "ls" => ls(sh, args, io).await,
        "test" => i32::from(!test(sh, args)),
        "[" => {
            if args.last().map(String::as_str) != Some("]") {
                io.err("sh: [: missing ]\n").await;
                return 2;
            }
            i32::from(!test(sh, &args[..args.len() - 1]))
        }
        "date" => date(args, io).await,
        "mkdir" => {
            let parents = args.iter().any(|a| a == "-p");
            let mut code = 0;
            for a in args.iter().filter(|a| !a.starts_with('-')) {
                if let Err(e) = sh.sb.fs.mkdir(&sh.abs(a), parents) {
                    io.err(&format!("mkdir: can't create directory '{a}': {e}\n")).await;
                    code = 1;
                }
            }
            code
        }
        "rm" | "rmdir" => {
            let flags: String = args.iter().filter(|a| a.starts_with('-')).flat_map(|a| a.chars()).collect();
            let (recursive, force) = (flags.contains('r') || flags.contains('R'), flags.contains('f'));
            let mut code = 0;
            for a in args.iter().filter(|a| !a.starts_with('-')) {
                let path = sh.abs(a);
                if name == "rm" && !recursive && sh.sb.fs.stat(&path) == Some(Kind::Dir) {
                    io.err(&format!("rm: '{a}' is a directory\n")).await;
                    code = 1;
                    continue;
                }
                match sh.sb.fs.remove(&path, recursive) {
                    Ok(()) => {}
                    Err(super::vfs::FsError::NotFound) if force => {}
                    Err(e) => {
                        io.err(&format!("{name}: can't remove '{a}': {e}\n")).await;
                        code = 1;
                    }
                }
            }
            code
        }
        "touch" => {
            let mut code = 0;
            for a in args.iter().filter(|a| !a.starts_with('-')) {
                let path = sh.abs(a);
                if let Err(e) = sh.sb.fs.write(&path, b"", true) {
                    io.err(&format!("touch: {a}: {e}\n")).await;
                    code = 1;
                }
            }
            code
        }
        "cp" | "mv" => {
            let files: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
            let [src, dst] = files.as_slice() else {
                io.err(&format!("{name}: need a source and a destination\n")).await;
                return 1;
            };
            let (s, mut d) = (sh.abs(src), sh.abs(dst));
            if sh.sb.fs.stat(&d) == Some(Kind::Dir) {
                d = format!("{}/{}", d.trim_end_matches('/'), s.rsplit('/').next().unwrap_or_default());
            }
            match sh.sb.fs.read(&s) {
                Ok(data) => match sh.sb.fs.write(&d, &data, false) {
                    Ok(()) => {
                        if name == "mv" {
                            let _ = sh.sb.fs.remove(&s, false);
                        }
                        0
                    }
                    Err(e) => {
                        io.err(&format!("{name}: can't create '{dst}': {e}\n")).await;
                        1
                    }
                },
                Err(e) => {
                    io.err(&format!("{name}: can't stat '{src}': {e}\n")).await;
                    1
                }
            }
        }
        "head" | "tail" => head_tail(sh, name, args, io).await,
        "wc" => wc(sh, args, io).await,
        "grep" => grep(sh, args, io).await,
        "seq" => {
            let nums: Vec<i64> = args.iter().filter_map(|a| a.parse().ok()).collect();
            let (first, step, last) = match nums.as_slice() {
                [l] => (1, 1, *l),
                [f, l] => (*f, 1, *l),
                [f, s, l] => (*f, *s, *l),
                _ => {
                    io.err("seq: usage: seq [FIRST [INC]] LAST\n").await;
                    return 1;
                }
            };
            if step == 0 {
                return 1;
            }
            let mut i = first;
            let mut s = String::new();
            while (step > 0 && i <= last) || (step < 0 && i >= last) {
                s.push_str(&format!("{i}\n"));
                if s.len() > 8192 && !io.out(&std::mem::take(&mut s)).await {
                    return 1;
                }
                i += step;
            }
            io.out(&s).await;
            0
        }
        "basename" | "dirname" => {
            let Some(p) = args.first() else {
                io.err(&format!("{name}: missing operand\n")).await;
                return 1;
            };
            let t = p.trim_end_matches('/');
            let out = if name == "basename" {
                let b = t.rsplit('/').next().unwrap_or("/");
                let b = args.get(1).and_then(|suf| b.strip_suffix(suf.as_str())).unwrap_or(b);
                if b.is_empty() {
                    "/".to_string()
                } else {
                    b.to_string()
                }
            } else {
                match t.rsplit_once('/') {
                    Some(("", _)) => "/".into(),
                    Some((d, _)) => d.into(),
                    None => ".".into(),
                }
            };
            io.out(&format!("{out}\n")).await;
            0
        }
        "yes" => {
            let line = format!("{}\n", if args.is_empty() { "y".to_string() } else { args.join(" ") });
            let chunk = line.repeat((4096 / line.len()).max(1));
            loop {
                if !io.out(&chunk).await {
                    return 1;
                }
                tokio::task::yield_now().await;
            }
        }
        "tee" => {
            let append = args.iter().any(|a| a == "-a");
            let files: Vec<String> = args.iter().filter(|a| !a.starts_with('-')).map(|a| sh.abs(a)).collect();
            for f in &files {
                let _ = sh.sb.fs.write(f, b"", append);
            }
            while let Some(c) = io.stdin.chunk().await {
                for f in &files {
                    let _ = sh.sb.fs.write(f, &c, true);
                }
                if io.stdout.write(&c).await.is_err() {
                    return 1;
                }
            }
            0
        }
        "nslookup" => net::nslookup(sh, args, io).await,
        "curl" => net::curl(sh, args, io).await,
        "wget" => net::wget(sh, args, io).await,
        "tar" => tar::tar(sh, args, io).await,
        _ => {
            io.err(&format!("sh: {prog}: not found\n")).await;
            127
        }
    }
}

async fn echo(args: &[String], io: &Io) -> i32 {
    let mut newline = true;
    let mut escapes = false;
    let mut k = 0;
    while let Some(a) = args.get(k) {
        if a.len() > 1 && a.starts_with('-') && a[1..].chars().all(|c| matches!(c, 'n' | 'e' | 'E')) {
            newline &= !a.contains('n');
            if a.contains('e') {
                escapes = true;
            }
            if a.contains('E') {
                escapes = false;
            }
            k += 1;
        } else {
            break;
        }
    }
    let mut s = args[k..].join(" ");
    if escapes {
        let (t, stop) = unescape(&s);
        s = t;
        if stop {
            newline = false;
        }
    }
    if newline {
        s.push('\n');
    }
    i32::from(!io.out(&s).await)
}

/// Backslash escapes (`\n`, `\t`, `\\`, `\0NNN`, `\c` stops output).
fn unescape(s: &str) -> (String, bool) {
    let mut out = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('a') => out.push('\x07'),
            Some('b') => out.push('\x08'),
            Some('e') => out.push('\x1b'),
            Some('\\') => out.push('\\'),
            Some('c') => return (out, true),
            Some('0') => {
                let mut n = 0u32;
                for _ in 0..3 {
                    match it.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            n = n * 8 + d;
                            it.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(n).unwrap_or('?'));
            }
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    (out, false)
}

async fn printf(args: &[String], io: &Io) -> i32 {
    let Some(fmt) = args.first() else {
        io.err("printf: usage: printf FORMAT [ARG]...\n").await;
        return 1;
    };
    let (fmt, _) = unescape(fmt);
    let mut rest = args[1..].iter();
    let mut out = String::new();
    let mut code = 0;
    loop {
        let mut consumed = false;
        let mut chars = fmt.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let mut spec = String::new();
            while let Some(&d) =
                chars.peek().filter(|d| d.is_ascii_digit() || matches!(d, '-' | '.' | '+' | ' ' | '0'))
            {
                spec.push(d);
                chars.next();
            }
            let conv = chars.next();
            let width: usize = spec
                .trim_start_matches(['-', '+', ' ', '0'])
                .split('.')
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(0);
            let left = spec.starts_with('-');
            let arg = if conv == Some('%') {
                None
            } else {
                consumed = true;
                rest.next().cloned()
            };
            let text = match conv {
                Some('%') => "%".to_string(),
                Some('s') => arg.unwrap_or_default(),
                Some('b') => unescape(&arg.unwrap_or_default()).0,
                Some('c') => arg.and_then(|a| a.chars().next()).map(String::from).unwrap_or_default(),
                Some('d') | Some('i') | Some('u') => {
                    let a = arg.unwrap_or_else(|| "0".into());
                    match a.trim().parse::<i64>() {
                        Ok(n) => n.to_string(),
                        Err(_) => {
                            io.err(&format!("printf: invalid number '{a}'\n")).await;
                            code = 1;
                            "0".into()
                        }
                    }
                }
                Some('x') => arg
                    .and_then(|a| a.parse::<i64>().ok())
                    .map(|n| format!("{n:x}"))
                    .unwrap_or_else(|| "0".into()),
                Some(o) => format!("%{spec}{o}"),
                None => "%".into(),
            };
            let pad = width.saturating_sub(text.chars().count());
            if left {
                out.push_str(&text);
                out.push_str(&" ".repeat(pad));
            } else {
                let fill = if spec.starts_with('0') && !left { "0" } else { " " };
                out.push_str(&fill.repeat(pad));
                out.push_str(&text);
            }
        }
        if !consumed || rest.len() == 0 {
            break;
        }
    }
    if !io.out(&out).await {
        return 1;
    }
    code
}

/// Reads a file of the sandbox or, for `-`/none, stdin.
/// Errors: `'<file>': <reason>` as busybox prints them after "can't open".
async fn input_of(sh: &Shell, file: Option<&str>, io: &Io) -> Result<Vec<u8>, String> {
    match file {
        None | Some("-") => Ok(io.stdin.all().await),
        Some(f) => sh.sb.fs.read(&sh.abs(f)).map(|d| d.as_ref().clone()).map_err(|e| format!("'{f}': {e}")),
    }
}

async fn cat(sh: &Shell, args: &[String], io: &Io) -> i32 {
    let files: Vec<&str> =
        args.iter().filter(|a| a.as_str() == "-" || !a.starts_with('-')).map(String::as_str).collect();
    if files.is_empty() {
        // Streams: `cat` in a pipe passes data on as it comes.
        while let Some(c) = io.stdin.chunk().await {
            if io.stdout.write(&c).await.is_err() {
                return 1;
            }
        }
        return 0;
    }
    let mut code = 0;
    for f in files {
        match input_of(sh, Some(f), io).await {
            Ok(d) => {
                if io.stdout.write(&d).await.is_err() {
                    return 1;
                }
            }
            Err(e) => {
                io.err(&format!("cat: can't open {e}\n")).await;
                code = 1;
            }
        }
    }
    code
}

/// `sleep` durations: `5`, `0.5`, `2s`, `1m`, `1h`, `1d`, `infinity`.
pub fn parse_duration(a: &str) -> Option<Duration> {
    if a == "infinity" || a == "inf" {
        return Some(Duration::from_secs(u64::MAX / 4));
    }
    let (num, mult) = match a.chars().last()? {
        's' => (&a[..a.len() - 1], 1.0),
        'm' => (&a[..a.len() - 1], 60.0),
        'h' => (&a[..a.len() - 1], 3600.0),
        'd' => (&a[..a.len() - 1], 86400.0),
        _ => (a, 1.0),
    };
    let n: f64 = num.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64((n * mult).min(1e15)).unwrap_or(Duration::from_secs(u64::MAX / 4)))
}

async fn sleep(args: &[String], io: &Io) -> i32 {
    if args.is_empty() {
        io.err("sleep: missing operand\n").await;
        return 1;
    }
    let mut total = Duration::ZERO;
    for a in args {
        match parse_duration(a) {
            Some(d) => total = total.saturating_add(d),
            None => {
                io.err(&format!("sleep: invalid number '{a}'\n")).await;
                return 1;
            }
        }
    }
    // A timer, not a thread; the far future is capped to what tokio can schedule.
    tokio::time::sleep(total.min(Duration::from_secs(86400 * 365 * 30))).await;
    0
}

async fn date(args: &[String], io: &Io) -> i32 {
    let now = Timestamp::now().to_zoned(TimeZone::UTC);
    let fmt = args.iter().find_map(|a| a.strip_prefix('+')).unwrap_or("%a %b %e %H:%M:%S UTC %Y");
    match jiff::fmt::strtime::format(fmt, &now) {
        Ok(s) => {
            io.out(&format!("{s}\n")).await;
            0
        }
        Err(_) => {
            io.err(&format!("date: invalid format '{fmt}'\n")).await;
            1
        }
    }
}

async fn ls(sh: &Shell, args: &[String], io: &Io) -> i32 {
    let flags: String =
        args.iter().filter(|a| a.starts_with('-') && a.len() > 1).flat_map(|a| a[1..].chars()).collect();
    let (long, all, one) =
        (flags.contains('l'), flags.contains('a'), flags.contains('1') || flags.contains('l'));
    let mut paths: Vec<&str> =
        args.iter().filter(|a| !a.starts_with('-') || a.len() == 1).map(String::as_str).collect();
    if paths.is_empty() {
        paths.push(".");
    }
    let many = paths.len() > 1;
    let mut code = 0;
    let mut out = String::new();
    let entry = |name: &str, kind: &Kind| -> String {
        if !long {
            return name.to_string();
        }
        let (mode, size) = match kind {
            Kind::Dir => ("drwxr-xr-x", 4096),
            Kind::File(n) => ("-rw-r--r--", *n),
        };
        let t = Timestamp::now().to_zoned(TimeZone::UTC);
        let when = jiff::fmt::strtime::format("%b %e %H:%M", &t).unwrap_or_default();
        format!("{mode}    1 root     root     {size:>9} {when} {name}")
    };
    for (i, p) in paths.iter().enumerate() {
        let abs = sh.abs(p);
        match sh.sb.fs.stat(&abs) {
            None => {
                io.err(&format!("ls: {p}: No such file or directory\n")).await;
                code = 1;
            }
            Some(k @ Kind::File(_)) => out.push_str(&format!("{}\n", entry(p, &k))),
            Some(Kind::Dir) => {
                if many {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(&format!("{p}:\n"));
                }
                let mut names = sh.sb.fs.list(&abs).unwrap_or_default();
                if all {
                    names.splice(0..0, [".".to_string(), "..".to_string()]);
                }
                let mut lines = Vec::new();
                for n in names.iter().filter(|n| all || !n.starts_with('.')) {
                    let child = if abs == "/" { format!("/{n}") } else { format!("{abs}/{n}") };
                    let kind = if n == "." || n == ".." {
                        Kind::Dir
                    } else {
                        sh.sb.fs.stat(&child).unwrap_or(Kind::Dir)
                    };
                    lines.push(entry(n, &kind));
                }
                if long {
                    out.push_str(&format!("total {}\n", lines.len()));
                }
                if !lines.is_empty() {
                    out.push_str(&lines.join(if one { "\n" } else { "  " }));
                    out.push('\n');
                }
            }
        }
    }
    io.out(&out).await;
    code
}

/// `test` / `[`: true or false.
pub fn test(sh: &Shell, args: &[String]) -> bool {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    fn eval(sh: &Shell, a: &[&str]) -> bool {
        if let Some(pos) = a.iter().position(|x| *x == "-o") {
            return eval(sh, &a[..pos]) || eval(sh, &a[pos + 1..]);
        }
        if let Some(pos) = a.iter().position(|x| *x == "-a") {
            if pos > 0 && pos + 1 < a.len() && !(a.len() == 2 && pos == 0) {
                return eval(sh, &a[..pos]) && eval(sh, &a[pos + 1..]);
            }
        }
        match a {
            [] => false,
            ["!", rest @ ..] => !eval(sh, rest),
            [s] => !s.is_empty(),
            [op, x] => {
                let path = sh.abs(x);
                match *op {
                    "-z" => x.is_empty(),
                    "-n" => !x.is_empty(),
                    "-e" | "-r" | "-w" => sh.sb.fs.stat(&path).is_some(),
                    "-f" => matches!(sh.sb.fs.stat(&path), Some(Kind::File(_))),
                    "-d" => sh.sb.fs.stat(&path) == Some(Kind::Dir),
                    "-s" => matches!(sh.sb.fs.stat(&path), Some(Kind::File(n)) if n > 0),
                    "-x" => sh.sb.fs.stat(&path) == Some(Kind::Dir),
                    "-L" | "-h" | "-p" | "-S" | "-b" | "-c" => false,
                    _ => false,
                }
            }
            [x, op, y] => {
                let num = |s: &str| s.trim().parse::<i64>().ok();
                match *op {
                    "=" | "==" => x == y,
                    "!=" => x != y,
                    "<" => x < y,
                    ">" => x > y,
                    "-eq" | "-ne" | "-lt" | "-le" | "-gt" | "-ge" => {
                        let (Some(x), Some(y)) = (num(x), num(y)) else { return false };
                        match *op {
                            "-eq" => x == y,
                            "-ne" => x != y,
                            "-lt" => x < y,
                            "-le" => x <= y,
                            "-gt" => x > y,
                            _ => x >= y,
                        }
                    }
                    _ => false,
                }
            }
            ["(", inner @ .., ")"] => eval(sh, inner),
            _ => false,
        }
    }
    eval(sh, &a)
}

async fn head_tail(sh: &Shell, name: &str, args: &[String], io: &Io) -> i32 {
    let mut n: usize = 10;
    let mut bytes: Option<usize> = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-n" {
            n = it.next().and_then(|v| v.trim_start_matches('+').parse().ok()).unwrap_or(10);
        } else if a == "-c" {
            bytes = it.next().and_then(|v| v.parse().ok());
        } else if let Some(v) = a.strip_prefix("-n") {
            n = v.parse().unwrap_or(10);
        } else if a.starts_with('-') && a.len() > 1 && a[1..].chars().all(|c| c.is_ascii_digit()) {
            n = a[1..].parse().unwrap_or(10);
        } else if a == "-f" {
        } else {
            files.push(a.as_str());
        }
    }
    if name == "head" && bytes.is_none() && files.first().is_none_or(|f| *f == "-") {
        // Stops reading after n lines, so `yes | head` ends.
        let mut out = String::new();
        for _ in 0..n {
            match io.stdin.line().await {
                Some(l) => {
                    out.push_str(&l);
                    out.push('\n');
                }
                None => break,
            }
        }
        return i32::from(!io.out(&out).await);
    }
    let data = match input_of(sh, files.first().copied(), io).await {
        Ok(d) => d,
        Err(e) => {
            io.err(&format!("{name}: can't open {e}\n")).await;
            return 1;
        }
    };
    let out: Vec<u8> = if let Some(b) = bytes {
        if name == "head" {
            data[..b.min(data.len())].to_vec()
        } else {
            data[data.len().saturating_sub(b)..].to_vec()
        }
    } else {
        let text = String::from_utf8_lossy(&data);
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let pick =
            if name == "head" { &lines[..n.min(lines.len())] } else { &lines[lines.len().saturating_sub(n)..] };
        pick.concat().into_bytes()
    };
    i32::from(io.stdout.write(&out).await.is_err())
}

async fn wc(sh: &Shell, args: &[String], io: &Io) -> i32 {
    let flags: String = args.iter().filter(|a| a.starts_with('-')).flat_map(|a| a[1..].chars()).collect();
    let file = args.iter().find(|a| !a.starts_with('-')).map(String::as_str);
    let data = match input_of(sh, file, io).await {
        Ok(d) => d,
        Err(e) => {
            io.err(&format!("wc: can't open {e}\n")).await;
            return 1;
        }
    };
    let lines = data.iter().filter(|b| **b == b'\n').count();
    let words = String::from_utf8_lossy(&data).split_whitespace().count();
    let mut cols = Vec::new();
    if flags.is_empty() || flags.contains('l') {
        cols.push(lines);
    }
    if flags.is_empty() || flags.contains('w') {
        cols.push(words);
    }
    if flags.is_empty() || flags.contains('c') {
        cols.push(data.len());
    }
    let mut s = if cols.len() == 1 && file.is_none() {
        cols[0].to_string()
    } else {
        cols.iter().map(|c| format!("{c:>9}")).collect::<Vec<_>>().join(" ")
    };
    if let Some(f) = file {
        s.push(' ');
        s.push_str(f);
    }
    s.push('\n');
    io.out(&s).await;
    0
}

/// `grep [-i] [-v] [-c] [-q] [-n] [-E] [-F] PATTERN [FILE]`: the pattern is a substring, with `^`
/// and `$` anchors (no other regular-expression syntax).
async fn grep(sh: &Shell, args: &[String], io: &Io) -> i32 {
    let mut flags = String::new();
    let mut rest = Vec::new();
    for a in args {
        if a.starts_with('-') && a.len() > 1 && rest.is_empty() {
            flags.push_str(&a[1..]);
        } else {
            rest.push(a.as_str());
        }
    }
    let Some(pattern) = rest.first() else {
        io.err("grep: usage: grep [-ivcqn] PATTERN [FILE]...\n").await;
        return 2;
    };
    let ci = flags.contains('i');
    let norm = |s: &str| if ci { s.to_lowercase() } else { s.to_string() };
    let pat = norm(pattern);
    let (start, end) = (pat.starts_with('^'), pat.ends_with('$') && pat.len() > 1);
    let core = pat.trim_start_matches('^');
    let core = if end { &core[..core.len() - 1] } else { core };
    let data = match input_of(sh, rest.get(1).copied(), io).await {
        Ok(d) => d,
        Err(e) => {
            io.err(&format!("grep: can't open {e}\n")).await;
            return 2;
        }
    };
    let text = String::from_utf8_lossy(&data);
    let mut out = String::new();
    let mut count = 0;
    for (i, line) in text.lines().enumerate() {
        let l = norm(line);
        let hit = match (start, end) {
            (true, true) => l == core,
            (true, false) => l.starts_with(core),
            (false, true) => l.ends_with(core),
            (false, false) => l.contains(core),
        };
        if hit != flags.contains('v') {
            count += 1;
            if flags.contains('n') {
                out.push_str(&format!("{}:", i + 1));
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    if flags.contains('q') {
        return i32::from(count == 0);
    }
    if flags.contains('c') {
        out = format!("{count}\n");
    }
    io.out(&out).await;
    i32::from(count == 0)
}
