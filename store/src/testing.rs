//! The conformance suite every [`Store`] backend must pass, and a real `etcd` process to run it against.
//!
//! Each `check_*` function takes the store and a key prefix that no other check uses (see
//! [`unique_prefix`]), so checks can share one store, even one etcd shared by parallel tests. They
//! panic with a message saying what broke, like assertions. Two of them look beyond their prefix and so
//! need the store to themselves while they run: [`check_limits`] (the store revision must not move on a
//! refused write) and [`check_compaction`] (compaction is store-wide). [`run_all`] runs the checks one
//! after another, compaction last, so it never breaks the others.
//!
//! No check sleeps for a fixed time: waiting is always polling or awaiting an event, bounded by a
//! deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;

pub use crate::etcd_process::{EtcdProcess, ETCD_MISSING};
use crate::{
    guaranteed_update, prefix_end, DynStore, Error, Event, EventKind, KeyValue, ListOptions, ListResult,
    RevisionStream, WatchStream, DEFAULT_MAX_VALUE_BYTES,
};

/// Environment variable naming an already running etcd (its client URL) for tests to use instead of
/// starting their own. CI starts one etcd and sets it.
pub const TEST_ETCD_ENV: &str = "KPLANE_TEST_ETCD";

/// How long a check waits for one expected watch event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a check waits for a lease to expire. etcd rounds TTLs up to its minimum (2 s with default
/// timings) and checks expiry every 500 ms, so this leaves a wide margin on a loaded machine.
const LEASE_EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);

/// The etcd client URL from [`TEST_ETCD_ENV`], if set and not empty.
pub fn etcd_endpoint_from_env() -> Option<String> {
    std::env::var(TEST_ETCD_ENV).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

static PREFIX_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A key prefix under `/registry/conformance/<test>/` that no other check, test run or process uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let n = PREFIX_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("/registry/conformance/{test}/{}-{nanos}-{n}/", std::process::id())
}

/// Runs every check against `store`, each under its own prefix, one after another; the store-wide
/// compaction check runs last. Needs the store to itself while it runs (see the module docs).
pub async fn run_all(store: DynStore) {
    let store = &store;
    check_create_get(store, &unique_prefix("create-get")).await;
    check_update_cas(store, &unique_prefix("update-cas")).await;
    check_delete(store, &unique_prefix("delete")).await;
    check_revisions(store, &unique_prefix("revisions")).await;
    check_list_prefix_isolation(store, &unique_prefix("list-prefix")).await;
    check_list_paging_consistent(store, &unique_prefix("list-paging")).await;
    check_future_revision(store, &unique_prefix("future-revision")).await;
    check_watch_order(store, &unique_prefix("watch-order")).await;
    check_watch_replay(store, &unique_prefix("watch-replay")).await;
    check_watch_latest(store, &unique_prefix("watch-latest")).await;
    check_leases(store, &unique_prefix("leases")).await;
    check_watch_shared_revision(store, &unique_prefix("shared-revision")).await;
    check_limits(store, &unique_prefix("limits")).await;
    check_no_lost_update(store, &unique_prefix("no-lost-update")).await;
    check_compaction(store, &unique_prefix("compaction")).await;
}

// ---------------------------------------------------------------------------------------------------
// Helpers. They panic like assertions: this module exists to fail tests.

async fn must<T>(what: &str, fut: impl std::future::Future<Output = crate::Result<T>>) -> T {
    match fut.await {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error: {e:?}"),
    }
}

async fn must_create(store: &DynStore, key: &str, value: &str) -> KeyValue {
    must(&format!("create {key}"), store.create(key, value.as_bytes().to_vec(), 0)).await
}

async fn must_update(store: &DynStore, kv: &KeyValue, value: &str) -> KeyValue {
    let what = format!("update {} at {}", kv.key, kv.mod_revision);
    must(&what, store.update(&kv.key, value.as_bytes().to_vec(), kv.mod_revision, 0)).await
}

async fn list(store: &DynStore, prefix: &str, revision: i64, limit: i64, after: Option<&str>) -> ListResult {
    let opts =
        ListOptions { prefix: prefix.to_string(), revision, limit, continue_after: after.map(str::to_string) };
    must(&format!("list {prefix} at {revision} limit {limit} after {after:?}"), store.list(opts)).await
}

async fn assert_not_found(store: &DynStore, key: &str, context: &str) {
    match store.get(key).await {
        Err(Error::NotFound { key: k }) => assert_eq!(k, key, "{context}: NotFound names the wrong key"),
        other => panic!("{context}: get {key} should be NotFound, got {other:?}"),
    }
}

/// The next event of a watch, panicking on an error, the end of the stream or a timeout.
pub async fn next_event(watch: &mut WatchStream, context: &str) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("{context}: watch failed: {e:?}"),
        Ok(None) => panic!("{context}: watch ended"),
        Err(_) => panic!("{context}: no watch event within {EVENT_TIMEOUT:?}"),
    }
}

async fn next_events(watch: &mut WatchStream, n: usize, context: &str) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        events.push(next_event(watch, &format!("{context} (event {} of {n})", i + 1)).await);
    }
    events
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// What a check expects one watch event to be.
#[derive(Debug)]
struct Expected {
    kind: EventKind,
    /// For a put the written KeyValue; for a delete the key and delete revision (empty value).
    kv: KeyValue,
    /// The previous value, when the key existed before.
    prev: Option<KeyValue>,
}

