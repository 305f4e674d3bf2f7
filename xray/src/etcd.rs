//! `kplane xray etcd`: the `/registry` tree and a live stream of writes.
//!
//! It reads through the etcd v3 API (`store::etcd::EtcdStore`, on etcd-client), so it works the
//! same against the embedded store's endpoint and a real etcd. Reading the tree is one paged list
//! at one revision; [`tree_from`] folds the keys into folders with counts, sizes and the newest
//! mod_revision, and [`render_tree`] draws it, folding long leaf lists. [`watch`] turns every
//! write under a prefix into a [`Write`]: key, revision, verb and who (the newest `managedFields`
//! manager in the stored JSON, see [`crate::last_writer`]).
//!
//! Everything here only reads: no write reaches the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use store::etcd::{EtcdConfig, EtcdStore};
use store::{EventKind, KeyValue, ListOptions, Store};

/// The tree every kplane object lives under.
pub const REGISTRY: &str = "/registry";

/// Keys read per list page.
const PAGE: i64 = 500;

/// How to reach etcd (or the embedded store's etcd endpoint).
#[derive(Debug, Clone)]
pub struct Connect {
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// How long to wait for the first answer.
    pub timeout: Duration,
}

impl Connect {
    /// Plain text to `endpoints`, 3 s to answer.
    pub fn new(endpoints: Vec<String>) -> Connect {
        Connect { endpoints, ca_file: None, cert_file: None, key_file: None, timeout: Duration::from_secs(3) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is outside /registry: xray etcd reads only kplane's /registry tree (try /registry or /registry/pods)")]
    OutsideRegistry(String),
    // The store errors are part of the message, not error sources, so that a caller printing the
    // whole chain does not say them twice.
    #[error("cannot reach etcd at {endpoints}: {why}")]
    Unreachable { endpoints: String, why: store::Error },
    #[error("reading {prefix} from etcd: {why}")]
    Read { prefix: String, why: store::Error },
    #[error("watching {prefix}: {why}")]
    Watch { prefix: String, why: store::Error },
}

/// Checks that `prefix` lies inside `/registry` and returns it as a folder path with a trailing
/// slash (`/registry/services` → `/registry/services/`). `..`, empty segments' tricks and
/// anything outside `/registry` are refused.
pub fn folder_prefix(prefix: &str) -> Result<String, Error> {
    let trimmed = prefix.trim();
    let outside = || Error::OutsideRegistry(prefix.to_string());
    if trimmed != REGISTRY && !trimmed.starts_with("/registry/") {
        return Err(outside());
    }
    if trimmed.split('/').any(|seg| seg == ".." || seg == ".") || trimmed.contains('\0') {
        return Err(outside());
    }
    let mut folder = trimmed.trim_end_matches('/').to_string();
    folder.push('/');
    Ok(folder)
}

/// Connects and checks that etcd answers.
pub async fn connect(c: &Connect) -> Result<EtcdStore, Error> {
    let mut cfg = EtcdConfig::new(c.endpoints.clone());
    cfg.ca_file = c.ca_file.clone();
    cfg.cert_file = c.cert_file.clone();
    cfg.key_file = c.key_file.clone();
    cfg.connect_timeout = c.timeout;
    let endpoints = c.endpoints.join(",");
    match tokio::time::timeout(c.timeout + Duration::from_secs(1), EtcdStore::connect(cfg)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(why)) => Err(Error::Unreachable { endpoints, why }),
        Err(_) => Err(Error::Unreachable {
            endpoints,
            why: store::Error::Unavailable(format!("no answer within {:?}", c.timeout)),
        }),
    }
}

/// One key in the tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaf {
    /// The last path segment.
    pub name: String,
    pub key: String,
    /// Value size in bytes.
    pub size: u64,
    pub mod_revision: i64,
}

/// One folder: everything under `path`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Folder {
    pub name: String,
    /// The folder's prefix, with a trailing slash.
    pub path: String,
    /// Keys anywhere below.
    pub keys: u64,
    /// Total value size of those keys, in bytes.
    pub bytes: u64,
    /// The newest mod_revision below.
    pub newest_revision: i64,
    pub folders: Vec<Folder>,
    pub leaves: Vec<Leaf>,
}

/// The tree under one prefix, read at one revision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tree {
    /// The store revision the tree was read at.
    pub revision: i64,
    pub root: Folder,
}

#[derive(Default)]
struct Building {
    folders: BTreeMap<String, Building>,
    leaves: Vec<Leaf>,
}

