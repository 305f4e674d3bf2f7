//! The watch cache, after upstream's Cacher: one store watch per resource feeds a copy of the
//! resource's current objects and a window of recent events. HTTP watches are served from it, so an
//! event is read from the store and decoded once however many clients watch, and its JSON line is
//! built once for all the watchers that take it unchanged. Each version is held compactly
//! (`Version`: its JSON bytes and the facts selectors read), never as a decoded `Value` in the
//! window; a current object is decoded only when a read served from the cache asks for it.
//!
//! Correctness rules:
//! - A watch from revision R is served from the cache only when every event after R is still in the
//!   window (R ≥ the window's start); otherwise it falls back to a direct store watch, which answers
//!   410 if R is compacted.
//! - The unit of the cache is a whole revision. One revision can hold many events (an expired Event
//!   lease deletes all its keys at one revision); the feeder reads the store one revision at a time
//!   (`Store::watch_revisions`), appends all its events to the window and broadcasts them as one
//!   message under one lock. A watcher therefore always stands between two revisions, and comparing
//!   revisions (`> after`, `<= last`) never cuts a revision in two: replay and catch-up never skip
//!   or repeat an event, and a bookmark at the last delivered revision is exact.
//! - A watcher subscribes to the live broadcast before it copies the window, under the same lock the
//!   feeder appends and broadcasts under, so no revision falls between the two; revisions at or below
//!   what it already delivered are skipped.
//! - A watcher that falls so far behind that the broadcast drops events for it catches up from the
//!   window if it can, and is otherwise ended, so that its client re-watches from its last revision.
//!   Events are never dropped silently.
//! - When the store watch fails (compaction, store gone), the cache rebuilds from a fresh list and
//!   the watchers attached to the old one are ended the same way.
//!
//! LISTs are served from it too (`ResourceCache::list`), as upstream's 1.33 cacher with
//! ConsistentListFromCache: the objects and the revision they stand at are read under the lock the
//! feeder applies whole revisions under, so a list's resourceVersion is exactly the state it shows
//! and a watch from it neither misses nor repeats an event. The revision also moves on the store
//! watch's progress reports (`store::WatchItem::Progress`, asked for by `wait_fresh` through
//! `Store::watch_progress`), so a consistent read waits only until the cache has seen the store's
//! current revision, even when the last writes were to other resources. A store that cannot report
//! progress exactly (etcd before 3.4.31/3.5.13) leaves `progress()` false, and consistent reads go to
//! the store, as upstream's `RequestWatchProgress` check does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use api_types::ResourceDef;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use store::{DynStore, EventKind, ListOptions, WatchItem};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;

use crate::objects::decode;

/// Events kept per resource for watches that start in the past, unless configured.
pub const DEFAULT_WINDOW: usize = 8192;
/// Revisions buffered per live watcher before it counts as lagging (it then catches up from the
/// window). tokio's broadcast allocates every slot up front, for each cached resource: at 4096 the
/// slots alone were 9.8 MB of idle heap over ~50 resources (heaptrack); upstream's cacheWatcher
/// buffers 10 to 1000 events.
const LIVE_BUFFER: usize = 256;

/// One version of an object, held compactly: its JSON exactly as the API serves it (Go field order,
/// `kind`, `apiVersion` and `resourceVersion` set), and the few facts watch filters read. A decoded
/// `Value` of a pod is many times the size of its JSON, so the window keeps no `Value`: whatever
/// needs the whole object (a Table, a DELETED line) decodes these bytes for the moment.
#[derive(Debug)]
pub struct Version {
    /// The object's JSON; for a put in the window, a slice of the event's prebuilt line.
    pub bytes: Bytes,
    pub facts: Facts,
}