impl Expected {
    fn put(kv: &KeyValue, prev: Option<&KeyValue>) -> Expected {
        Expected { kind: EventKind::Put, kv: kv.clone(), prev: prev.cloned() }
    }

    fn delete(prev: &KeyValue, revision: i64) -> Expected {
        let kv = KeyValue {
            key: prev.key.clone(),
            value: Vec::new(),
            create_revision: 0,
            mod_revision: revision,
            version: 0,
            lease: 0,
        };
        Expected { kind: EventKind::Delete, kv, prev: Some(prev.clone()) }
    }

    fn assert_matches(&self, ev: &Event, context: &str) {
        assert_eq!(ev.kind, self.kind, "{context}: wrong event kind; event {ev:?}, expected {self:?}");
        assert_eq!(ev.kv.key, self.kv.key, "{context}: wrong key; event {ev:?}");
        assert_eq!(ev.revision(), self.kv.mod_revision, "{context}: wrong revision; event {ev:?}");
        match self.kind {
            EventKind::Put => assert_eq!(ev.kv, self.kv, "{context}: put event differs from the write"),
            EventKind::Delete => {
                assert!(ev.kv.value.is_empty(), "{context}: delete event carries a value: {ev:?}")
            }
        }
        match (&self.prev, &ev.prev_kv) {
            (None, None) => {}
            (Some(want), Some(got)) => {
                assert_eq!(got, want, "{context}: wrong prev_kv on {:?} of {}", ev.kind, ev.kv.key)
            }
            (want, got) => panic!("{context}: prev_kv should be {want:?}, got {got:?} (event {ev:?})"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Checks.

/// create, get, and create of an existing key.
pub async fn check_create_get(store: &DynStore, prefix: &str) {
    let key = format!("{prefix}a");
    assert_not_found(store, &key, "get before create").await;

    let created = must_create(store, &key, "v1").await;
    assert_eq!(created.key, key, "create returned the wrong key");
    assert_eq!(created.value, b"v1", "create returned the wrong value");
    assert_eq!(created.version, 1, "a created key has version 1");
    assert_eq!(created.lease, 0, "created without a lease");
    assert!(created.mod_revision > 0, "create returned no revision: {created:?}");
    assert_eq!(created.create_revision, created.mod_revision, "create: create_revision == mod_revision");

    let got = must("get after create", store.get(&key)).await;
    assert_eq!(got, created, "get returns exactly what create returned");

    match store.create(&key, b"v2".to_vec(), 0).await {
        Err(Error::AlreadyExists { key: k }) => assert_eq!(k, key),
        other => panic!("create of an existing key should be AlreadyExists, got {other:?}"),
    }
    let got = must("get after refused create", store.get(&key)).await;
    assert_eq!(got, created, "a refused create must not change the key");
}

/// update's compare-and-swap on mod_revision.
pub async fn check_update_cas(store: &DynStore, prefix: &str) {
    let key = format!("{prefix}k");
    let created = must_create(store, &key, "v1").await;
    let updated = must_update(store, &created, "v2").await;
    assert_eq!(updated.value, b"v2");
    assert_eq!(updated.version, 2, "version counts writes");
    assert_eq!(updated.create_revision, created.create_revision, "update keeps create_revision");
    assert!(updated.mod_revision > created.mod_revision, "update moves mod_revision forward");
    assert_eq!(must("get after update", store.get(&key)).await, updated, "get returns what update returned");

    // A stale precondition.
    match store.update(&key, b"v3".to_vec(), created.mod_revision, 0).await {
        Err(Error::Conflict { key: k, expected, actual }) => {
            assert_eq!(k, key);
            assert_eq!(expected, created.mod_revision, "Conflict.expected is the precondition");
            assert_eq!(actual, updated.mod_revision, "Conflict.actual is the key's current mod_revision");
        }
        other => panic!("update with a stale mod_revision should be Conflict, got {other:?}"),
    }
    assert_eq!(must("get after conflict", store.get(&key)).await, updated, "a conflict must not write");

    // An absent key.
    let absent = format!("{prefix}absent");
    match store.update(&absent, b"x".to_vec(), updated.mod_revision, 0).await {
        Err(Error::NotFound { key: k }) => assert_eq!(k, absent),
        other => panic!("update of an absent key should be NotFound, got {other:?}"),
    }
    // Even with precondition 0 (an absent key's mod_revision), update never creates.
    match store.update(&absent, b"x".to_vec(), 0, 0).await {
        Err(Error::NotFound { .. } | Error::Conflict { .. }) => {}
        other => panic!("update of an absent key with mod_revision 0 must fail, got {other:?}"),
    }
    assert_not_found(store, &absent, "update must not create").await;

    // A chain of updates, each conditioned on the previous one.
    let mut kv = updated;
    for i in 3..=6 {
        let next = must_update(store, &kv, &format!("v{i}")).await;
        assert_eq!(next.version, kv.version + 1);
        assert!(next.mod_revision > kv.mod_revision);
        kv = next;
    }
}

/// delete with and without a precondition.
pub async fn check_delete(store: &DynStore, prefix: &str) {
    let key = format!("{prefix}k");
    let created = must_create(store, &key, "v1").await;
    let updated = must_update(store, &created, "v2").await;

    match store.delete(&key, Some(created.mod_revision)).await {
        Err(Error::Conflict { key: k, expected, actual }) => {
            assert_eq!(k, key);
            assert_eq!(expected, created.mod_revision);
            assert_eq!(actual, updated.mod_revision, "Conflict.actual is the current mod_revision");
        }
        other => panic!("delete with a stale mod_revision should be Conflict, got {other:?}"),
    }
    assert_eq!(must("get after refused delete", store.get(&key)).await, updated);

    let deleted = must("delete with precondition", store.delete(&key, Some(updated.mod_revision))).await;
    assert_eq!(deleted.prev, updated, "delete returns the value as it was");
    assert!(deleted.revision > updated.mod_revision, "delete has its own, later revision");
    assert_not_found(store, &key, "get after delete").await;

    for precondition in [None, Some(updated.mod_revision), Some(0)] {
        match store.delete(&key, precondition).await {
            Err(Error::NotFound { key: k }) => assert_eq!(k, key),
            other => panic!("delete ({precondition:?}) of an absent key should be NotFound, got {other:?}"),
        }
    }

    let key2 = format!("{prefix}k2");
    let created2 = must_create(store, &key2, "x").await;
    let deleted2 = must("delete without precondition", store.delete(&key2, None)).await;
    assert_eq!(deleted2.prev, created2, "unconditional delete returns the value as it was");
    assert!(deleted2.revision > created2.mod_revision);
    assert_not_found(store, &key2, "get after unconditional delete").await;

    // A key created again is a new incarnation.
    let again = must_create(store, &key2, "y").await;
    assert_eq!(again.version, 1, "a recreated key starts at version 1");
    assert!(again.create_revision > deleted2.revision, "a recreated key has a new create_revision");
}

/// Revisions move strictly forward across writes to any key, and create_revision/version follow
/// etcd's rules.
pub async fn check_revisions(store: &DynStore, prefix: &str) {
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let start = must("current_revision", store.current_revision()).await;
    let mut last = start;
    let mut step = |rev: i64, what: &str| {
        assert!(rev > last, "{what}: revision {rev} is not after the previous write's {last}");
        last = rev;
    };

    let a1 = must_create(store, &a, "1").await;
    step(a1.mod_revision, "create a");
    let b1 = must_create(store, &b, "1").await;
    step(b1.mod_revision, "create b");
    let a2 = must_update(store, &a1, "2").await;
    step(a2.mod_revision, "update a");
    let del_b = must("delete b", store.delete(&b, None)).await;
    step(del_b.revision, "delete b");
    let b2 = must_create(store, &b, "2").await;
    step(b2.mod_revision, "recreate b");
    let a3 = must_update(store, &a2, "3").await;
    step(a3.mod_revision, "update a again");

    let current = must("current_revision", store.current_revision()).await;
    assert!(current >= last, "current_revision {current} is behind the last write {last}");

    assert_eq!((a3.create_revision, a3.version), (a1.mod_revision, 3), "a: created once, written 3 times");
    assert_eq!((b2.create_revision, b2.version), (b2.mod_revision, 1), "b: a new incarnation");

    let listed = list(store, prefix, 0, 0, None).await;
    assert_eq!(listed.items, vec![a3, b2], "list returns the latest state");
    assert!(listed.revision >= last, "list revision {} is behind the last write {last}", listed.revision);
}

/// list returns exactly the keys under the prefix, in key order.
pub async fn check_list_prefix_isolation(store: &DynStore, prefix: &str) {
    let trimmed = prefix.trim_end_matches('/');
    let end = String::from_utf8_lossy(&prefix_end(prefix.as_bytes())).into_owned();
    // Neighbours on both sides: a sibling sorting before the prefix, the prefix without its slash, and
    // keys starting exactly at the prefix's range end.
    for outside in [format!("{trimmed}-sibling/x"), trimmed.to_string(), format!("{end}x"), end.clone()] {
        must_create(store, &outside, "outside").await;
    }
    let mut inside = Vec::new();
    for name in ["z", "a", "b/c", "b/d/e", "\u{e9}t\u{e9}"] {
        inside.push(must_create(store, &format!("{prefix}{name}"), name).await);
    }
    inside.sort_by(|x, y| x.key.cmp(&y.key));

    let listed = list(store, prefix, 0, 0, None).await;
    assert_eq!(listed.items, inside, "list must return exactly the prefix's keys, in key order");
    assert!(!listed.more && listed.remaining == 0, "an unlimited list has nothing more: {listed:?}");

    let nested = list(store, &format!("{prefix}b/"), 0, 0, None).await;
    assert_eq!(nested.items, inside[1..3].to_vec(), "a nested prefix lists only its own keys");

    let empty = list(store, &format!("{prefix}nothing-here/"), 0, 0, None).await;
    assert!(empty.items.is_empty() && !empty.more && empty.remaining == 0, "empty prefix: {empty:?}");
    assert!(empty.revision > 0, "even an empty list reports the revision it read at");
}

/// Paging with limit + continue_after at a fixed revision sees one consistent snapshot while writes
/// go on, and more/remaining count what is left.
pub async fn check_list_paging_consistent(store: &DynStore, prefix: &str) {
    const N: usize = 23;
    const PAGE: i64 = 5;
    let mut original = Vec::new();
    for i in 0..N {
        original.push(must_create(store, &format!("{prefix}k{i:03}"), &format!("orig-{i}")).await);
    }

    // The snapshot the pages must reproduce, taken before any churn.
    let rev = list(store, prefix, 0, 0, None).await.revision;

    // Concurrent writers churn the whole range while the pages are read.
    let churn = {
        let store = store.clone();
        let prefix = prefix.to_string();
        tokio::spawn(async move {
            for round in 0..3 {
                for i in (0..N).step_by(2) {
                    let key = format!("{prefix}k{i:03}");
                    let value = format!("churn-{round}-{i}").into_bytes();
                    // Only existing keys are updated, so a key deleted between pages stays deleted.
                    let written = guaranteed_update(&*store, &key, |cur| Ok(cur.map(|_| value.clone()))).await;
                    match written {
                        Ok(_) | Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("concurrent update of {key}: {e:?}"),
                    }
                }
            }
        })
    };

    let first = list(store, prefix, rev, PAGE, None).await;
    assert_eq!(first.revision, rev, "a list at a revision reports that revision");
    let mut pages = vec![first];
    let mut deleted = Vec::new();
    let mut added = Vec::new();
    let mut page_no = 0;
    while let Some(last) = pages.last().filter(|p| p.more).and_then(|p| p.items.last()).cloned() {
        page_no += 1;
        // Between pages: delete a key not read yet, update one, and add keys inside and after the
        // range still to be read. None of it may show up at `rev`.
        let victim = format!("{prefix}k{:03}", (page_no * 5 + 3).min(N - 1));
        if store.delete(&victim, None).await.is_ok() {
            deleted.push(victim);
        }
        let target = format!("{prefix}k{:03}", (page_no * 5 + 4).min(N - 1));
        match guaranteed_update(&**store, &target, |cur| Ok(cur.map(|_| b"between-pages".to_vec()))).await {
            Ok(_) | Err(Error::NotFound { .. }) => {}
            Err(e) => panic!("update of {target} between pages: {e:?}"),
        }
        for name in [format!("k{:03}-new", page_no * 5 + 1), format!("z-new-{page_no}")] {
            added.push(must_create(store, &format!("{prefix}{name}"), "new").await.key);
        }
        let page = list(store, prefix, rev, PAGE, Some(&last.key)).await;
        assert_eq!(page.revision, rev, "a continued list reports the revision it was asked for");
        pages.push(page);
        assert!(page_no <= N, "paging does not terminate: {pages:?}");
    }
    if let Err(e) = churn.await {
        panic!("concurrent writer failed: {e}");
    }

    let mut seen = Vec::new();
    for page in &pages {
        assert!(page.items.len() as i64 <= PAGE, "page over the limit: {page:?}");
        seen.extend(page.items.iter().cloned());
        let left = (N - seen.len()) as i64;
        assert_eq!(page.remaining, left, "remaining counts the keys after this page (page {page:?})");
        assert_eq!(page.more, left > 0, "more iff keys remain (page {page:?})");
    }
    assert_eq!(
        seen, original,
        "pages at revision {rev} must be exactly the snapshot: old values of updated keys, deleted keys \
         still present, no new keys"
    );

    // The same pages without counting (what a list's continue pages use once the first counted):
    // the same items, `more` exact, after all the writes above.
    let mut uncounted: Vec<KeyValue> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let opts = ListOptions {
            prefix: prefix.to_string(),
            revision: rev,
            limit: PAGE,
            continue_after: after.clone(),
        };
        let page = must("list_without_count", store.list_without_count(opts)).await;
        assert_eq!(page.revision, rev, "list_without_count reports the revision it was asked for");
        uncounted.extend(page.items.iter().cloned());
        assert_eq!(page.more, uncounted.len() < N, "list_without_count: more iff keys remain ({page:?})");
        if !page.more {
            break;
        }
        after = page.items.last().map(|kv| kv.key.clone());
        assert!(uncounted.len() <= N, "list_without_count does not terminate");
    }
    assert_eq!(uncounted, original, "uncounted pages at revision {rev} are exactly the snapshot");

    // The latest state does show every change.
    let latest = list(store, prefix, 0, 0, None).await;
    let latest_keys: Vec<&str> = latest.items.iter().map(|kv| kv.key.as_str()).collect();
    for key in &deleted {
        assert!(!latest_keys.contains(&key.as_str()), "deleted {key} still listed at the latest revision");
    }
    for key in &added {
        assert!(latest_keys.contains(&key.as_str()), "created {key} missing at the latest revision");
    }
    assert!(latest.revision > rev, "the latest list is after the writes");
}

/// list at a revision after the current one is FutureRevision.
pub async fn check_future_revision(store: &DynStore, prefix: &str) {
    must_create(store, &format!("{prefix}a"), "x").await;
    let current = must("current_revision", store.current_revision()).await;
    let requested = current + 1000;
    let opts = ListOptions { prefix: prefix.to_string(), revision: requested, ..Default::default() };
    match store.list(opts).await {
        Err(Error::FutureRevision { requested: r, current: c }) => {
            assert_eq!(r, requested, "FutureRevision.requested");
            assert!(c >= current && c < requested, "FutureRevision.current {c} is not the current revision");
        }
        other => panic!("list at a future revision should be FutureRevision, got {other:?}"),
    }
}

/// A watch delivers every write under its prefix, in revision order, with no gaps, duplicates or
/// strangers, with prev_kv on updates and deletes.
pub async fn check_watch_order(store: &DynStore, prefix: &str) {
    let mut watch = must("watch from now", store.watch(prefix, 0)).await;
    // A write just outside the prefix must not be seen.
    let outside = format!("{}-outside", prefix.trim_end_matches('/'));
    must_create(store, &outside, "x").await;

    let mut expected = Vec::new();
    let mut live: Vec<KeyValue> = Vec::new();
    for i in 0..10 {
        let kv = must_create(store, &format!("{prefix}k{i}"), &format!("{i}-0")).await;
        expected.push(Expected::put(&kv, None));
        live.push(kv);
    }
    for round in 1..=2 {
        for kv in live.iter_mut() {
            let next = must_update(store, kv, &format!("{}-{round}", kv.key)).await;
            expected.push(Expected::put(&next, Some(kv)));
            *kv = next;
        }
    }
    for kv in live.iter().step_by(2) {
        let del = must("delete", store.delete(&kv.key, Some(kv.mod_revision))).await;
        expected.push(Expected::delete(kv, del.revision));
    }
    let reborn = must_create(store, &live[0].key, "reborn").await;
    expected.push(Expected::put(&reborn, None));

    let events = next_events(&mut watch, expected.len(), "sequential writes").await;
    for (i, (ev, want)) in events.iter().zip(&expected).enumerate() {
        want.assert_matches(ev, &format!("sequential event {i}"));
    }

    // Concurrent writers: the watch must still deliver each write once, in revision order.
    let mut tasks = Vec::new();
    for t in 0..5 {
        let store = store.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..10 {
                let key = format!("{prefix}c{t}-{i}");
                match store.create(&key, b"c".to_vec(), 0).await {
                    Ok(kv) => written.push(kv),
                    Err(e) => panic!("concurrent create {key}: {e:?}"),
                }
            }
            written
        }));
    }
    let mut concurrent = Vec::new();
    for task in tasks {
        match task.await {
            Ok(written) => concurrent.extend(written),
            Err(e) => panic!("concurrent writer failed: {e}"),
        }
    }
    concurrent.sort_by_key(|kv| kv.mod_revision);
    let events = next_events(&mut watch, concurrent.len(), "concurrent writes").await;
    for (i, (ev, kv)) in events.iter().zip(&concurrent).enumerate() {
        Expected::put(kv, None).assert_matches(ev, &format!("concurrent event {i}"));
    }

