//! The shell's parser: a POSIX-sh subset, read straight from the characters (no separate token
//! pass, so `$(...)` simply parses a nested script). Grammar:
//!
//! ```text
//! script   := list (('\n' | ';' | '&') list)*
//! list     := pipeline (('&&' | '||') newline* pipeline)*
//! pipeline := '!'? command ('|' newline* command)*
//! command  := simple | '{' script '}' | '(' script ')' | if | while | until | for   (+ redirections)
//! ```
//!
//! Words keep their quoting so that expansion knows what to split: `'…'`, `"…"`, `\x`, `$VAR`,
//! `${VAR}`, `${VAR:-default}`, `$?`, `$$`, `$#`, `$@`, `$0`..`$9`, `$(…)`, `` `…` ``, `$((…))`.
//! Not supported (a parse error says so): here-documents, functions, `case`.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Literal text; `quoted` text is never split into fields.
    Lit {
        text: String,
        quoted: bool,
    },
    Var {
        name: String,
        quoted: bool,
        op: Option<(String, Word)>,
    },
    Cmd {
        script: Script,
        quoted: bool,
    },
    Arith {
        expr: Word,
        quoted: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Word(pub Vec<Part>);

impl Word {
    /// The word as plain text if it is one unquoted literal (keywords, assignments' names).
    fn plain(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Part::Lit { text, quoted: false }] => Some(text),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RedirOp {
    /// `>` (truncate) or `>>` (append) to a file.
    Write { append: bool },
    /// `<` from a file.
    Read,
    /// `N>&M`.
    Dup,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redir {
    pub fd: u32,
    pub op: RedirOp,
    pub target: Word,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Simple { assigns: Vec<(String, Word)>, words: Vec<Word>, redirs: Vec<Redir> },
    Group { body: Script, subshell: bool, redirs: Vec<Redir> },
    If { branches: Vec<(Script, Script)>, otherwise: Option<Script>, redirs: Vec<Redir> },
    Loop { cond: Script, body: Script, until: bool, redirs: Vec<Redir> },
    For { var: String, items: Option<Vec<Word>>, body: Script, redirs: Vec<Redir> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub bang: bool,
    pub commands: Vec<Command>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AndOr {
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub first: Pipeline,
    pub rest: Vec<(AndOr, Pipeline)>,
    /// Ended by `&`: run in the background.
    pub background: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Script(pub Vec<List>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Whether the error is only that the input ends too early (an interactive shell then reads on).
impl ParseError {
    pub fn incomplete(&self) -> bool {
        self.0.contains("unexpected end of file")
    }
}

pub fn parse(src: &str) -> Result<Script, ParseError> {
    let mut p = Parser { s: src.chars().collect(), i: 0, depth: 0 };
    let script = p.script(&[])?;
    p.blank(true);
    if p.i < p.s.len() {
        return Err(p.unexpected());
    }
    Ok(script)
}

/// Parses the inside of `$((…))` as a word (variables and command substitutions expand first).
pub fn parse_arith_word(src: &str) -> Result<Word, ParseError> {
    let mut p = Parser { s: src.chars().collect(), i: 0, depth: 0 };
    let mut parts = Vec::new();
    let mut lit = String::new();
    while p.i < p.s.len() {
        let c = p.s[p.i];
        if c == '$' {
            flush(&mut parts, &mut lit, true);
            p.i += 1;
            parts.push(p.dollar(true)?);
        } else {
            lit.push(c);
            p.i += 1;
        }
    }
    flush(&mut parts, &mut lit, true);
    Ok(Word(parts))
}

const MAX_DEPTH: usize = 64;

struct Parser {
    s: Vec<char>,
    i: usize,
    depth: usize,
}

fn flush(parts: &mut Vec<Part>, lit: &mut String, quoted: bool) {
    if !lit.is_empty() {
        parts.push(Part::Lit { text: std::mem::take(lit), quoted });
    }
}

fn is_meta(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')')
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.s.get(self.i + k).copied()
    }

    fn starts(&self, t: &str) -> bool {
        t.chars().enumerate().all(|(k, c)| self.peek_at(k) == Some(c))
    }

    fn unexpected(&self) -> ParseError {
        match self.peek() {
            None => ParseError("syntax error: unexpected end of file".into()),
            Some('\n') => ParseError("syntax error: unexpected newline".into()),
            Some(_) => {
                let tok: String = self.s[self.i..].iter().take_while(|c| !c.is_whitespace()).take(8).collect();
                ParseError(format!("syntax error: unexpected \"{tok}\""))
            }
        }
    }

    /// Skips blanks and comments; newlines too when `newlines`.
    fn blank(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            if c == ' ' || c == '\t' || (newlines && c == '\n') {
                self.i += 1;
            } else if c == '\\' && self.peek_at(1) == Some('\n') {
                self.i += 2;
            } else if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.i += 1;
                }
            } else {
                break;
            }
        }
    }

    /// The next word if it is the unquoted keyword `kw` (not consumed).
    fn at_keyword(&mut self, kw: &str) -> bool {
        self.blank(false);
        self.starts(kw) && self.peek_at(kw.chars().count()).is_none_or(|c| is_meta(c) || c == '}')
    }

    fn at_any_keyword(&mut self, kws: &[&str]) -> bool {
        kws.iter().any(|k| self.at_keyword(k))
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        self.blank(true);
        if self.at_keyword(kw) {
            self.i += kw.chars().count();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// A script, up to one of the `stop` keywords (or `)` / `}` / end of input).
    fn script(&mut self, stop: &[&str]) -> Result<Script, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError("syntax error: nested too deeply".into()));
        }
        let mut lists = Vec::new();
        loop {
            self.blank(true);
            match self.peek() {
                None | Some(')') => break,
                _ if self.at_any_keyword(stop) => break,
                _ => {}
            }
            let mut list = self.list()?;
            self.blank(false);
            let separated = match self.peek() {
                Some(';') if self.peek_at(1) != Some(';') => {
                    self.i += 1;
                    true
                }
                Some('\n') => {
                    self.i += 1;
                    true
                }
                Some('&') => {
                    self.i += 1;
                    list.background = true;
                    true
                }
                _ => false,
            };
            lists.push(list);
            if !separated {
                self.blank(false);
                match self.peek() {
                    None | Some(')') => {}
                    _ if self.at_any_keyword(stop) => {}
                    _ => return Err(self.unexpected()),
                }
            }
        }
        self.depth -= 1;
        Ok(Script(lists))
    }

    fn list(&mut self) -> Result<List, ParseError> {
        let first = self.pipeline()?;
        let mut rest = Vec::new();
        loop {
            self.blank(false);
            let op = if self.starts("&&") {
                AndOr::And
            } else if self.starts("||") {
                AndOr::Or
            } else {
                break;
            };
            self.i += 2;
            self.blank(true);
            rest.push((op, self.pipeline()?));
        }
        Ok(List { first, rest, background: false })
    }

    fn pipeline(&mut self) -> Result<Pipeline, ParseError> {
        self.blank(false);
        let mut bang = false;
        if self.peek() == Some('!') && self.peek_at(1).is_none_or(|c| c == ' ' || c == '\t') {
            bang = true;
            self.i += 1;
        }
        let mut commands = vec![self.command()?];
        loop {
            self.blank(false);
            if self.peek() == Some('|') && self.peek_at(1) != Some('|') {
                self.i += 1;
                self.blank(true);
                commands.push(self.command()?);
            } else {
                break;
            }
        }
        Ok(Pipeline { bang, commands })
    }

    fn command(&mut self) -> Result<Command, ParseError> {
        self.blank(false);
        let mut cmd = if self.peek() == Some('(') {
            self.i += 1;
            let body = self.script(&[])?;
            if self.peek() != Some(')') {
                return Err(self.unexpected());
            }
            self.i += 1;
            Command::Group { body, subshell: true, redirs: Vec::new() }
        } else if self.at_keyword("{") {
            self.i += 1;
            let body = self.script(&["}"])?;
            self.expect_keyword("}")?;
            Command::Group { body, subshell: false, redirs: Vec::new() }
        } else if self.at_keyword("if") {
            self.i += 2;
            let mut branches = Vec::new();
            let mut otherwise = None;
            loop {
                let cond = self.script(&["then"])?;
                self.expect_keyword("then")?;
                let body = self.script(&["elif", "else", "fi"])?;
                branches.push((cond, body));
                self.blank(true);
                if self.at_keyword("elif") {
                    self.i += 4;
                    continue;
                }
                if self.at_keyword("else") {
                    self.i += 4;
                    otherwise = Some(self.script(&["fi"])?);
                }
                self.expect_keyword("fi")?;
                break;
            }
            Command::If { branches, otherwise, redirs: Vec::new() }
        } else if self.at_keyword("while") || self.at_keyword("until") {
            let until = self.at_keyword("until");
            self.i += 5;
            let cond = self.script(&["do"])?;
            self.expect_keyword("do")?;
            let body = self.script(&["done"])?;
            self.expect_keyword("done")?;
            Command::Loop { cond, body, until, redirs: Vec::new() }
        } else if self.at_keyword("for") {
            self.i += 3;
            self.blank(false);
            let var = self.word()?.and_then(|w| w.plain().map(str::to_string));
            let Some(var) =
                var.filter(|v| v.chars().next().is_some_and(is_name_start) && v.chars().all(is_name))
            else {
                return Err(ParseError("syntax error: bad for loop variable".into()));
            };
            self.blank(false);
            let mut items = None;
            if self.at_keyword("in") {
                self.i += 2;
                let mut ws = Vec::new();
                loop {
                    self.blank(false);
                    match self.peek() {
                        Some(';') | Some('\n') => {
                            self.i += 1;
                            break;
                        }
                        None => return Err(self.unexpected()),
                        _ => match self.word()? {
                            Some(w) => ws.push(w),
                            None => return Err(self.unexpected()),
                        },
                    }
                }
                items = Some(ws);
            } else if self.peek() == Some(';') {
                self.i += 1;
            }
            self.expect_keyword("do")?;
            let body = self.script(&["done"])?;
            self.expect_keyword("done")?;
            Command::For { var, items, body, redirs: Vec::new() }
        } else {
            return self.simple();
        };
        // Redirections after a compound command.
        let mut extra = Vec::new();
        while let Some(r) = self.redir()? {
            extra.push(r);
        }
        match &mut cmd {
            Command::Group { redirs, .. }
            | Command::If { redirs, .. }
            | Command::Loop { redirs, .. }
            | Command::For { redirs, .. }
            | Command::Simple { redirs, .. } => redirs.extend(extra),
        }
        Ok(cmd)
    }

    fn simple(&mut self) -> Result<Command, ParseError> {
        let mut assigns = Vec::new();
        let mut words = Vec::new();
        let mut redirs = Vec::new();
        loop {
            self.blank(false);
            if let Some(r) = self.redir()? {
                redirs.push(r);
                continue;
            }
            if words.is_empty() {
                if let Some((name, value)) = self.assignment()? {
                    assigns.push((name, value));
                    continue;
                }
            }
            match self.word()? {
                Some(w) => words.push(w),
                None => break,
            }
        }
        if assigns.is_empty() && words.is_empty() && redirs.is_empty() {
            return Err(self.unexpected());
        }
        Ok(Command::Simple { assigns, words, redirs })
    }

    /// `NAME=value` at the start of a simple command.
    fn assignment(&mut self) -> Result<Option<(String, Word)>, ParseError> {
        if !self.peek().is_some_and(is_name_start) {
            return Ok(None);
        }
        let mut k = 0;
        while self.peek_at(k).is_some_and(is_name) {
            k += 1;
        }
        if self.peek_at(k) != Some('=') {
            return Ok(None);
        }
        let name: String = self.s[self.i..self.i + k].iter().collect();
        self.i += k + 1;
        let value = self.word()?.unwrap_or_default();
        Ok(Some((name, value)))
    }

    /// A redirection: `[n]>`, `[n]>>`, `[n]<`, `[n]>&m`.
    fn redir(&mut self) -> Result<Option<Redir>, ParseError> {
        self.blank(false);
        let mut k = 0;
        while self.peek_at(k).is_some_and(|c| c.is_ascii_digit()) {
            k += 1;
        }
        let op_at = self.peek_at(k);
        if !matches!(op_at, Some('>') | Some('<')) {
            return Ok(None);
        }
        let fd_text: String = self.s[self.i..self.i + k].iter().collect();
        let default_fd = if op_at == Some('<') { 0 } else { 1 };
        let fd = if k == 0 {
            default_fd
        } else {
            fd_text.parse().map_err(|_| ParseError("bad file descriptor".into()))?
        };
        self.i += k + 1;
        let op = match (op_at, self.peek()) {
            (Some('>'), Some('>')) => {
                self.i += 1;
                RedirOp::Write { append: true }
            }
            (Some('>'), Some('&')) | (Some('<'), Some('&')) => {
                self.i += 1;
                RedirOp::Dup
            }
            (Some('>'), Some('|')) => {
                self.i += 1;
                RedirOp::Write { append: false }
            }
            (Some('<'), Some('<')) => return Err(ParseError("here-documents are not supported".into())),
            (Some('>'), _) => RedirOp::Write { append: false },
            _ => RedirOp::Read,
        };
        self.blank(false);
        let Some(target) = self.word()? else { return Err(self.unexpected()) };
        Ok(Some(Redir { fd, op, target }))
    }

    /// One word, or None at a metacharacter / end of input.
    fn word(&mut self) -> Result<Option<Word>, ParseError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let start = self.i;
        while let Some(c) = self.peek() {
            if is_meta(c) {
                break;
            }
            match c {
                '\'' => {
                    flush(&mut parts, &mut lit, false);
                    self.i += 1;
                    let mut q = String::new();
                    loop {
                        match self.peek() {
                            None => return Err(ParseError("syntax error: unterminated quoted string".into())),
                            Some('\'') => break,
                            Some(c) => q.push(c),
                        }
                        self.i += 1;
                    }
                    self.i += 1;
                    parts.push(Part::Lit { text: q, quoted: true });
                }
                '"' => {
                    flush(&mut parts, &mut lit, false);
                    self.i += 1;
                    self.double_quoted(&mut parts)?;
                }
                '\\' => {
                    self.i += 1;
                    match self.peek() {
                        Some('\n') => self.i += 1,
                        Some(c) => {
                            flush(&mut parts, &mut lit, false);
                            parts.push(Part::Lit { text: c.to_string(), quoted: true });
                            self.i += 1;
                        }
                        None => {}
                    }
                }
                '$' => {
                    flush(&mut parts, &mut lit, false);
                    self.i += 1;
                    parts.push(self.dollar(false)?);
                }
                '`' => {
                    flush(&mut parts, &mut lit, false);
                    self.i += 1;
                    parts.push(Part::Cmd { script: self.backquoted()?, quoted: false });
                }
                _ => {
                    lit.push(c);
                    self.i += 1;
                }
            }
        }
        flush(&mut parts, &mut lit, false);
        if self.i == start {
            return Ok(None);
        }
        if parts.is_empty() {
            // `""`: an empty, quoted word.
            parts.push(Part::Lit { text: String::new(), quoted: true });
        }
        Ok(Some(Word(parts)))
    }

    fn double_quoted(&mut self, parts: &mut Vec<Part>) -> Result<(), ParseError> {
        let mut lit = String::new();
        let before = parts.len();
        loop {
            match self.peek() {
                None => return Err(ParseError("syntax error: unterminated quoted string".into())),
                Some('"') => {
                    self.i += 1;
                    break;
                }
                Some('\\') => match self.peek_at(1) {
                    Some(c @ ('$' | '`' | '"' | '\\')) => {
                        lit.push(c);
                        self.i += 2;
                    }
                    Some('\n') => self.i += 2,
                    _ => {
                        lit.push('\\');
                        self.i += 1;
                    }
                },
                Some('$') => {
                    flush(parts, &mut lit, true);
                    self.i += 1;
                    parts.push(self.dollar(true)?);
                }
                Some('`') => {
                    flush(parts, &mut lit, true);
                    self.i += 1;
                    parts.push(Part::Cmd { script: self.backquoted()?, quoted: true });
                }
                Some(c) => {
                    lit.push(c);
                    self.i += 1;
                }
            }
        }
        flush(parts, &mut lit, true);
        if parts.len() == before {
            parts.push(Part::Lit { text: String::new(), quoted: true });
        }
        Ok(())
    }

    fn backquoted(&mut self) -> Result<Script, ParseError> {
        let mut inner = String::new();
        loop {
            match self.peek() {
                None => return Err(ParseError("syntax error: unterminated `".into())),
                Some('`') => {
                    self.i += 1;
                    break;
                }
                Some('\\') if matches!(self.peek_at(1), Some('`' | '\\' | '$')) => {
                    inner.push(self.s[self.i + 1]);
                    self.i += 2;
                }
                Some(c) => {
                    inner.push(c);
                    self.i += 1;
                }
            }
        }
        let mut p = Parser { s: inner.chars().collect(), i: 0, depth: self.depth + 1 };
        if p.depth > MAX_DEPTH {
            return Err(ParseError("syntax error: nested too deeply".into()));
        }
        let script = p.script(&[])?;
        p.blank(true);
        if p.i < p.s.len() {
            return Err(p.unexpected());
        }
        Ok(script)
    }

    /// After a `$`.
    fn dollar(&mut self, quoted: bool) -> Result<Part, ParseError> {
        match self.peek() {
            Some('(') if self.peek_at(1) == Some('(') => {
                self.i += 2;
                let mut depth = 0usize;
                let mut inner = String::new();
                loop {
                    match self.peek() {
                        None => return Err(ParseError("syntax error: unexpected end of file".into())),
                        Some(')') if depth == 0 && self.peek_at(1) == Some(')') => {
                            self.i += 2;
                            break;
                        }
                        Some(c) => {
                            if c == '(' {
                                depth += 1;
                            } else if c == ')' {
                                depth = depth.saturating_sub(1);
                            }
                            inner.push(c);
                            self.i += 1;
                        }
                    }
                }
                Ok(Part::Arith { expr: parse_arith_word(&inner)?, quoted })
            }
            Some('(') => {
                self.i += 1;
                let script = self.script(&[])?;
                self.blank(true);
                if self.peek() != Some(')') {
                    return Err(self.unexpected());
                }
                self.i += 1;
                Ok(Part::Cmd { script, quoted })
            }
            Some('{') => {
                self.i += 1;
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|c| is_name(*c) || matches!(c, '?' | '#' | '@' | '$')) {
                    name.push(c);
                    self.i += 1;
                }
                if name.is_empty() {
                    return Err(ParseError("syntax error: bad substitution".into()));
                }
                let mut op = None;
                if self.peek() != Some('}') {
                    let mut o = String::new();
                    if self.peek() == Some(':') {
                        o.push(':');
                        self.i += 1;
                    }
                    match self.peek() {
                        Some(c @ ('-' | '=' | '+' | '?')) => {
                            o.push(c);
                            self.i += 1;
                        }
                        _ => return Err(ParseError("syntax error: bad substitution".into())),
                    }
                    // The operand: up to the matching `}`.
                    let mut parts = Vec::new();
                    let mut lit = String::new();
                    loop {
                        match self.peek() {
                            None => return Err(ParseError("syntax error: bad substitution".into())),
                            Some('}') => break,
                            Some('$') => {
                                flush(&mut parts, &mut lit, quoted);
                                self.i += 1;
                                parts.push(self.dollar(quoted)?);
                            }
                            Some('"') if !quoted => {
                                flush(&mut parts, &mut lit, quoted);
                                self.i += 1;
                                self.double_quoted(&mut parts)?;
                            }
                            Some('\'') if !quoted => {
                                flush(&mut parts, &mut lit, quoted);
                                self.i += 1;
                                let mut q = String::new();
                                while let Some(c) = self.peek().filter(|c| *c != '\'') {
                                    q.push(c);
                                    self.i += 1;
                                }
                                self.i += 1;
                                parts.push(Part::Lit { text: q, quoted: true });
                            }
                            Some(c) => {
                                lit.push(c);
                                self.i += 1;
                            }
                        }
                    }
                    flush(&mut parts, &mut lit, quoted);
                    op = Some((o, Word(parts)));
                }
                self.i += 1;
                Ok(Part::Var { name, quoted, op })
            }
            Some(c) if matches!(c, '?' | '$' | '#' | '@' | '*' | '!') || c.is_ascii_digit() => {
                self.i += 1;
                Ok(Part::Var { name: c.to_string(), quoted, op: None })
            }
            Some(c) if is_name_start(c) => {
                let mut name = String::new();
                while let Some(c) = self.peek().filter(|c| is_name(*c)) {
                    name.push(c);
                    self.i += 1;
                }
                Ok(Part::Var { name, quoted, op: None })
            }
            _ => Ok(Part::Lit { text: "$".into(), quoted }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Word {
        Word(vec![Part::Lit { text: s.into(), quoted: false }])
    }

    fn simple(script: &Script) -> Vec<Vec<Word>> {
        script
            .0
            .iter()
            .map(|l| match &l.first.commands[0] {
                Command::Simple { words, .. } => words.clone(),
                c => panic!("not simple: {c:?}"),
            })
            .collect()
    }

    #[test]
    fn lists_pipes_and_operators() {
        let s = parse("echo hi; exit 3").unwrap();
        assert_eq!(simple(&s), vec![vec![lit("echo"), lit("hi")], vec![lit("exit"), lit("3")]]);
        let s = parse("a | b | c && d || e").unwrap();
        assert_eq!(s.0.len(), 1);
        assert_eq!(s.0[0].first.commands.len(), 3);
        assert_eq!(s.0[0].rest.len(), 2);
        assert_eq!(s.0[0].rest[0].0, AndOr::And);
        assert_eq!(s.0[0].rest[1].0, AndOr::Or);
        let s = parse("sleep 5 & echo x\n\n# comment\necho y").unwrap();
        assert_eq!(s.0.len(), 3);
        assert!(s.0[0].background);
    }

    #[test]
    fn quoting_and_variables() {
        let s = parse(r#"echo 'a b' "c $X ${Y:-d e}" \$z"#).unwrap();
        let w = &simple(&s)[0];
        assert_eq!(w.len(), 4);
        assert_eq!(w[1], Word(vec![Part::Lit { text: "a b".into(), quoted: true }]));
        match &w[2].0[1] {
            Part::Var { name, quoted: true, .. } => assert_eq!(name, "X"),
            p => panic!("{p:?}"),
        }
        match &w[2].0[3] {
            Part::Var { name, op: Some((op, _)), .. } => assert_eq!((name.as_str(), op.as_str()), ("Y", ":-")),
            p => panic!("{p:?}"),
        }
        assert_eq!(w[3].0[0], Part::Lit { text: "$".into(), quoted: true });
    }

    #[test]
    fn compound_commands() {
        let s = parse("while true; do echo hi; sleep 1; done").unwrap();
        assert!(matches!(s.0[0].first.commands[0], Command::Loop { until: false, .. }));
        let s = parse("if [ -f /x ]; then echo y; elif false; then :; else echo n; fi").unwrap();
        match &s.0[0].first.commands[0] {
            Command::If { branches, otherwise, .. } => {
                assert_eq!(branches.len(), 2);
                assert!(otherwise.is_some());
            }
            c => panic!("{c:?}"),
        }
        let s = parse("for i in 1 2 3; do echo $i; done > /tmp/out").unwrap();
        match &s.0[0].first.commands[0] {
            Command::For { var, items, redirs, .. } => {
                assert_eq!(var, "i");
                assert_eq!(items.as_ref().map(Vec::len), Some(3));
                assert_eq!(redirs.len(), 1);
            }
            c => panic!("{c:?}"),
        }
        let s = parse("(cd /tmp; ls) && { echo a; echo b; }").unwrap();
        assert_eq!(s.0[0].rest.len(), 1);
        assert!(parse("echo $(echo $(hostname)) `date` $((1 + 2))").is_ok());
    }

    #[test]
    fn redirections_and_assignments() {
        let s = parse("A=1 B='x y' cmd 2>&1 >/dev/null >>f <in").unwrap();
        match &s.0[0].first.commands[0] {
            Command::Simple { assigns, words, redirs } => {
                assert_eq!(assigns.len(), 2);
                assert_eq!(words.len(), 1);
                assert_eq!(redirs.len(), 4);
                assert_eq!(redirs[0], Redir { fd: 2, op: RedirOp::Dup, target: lit("1") });
                assert_eq!(redirs[2].op, RedirOp::Write { append: true });
                assert_eq!(redirs[3].op, RedirOp::Read);
            }
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn errors_never_panic() {
        for bad in [
            "echo 'unterminated",
            "echo \"x",
            "if true; then",
            "while; do",
            "| x",
            "echo ${",
            "echo $((1",
            "a &&",
            "cat <<EOF",
            "for 1 in x; do :; done",
            ")",
            "(((((",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
        assert!(parse("if true; then").unwrap_err().incomplete());
        let deep = "$(".repeat(200);
        assert!(parse(&deep).is_err());
        assert_eq!(parse("").unwrap(), Script(vec![]));
        assert_eq!(parse("  # only a comment\n").unwrap(), Script(vec![]));
    }
}