/// What label and field selectors read from one version, so a filtered watch never decodes it.
#[derive(Debug, Default, PartialEq)]
pub struct Facts {
    /// `metadata.labels` (string values only, as `selectors::labels_of`).
    pub labels: Box<[(Box<str>, Box<str>)]>,
    /// `metadata.name`, `metadata.namespace` and each of the resource's field selectors, with the
    /// value `selectors::field_value` gives it (the only fields a validated selector may name).
    pub fields: Box<[(&'static str, Box<str>)]>,
}

impl Facts {
    pub fn of(res: &ResourceDef, obj: &Value) -> Facts {
        let labels = api_types::selectors::labels_of(obj)
            .into_iter()
            .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
            .collect();
        let fields = ["metadata.name", "metadata.namespace"]
            .into_iter()
            .chain(res.field_selectors.iter().copied())
            .map(|f| (f, api_types::selectors::field_value(obj, f).into_boxed_str()))
            .collect();
        Facts { labels, fields }
    }

    /// The labels as a label selector reads them.
    pub fn label_map(&self) -> BTreeMap<String, String> {
        self.labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The value a field selector compares for `field`. Selectors are validated against the
    /// resource's field selectors before a watch starts, so every field asked for is here; any
    /// other reads as missing ("").
    pub fn field(&self, field: &str) -> &str {
        self.fields.iter().find(|(f, _)| *f == field).map_or("", |(_, v)| v)
    }

    /// `metadata.namespace`, None when unset or empty (as `meta::namespace`).
    pub fn namespace(&self) -> Option<&str> {
        Some(self.field("metadata.namespace")).filter(|s| !s.is_empty())
    }
}

impl Version {
    /// The compact form of a decoded object.
    pub fn new(res: &ResourceDef, obj: &Value) -> Version {
        Version { bytes: Bytes::from(api_types::goorder::to_vec(obj)), facts: Facts::of(res, obj) }
    }

    /// The whole object, decoded for the moment (not kept).
    pub fn decode(&self) -> Value {
        // The bytes were encoded from a Value by this module, so they always parse.
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

/// One change, held compactly.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: i64,
    /// The object after the change (None for a delete).
    pub cur: Option<Arc<Version>>,
    /// The object before it (None for a create): the previous event's `cur`, shared.
    pub old: Option<Arc<Version>>,
    /// The event's JSON line for a watcher without selectors: prebuilt for a put (whose `cur` bytes
    /// are a slice of it, so the window holds the object once), built on first use for a delete.
    plain: OnceLock<(&'static str, Bytes)>,
}

impl CachedEvent {
    /// An event from the versions before and after it. A put's line is built here, from the
    /// object's bytes, and `cur` then points into that line.
    pub fn new(revision: i64, cur: Option<Version>, old: Option<Arc<Version>>) -> CachedEvent {
        let plain = OnceLock::new();
        let cur = cur.map(|c| {
            let ty = if old.is_some() { "MODIFIED" } else { "ADDED" };
            let (l, object) = line_with(ty, &c.bytes);
            let _ = plain.set((ty, l));
            Arc::new(Version { bytes: object, facts: c.facts })
        });
        CachedEvent { revision, cur, old, plain }
    }

    /// The event as an unfiltered watcher sees it: ADDED, MODIFIED or DELETED with its JSON line.
    pub fn plain_line(&self) -> &(&'static str, Bytes) {
        self.plain.get_or_init(|| match (&self.cur, &self.old) {
            (Some(c), Some(_)) => ("MODIFIED", line_with("MODIFIED", &c.bytes).0),
            (Some(c), None) => ("ADDED", line_with("ADDED", &c.bytes).0),
            (None, Some(o)) => ("DELETED", line("DELETED", &deleted_at(&o.decode(), self.revision))),
            (None, None) => ("DELETED", line("DELETED", &Value::Null)),
        })
    }
}

/// The last state of a deleted (or no longer selected) object, at the revision of the event.
pub fn deleted_at(old: &Value, revision: i64) -> Value {
    let mut o = old.clone();
    crate::meta::set(&mut o, "resourceVersion", json!(revision.to_string()));
    o
}

/// One watch event as a newline-terminated JSON line: upstream's WatchEvent order (`type`, then
/// `object`), the object in Go field order.
pub fn line(ty: &str, obj: &Value) -> Bytes {
    line_with(ty, &api_types::goorder::to_vec(obj)).0
}

/// The line of an event whose object is already encoded (in Go field order), and the object's bytes
/// as a slice of that line. `ty` is one of upstream's event types (plain ASCII, nothing to escape).
pub fn line_with(ty: &str, object: &[u8]) -> (Bytes, Bytes) {
    let mut s = Vec::with_capacity(object.len() + ty.len() + 24);
    s.extend_from_slice(b"{\"type\":\"");
    s.extend_from_slice(ty.as_bytes());
    s.extend_from_slice(b"\",\"object\":");
    let start = s.len();
    s.extend_from_slice(object);
    let end = s.len();
    s.extend_from_slice(b"}\n");
    let l = Bytes::from(s);
    let o = l.slice(start..end);
    (l, o)
}

/// One current object: its compact version (the `old` of its next event), and its decoded form,
/// made on the first read served from the cache (GET, RBAC, admission) and kept until the object
/// changes. Objects nobody reads that way (most pods) are never kept decoded.
struct Current {
    version: Arc<Version>,
    value: OnceLock<Arc<Value>>,
}

impl Current {
    fn new(version: Arc<Version>) -> Current {
        Current { version, value: OnceLock::new() }
    }

    fn value(&self) -> Arc<Value> {
        self.value.get_or_init(|| Arc::new(self.version.decode())).clone()
    }
}

struct State {
    /// Current objects by store key.
    objects: BTreeMap<String, Current>,
    /// Recent events, oldest first.
    window: VecDeque<Arc<CachedEvent>>,
    /// Every event after this revision is in the window.
    window_start: i64,
    /// The revision of the list the cache started from, or of its last event.
    revision: i64,
    ready: bool,
    /// Bumped on every rebuild: watchers of an older generation are ended.
    generation: u64,
}

/// Every event of one revision, in the order the revision wrote them.
pub type RevisionEvents = Arc<[Arc<CachedEvent>]>;

/// The cache of one resource (all namespaces).
pub struct ResourceCache {
    window: usize,
    state: Mutex<State>,
    live: broadcast::Sender<(u64, RevisionEvents)>,
    feeder: Mutex<Option<JoinHandle<()>>>,
    /// `State::revision`, published for `wait_fresh` whenever it moves.
    seen: watch::Sender<i64>,
    /// Asks the store watch for a progress report.
    ask: Arc<Notify>,
    /// Whether the store watch reports progress (set when the feeder starts watching).
    progress: AtomicBool,
}

/// A list read from the cache: the selected objects in key order and the revision they stand at.
pub struct CachedList {
    pub items: Vec<Arc<Version>>,
    pub revision: i64,
    /// With a limit that cut the list: the last returned key and how many keys of the range (selected
    /// or not) follow it, for the continue token.
    pub cut: Option<(String, i64)>,
}

impl Drop for ResourceCache {
    fn drop(&mut self) {
        if let Ok(mut f) = self.feeder.lock() {
            if let Some(h) = f.take() {
                h.abort();
            }
        }
    }
}

/// What a watcher gets when it attaches: the events after its revision (whole revisions), and the
/// live feed (one message per revision).
pub struct Attached {
    pub replay: Vec<Arc<CachedEvent>>,
    pub live: broadcast::Receiver<(u64, RevisionEvents)>,
    pub generation: u64,
}

impl ResourceCache {
    /// Attaches a watcher that has seen everything up to `after`. None when the window no longer
    /// covers it (or the cache is not ready): the caller watches the store directly.
    pub fn attach(&self, after: i64) -> Option<Attached> {
        let st = self.state.lock().ok()?;
        if !st.ready || after < st.window_start {
            return None;
        }
        let live = self.live.subscribe();
        let replay = st.window.iter().filter(|e| e.revision > after).cloned().collect();
        Some(Attached { replay, live, generation: st.generation })
    }

    /// Events after `after` still in the window, for a watcher that lagged; None if some are gone.
    pub fn catch_up(&self, after: i64, generation: u64) -> Option<Vec<Arc<CachedEvent>>> {
        let st = self.state.lock().ok()?;
        if st.generation != generation || after < st.window_start {
            return None;
        }
        Some(st.window.iter().filter(|e| e.revision > after).cloned().collect())
    }

    /// The current object at `key`, if the cache is ready and has it.
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        let st = self.state.lock().ok()?;
        if !st.ready {
            return None;
        }
        st.objects.get(key).map(Current::value)
    }

    /// Every current object whose key starts with `prefix`, if the cache is ready.
    pub fn under(&self, prefix: &str) -> Option<Vec<Arc<Value>>> {
        let st = self.state.lock().ok()?;
        if !st.ready {
            return None;
        }
        let range = st.objects.range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded));
        Some(range.take_while(|(k, _)| k.starts_with(prefix)).map(|(_, c)| c.value()).collect())
    }

    /// The current objects under `prefix` that `keep` accepts, in key order, at most `limit` (0: all),
    /// and the revision they stand at, read in one go under the feeder's lock. None when not ready.
    pub fn list(&self, prefix: &str, keep: impl Fn(&Facts) -> bool, limit: usize) -> Option<CachedList> {
        let st = self.state.lock().ok()?;
        if !st.ready {
            return None;
        }
        let mut range = st
            .objects
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let mut items = Vec::new();
        let mut cut = None;
        for (key, c) in range.by_ref() {
            if keep(&c.version.facts) {
                items.push(c.version.clone());
                if limit > 0 && items.len() == limit {
                    cut = Some(key.clone());
                    break;
                }
            }
        }
        // Upstream's cacher: a continue token whenever objects of the range remain after the cut.
        let cut = cut.map(|k| (k, range.count() as i64)).filter(|(_, left)| *left > 0);
        Some(CachedList { items, revision: st.revision, cut })
    }

    /// Whether the store watch feeding the cache reports progress, so `wait_fresh` can learn that the
    /// cache has seen a revision that wrote nothing of this resource.
    pub fn progress(&self) -> bool {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits, at most `timeout`, until the cache is ready and has seen every change up to `revision`
    /// (upstream's `waitUntilFreshAndBlock`), asking the store watch for a progress report if it is
    /// behind. False on timeout.
    pub async fn wait_fresh(&self, revision: i64, timeout: Duration) -> bool {
        let mut seen = self.seen.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut asked = false;
        loop {
            // Read apart from `ready()`: the feeder publishes under the state lock, so holding the
            // channel's borrow while taking that lock could deadlock.
            let at = *seen.borrow_and_update();
            if at >= revision && self.ready() {
                return true;
            }
            if !asked && self.progress() {
                // One report answers: it comes at a revision at least the store's current one now,
                // which is at least `revision` (read from the store before this call).
                self.ask.notify_one();
                asked = true;
            }
            match tokio::time::timeout_at(deadline, seen.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Whether the cache is serving.
    pub fn ready(&self) -> bool {
        self.state.lock().map(|s| s.ready).unwrap_or(false)
    }
}

/// A cache's resource: group, version, plural.
type CacheId = (&'static str, &'static str, &'static str);

/// All resource caches, started on first use.
pub struct Cacher {
    /// Events kept per resource; 0 turns the cache off (watches go to the store), as upstream's
    /// `--default-watch-cache-size 0`.
    window: usize,
    /// Keyed by group, version and plural: custom resources' versions share storage but are served
    /// each in its own apiVersion.
    caches: Mutex<HashMap<CacheId, Arc<ResourceCache>>>,
}

impl Cacher {
    pub fn new(window: usize) -> Cacher {
        Cacher { window, caches: Mutex::default() }
    }

    /// A started cache that has not served its initial list yet (`group/plural`), if any: the
    /// readyz `informer-sync` check.
    pub fn unsynced(&self) -> Option<String> {
        let caches = self.caches.lock().ok()?;
        caches.iter().find(|(_, c)| !c.ready()).map(|((group, _, plural), _)| format!("{group}/{plural}"))
    }

    /// The cache of `res`, starting it if needed (None when caching is off). Must be called inside a
    /// tokio runtime.
    pub fn cache(&self, store: &DynStore, res: &'static ResourceDef) -> Option<Arc<ResourceCache>> {
        if self.window == 0 {
            return None;
        }
        let mut caches = self.caches.lock().ok()?;
        // Resources sharing storage (core and events.k8s.io Events) are cached per served form.
        let id = (res.group, res.version, res.plural);
        if let Some(c) = caches.get(&id) {
            return Some(c.clone());
        }
        let (live, _) = broadcast::channel(LIVE_BUFFER);
        let cache = Arc::new(ResourceCache {
            window: self.window,
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                window: VecDeque::new(),
                window_start: i64::MAX,
                revision: 0,
                ready: false,
                generation: 0,
            }),
            live,
            feeder: Mutex::new(None),
            seen: watch::Sender::new(0),
            ask: Arc::new(Notify::new()),
            progress: AtomicBool::new(false),
        });
        let handle = tokio::spawn(feed(Arc::downgrade(&cache), store.clone(), res));
        if let Ok(mut f) = cache.feeder.lock() {
            *f = Some(handle);
        }
        caches.insert(id, cache.clone());
        Some(cache)
    }
}

/// Keeps one cache current: list, then watch from the list's revision; on any failure, start over.
/// It holds the cache only weakly, so the cache (and this task) go when the cacher does.
async fn feed(cache: std::sync::Weak<ResourceCache>, store: DynStore, res: &'static ResourceDef) {
    let prefix = res.list_prefix(None);
    loop {
        match run_once(&cache, &store, res, &prefix).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(resource = res.plural, error = %e, "watch cache restarting"),
        }
        match cache.upgrade() {
            Some(c) => {
                if let Ok(mut st) = c.state.lock() {
                    st.ready = false;
                }
            }
            None => return,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run_once(
    cache: &std::sync::Weak<ResourceCache>,
    store: &DynStore,
    res: &'static ResourceDef,
    prefix: &str,
) -> Result<(), String> {
    let list = store
        .list(ListOptions { prefix: prefix.to_string(), ..Default::default() })
        .await
        .map_err(|e| e.to_string())?;
    let mut objects = BTreeMap::new();
    for kv in &list.items {
        let value = decode(res, kv).map_err(|e| e.message)?;
        objects.insert(kv.key.clone(), Current::new(Arc::new(Version::new(res, &value))));
    }
    let Some(ask) = cache.upgrade().map(|c| c.ask.clone()) else { return Ok(()) };
    let (mut watch, progress) =
        match store.watch_progress(prefix, list.revision + 1, ask).await.map_err(|e| e.to_string())? {
            Some(w) => (w, true),
            None => {
                let w =
                    store.watch_revisions(prefix, list.revision + 1, false).await.map_err(|e| e.to_string())?;
                (Box::pin(w.map(|item| item.map(WatchItem::Revision))) as store::ProgressStream, false)
            }
        };
    {
        let Some(c) = cache.upgrade() else { return Ok(()) };
        c.progress.store(progress, Ordering::Relaxed);
        let mut st = c.state.lock().map_err(|e| e.to_string())?;
        st.objects = objects;
        st.window.clear();
        st.window_start = list.revision;
        st.revision = list.revision;
        st.generation += 1;
        st.ready = true;
        c.seen.send_replace(list.revision);
    }
    while let Some(item) = watch.next().await {
        let events = match item.map_err(|e| e.to_string())? {
            WatchItem::Revision(events) => events,
            WatchItem::Progress(revision) => {
                // Nothing of this resource changed up to `revision`.
                let Some(c) = cache.upgrade() else { return Ok(()) };
                let mut st = c.state.lock().map_err(|e| e.to_string())?;
                if revision > st.revision {
                    st.revision = revision;
                    c.seen.send_replace(revision);
                }
                continue;
            }
        };
        let Some(revision) = events.first().map(store::Event::revision) else { continue };
        // Decode before taking the lock, so a bad object restarts the cache with nothing applied.
        let mut decoded = Vec::with_capacity(events.len());
        for ev in &events {
            let cur = match ev.kind {
                EventKind::Put => Some(Version::new(res, &decode(res, &ev.kv).map_err(|e| e.message)?)),
                EventKind::Delete => None,
            };
            decoded.push((ev.kv.key.clone(), cur));
        }
        let Some(c) = cache.upgrade() else { return Ok(()) };
        let mut st = c.state.lock().map_err(|e| e.to_string())?;
        let mut cached = Vec::with_capacity(decoded.len());
        for (key, cur) in decoded {
            let event = match cur {
                Some(version) => {
                    let old = st.objects.get(&key).map(|c| c.version.clone());
                    let event = CachedEvent::new(revision, Some(version), old);
                    if let Some(version) = event.cur.clone() {
                        st.objects.insert(key, Current::new(version));
                    }
                    event
                }
                None => CachedEvent::new(revision, None, st.objects.remove(&key).map(|c| c.version)),
            };
            cached.push(Arc::new(event));
        }
        st.revision = revision;
        c.seen.send_replace(revision);
        for e in &cached {
            if st.window.len() >= c.window {
                if let Some(dropped) = st.window.pop_front() {
                    st.window_start = dropped.revision;
                }
            }
            st.window.push_back(e.clone());
        }
        let generation = st.generation;
        // Sent under the lock, so attach() sees each revision either in the window or live.
        let _ = c.live.send((generation, cached.into()));
    }
    Err("store watch ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static ResourceDef {
        api_types::resources::lookup("", "v1", "pods").expect("pods")
    }

    fn pod(name: &str, app: &str, node: &str, rv: i64) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv.to_string(),
                         "labels": {"app": app, "n": "1"}, "uid": "u-1"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        })
    }

    #[test]
    fn line_from_bytes_is_the_line_from_the_value() {
        let obj = pod("p", "a", "n1", 7);
        for ty in ["ADDED", "MODIFIED", "DELETED"] {
            let (l, o) = line_with(ty, &api_types::goorder::to_vec(&obj));
            assert_eq!(l, line(ty, &obj));
            assert_eq!(o, Bytes::from(api_types::goorder::to_vec(&obj)));
            let back: Value = serde_json::from_slice(&l).unwrap();
            assert_eq!(back, json!({"type": ty, "object": obj}));
        }
    }

    #[test]
    fn compact_events_render_the_old_lines() {
        let v1 = pod("p", "a", "", 5);
        let v2 = pod("p", "a", "n1", 6);
        let added = CachedEvent::new(5, Some(Version::new(pods(), &v1)), None);
        assert_eq!(*added.plain_line(), ("ADDED", line("ADDED", &v1)));
        let cur1 = added.cur.clone().unwrap();
        // The version is a slice of the event's line: the window holds the object once.
        assert_eq!(cur1.bytes, Bytes::from(api_types::goorder::to_vec(&v1)));
        assert_eq!(cur1.decode(), v1);
        let modified = CachedEvent::new(6, Some(Version::new(pods(), &v2)), Some(cur1.clone()));
        assert_eq!(*modified.plain_line(), ("MODIFIED", line("MODIFIED", &v2)));
        assert!(Arc::ptr_eq(modified.old.as_ref().unwrap(), &cur1));
        let deleted = CachedEvent::new(9, None, modified.cur.clone());
        assert_eq!(*deleted.plain_line(), ("DELETED", line("DELETED", &deleted_at(&v2, 9))));
        let got: Value = serde_json::from_slice(&deleted.plain_line().1).unwrap();
        assert_eq!(got["object"]["metadata"]["resourceVersion"], "9");
    }

    #[test]
    fn current_objects_decode_on_first_read_to_the_same_value() {
        let v = pod("p", "a", "n1", 5);
        let c = Current::new(Arc::new(Version::new(pods(), &v)));
        assert!(c.value.get().is_none());
        let first = c.value();
        assert_eq!(*first, v);
        assert!(Arc::ptr_eq(&first, &c.value()));
    }

    fn cache_of(objs: &[Value], revision: i64) -> ResourceCache {
        let objects = objs
            .iter()
            .map(|o| {
                let key = format!("/registry/pods/default/{}", o["metadata"]["name"].as_str().unwrap());
                (key, Current::new(Arc::new(Version::new(pods(), o))))
            })
            .collect();
        ResourceCache {
            window: 10,
            state: Mutex::new(State {
                objects,
                window: VecDeque::new(),
                window_start: revision,
                revision,
                ready: true,
                generation: 1,
            }),
            live: broadcast::channel(4).0,
            feeder: Mutex::new(None),
            seen: watch::Sender::new(revision),
            ask: Arc::new(Notify::new()),
            progress: AtomicBool::new(true),
        }
    }

    #[test]
    fn lists_select_cut_and_stand_at_the_cache_revision() {
        let objs: Vec<Value> =
            (0..5).map(|i| pod(&format!("p{i}"), if i % 2 == 0 { "a" } else { "b" }, "n", 3)).collect();
        let c = cache_of(&objs, 9);
        let names = |l: &CachedList| {
            l.items
                .iter()
                .map(|v| v.decode()["metadata"]["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let all = c.list("/registry/pods/", |_| true, 0).unwrap();
        assert_eq!(all.revision, 9);
        assert_eq!(names(&all), ["p0", "p1", "p2", "p3", "p4"]);
        assert!(all.cut.is_none());
        assert_eq!(all.items[0].bytes, Bytes::from(api_types::goorder::to_vec(&objs[0])));
        let a = c.list("/registry/pods/default/", |f| f.label_map()["app"] == "a", 0).unwrap();
        assert_eq!(names(&a), ["p0", "p2", "p4"]);
        // A limit cuts after the last returned key; the keys after it are counted, selected or not.
        let page = c.list("/registry/pods/", |f| f.label_map()["app"] == "a", 2).unwrap();
        assert_eq!(names(&page), ["p0", "p2"]);
        assert_eq!(page.cut, Some(("/registry/pods/default/p2".to_string(), 2)));
        // A cut at the last key of the range needs no continue token.
        let last = c.list("/registry/pods/", |f| f.field("metadata.name") == "p4", 1).unwrap();
        assert_eq!(names(&last), ["p4"]);
        assert!(last.cut.is_none());
        assert!(c.list("/registry/pods/other/", |_| true, 0).unwrap().items.is_empty());
    }

    #[tokio::test]
    async fn wait_fresh_asks_for_progress_and_times_out() {
        let c = Arc::new(cache_of(&[], 9));
        assert!(c.wait_fresh(9, Duration::ZERO).await);
        assert!(!c.wait_fresh(10, Duration::from_millis(20)).await);
        // A progress report (as the feeder applies it) ends the wait.
        let ask = c.ask.clone();
        let c2 = c.clone();
        let feeder = tokio::spawn(async move {
            ask.notified().await;
            let mut st = c2.state.lock().unwrap();
            st.revision = 12;
            c2.seen.send_replace(12);
        });
        assert!(c.wait_fresh(12, Duration::from_secs(5)).await);
        feeder.await.unwrap();
    }

    #[test]
    fn facts_hold_labels_and_selectable_fields() {
        let f = Facts::of(pods(), &pod("p", "a", "n1", 5));
        assert_eq!(f.label_map(), api_types::selectors::labels_of(&pod("p", "a", "n1", 5)));
        assert_eq!(f.field("metadata.name"), "p");
        assert_eq!(f.namespace(), Some("default"));
        assert_eq!(f.field("spec.nodeName"), "n1");
        assert_eq!(f.field("status.phase"), "Running");
        assert_eq!(f.field("status.podIP"), "10.0.0.1");
        // Go zero values, as field_value: a pod that never set hostNetwork has it false.
        assert_eq!(f.field("spec.hostNetwork"), "false");
        let nodes = api_types::resources::lookup("", "v1", "nodes").unwrap();
        let n = Facts::of(nodes, &json!({"metadata": {"name": "n1"}}));
        assert_eq!(n.namespace(), None);
        assert_eq!(n.field("spec.unschedulable"), "false");
    }
}