    // Nothing else is pending: the next event is the sentinel written last.
    let sentinel = must_create(store, &format!("{prefix}sentinel"), "end").await;
    let ev = next_event(&mut watch, "sentinel").await;
    Expected::put(&sentinel, None).assert_matches(&ev, "the event after the last write must be the sentinel");
}

/// A watch from a past revision replays history from exactly there; from 0 it replays nothing.
pub async fn check_watch_replay(store: &DynStore, prefix: &str) {
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let a1 = must_create(store, &a, "a1").await;
    let a2 = must_update(store, &a1, "a2").await;
    let b1 = must_create(store, &b, "b1").await;
    let del_a = must("delete a", store.delete(&a, None)).await;
    let mut history = vec![
        Expected::put(&a1, None),
        Expected::put(&a2, Some(&a1)),
        Expected::put(&b1, None),
        Expected::delete(&a2, del_a.revision),
    ];
    let mut b_now = b1.clone();

    for (skip, from) in [(0, a1.mod_revision), (2, b1.mod_revision), (3, del_a.revision)] {
        let mut watch = must(&format!("watch from {from}"), store.watch(prefix, from)).await;
        let context = format!("replay from {from}");
        let events = next_events(&mut watch, history.len() - skip, &context).await;
        for (ev, want) in events.iter().zip(&history[skip..]) {
            want.assert_matches(ev, &context);
        }
        // Live events follow the replay seamlessly; each round's write is history for the next.
        let b_next = must_update(store, &b_now, &format!("b-after-{from}")).await;
        let want = Expected::put(&b_next, Some(&b_now));
        want.assert_matches(&next_event(&mut watch, &context).await, &format!("{context}: live after replay"));
        history.push(want);
        b_now = b_next;
    }

    let mut watch = must("watch from now", store.watch(prefix, 0)).await;
    let c = must_create(store, &format!("{prefix}c"), "c").await;
    let ev = next_event(&mut watch, "watch from 0").await;
    Expected::put(&c, None).assert_matches(&ev, "a watch from 0 starts at the next write, no replay");
}

