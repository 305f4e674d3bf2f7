//! The interpreter: runs parsed scripts with the container's variables, filesystem and network.
//! Everything is async on the caller's task (a `sleep` is a timer, never a thread); pipeline
//! stages run concurrently in the same task; dropping the future kills the whole process tree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::future::{join_all, BoxFuture};
use futures::FutureExt;

use super::applets;
use super::io::{pipe, Buffer, FileSink, In, Input, Null, Out};
use super::parse::{self, AndOr, Command, List, Part, Pipeline, Redir, RedirOp, Script, Word};
use super::vfs::normalize;
use super::Sandbox;

/// A command's standard streams.
#[derive(Clone)]
pub struct Io {
    pub stdin: In,
    pub stdout: Out,
    pub stderr: Out,
}

impl Io {
    pub fn null() -> Io {
        Io { stdin: Input::empty(), stdout: Arc::new(Null), stderr: Arc::new(Null) }
    }

    pub async fn out(&self, s: &str) -> bool {
        self.stdout.write(s.as_bytes()).await.is_ok()
    }

    pub async fn err(&self, s: &str) {
        let _ = self.stderr.write(s.as_bytes()).await;
    }
}

/// Control flow that unwinds: `exit`, `break`, `continue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Exit(i32),
    Break(u32),
    Continue(u32),
}

type R = Result<i32, Flow>;

/// Nesting of shells and substitutions (a guard against runaway recursion).
const MAX_NESTING: usize = 48;

/// One shell process's state. Cloning makes a subshell.
#[derive(Clone)]
pub struct Shell {
    pub sb: Arc<Sandbox>,
    pub vars: BTreeMap<String, String>,
    pub exported: BTreeSet<String>,
    /// `$0`, `$1`, ...
    pub args: Vec<String>,
    pub last: i32,
    pub cwd: String,
    errexit: bool,
    in_cond: usize,
    nesting: usize,
    /// The status of the last command substitution (a command of assignments only returns it).
    last_subst: Option<i32>,
}

impl Shell {
    pub fn new(sb: Arc<Sandbox>, env: &[(String, String)]) -> Shell {
        let mut sh = Shell {
            sb,
            vars: BTreeMap::new(),
            exported: BTreeSet::new(),
            args: vec!["sh".into()],
            last: 0,
            cwd: "/".into(),
            errexit: false,
            in_cond: 0,
            nesting: 0,
            last_subst: None,
        };
        for (k, v) in env {
            sh.set_export(k, v);
        }
        sh.cwd = sh.vars.get("PWD").cloned().filter(|p| p.starts_with('/')).unwrap_or_else(|| "/".into());
        sh
    }

    pub fn set_export(&mut self, k: &str, v: &str) {
        self.vars.insert(k.to_string(), v.to_string());
        self.exported.insert(k.to_string());
    }

    /// The exported environment, sorted.
    pub fn environ(&self) -> Vec<(String, String)> {
        self.exported.iter().filter_map(|k| Some((k.clone(), self.vars.get(k)?.clone()))).collect()
    }

    pub fn abs(&self, path: &str) -> String {
        normalize(&self.cwd, path)
    }

    /// Runs a program the way a container's entrypoint runs: `argv[0]` is looked up as a program
    /// (`sh -c …`, an applet); returns its exit code.
    pub async fn run_argv(&mut self, argv: Vec<String>, io: Io) -> i32 {
        match self.exec(argv, &io).await {
            Ok(c) | Err(Flow::Exit(c)) => c,
            Err(_) => 0,
        }
    }

    /// Runs a script's text.
    pub async fn run_script(&mut self, src: &str, io: &Io) -> i32 {
        match parse::parse(src) {
            Ok(s) => match self.script(&s, io).await {
                Ok(c) | Err(Flow::Exit(c)) => c,
                Err(_) => self.last,
            },
            Err(e) => {
                io.err(&format!("sh: {e}\n")).await;
                2
            }
        }
    }

