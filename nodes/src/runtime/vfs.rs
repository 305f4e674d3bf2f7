//! A container's filesystem: an in-memory tree per container, plus mounted trees (volumes) that
//! several containers of a pod may share. Nothing here touches a host file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Bytes a container may keep in its filesystem (writes beyond fail with "No space left").
pub const MAX_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
enum Node {
    Dir,
    File(Arc<Vec<u8>>),
}

/// One tree: normalized relative paths ("" is its root) to nodes.
#[derive(Debug, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
    bytes: usize,
}

impl Tree {
    pub fn new() -> Tree {
        let mut t = Tree::default();
        t.nodes.insert(String::new(), Node::Dir);
        t
    }

    /// Adds a file, creating its parent directories.
    pub fn put(&mut self, rel: &str, data: Vec<u8>) {
        let rel = rel.trim_matches('/');
        let mut at = String::new();
        for seg in rel
            .split('/')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .split_last()
            .map(|x| x.1)
            .unwrap_or_default()
        {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(seg);
            self.nodes.entry(at.clone()).or_insert(Node::Dir);
        }
        self.bytes += data.len();
        if let Some(Node::File(old)) = self.nodes.insert(rel.to_string(), Node::File(Arc::new(data))) {
            self.bytes -= old.len();
        }
    }

    pub fn mkdir_all(&mut self, rel: &str) {
        let mut at = String::new();
        for seg in rel.split('/').filter(|s| !s.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(seg);
            self.nodes.entry(at.clone()).or_insert(Node::Dir);
        }
    }
}

pub type SharedTree = Arc<Mutex<Tree>>;

#[derive(Debug, Clone)]
struct Mount {
    /// Absolute, normalized, without a trailing slash.
    at: String,
    tree: SharedTree,
    read_only: bool,
}

/// What `stat` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(usize),
}

/// Errors as a busybox applet prints them after the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    NotFound,
    IsDir,
    NotDir,
    Exists,
    ReadOnly,
    NoSpace,
    NotEmpty,
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FsError::NotFound => "No such file or directory",
            FsError::IsDir => "Is a directory",
            FsError::NotDir => "Not a directory",
            FsError::Exists => "File exists",
            FsError::ReadOnly => "Read-only file system",
            FsError::NoSpace => "No space left on device",
            FsError::NotEmpty => "Directory not empty",
        })
    }
}

/// A container's view: its root tree and its mounts.
#[derive(Debug, Clone)]
pub struct Fs {
    root: SharedTree,
    mounts: Vec<Mount>,
}