/// `watch_latest` replays and follows the same events as `watch`, in order; prev_kv may be absent.
pub async fn check_watch_latest(store: &DynStore, prefix: &str) {
    let a1 = must_create(store, &format!("{prefix}a"), "a1").await;
    let a2 = must_update(store, &a1, "a2").await;
    let mut watch = must("watch_latest", store.watch_latest(prefix, a1.mod_revision)).await;
    let del = must("delete a", store.delete(&a1.key, None)).await;
    let events = next_events(&mut watch, 3, "watch_latest").await;
    let seen: Vec<(EventKind, &str, i64)> =
        events.iter().map(|e| (e.kind, e.kv.key.as_str(), e.revision())).collect();
    assert_eq!(
        seen,
        vec![
            (EventKind::Put, a1.key.as_str(), a1.mod_revision),
            (EventKind::Put, a1.key.as_str(), a2.mod_revision),
            (EventKind::Delete, a1.key.as_str(), del.revision),
        ],
        "watch_latest: replay then live, in order"
    );
    assert_eq!(events[1].kv.value, b"a2".to_vec(), "watch_latest: puts carry the new value");
}

/// The next whole revision of a revision watch, panicking on an error, the end or a timeout.
pub async fn next_revision(watch: &mut RevisionStream, context: &str) -> Vec<Event> {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(events))) => events,
        Ok(Some(Err(e))) => panic!("{context}: watch failed: {e:?}"),
        Ok(None) => panic!("{context}: watch ended"),
        Err(_) => panic!("{context}: no revision within {EVENT_TIMEOUT:?}"),
    }
}