impl Building {
    fn finish(self, name: String, path: String) -> Folder {
        let folders: Vec<Folder> = self
            .folders
            .into_iter()
            .map(|(n, b)| {
                let p = format!("{path}{n}/");
                b.finish(n, p)
            })
            .collect();
        let mut leaves = self.leaves;
        leaves.sort_by(|a, b| a.name.cmp(&b.name));
        let keys = folders.iter().map(|f| f.keys).sum::<u64>() + leaves.len() as u64;
        let bytes = folders.iter().map(|f| f.bytes).sum::<u64>() + leaves.iter().map(|l| l.size).sum::<u64>();
        let newest_revision = folders
            .iter()
            .map(|f| f.newest_revision)
            .chain(leaves.iter().map(|l| l.mod_revision))
            .max()
            .unwrap_or(0);
        Folder { name, path, keys, bytes, newest_revision, folders, leaves }
    }
}

/// Folds keys under `folder` (a prefix ending in `/`) into a tree. Keys outside it are ignored.
pub fn tree_from<'a>(folder: &str, revision: i64, kvs: impl IntoIterator<Item = &'a KeyValue>) -> Tree {
    let mut root = Building::default();
    for kv in kvs {
        let Some(rel) = kv.key.strip_prefix(folder) else { continue };
        let mut node = &mut root;
        let mut segs: Vec<&str> = rel.split('/').collect();
        let last = segs.pop().unwrap_or_default();
        for seg in segs {
            node = node.folders.entry(seg.to_string()).or_default();
        }
        node.leaves.push(Leaf {
            name: last.to_string(),
            key: kv.key.clone(),
            size: kv.value.len() as u64,
            mod_revision: kv.mod_revision,
        });
    }
    Tree { revision, root: root.finish(folder.to_string(), folder.to_string()) }
}

/// Reads every key under `prefix` (inside `/registry`) at one revision and folds them into a
/// tree. A prefix naming one key (no folder below it) gives a tree with that key as its leaf.
pub async fn read_tree(store: &dyn Store, prefix: &str) -> Result<Tree, Error> {
    let folder = folder_prefix(prefix)?;
    let read_err = |why| Error::Read { prefix: folder.clone(), why };
    let mut items: Vec<KeyValue> = Vec::new();
    let mut revision = 0;
    let mut after = None;
    loop {
        let opts = ListOptions { prefix: folder.clone(), revision, limit: PAGE, continue_after: after.take() };
        let page = store.list(opts).await.map_err(read_err)?;
        revision = page.revision;
        after = page.items.last().map(|kv| kv.key.clone());
        items.extend(page.items);
        if !page.more || after.is_none() {
            break;
        }
    }
    if items.is_empty() && folder.len() > REGISTRY.len() + 1 {
        // Maybe the prefix is a key itself.
        let key = folder.trim_end_matches('/');
        match store.get(key).await {
            Ok(kv) => {
                let parent = match key.rfind('/') {
                    Some(i) => &key[..=i],
                    None => "/",
                };
                return Ok(tree_from(parent, kv.mod_revision, [&kv]));
            }
            Err(store::Error::NotFound { .. }) => {}
            Err(why) => return Err(read_err(why)),
        }
    }
    Ok(tree_from(&folder, revision, &items))
}

/// How much of the tree to draw.
#[derive(Debug, Clone, Copy)]
pub struct TreeView {
    /// Folder levels to open below the root; `None` opens all.
    pub depth: Option<usize>,
    /// Keys shown per folder before the rest fold into one line; 0 shows all.
    pub max_keys: usize,
}

impl Default for TreeView {
    fn default() -> Self {
        TreeView { depth: None, max_keys: 20 }
    }
}

/// `1234` → `1.2 KiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn plural_keys(n: u64) -> String {
    if n == 1 {
        "1 key".into()
    } else {
        format!("{n} keys")
    }
}

/// Draws the tree: folders with key count, total size and newest revision; keys with size and
/// mod_revision; long key lists folded into a count.
pub fn render_tree(tree: &Tree, view: TreeView) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    let root = &tree.root;
    lines.push((
        root.path.clone(),
        format!("{:>9}  {:>10}  rev {}", plural_keys(root.keys), human_size(root.bytes), root.newest_revision),
    ));
    draw_folder(root, "", 0, view, &mut lines);
    if root.keys == 0 {
        lines.push(("(no keys)".into(), String::new()));
    }
    let width = lines.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0).min(72);
    let mut out = String::new();
    for (label, stats) in lines {
        if stats.is_empty() {
            let _ = writeln!(out, "{label}");
        } else {
            let pad = width.saturating_sub(label.chars().count());
            let _ = writeln!(out, "{label}{:pad$}  {stats}", "");
        }
    }
    let _ = writeln!(out, "(read at revision {})", tree.revision);
    out
}