    /// An interactive shell on `io.stdin`: reads commands line by line (a command may span lines)
    /// until end of input or `exit`; `prompt` prints busybox's `/ # `.
    pub async fn interactive(&mut self, io: &Io, prompt: bool) -> i32 {
        let mut pending = String::new();
        loop {
            if prompt {
                let p = if pending.is_empty() { format!("{} # ", self.cwd) } else { "> ".to_string() };
                io.err(&p).await;
            }
            let Some(line) = io.stdin.line().await else { return self.last };
            let line = line.trim_end_matches('\r');
            pending.push_str(line);
            pending.push('\n');
            match parse::parse(&pending) {
                Ok(s) => {
                    pending.clear();
                    match self.script(&s, io).await {
                        Ok(c) => self.last = c,
                        Err(Flow::Exit(c)) => return c,
                        Err(_) => {}
                    }
                }
                Err(e) if e.incomplete() => {}
                Err(e) => {
                    pending.clear();
                    io.err(&format!("sh: {e}\n")).await;
                    self.last = 2;
                }
            }
        }
    }

    pub fn script<'a>(&'a mut self, s: &'a Script, io: &'a Io) -> BoxFuture<'a, R> {
        async move {
            let mut code = 0;
            for list in &s.0 {
                if list.background {
                    let mut sh = self.clone();
                    let list = list.clone();
                    let io = io.clone();
                    self.sb.spawn(async move {
                        let _ = sh.list(&list, &io).await;
                    });
                    code = 0;
                } else {
                    code = self.list(list, io).await?;
                }
                self.last = code;
            }
            Ok(code)
        }
        .boxed()
    }

    async fn list(&mut self, l: &List, io: &Io) -> R {
        let mut code = if l.rest.is_empty() {
            self.pipeline(&l.first, io).await?
        } else {
            self.in_cond += 1;
            let r = self.pipeline(&l.first, io).await;
            self.in_cond -= 1;
            r?
        };
        for (k, (op, p)) in l.rest.iter().enumerate() {
            self.last = code;
            let run = match op {
                AndOr::And => code == 0,
                AndOr::Or => code != 0,
            };
            if run {
                let last = k + 1 == l.rest.len();
                if !last {
                    self.in_cond += 1;
                }
                let r = self.pipeline(p, io).await;
                if !last {
                    self.in_cond -= 1;
                }
                code = r?;
            }
        }
        if code != 0 && self.errexit && self.in_cond == 0 {
            return Err(Flow::Exit(code));
        }
        Ok(code)
    }

    async fn pipeline(&mut self, p: &Pipeline, io: &Io) -> R {
        let code = if p.commands.len() == 1 {
            if p.bang {
                self.in_cond += 1;
            }
            let r = self.command(&p.commands[0], io).await;
            if p.bang {
                self.in_cond -= 1;
            }
            r?
        } else {
            let n = p.commands.len();
            let mut stages: Vec<BoxFuture<'static, i32>> = Vec::with_capacity(n);
            let mut stdin = Some(io.stdin.clone());
            for (k, c) in p.commands.iter().enumerate() {
                let (stdout, next) = if k + 1 == n {
                    (io.stdout.clone(), None)
                } else {
                    let (w, r) = pipe();
                    (w, Some(r))
                };
                // Each read end is owned by its stage alone: when the stage ends, the writer
                // before it sees a broken pipe.
                let this_in = std::mem::replace(&mut stdin, next).unwrap_or_else(Input::empty);
                let stage_io = Io { stdin: this_in, stdout, stderr: io.stderr.clone() };
                let mut sh = self.clone();
                let c = c.clone();
                stages.push(
                    async move {
                        match sh.command(&c, &stage_io).await {
                            Ok(c) | Err(Flow::Exit(c)) => c,
                            Err(_) => 0,
                        }
                    }
                    .boxed(),
                );
            }
            join_all(stages).await.last().copied().unwrap_or(0)
        };
        Ok(if p.bang { i32::from(code == 0) } else { code })
    }

    fn command<'a>(&'a mut self, c: &'a Command, io: &'a Io) -> BoxFuture<'a, R> {
        async move {
            match c {
                Command::Simple { assigns, words, redirs } => self.simple(assigns, words, redirs, io).await,
                Command::Group { body, subshell, redirs } => {
                    let Some(io) = self.redirect(redirs, io).await else { return Ok(1) };
                    if *subshell {
                        let mut sh = self.clone();
                        Ok(match sh.script(body, &io).await {
                            Ok(c) | Err(Flow::Exit(c)) => c,
                            Err(_) => sh.last,
                        })
                    } else {
                        self.script(body, &io).await
                    }
                }
                Command::If { branches, otherwise, redirs } => {
                    let Some(io) = self.redirect(redirs, io).await else { return Ok(1) };
                    for (cond, body) in branches {
                        self.in_cond += 1;
                        let r = self.script(cond, &io).await;
                        self.in_cond -= 1;
                        if r? == 0 {
                            return self.script(body, &io).await;
                        }
                    }
                    match otherwise {
                        Some(body) => self.script(body, &io).await,
                        None => Ok(0),
                    }
                }
                Command::Loop { cond, body, until, redirs } => {
                    let Some(io) = self.redirect(redirs, io).await else { return Ok(1) };
                    let mut code = 0;
                    loop {
                        self.in_cond += 1;
                        let r = self.script(cond, &io).await;
                        self.in_cond -= 1;
                        if (r? == 0) == *until {
                            break;
                        }
                        match self.script(body, &io).await {
                            Ok(c) => code = c,
                            Err(Flow::Break(n)) if n > 1 => return Err(Flow::Break(n - 1)),
                            Err(Flow::Break(_)) => break,
                            Err(Flow::Continue(n)) if n > 1 => return Err(Flow::Continue(n - 1)),
                            Err(Flow::Continue(_)) => {}
                            Err(e) => return Err(e),
                        }
                        // A loop that never waits must still let the rest of the node run.
                        tokio::task::yield_now().await;
                    }
                    Ok(code)
                }
                Command::For { var, items, body, redirs } => {
                    let Some(io) = self.redirect(redirs, io).await else { return Ok(1) };
                    let values = match items {
                        Some(ws) => {
                            let mut v = Vec::new();
                            for w in ws {
                                v.extend(self.expand(w, &io).await?);
                            }
                            v
                        }
                        None => self.args.iter().skip(1).cloned().collect(),
                    };
                    let mut code = 0;
                    for v in values {
                        self.vars.insert(var.clone(), v);
                        match self.script(body, &io).await {
                            Ok(c) => code = c,
                            Err(Flow::Break(n)) if n > 1 => return Err(Flow::Break(n - 1)),
                            Err(Flow::Break(_)) => break,
                            Err(Flow::Continue(n)) if n > 1 => return Err(Flow::Continue(n - 1)),
                            Err(Flow::Continue(_)) => {}
                            Err(e) => return Err(e),
                        }
                        tokio::task::yield_now().await;
                    }
                    Ok(code)
                }
            }
        }
        .boxed()
    }

    async fn simple(&mut self, assigns: &[(String, Word)], words: &[Word], redirs: &[Redir], io: &Io) -> R {
        self.last_subst = None;
        let mut argv = Vec::new();
        for w in words {
            argv.extend(self.expand(w, io).await?);
        }
        let mut values = Vec::new();
        for (k, w) in assigns {
            values.push((k.clone(), self.expand_one(w, io).await?));
        }
        let Some(io) = self.redirect(redirs, io).await else { return Ok(1) };
        if argv.is_empty() {
            for (k, v) in values {
                self.vars.insert(k, v);
            }
            return Ok(self.last_subst.take().unwrap_or(0));
        }
        if values.is_empty() {
            return self.exec(argv, &io).await;
        }
        // `VAR=x cmd`: the variables are in cmd's environment only.
        let mut sh = self.clone();
        for (k, v) in values {
            sh.set_export(&k, &v);
        }
        let r = sh.exec(argv, &io).await;
        self.cwd = sh.cwd;
        r
    }

    /// Applies redirections; None (after printing the error) when one fails.
    async fn redirect(&mut self, redirs: &[Redir], io: &Io) -> Option<Io> {
        if redirs.is_empty() {
            return Some(io.clone());
        }
        let mut io = io.clone();
        for r in redirs {
            let target = match self.expand_one(&r.target, &io).await {
                Ok(t) => t,
                Err(_) => return None,
            };
            match r.op {
                RedirOp::Dup => {
                    let src = match target.as_str() {
                        "1" => io.stdout.clone(),
                        "2" => io.stderr.clone(),
                        "-" => Arc::new(Null),
                        _ => {
                            io.err(&format!("sh: {target}: bad file descriptor\n")).await;
                            return None;
                        }
                    };
                    match r.fd {
                        1 => io.stdout = src,
                        2 => io.stderr = src,
                        _ => {}
                    }
                }
                RedirOp::Write { append } => {
                    let out: Out = match target.as_str() {
                        "/dev/null" => Arc::new(Null),
                        "/dev/stdout" => io.stdout.clone(),
                        "/dev/stderr" => io.stderr.clone(),
                        _ => {
                            let path = self.abs(&target);
                            if let Err(e) = self.sb.fs.write(&path, b"", append) {
                                io.err(&format!("sh: can't create {target}: {e}\n")).await;
                                return None;
                            }
                            Arc::new(FileSink { fs: self.sb.fs.clone(), path })
                        }
                    };
                    match r.fd {
                        1 => io.stdout = out,
                        2 => io.stderr = out,
                        _ => {}
                    }
                }
                RedirOp::Read => {
                    if r.fd != 0 {
                        continue;
                    }
                    io.stdin = match target.as_str() {
                        "/dev/null" => Input::empty(),
                        "/dev/stdin" => io.stdin.clone(),
                        _ => match self.sb.fs.read(&self.abs(&target)) {
                            Ok(d) => Input::bytes(d.as_ref().clone()),
                            Err(e) => {
                                io.err(&format!("sh: can't open {target}: {e}\n")).await;
                                return None;
                            }
                        },
                    };
                }
            }
        }
        Some(io)
    }

    /// Expands a word into fields (unquoted expansions split on whitespace).
    pub fn expand<'a>(&'a mut self, w: &'a Word, io: &'a Io) -> BoxFuture<'a, Result<Vec<String>, Flow>> {
        async move {
            let mut fields: Vec<String> = Vec::new();
            let mut cur = String::new();
            let mut have = false;
            for part in &w.0 {
                let (text, split) = match part {
                    Part::Lit { text, quoted } => {
                        let t = if !quoted && text == "~" && w.0.len() == 1 {
                            self.vars.get("HOME").cloned().unwrap_or_else(|| "/root".into())
                        } else if !quoted && text.starts_with("~/") && std::ptr::eq(part, &w.0[0]) {
                            format!(
                                "{}{}",
                                self.vars.get("HOME").cloned().unwrap_or_else(|| "/root".into()),
                                &text[1..]
                            )
                        } else {
                            text.clone()
                        };
                        if *quoted {
                            have = true;
                        }
                        (t, false)
                    }
                    Part::Var { name, quoted, op } => {
                        if *quoted {
                            have = true;
                        }
                        (self.var(name, op.as_ref(), io).await?, !quoted)
                    }
                    Part::Cmd { script, quoted } => {
                        if *quoted {
                            have = true;
                        }
                        (self.substitute(script, io).await?, !quoted)
                    }
                    Part::Arith { expr, quoted } => {
                        if *quoted {
                            have = true;
                        }
                        let text = self.expand_one(expr, io).await?;
                        match arith(&text, &self.vars) {
                            Ok(n) => (n.to_string(), false),
                            Err(e) => {
                                io.err(&format!("sh: arithmetic syntax error: {e}\n")).await;
                                return Err(Flow::Exit(2));
                            }
                        }
                    }
                };
                if !split {
                    cur.push_str(&text);
                    have = have || !text.is_empty();
                    continue;
                }
                let mut pieces = text.split([' ', '\t', '\n']).peekable();
                let starts_blank = text.starts_with([' ', '\t', '\n']);
                let mut first = true;
                while let Some(p) = pieces.next() {
                    if (!first || starts_blank) && (have || !cur.is_empty()) {
                        fields.push(std::mem::take(&mut cur));
                        have = false;
                    }
                    first = false;
                    if !p.is_empty() {
                        cur.push_str(p);
                        have = true;
                    }
                    let _ = pieces.peek();
                }
            }
            if have || !cur.is_empty() {
                fields.push(cur);
            }
            Ok(fields)
        }
        .boxed()
    }

    /// Expands a word to one string (no splitting): assignments, redirection targets.
    pub async fn expand_one(&mut self, w: &Word, io: &Io) -> Result<String, Flow> {
        let mut quoted = w.clone();
        for p in &mut quoted.0 {
            match p {
                Part::Lit { quoted, .. }
                | Part::Var { quoted, .. }
                | Part::Cmd { quoted, .. }
                | Part::Arith { quoted, .. } => *quoted = true,
            }
        }
        Ok(self.expand(&quoted, io).await?.join(" "))
    }

    async fn var(&mut self, name: &str, op: Option<&(String, Word)>, io: &Io) -> Result<String, Flow> {
        let value: Option<String> = match name {
            "?" => Some(self.last.to_string()),
            "$" => Some("1".into()),
            "!" => Some(String::new()),
            "#" => Some(self.args.len().saturating_sub(1).to_string()),
            "@" | "*" => Some(self.args.iter().skip(1).cloned().collect::<Vec<_>>().join(" ")),
            n if n.chars().all(|c| c.is_ascii_digit()) => {
                n.parse::<usize>().ok().and_then(|i| self.args.get(i).cloned())
            }
            n => self.vars.get(n).cloned(),
        };
        let Some((op, word)) = op else { return Ok(value.unwrap_or_default()) };
        let colon = op.starts_with(':');
        let unset = value.is_none() || (colon && value.as_deref() == Some(""));
        match op.trim_start_matches(':') {
            "-" if unset => self.expand_one(word, io).await,
            "=" if unset => {
                let v = self.expand_one(word, io).await?;
                self.vars.insert(name.to_string(), v.clone());
                Ok(v)
            }
            "+" if !unset => self.expand_one(word, io).await,
            "+" => Ok(String::new()),
            "?" if unset => {
                let msg = self.expand_one(word, io).await?;
                let msg = if msg.is_empty() { "parameter not set".to_string() } else { msg };
                io.err(&format!("sh: {name}: {msg}\n")).await;
                Err(Flow::Exit(1))
            }
            _ => Ok(value.unwrap_or_default()),
        }
    }

    /// `$(…)`: runs the script in a subshell, its output without trailing newlines.
    async fn substitute(&mut self, script: &Script, io: &Io) -> Result<String, Flow> {
        if self.nesting >= MAX_NESTING {
            io.err("sh: too many nested substitutions\n").await;
            return Err(Flow::Exit(2));
        }
        let buf = Arc::new(Buffer::default());
        let sub_io = Io { stdin: io.stdin.clone(), stdout: buf.clone(), stderr: io.stderr.clone() };
        let mut sh = self.clone();
        sh.nesting += 1;
        let code = match sh.script(script, &sub_io).await {
            Ok(c) | Err(Flow::Exit(c)) => c,
            Err(_) => sh.last,
        };
        self.last_subst = Some(code);
        let out = String::from_utf8_lossy(&buf.take()).into_owned();
        Ok(out.trim_end_matches('\n').to_string())
    }

    /// Runs one command: a special builtin, `sh`, or an applet.
    pub fn exec<'a>(&'a mut self, argv: Vec<String>, io: &'a Io) -> BoxFuture<'a, R> {
        async move {
            let Some(prog) = argv.first().cloned() else { return Ok(0) };
            let name = program_name(&prog);
            let args = &argv[1..];
            match name {
                "exit" => {
                    let code = match args.first() {
                        None => self.last,
                        Some(a) => match a.parse::<i64>() {
                            Ok(n) => (n & 0xff) as i32,
                            Err(_) => {
                                io.err(&format!("sh: exit: Illegal number: {a}\n")).await;
                                2
                            }
                        },
                    };
                    Err(Flow::Exit(code))
                }
                "break" | "continue" => {
                    let n = args.first().and_then(|a| a.parse::<u32>().ok()).unwrap_or(1).max(1);
                    Err(if name == "break" { Flow::Break(n) } else { Flow::Continue(n) })
                }
                "cd" => {
                    let target = args
                        .first()
                        .cloned()
                        .unwrap_or_else(|| self.vars.get("HOME").cloned().unwrap_or_else(|| "/".into()));
                    let path = self.abs(&target);
                    match self.sb.fs.stat(&path) {
                        Some(super::vfs::Kind::Dir) => {
                            self.cwd = path.clone();
                            self.vars.insert("PWD".into(), path);
                            Ok(0)
                        }
                        Some(_) => {
                            io.err(&format!("sh: cd: can't cd to {target}: Not a directory\n")).await;
                            Ok(2)
                        }
                        None => {
                            io.err(&format!("sh: cd: can't cd to {target}: No such file or directory\n")).await;
                            Ok(2)
                        }
                    }
                }
                "export" => {
                    for a in args {
                        match a.split_once('=') {
                            Some((k, v)) => self.set_export(k, v),
                            None => {
                                self.exported.insert(a.clone());
                                self.vars.entry(a.clone()).or_default();
                            }
                        }
                    }
                    Ok(0)
                }
                "unset" => {
                    for a in args {
                        self.vars.remove(a);
                        self.exported.remove(a);
                    }
                    Ok(0)
                }
                "set" => {
                    let mut it = args.iter();
                    while let Some(a) = it.next() {
                        match a.as_str() {
                            "-e" => self.errexit = true,
                            "+e" => self.errexit = false,
                            "--" => {
                                let rest: Vec<String> = it.by_ref().cloned().collect();
                                self.args.truncate(1);
                                self.args.extend(rest);
                            }
                            s if s.starts_with(['-', '+']) && s.contains('e') => {
                                self.errexit = s.starts_with('-');
                            }
                            _ => {}
                        }
                    }
                    if args.is_empty() {
                        let mut s = String::new();
                        for (k, v) in &self.vars {
                            s.push_str(&format!("{k}='{v}'\n"));
                        }
                        io.out(&s).await;
                    }
                    Ok(0)
                }
                "shift" => {
                    let n = args.first().and_then(|a| a.parse::<usize>().ok()).unwrap_or(1);
                    if n >= self.args.len() {
                        return Ok(1);
                    }
                    self.args.drain(1..=n);
                    Ok(0)
                }
                "read" => {
                    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
                    let Some(line) = io.stdin.line().await else { return Ok(1) };
                    let names: Vec<String> = if names.is_empty() {
                        vec!["REPLY".into()]
                    } else {
                        names.into_iter().cloned().collect()
                    };
                    let mut rest = line.trim_start().to_string();
                    for (k, n) in names.iter().enumerate() {
                        if k + 1 == names.len() {
                            self.vars.insert(n.clone(), rest.trim_end().to_string());
                            break;
                        }
                        let (a, b) = rest.split_once([' ', '\t']).unwrap_or((rest.as_str(), ""));
                        let (a, b) = (a.to_string(), b.trim_start().to_string());
                        self.vars.insert(n.clone(), a);
                        rest = b;
                    }
                    Ok(0)
                }
                "eval" => {
                    let src = args.join(" ");
                    match parse::parse(&src) {
                        Ok(s) => self.script(&s, io).await,
                        Err(e) => {
                            io.err(&format!("sh: {e}\n")).await;
                            Ok(2)
                        }
                    }
                }
                "exec" => {
                    if args.is_empty() {
                        return Ok(0);
                    }
                    let code = match self.exec(args.to_vec(), io).await {
                        Ok(c) | Err(Flow::Exit(c)) => c,
                        Err(_) => 0,
                    };
                    Err(Flow::Exit(code))
                }
                "wait" => {
                    self.sb.wait_background().await;
                    Ok(0)
                }
                "trap" | "ulimit" | "umask" | "alias" | "hash" => Ok(0),
                "." | "source" => {
                    let Some(file) = args.first() else { return Ok(2) };
                    match self.sb.fs.read(&self.abs(file)) {
                        Ok(d) => {
                            let src = String::from_utf8_lossy(&d).into_owned();
                            match parse::parse(&src) {
                                Ok(s) => self.script(&s, io).await,
                                Err(e) => {
                                    io.err(&format!("sh: {file}: {e}\n")).await;
                                    Ok(2)
                                }
                            }
                        }
                        Err(e) => {
                            io.err(&format!("sh: .: can't open '{file}': {e}\n")).await;
                            Ok(2)
                        }
                    }
                }
                "sh" | "ash" | "bash" => Ok(self.nested_shell(&prog, args, io).await),
                "env" if args.iter().any(|a| !a.starts_with('-') && !a.contains('=')) => {
                    // `env [-i] [VAR=x …] cmd args…`
                    let mut sh = self.clone();
                    let mut k = 0;
                    while k < args.len() {
                        let a = &args[k];
                        if a == "-i" {
                            sh.vars.clear();
                            sh.exported.clear();
                        } else if let Some((n, v)) = a.split_once('=') {
                            sh.set_export(n, v);
                        } else if !a.starts_with('-') {
                            break;
                        }
                        k += 1;
                    }
                    let code = match sh.exec(args[k..].to_vec(), io).await {
                        Ok(c) | Err(Flow::Exit(c)) => c,
                        Err(_) => 0,
                    };
                    Ok(code)
                }
                "command" | "nohup" | "timeout" | "nice" if !args.is_empty() => {
                    let rest = if name == "timeout" {
                        args.get(1..).unwrap_or_default().to_vec()
                    } else {
                        args.to_vec()
                    };
                    if name == "timeout" {
                        let secs = args.first().and_then(|a| applets::parse_duration(a)).unwrap_or_default();
                        let mut sh = self.clone();
                        let run = sh.exec(rest, io);
                        return match tokio::time::timeout(secs, run).await {
                            Ok(r) => Ok(match r {
                                Ok(c) | Err(Flow::Exit(c)) => c,
                                Err(_) => 0,
                            }),
                            Err(_) => Ok(124),
                        };
                    }
                    self.exec(rest, io).await
                }
                _ => Ok(applets::run(self, name, &prog, args, io).await),
            }
        }
        .boxed()
    }

    /// `sh [-c script [name args…]] | sh file | sh` (interactive on stdin).
    async fn nested_shell(&mut self, prog: &str, args: &[String], io: &Io) -> i32 {
        if self.nesting >= MAX_NESTING {
            io.err("sh: too many nested shells\n").await;
            return 2;
        }
        let mut sh = self.clone();
        sh.nesting += 1;
        let mut k = 0;
        let mut script = None;
        while k < args.len() {
            match args[k].as_str() {
                "-c" => {
                    let Some(s) = args.get(k + 1) else {
                        io.err(&format!("{prog}: -c requires an argument\n")).await;
                        return 2;
                    };
                    script = Some(s.clone());
                    k += 2;
                    break;
                }
                "-e" => sh.errexit = true,
                "-i" | "-l" | "-x" | "-s" | "--login" => {}
                "--" => {
                    k += 1;
                    break;
                }
                a if a.starts_with('-') && a.len() > 1 => {}
                _ => break,
            }
            k += 1;
        }
        match script {
            Some(src) => {
                sh.args = args[k..].to_vec();
                if sh.args.is_empty() {
                    sh.args.push(prog.to_string());
                }
                sh.run_script(&src, io).await
            }
            None => match args.get(k) {
                Some(file) => {
                    let path = sh.abs(file);
                    match sh.sb.fs.read(&path) {
                        Ok(d) => {
                            sh.args = args[k..].to_vec();
                            let src = String::from_utf8_lossy(&d).into_owned();
                            sh.run_script(&src, io).await
                        }
                        Err(_) => {
                            io.err(&format!("{prog}: can't open '{file}': No such file or directory\n")).await;
                            127
                        }
                    }
                }
                None => sh.interactive(io, false).await,
            },
        }
    }
}