/// A lease revoked with many keys deletes them all at one revision. Every watch — live, replaying
/// from before, replaying from that revision, per event or per revision — sees every one of those
/// deletes exactly once, and a revision watch gets them as one item.
pub async fn check_watch_shared_revision(store: &DynStore, prefix: &str) {
    const N: usize = 50;
    let lease = must("grant lease", store.grant_lease(600)).await;
    let mut created = Vec::new();
    for i in 0..N {
        created.push(
            must("create with lease", store.create(&format!("{prefix}e{i:02}"), b"x".to_vec(), lease)).await,
        );
    }
    let first = created[0].mod_revision;
    let before = created[N - 1].mod_revision + 1;
    let mut live = must("watch", store.watch(prefix, 0)).await;
    let mut live_revisions = must("watch_revisions", store.watch_revisions(prefix, 0, false)).await;
    must("revoke", store.revoke_lease(lease)).await;
    let marker = must_create(store, &format!("{prefix}zz-after"), "m").await;

    let deletes = |events: &[Event], context: &str| {
        let revs: std::collections::BTreeSet<i64> = events.iter().map(Event::revision).collect();
        assert_eq!(revs.len(), 1, "{context}: one revision deletes every key, got {revs:?}");
        let mut keys: Vec<&str> = events
            .iter()
            .map(|e| {
                assert_eq!(e.kind, EventKind::Delete, "{context}: {e:?}");
                e.kv.key.as_str()
            })
            .collect();
        keys.sort_unstable();
        let want: Vec<&str> = created.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, want, "{context}: every leased key deleted exactly once");
        *revs.iter().next().unwrap_or(&0)
    };

    let events = next_events(&mut live, N, "live watch of a revoked lease").await;
    let rev = deletes(&events, "live watch");
    assert!(rev >= before && rev < marker.mod_revision, "the revoke comes between the creates and the marker");
    let ev = next_event(&mut live, "live watch after the revoke").await;
    assert_eq!(ev.kv.key, marker.key, "live watch: the next write follows the deletes, none repeated");

    let revision = next_revision(&mut live_revisions, "live revision watch").await;
    assert_eq!(revision.len(), N, "a revision watch delivers the revoke as one item: {revision:?}");
    deletes(&revision, "live revision watch");
    let next = next_revision(&mut live_revisions, "live revision watch after the revoke").await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].kv.key, marker.key);

    for from in [first, before, rev] {
        let context = format!("replay from {from}");
        let mut w = must(&context, store.watch_revisions(prefix, from, true)).await;
        let mut all = Vec::new();
        loop {
            let revision = next_revision(&mut w, &context).await;
            let at = revision.first().map_or(0, Event::revision);
            assert!(revision.iter().all(|e| e.revision() == at), "{context}: one item mixes revisions");
            if at == rev {
                assert_eq!(revision.len(), N, "{context}: the revoke arrives as one item");
                deletes(&revision, &context);
                assert!(revision.iter().all(|e| e.prev_kv.is_some()), "{context}: deletes carry prev_kv");
            }
            all.extend(revision);
            if at == marker.mod_revision {
                break;
            }
        }
        let expected = if from == first { N + N + 1 } else { N + 1 };
        assert_eq!(all.len(), expected, "{context}: every event once");
    }
}