fn draw_folder(folder: &Folder, indent: &str, level: usize, view: TreeView, lines: &mut Vec<(String, String)>) {
    if view.depth.is_some_and(|d| level >= d) {
        return;
    }
    let shown_leaves =
        if view.max_keys == 0 { folder.leaves.len() } else { folder.leaves.len().min(view.max_keys) };
    let folded = &folder.leaves[shown_leaves..];
    let total = folder.folders.len() + shown_leaves + usize::from(!folded.is_empty());
    let mut i = 0;
    let branch = |last: bool| {
        if last {
            (format!("{indent}└── "), format!("{indent}    "))
        } else {
            (format!("{indent}├── "), format!("{indent}│   "))
        }
    };
    for f in &folder.folders {
        i += 1;
        let (head, next) = branch(i == total);
        lines.push((
            format!("{head}{}/", f.name),
            format!("{:>9}  {:>10}  rev {}", plural_keys(f.keys), human_size(f.bytes), f.newest_revision),
        ));
        draw_folder(f, &next, level + 1, view, lines);
    }
    for leaf in &folder.leaves[..shown_leaves] {
        i += 1;
        let (head, _) = branch(i == total);
        let name = if leaf.name.is_empty() { "(empty name)" } else { &leaf.name };
        lines.push((
            format!("{head}{name}"),
            format!("{:>9}  {:>10}  rev {}", "", human_size(leaf.size), leaf.mod_revision),
        ));
    }
    if !folded.is_empty() {
        let (head, _) = branch(true);
        let bytes: u64 = folded.iter().map(|l| l.size).sum();
        let newest = folded.iter().map(|l| l.mod_revision).max().unwrap_or(0);
        lines.push((
            format!("{head}… {} more {}", folded.len(), if folded.len() == 1 { "key" } else { "keys" }),
            format!("{:>9}  {:>10}  rev {newest}", "", human_size(bytes)),
        ));
    }
}

/// What a write did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Create,
    Update,
    Delete,
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        })
    }
}

/// One write seen by [`watch`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Write {
    pub key: String,
    pub revision: i64,
    pub verb: Verb,
    /// The newest `managedFields` manager of the written object; `None` for deletes and for
    /// values that are not Kubernetes objects or carry no managedFields.
    pub who: Option<String>,
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} {}", self.key, self.revision, self.verb, self.who.as_deref().unwrap_or("-"))
    }
}

/// The newest managedFields manager of a stored JSON object, if any.
pub fn who_wrote(value: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: ObjectMeta,
    }
    let obj: Object = serde_json::from_slice(value).ok()?;
    crate::last_writer(&obj.metadata).map(|w| w.manager)
}

/// Describes one store event as a write.
pub fn describe(event: &store::Event) -> Write {
    let kv = &event.kv;
    let (verb, who) = match event.kind {
        EventKind::Delete => (Verb::Delete, None),
        EventKind::Put if kv.create_revision == kv.mod_revision || kv.version == 1 => {
            (Verb::Create, who_wrote(&kv.value))
        }
        EventKind::Put => (Verb::Update, who_wrote(&kv.value)),
    };
    Write { key: kv.key.clone(), revision: kv.mod_revision, verb, who }
}