/// Joins `path` to `cwd` and resolves `.` and `..` (no symlinks exist).
pub fn normalize(cwd: &str, path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let full = if path.starts_with('/') { path.to_string() } else { format!("{cwd}/{path}") };
    for seg in full.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

impl Default for Fs {
    fn default() -> Self {
        Fs::new(Arc::new(Mutex::new(Tree::new())))
    }
}

impl Fs {
    pub fn new(root: SharedTree) -> Fs {
        Fs { root, mounts: Vec::new() }
    }

    /// Mounts `tree` at the absolute path `at` (later mounts shadow earlier ones).
    pub fn mount(&mut self, at: &str, tree: SharedTree, read_only: bool) {
        let at = normalize("/", at);
        self.root.lock().unwrap_or_else(|e| e.into_inner()).mkdir_all(&at);
        self.mounts.push(Mount { at, tree, read_only });
    }

    /// The tree holding `abs` and the path inside it.
    fn locate(&self, abs: &str) -> (SharedTree, String, bool) {
        let best = self
            .mounts
            .iter()
            .rev()
            .filter(|m| abs == m.at || abs.starts_with(&format!("{}/", m.at)) || m.at == "/")
            .max_by_key(|m| m.at.len());
        match best {
            Some(m) => (m.tree.clone(), abs[m.at.len()..].trim_matches('/').to_string(), m.read_only),
            None => (self.root.clone(), abs.trim_matches('/').to_string(), false),
        }
    }

    pub fn stat(&self, abs: &str) -> Option<Kind> {
        let (tree, rel, _) = self.locate(abs);
        let t = tree.lock().unwrap_or_else(|e| e.into_inner());
        match t.nodes.get(&rel)? {
            Node::Dir => Some(Kind::Dir),
            Node::File(d) => Some(Kind::File(d.len())),
        }
    }

    pub fn read(&self, abs: &str) -> Result<Arc<Vec<u8>>, FsError> {
        let (tree, rel, _) = self.locate(abs);
        let t = tree.lock().unwrap_or_else(|e| e.into_inner());
        match t.nodes.get(&rel) {
            Some(Node::File(d)) => Ok(d.clone()),
            Some(Node::Dir) => Err(FsError::IsDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Writes (or appends to) a file whose parent directory exists.
    pub fn write(&self, abs: &str, data: &[u8], append: bool) -> Result<(), FsError> {
        let (tree, rel, ro) = self.locate(abs);
        if ro {
            return Err(FsError::ReadOnly);
        }
        let mut t = tree.lock().unwrap_or_else(|e| e.into_inner());
        let parent = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        match t.nodes.get(parent) {
            Some(Node::Dir) => {}
            Some(Node::File(_)) => return Err(FsError::NotDir),
            None => return Err(FsError::NotFound),
        }
        if rel.is_empty() {
            return Err(FsError::IsDir);
        }
        let old = match t.nodes.get(&rel) {
            Some(Node::Dir) => return Err(FsError::IsDir),
            Some(Node::File(d)) => Some(d.clone()),
            None => None,
        };
        let mut content = match (&old, append) {
            (Some(d), true) => d.as_ref().clone(),
            _ => Vec::new(),
        };
        let old_len = old.map_or(0, |d| d.len());
        if t.bytes - old_len + content.len() + data.len() > MAX_BYTES {
            return Err(FsError::NoSpace);
        }
        content.extend_from_slice(data);
        t.bytes = t.bytes - old_len + content.len();
        t.nodes.insert(rel, Node::File(Arc::new(content)));
        Ok(())
    }

    pub fn mkdir(&self, abs: &str, parents: bool) -> Result<(), FsError> {
        let (tree, rel, ro) = self.locate(abs);
        let mut t = tree.lock().unwrap_or_else(|e| e.into_inner());
        match t.nodes.get(&rel) {
            Some(Node::Dir) if parents => return Ok(()),
            Some(_) => return Err(FsError::Exists),
            None => {}
        }
        if ro {
            return Err(FsError::ReadOnly);
        }
        if parents {
            t.mkdir_all(&rel);
            return Ok(());
        }
        let parent = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        match t.nodes.get(parent) {
            Some(Node::Dir) => {
                t.nodes.insert(rel, Node::Dir);
                Ok(())
            }
            Some(Node::File(_)) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    /// Removes a file, or a directory (with everything under it when `recursive`).
    pub fn remove(&self, abs: &str, recursive: bool) -> Result<(), FsError> {
        let (tree, rel, ro) = self.locate(abs);
        if ro {
            return Err(FsError::ReadOnly);
        }
        if self.mounts.iter().any(|m| m.at == abs) || rel.is_empty() {
            return Err(FsError::ReadOnly);
        }
        let mut t = tree.lock().unwrap_or_else(|e| e.into_inner());
        match t.nodes.get(&rel) {
            None => Err(FsError::NotFound),
            Some(Node::File(d)) => {
                let n = d.len();
                t.nodes.remove(&rel);
                t.bytes -= n;
                Ok(())
            }
            Some(Node::Dir) => {
                let prefix = format!("{rel}/");
                let under: Vec<String> = t
                    .nodes
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                if !under.is_empty() && !recursive {
                    return Err(FsError::IsDir);
                }
                for k in under.into_iter().chain([rel]) {
                    if let Some(Node::File(d)) = t.nodes.remove(&k) {
                        t.bytes -= d.len();
                    }
                }
                Ok(())
            }
        }
    }

    /// The names directly in a directory, sorted (mount points included).
    pub fn list(&self, abs: &str) -> Result<Vec<String>, FsError> {
        let (tree, rel, _) = self.locate(abs);
        let mut names = {
            let t = tree.lock().unwrap_or_else(|e| e.into_inner());
            match t.nodes.get(&rel) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(FsError::NotDir),
                None => return Err(FsError::NotFound),
            }
            let prefix = if rel.is_empty() { String::new() } else { format!("{rel}/") };
            t.nodes
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(k, _)| !k.is_empty() && !k[prefix.len()..].contains('/'))
                .map(|(k, _)| k[prefix.len()..].to_string())
                .collect::<Vec<_>>()
        };
        let base = if abs == "/" { "/".to_string() } else { format!("{abs}/") };
        for m in &self.mounts {
            if let Some(rest) = m.at.strip_prefix(&base) {
                if !rest.is_empty() && !rest.contains('/') && !names.iter().any(|n| n == rest) {
                    names.push(rest.to_string());
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every path under `abs` (itself included), depth first, for `tar`.
    pub fn walk(&self, abs: &str) -> Result<Vec<(String, Kind)>, FsError> {
        let kind = self.stat(abs).ok_or(FsError::NotFound)?;
        let mut out = vec![(abs.to_string(), kind.clone())];
        if kind == Kind::Dir {
            for name in self.list(abs)? {
                let child = if abs == "/" { format!("/{name}") } else { format!("{abs}/{name}") };
                out.extend(self.walk(&child)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_dirs_and_mounts() {
        let fs = Fs::default();
        assert_eq!(normalize("/tmp", "../etc/./hosts"), "/etc/hosts");
        assert_eq!(fs.write("/a/b", b"x", false), Err(FsError::NotFound));
        fs.mkdir("/a", false).unwrap();
        fs.write("/a/b", b"x", false).unwrap();
        fs.write("/a/b", b"y", true).unwrap();
        assert_eq!(fs.read("/a/b").unwrap().as_slice(), b"xy");
        assert_eq!(fs.read("/a"), Err(FsError::IsDir));
        assert_eq!(fs.mkdir("/a", false), Err(FsError::Exists));
        assert_eq!(fs.remove("/a", false), Err(FsError::IsDir));
        let mut t = Tree::new();
        t.put("game.properties", b"lives=3".to_vec());
        let mut fs2 = fs.clone();
        fs2.mount("/etc/config", Arc::new(Mutex::new(t)), true);
        assert_eq!(fs2.read("/etc/config/game.properties").unwrap().as_slice(), b"lives=3");
        assert_eq!(fs2.write("/etc/config/x", b"", false), Err(FsError::ReadOnly));
        assert_eq!(fs2.list("/etc").unwrap(), vec!["config"]);
        assert!(fs2.list("/").unwrap().contains(&"a".to_string()));
        fs.remove("/a", true).unwrap();
        assert_eq!(fs.stat("/a/b"), None);
    }

    #[test]
    fn space_is_bounded() {
        let fs = Fs::default();
        let big = vec![0u8; MAX_BYTES / 2 + 1];
        fs.write("/x", &big, false).unwrap();
        assert_eq!(fs.write("/y", &big, false), Err(FsError::NoSpace));
        fs.write("/x", b"small", false).unwrap();
        fs.write("/y", &big, false).unwrap();
    }
}