/// Keys attached to a lease vanish (with a delete event) when it expires or is revoked; keep_alive
/// and revoke of a gone lease are LeaseNotFound.
pub async fn check_leases(store: &DynStore, prefix: &str) {
    let mut watch = must("watch", store.watch(prefix, 0)).await;

    // Expiry.
    let lease = must("grant 2s lease", store.grant_lease(2)).await;
    let key = format!("{prefix}expiring");
    let kv = must("create with lease", store.create(&key, b"x".to_vec(), lease)).await;
    assert_eq!(kv.lease, lease, "create returns the lease");
    assert_eq!(must("get", store.get(&key)).await.lease, lease, "the stored key carries the lease");
    let ev = next_event(&mut watch, "create with lease").await;
    Expected::put(&kv, None).assert_matches(&ev, "create with lease");
    let deadline = Instant::now() + LEASE_EXPIRY_TIMEOUT;
    loop {
        match store.get(&key).await {
            Err(Error::NotFound { .. }) => break,
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("key with an expiring 2 s lease: still {other:?} after {LEASE_EXPIRY_TIMEOUT:?}"),
        }
    }
    let ev = next_event(&mut watch, "lease expiry").await;
    assert_eq!((ev.kind, ev.kv.key.as_str()), (EventKind::Delete, key.as_str()), "expiry deletes the key");
    assert_eq!(ev.prev_kv.as_ref(), Some(&kv), "the expiry delete carries the deleted value");
    match store.keep_alive(lease).await {
        Err(Error::LeaseNotFound { id }) => assert_eq!(id, lease),
        other => panic!("keep_alive of an expired lease should be LeaseNotFound, got {other:?}"),
    }

    // keep_alive and revoke.
    let lease = must("grant 60s lease", store.grant_lease(60)).await;
    let ttl = must("keep_alive", store.keep_alive(lease)).await;
    assert!(ttl > 0 && ttl <= 60, "keep_alive returns the lease's TTL, got {ttl}");
    let key = format!("{prefix}revoked");
    let kv = must("create with lease", store.create(&key, b"y".to_vec(), lease)).await;
    let other = must_create(store, &format!("{prefix}unleased"), "z").await;
    let ev = next_event(&mut watch, "create with lease").await;
    Expected::put(&kv, None).assert_matches(&ev, "create with the second lease");
    let ev = next_event(&mut watch, "create without lease").await;
    Expected::put(&other, None).assert_matches(&ev, "create without lease");
    must("revoke", store.revoke_lease(lease)).await;
    assert_not_found(store, &key, "get after revoke").await;
    let ev = next_event(&mut watch, "revoke").await;
    assert_eq!((ev.kind, ev.kv.key.as_str()), (EventKind::Delete, key.as_str()), "revoke deletes the key");
    assert_eq!(ev.prev_kv.as_ref(), Some(&kv), "the revoke delete carries the deleted value");
    assert_eq!(must("get", store.get(&other.key)).await, other, "revoke leaves unleased keys alone");

    match store.keep_alive(lease).await {
        Err(Error::LeaseNotFound { id }) => assert_eq!(id, lease),
        other => panic!("keep_alive of a revoked lease should be LeaseNotFound, got {other:?}"),
    }
    match store.revoke_lease(lease).await {
        Err(Error::LeaseNotFound { id }) => assert_eq!(id, lease),
        other => panic!("revoke of a revoked lease should be LeaseNotFound, got {other:?}"),
    }
    let unknown = 0x1234_5678_9abc;
    match store.keep_alive(unknown).await {
        Err(Error::LeaseNotFound { id }) => assert_eq!(id, unknown),
        other => panic!("keep_alive of an unknown lease should be LeaseNotFound, got {other:?}"),
    }
    let key = format!("{prefix}unknown-lease");
    match store.create(&key, b"x".to_vec(), unknown).await {
        Err(Error::LeaseNotFound { id }) => assert_eq!(id, unknown),
        other => panic!("create with an unknown lease should be LeaseNotFound, got {other:?}"),
    }
    assert_not_found(store, &key, "a create with an unknown lease writes nothing").await;
}