/// Every write under `prefix` (inside `/registry`) from the next revision on, in revision order.
/// Returns the revision the stream starts after and the stream; it ends with an error if the
/// store's watch does (a compaction, say).
pub async fn watch(
    store: &dyn Store,
    prefix: &str,
) -> Result<(i64, impl Stream<Item = Result<Write, Error>> + Send + 'static), Error> {
    let folder = folder_prefix(prefix)?;
    // Watch the folder, and the bare key too when the prefix names one (the trailing slash
    // would miss it): the range is the prefix without the slash, filtered below.
    let bare = folder.trim_end_matches('/').to_string();
    let err = |why| Error::Watch { prefix: folder.clone(), why };
    let current = store.current_revision().await.map_err(err)?;
    let events = store.watch(&bare, current + 1).await.map_err(err)?;
    let stream = events.filter_map(move |ev| {
        let out = match ev {
            Ok(ev) if ev.kv.key == bare || ev.kv.key.starts_with(&folder) => Some(Ok(describe(&ev))),
            Ok(_) => None,
            Err(why) => Some(Err(Error::Watch { prefix: folder.clone(), why })),
        };
        std::future::ready(out)
    });
    Ok((current, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, size: usize, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: vec![b'x'; size],
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    #[test]
    fn prefixes_stay_inside_registry() {
        assert_eq!(folder_prefix("/registry").unwrap(), "/registry/");
        assert_eq!(folder_prefix("/registry/").unwrap(), "/registry/");
        assert_eq!(folder_prefix("/registry/services").unwrap(), "/registry/services/");
        for bad in
            ["", "/", "/reg", "/registryx", "registry", "/foo/registry", "/registry/../etc", "/registry/./x"]
        {
            let e = folder_prefix(bad).unwrap_err();
            assert!(e.to_string().contains("outside /registry"), "{bad}: {e}");
        }
    }

    #[test]
    fn tree_counts_sizes_and_newest_revisions() {
        let kvs = [
            kv("/registry/services/specs/default/kubernetes", 300, 5),
            kv("/registry/services/specs/default/nginx-svc", 400, 40),
            kv("/registry/services/endpoints/default/kubernetes", 200, 7),
            kv("/registry/ranges/serviceips", 100, 41),
        ];
        let tree = tree_from("/registry/", 50, &kvs);
        assert_eq!(tree.root.keys, 4);
        assert_eq!(tree.root.bytes, 1000);
        assert_eq!(tree.root.newest_revision, 41);
        let names: Vec<&str> = tree.root.folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["ranges", "services"]);
        let services = &tree.root.folders[1];
        assert_eq!((services.keys, services.bytes, services.newest_revision), (3, 900, 40));
        let sub: Vec<&str> = services.folders.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(sub, ["endpoints", "specs"]);
        assert_eq!(tree.root.folders[0].leaves[0].name, "serviceips");

        let text = render_tree(&tree, TreeView::default());
        assert!(text.starts_with("/registry/ "), "{text}");
        assert!(text.contains("├── ranges/"), "{text}");
        assert!(text.contains("\n    ├── endpoints/"), "{text}");
        assert!(text.contains("nginx-svc"), "{text}");
        assert!(text.contains("rev 40"), "{text}");
        assert!(text.contains("(read at revision 50)"), "{text}");
        let shallow = render_tree(&tree, TreeView { depth: Some(1), max_keys: 20 });
        assert!(shallow.contains("services/") && !shallow.contains("endpoints/"), "{shallow}");
    }

    #[test]
    fn long_key_lists_fold_into_a_count() {
        let kvs: Vec<KeyValue> =
            (0..1000).map(|i| kv(&format!("/registry/pods/default/p{i:04}"), 10, i)).collect();
        let tree = tree_from("/registry/pods/", 1000, &kvs);
        let text = render_tree(&tree, TreeView { depth: None, max_keys: 5 });
        assert!(text.lines().count() < 12, "{text}");
        assert!(text.contains("… 995 more keys"), "{text}");
        assert!(text.contains("rev 999"), "{text}");
        let all = render_tree(&tree, TreeView { depth: None, max_keys: 0 });
        assert!(all.lines().count() > 1000);
    }

    #[test]
    fn writes_name_their_verb_and_writer() {
        let value = serde_json::json!({"metadata": {"name": "p", "managedFields": [
            {"manager": "kubectl-create", "operation": "Update", "time": "2026-01-01T00:00:00Z"},
            {"manager": "kubelet", "operation": "Update", "subresource": "status", "time": "2026-01-01T00:00:05Z"}
        ]}});
        let mut put = kv("/registry/pods/default/p", 0, 9);
        put.value = serde_json::to_vec(&value).unwrap();
        let ev = store::Event { kind: EventKind::Put, kv: put.clone(), prev_kv: None };
        let w = describe(&ev);
        assert_eq!((w.verb, w.who.as_deref()), (Verb::Create, Some("kubelet")));
        put.mod_revision = 12;
        put.version = 2;
        let w = describe(&store::Event { kind: EventKind::Put, kv: put.clone(), prev_kv: None });
        assert_eq!(w.to_string(), "/registry/pods/default/p 12 update kubelet");
        put.value = b"not json".to_vec();
        let w = describe(&store::Event { kind: EventKind::Put, kv: put.clone(), prev_kv: None });
        assert_eq!(w.to_string(), "/registry/pods/default/p 12 update -");
        let w = describe(&store::Event { kind: EventKind::Delete, kv: put, prev_kv: None });
        assert_eq!(w.verb, Verb::Delete);
        assert_eq!(w.who, None);
    }
}