/// `/bin/sh` → `sh`: programs are found by name in the usual directories.
pub fn program_name(prog: &str) -> &str {
    for dir in ["/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/", "/usr/local/bin/"] {
        if let Some(n) = prog.strip_prefix(dir) {
            if !n.contains('/') {
                return n;
            }
        }
    }
    prog
}

/// Integer arithmetic for `$((…))`: + - * / % ( ), comparisons, unary -, and variable names.
pub fn arith(src: &str, vars: &BTreeMap<String, String>) -> Result<i64, String> {
    struct P<'a> {
        t: Vec<String>,
        i: usize,
        vars: &'a BTreeMap<String, String>,
        depth: usize,
    }
    impl P<'_> {
        fn peek(&self) -> Option<&str> {
            self.t.get(self.i).map(String::as_str)
        }
        fn bin(&mut self, level: usize) -> Result<i64, String> {
            const LEVELS: [&[&str]; 5] =
                [&["||", "&&"], &["==", "!="], &["<", ">", "<=", ">="], &["+", "-"], &["*", "/", "%"]];
            if level == LEVELS.len() {
                return self.unary();
            }
            let mut v = self.bin(level + 1)?;
            while let Some(op) = self.peek().filter(|o| LEVELS[level].contains(o)).map(str::to_string) {
                self.i += 1;
                let r = self.bin(level + 1)?;
                v = match op.as_str() {
                    "||" => i64::from(v != 0 || r != 0),
                    "&&" => i64::from(v != 0 && r != 0),
                    "==" => i64::from(v == r),
                    "!=" => i64::from(v != r),
                    "<" => i64::from(v < r),
                    ">" => i64::from(v > r),
                    "<=" => i64::from(v <= r),
                    ">=" => i64::from(v >= r),
                    "+" => v.wrapping_add(r),
                    "-" => v.wrapping_sub(r),
                    "*" => v.wrapping_mul(r),
                    "/" | "%" if r == 0 => return Err("divide by zero".into()),
                    "/" => v.wrapping_div(r),
                    _ => v.wrapping_rem(r),
                };
            }
            Ok(v)
        }
        fn unary(&mut self) -> Result<i64, String> {
            self.depth += 1;
            if self.depth > 200 {
                return Err("nested too deeply".into());
            }
            let t = self.peek().map(str::to_string).ok_or("missing operand")?;
            self.i += 1;
            let v = match t.as_str() {
                "-" => self.unary()?.wrapping_neg(),
                "+" => self.unary()?,
                "!" => i64::from(self.unary()? == 0),
                "(" => {
                    let v = self.bin(0)?;
                    if self.peek() != Some(")") {
                        return Err("missing )".into());
                    }
                    self.i += 1;
                    v
                }
                n if n.chars().all(|c| c.is_ascii_digit()) => {
                    n.parse().map_err(|_| format!("bad number {n}"))?
                }
                n if n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    let v = self.vars.get(n).map(|s| s.trim().to_string()).unwrap_or_default();
                    if v.is_empty() {
                        0
                    } else {
                        v.parse().map_err(|_| format!("bad number {v}"))?
                    }
                }
                t => return Err(format!("unexpected {t}")),
            };
            self.depth -= 1;
            Ok(v)
        }
    }
    let mut t = Vec::new();
    let cs: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let s: String = cs[i..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect();
            i += s.len();
            t.push(s);
        } else {
            let two: String = cs[i..].iter().take(2).collect();
            if ["||", "&&", "==", "!=", "<=", ">="].contains(&two.as_str()) {
                t.push(two);
                i += 2;
            } else {
                t.push(c.to_string());
                i += 1;
            }
        }
    }
    if t.is_empty() {
        return Ok(0);
    }
    let mut p = P { t, i: 0, vars, depth: 0 };
    let v = p.bin(0)?;
    if p.i != p.t.len() {
        return Err(format!("unexpected {}", p.t[p.i]));
    }
    Ok(v)
}