/// Writes outside the key rules or over the value limit are refused before anything is written.
/// Needs the store to itself: it checks that the store revision does not move.
pub async fn check_limits(store: &DynStore, prefix: &str) {
    let existing = must_create(store, &format!("{prefix}existing"), "x").await;
    let before = must("current_revision", store.current_revision()).await;

    let bad_keys = [
        format!("/kplane-outside-registry{prefix}a"),
        "relative/key".to_string(),
        String::new(),
        "/registry/".to_string(),
        format!("{prefix}nul\0key"),
    ];
    for key in &bad_keys {
        match store.create(key, b"x".to_vec(), 0).await {
            Err(Error::InvalidKey { key: k, .. }) => assert_eq!(&k, key),
            other => panic!("create of invalid key {key:?} should be InvalidKey, got {other:?}"),
        }
        match store.update(key, b"x".to_vec(), existing.mod_revision, 0).await {
            Err(Error::InvalidKey { .. }) => {}
            other => panic!("update of invalid key {key:?} should be InvalidKey, got {other:?}"),
        }
    }

    let big = vec![b'x'; DEFAULT_MAX_VALUE_BYTES + 1];
    let big_key = format!("{prefix}big");
    match store.create(&big_key, big.clone(), 0).await {
        Err(Error::ValueTooLarge { key, size, limit }) => {
            assert_eq!(key, big_key);
            assert_eq!((size, limit), (big.len(), DEFAULT_MAX_VALUE_BYTES));
        }
        other => panic!("create over the value limit should be ValueTooLarge, got {other:?}"),
    }
    match store.update(&existing.key, big, existing.mod_revision, 0).await {
        Err(Error::ValueTooLarge { .. }) => {}
        other => panic!("update over the value limit should be ValueTooLarge, got {other:?}"),
    }

    let after = must("current_revision", store.current_revision()).await;
    assert_eq!(after, before, "refused writes must not write anything (revision moved)");
    assert_not_found(store, &big_key, "refused create").await;
    assert_eq!(must("get", store.get(&existing.key)).await, existing, "refused update changed the key");

    // A large value under the limit is accepted. Not one exactly at it: etcd's own default request
    // limit (--max-request-bytes) equals the value limit and also counts the key and framing.
    let large = vec![b'y'; 1024 * 1024];
    let written =
        must("update with a 1 MiB value", store.update(&existing.key, large, existing.mod_revision, 0)).await;
    assert_eq!(written.value.len(), 1024 * 1024);
}

/// 50 tasks each increment one counter 20 times through guaranteed_update: no update is lost.
pub async fn check_no_lost_update(store: &DynStore, prefix: &str) {
    const TASKS: usize = 50;
    const INCREMENTS: usize = 20;
    let key = format!("{prefix}counter");
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                let result = guaranteed_update(&*store, &key, |current| {
                    let n = match current {
                        None => 0,
                        Some(kv) => std::str::from_utf8(&kv.value)
                            .ok()
                            .and_then(|s| s.parse::<u64>().ok())
                            .ok_or_else(|| Error::Internal(format!("counter is not a number: {kv:?}")))?,
                    };
                    Ok(Some((n + 1).to_string().into_bytes()))
                })
                .await;
                if let Err(e) = result {
                    panic!("increment of {key}: {e:?}");
                }
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            panic!("incrementing task failed: {e}");
        }
    }
    let kv = must("get counter", store.get(&key)).await;
    let total = TASKS * INCREMENTS;
    assert_eq!(text(&kv.value), total.to_string(), "lost updates: the counter should be {total}");
    assert_eq!(kv.version, total as i64, "each increment is exactly one write");
}

/// Compaction: reads and watches below the compacted revision are Compacted, at or above it they
/// work; compacting again or into the future is refused. Compacts the whole store: run it last.
pub async fn check_compaction(store: &DynStore, prefix: &str) {
    let key = format!("{prefix}k");
    let v1 = must_create(store, &key, "v1").await;
    let v2 = must_update(store, &v1, "v2").await;
    let v3 = must_update(store, &v2, "v3").await;
    let (r1, r2) = (v1.mod_revision, v2.mod_revision);

    must(&format!("compact at {r2}"), store.compact(r2)).await;

    let opts = ListOptions { prefix: prefix.to_string(), revision: r1, ..Default::default() };
    match store.list(opts).await {
        Err(Error::Compacted { requested, compact_revision }) => {
            assert_eq!(requested, r1, "Compacted.requested");
            assert!(compact_revision >= r2, "Compacted.compact_revision {compact_revision} should be >= {r2}");
        }
        other => panic!("list below the compacted revision should be Compacted, got {other:?}"),
    }

    let at = list(store, prefix, r2, 0, None).await;
    assert_eq!(at.items, vec![v2.clone()], "the compacted revision itself stays readable");

    // A backend may refuse the watch up front or end the stream with the error.
    match store.watch(prefix, r1).await {
        Err(Error::Compacted { requested, .. }) => assert_eq!(requested, r1),
        Err(e) => panic!("watch below the compacted revision should be Compacted, got {e:?}"),
        Ok(mut watch) => match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
            Ok(Some(Err(Error::Compacted { requested, compact_revision }))) => {
                assert_eq!(requested, r1, "Compacted.requested");
                assert!(compact_revision >= r2, "Compacted.compact_revision {compact_revision} < {r2}");
            }
            other => panic!("watch below the compacted revision should end with Compacted, got {other:?}"),
        },
    }

    let mut watch = must(&format!("watch from {r2}"), store.watch(prefix, r2)).await;
    let events = next_events(&mut watch, 2, "watch from the compacted revision").await;
    assert_eq!((events[0].revision(), events[1].revision()), (r2, v3.mod_revision));
    assert_eq!((&events[0].kv, &events[1].kv), (&v2, &v3), "replay after compaction");

    for rev in [r1, r2] {
        match store.compact(rev).await {
            Err(Error::Compacted { requested, .. }) => assert_eq!(requested, rev),
            other => panic!("compact at already compacted {rev} should be Compacted, got {other:?}"),
        }
    }
    let current = must("current_revision", store.current_revision()).await;
    match store.compact(current + 1000).await {
        Err(Error::FutureRevision { requested, .. }) => assert_eq!(requested, current + 1000),
        other => panic!("compact at a future revision should be FutureRevision, got {other:?}"),
    }
}

/// Full-disk faults for tests: a small tmpfs (root only) and a file that fills it.
pub mod disk {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A tmpfs of `size` mounted on a fresh temp dir, unmounted on drop.
    pub struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        /// Mounts it; panics without root, since the tests that need it must not be skipped.
        pub fn mount(size: &str) -> Tmpfs {
            let dir = tempfile::Builder::new().prefix("kplane-fulldisk-").tempdir().expect("a temp dir");
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output()
                .expect("mount could not run");
            assert!(
                out.status.success(),
                "mounting a tmpfs needs root (this test must not be skipped): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Tmpfs(dir)
        }

        pub fn path(&self) -> &Path {
            self.0.path()
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0.path()).status();
        }
    }

    /// Free bytes of the file system holding `dir`, from `df`.
    pub fn free_bytes(dir: &Path) -> u64 {
        let out =
            Command::new("df").args(["--output=avail", "-B1"]).arg(dir).output().expect("df could not run");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df prints the free bytes")
    }

    /// Fills the file system holding `dir` with one file, leaving about `leave` bytes free (tmpfs
    /// allocates on write, not on `set_len`, so the bytes are written).
    pub fn fill(dir: &Path, leave: u64) -> PathBuf {
        let filler = dir.join("filler");
        let mut left = free_bytes(dir).saturating_sub(leave);
        let mut w = std::io::BufWriter::new(std::fs::File::create(&filler).expect("the filler file"));
        let chunk = vec![0xa5u8; 64 * 1024];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if w.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = w.flush();
        filler
    }
}
