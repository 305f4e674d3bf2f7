//! The MVCC layout in redb and the logic that reads and writes it. Everything here is synchronous
//! and runs inside one redb transaction; `writer.rs` owns the only write transaction.
//!
//! Tables:
//! - `log`: `(revision, sub)` → encoded [`Record`]. The revision log: every put and delete, with a
//!   pointer to the key's previous live version. Watches replay it; old reads undo it.
//! - `latest`: key → position of the key's live version in `log`. Absent keys are not in it.
//! - `meta`: `revision` (the store's current revision) and `compact` (the compacted revision), plus
//!   `compact_scanned`, how far physical compaction has removed superseded entries.
//! - `leases`: id → (ttl seconds, expiry as unix milliseconds).
//! - `lease_keys`: (lease id, key) → (), to find a lease's keys when it expires.
//!
//! Reading at an old revision R merges `latest` (streamed in key order) with the keys the log
//! changed after R, each at the version its first change after R replaced: the cost is the page
//! plus the changes since R, never a copy of the range. Compaction to C keeps, for each key, its last version at
//! or below C (reads at R ≥ C may still need it) and removes every version superseded at or below C,
//! plus delete tombstones at or below C. Entries above C are never touched.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadableTable, Table, TableDefinition};

use super::record::{Kind, Pos, Record, NO_POS};
use super::txn::{OpResult, RangeRequest, RangeResult, Txn, TxnOp, TxnResult};
use crate::{Error, Event, EventKind, KeyValue, Result};

pub(crate) const LOG: TableDefinition<'_, Pos, &[u8]> = TableDefinition::new("log");
pub(crate) const LATEST: TableDefinition<'_, &[u8], Pos> = TableDefinition::new("latest");
pub(crate) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
pub(crate) const LEASES: TableDefinition<'_, i64, (i64, u64)> = TableDefinition::new("leases");
pub(crate) const LEASE_KEYS: TableDefinition<'_, (i64, &[u8]), ()> = TableDefinition::new("lease_keys");

pub(crate) const META_REVISION: &str = "revision";
pub(crate) const META_COMPACT: &str = "compact";
pub(crate) const META_COMPACT_SCANNED: &str = "compact_scanned";

/// How many log entries one physical-compaction step removes, so that compaction never holds the
/// writer for long.
pub(crate) const COMPACT_STEP: usize = 10_000;

pub(crate) fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

/// Reads the record at `pos`. A missing entry is corruption: `latest` and `prev` pointers only name
/// entries that compaction keeps.
pub(crate) fn load<T: ReadableTable<Pos, &'static [u8]>>(log: &T, pos: Pos) -> Result<Record> {
    let guard = log.get(pos).map_err(internal)?;
    let Some(bytes) = guard else {
        return Err(Error::Internal(format!("revision log entry {pos:?} is missing")));
    };
    Record::decode(bytes.value())
}

/// The live version of `key` at the latest revision.
pub(crate) fn get_latest<L, T>(latest: &L, log: &T, key: &[u8]) -> Result<Option<KeyValue>>
where
    L: ReadableTable<&'static [u8], Pos>,
    T: ReadableTable<Pos, &'static [u8]>,
{
    let pos = match latest.get(key).map_err(internal)? {
        Some(p) => p.value(),
        None => return Ok(None),
    };
    Ok(Some(load(log, pos)?.into_kv(pos)))
}

/// The bounds of a range request, with etcd's `range_end` conventions.
fn bounds(key: &[u8], range_end: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    match range_end {
        [] => (Bound::Included(key.to_vec()), Bound::Included(key.to_vec())),
        [0] => (Bound::Included(key.to_vec()), Bound::Unbounded),
        end => (Bound::Included(key.to_vec()), Bound::Excluded(end.to_vec())),
    }
}

/// Whether `key` is in etcd's range [`start`, `end`) (`end` empty: just `start`; `[0]`: no end).
pub(crate) fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

/// A `meta` entry, 0 when absent.
pub(crate) fn meta_value<T: ReadableTable<&'static str, u64>>(meta: &T, name: &str) -> Result<u64> {
    Ok(meta.get(name).map_err(internal)?.map(|g| g.value()).unwrap_or(0))
}

/// The current and compacted revisions, from one transaction's `meta` table.
pub(crate) fn meta_revisions<T: ReadableTable<&'static str, u64>>(meta: &T) -> Result<(u64, u64)> {
    Ok((meta_value(meta, META_REVISION)?, meta_value(meta, META_COMPACT)?))
}

/// Answers a range request at `req.revision` (or `current`), given the store's revisions.
///
/// Cost: O(page + changes since the revision), plus a keys-only pass over the range when the
/// request counts. At an old revision R, the keys in range that changed after R are found in the
/// log (the first change after R names, in its `prev`, the version live at R), and merged in key
/// order with the live keys of `latest`, which stream; nothing else of the range is copied.
pub(crate) fn range<L, T>(
    latest: &L,
    log: &T,
    req: &RangeRequest,
    current: u64,
    compact: u64,
) -> Result<RangeResult>
where
    L: ReadableTable<&'static [u8], Pos>,
    T: ReadableTable<Pos, &'static [u8]>,
{
    let rev = if req.revision <= 0 { current } else { req.revision as u64 };
    if rev > current {
        return Err(Error::FutureRevision { requested: req.revision, current: current as i64 });
    }
    if req.revision > 0 && rev < compact {
        return Err(Error::Compacted { requested: req.revision, compact_revision: compact as i64 });
    }
    let b = bounds(&req.key, &req.range_end);
    if matches!((&b.0, &b.1), (Bound::Included(s), Bound::Excluded(e)) if s >= e) {
        return Ok(RangeResult { revision: rev as i64, ..Default::default() });
    }
    let borrowed = (b.0.as_ref().map(|v| v.as_slice()), b.1.as_ref().map(|v| v.as_slice()));
    let want = match (req.count_only, req.limit) {
        (true, _) => 0,
        (false, l) if l > 0 => l as usize,
        _ => usize::MAX,
    };
    let changed = if rev == current { BTreeMap::new() } else { changed_after(log, rev, req)? };

    // Merge the live keys with the changed ones (whose version at `rev` wins), in key order, until
    // the page is full and one more key is known to exist.
    let mut live = latest.range::<&[u8]>(borrowed).map_err(internal)?;
    let mut next_live = || -> Result<Option<(Vec<u8>, Pos)>> {
        match live.next() {
            Some(entry) => {
                let (k, p) = entry.map_err(internal)?;
                Ok(Some((k.value().to_vec(), p.value())))
            }
            None => Ok(None),
        }
    };
    let mut live_head = next_live()?;
    let mut changed_iter = changed.iter().peekable();
    let mut picked: Vec<Pos> = Vec::new();
    let mut more = false;
    loop {
        let from_changed = match (&live_head, changed_iter.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((lk, _)), Some((ck, _))) => ck.as_slice() <= lk.as_slice(),
        };
        let pos = if from_changed {
            let Some((ck, at_rev)) = changed_iter.next() else { break };
            if live_head.as_ref().is_some_and(|(lk, _)| lk == ck) {
                live_head = next_live()?;
            }
            *at_rev
        } else {
            let head = live_head.take();
            live_head = next_live()?;
            head.map(|(_, p)| p)
        };
        if let Some(pos) = pos {
            if picked.len() >= want {
                more = true;
                break;
            }
            picked.push(pos);
        }
    }

    let count = if req.skip_count {
        picked.len()
    } else {
        // Keys live now, corrected by the changed keys: +1 if present at `rev`, -1 if present now.
        let mut n = latest.range::<&[u8]>(borrowed).map_err(internal)?.count() as i64;
        for (key, at_rev) in &changed {
            n += i64::from(at_rev.is_some());
            n -= i64::from(latest.get(key.as_slice()).map_err(internal)?.is_some());
        }
        n.max(0) as usize
    };
    let mut kvs = Vec::with_capacity(picked.len());
    for pos in picked {
        let mut kv = load(log, pos)?.into_kv(pos);
        if req.keys_only {
            kv.value = Vec::new();
        }
        kvs.push(kv);
    }
    Ok(RangeResult { more: more && !req.count_only, count: count as i64, kvs, revision: rev as i64 })
}

/// The keys in the request's range that changed after `rev`, each with its version live at `rev`
/// (None: absent at `rev`). Reads the log after `rev` once, oldest first: a key's first change after
/// `rev` points (`prev`) at the version that was live at `rev`.
fn changed_after<T: ReadableTable<Pos, &'static [u8]>>(
    log: &T,
    rev: u64,
    req: &RangeRequest,
) -> Result<BTreeMap<Vec<u8>, Option<Pos>>> {
    let mut changed = BTreeMap::new();
    for entry in log.range((rev + 1, 0)..).map_err(internal)? {
        let (_, bytes) = entry.map_err(internal)?;
        let rec = Record::decode(bytes.value())?;
        if !in_range(rec.key.as_bytes(), &req.key, &req.range_end) {
            continue;
        }
        changed.entry(rec.key.into_bytes()).or_insert((rec.prev != NO_POS).then_some(rec.prev));
    }
    Ok(changed)
}

/// The log entries with revision in `[from, to]` under the bounds, as watch events, at most `max`.
/// Returns the events and the last revision scanned (so a caller can continue after it).
pub(crate) fn events_since<T: ReadableTable<Pos, &'static [u8]>>(
    log: &T,
    start: &[u8],
    end: &[u8],
    from: u64,
    to: u64,
    compact: u64,
    max: usize,
) -> Result<(Vec<Event>, u64)> {
    let mut out = Vec::new();
    let mut last = from.saturating_sub(1);
    for entry in log.range((from, 0)..=(to, u32::MAX)).map_err(internal)? {
        let (pos, bytes) = entry.map_err(internal)?;
        let pos = pos.value();
        // Stop only at a revision boundary, so a transaction's events are never split.
        if out.len() >= max && pos.0 > last {
            return Ok((out, last));
        }
        last = pos.0;
        let rec = Record::decode(bytes.value())?;
        if !in_range(rec.key.as_bytes(), start, end) {
            continue;
        }
        let prev_kv = if rec.prev == NO_POS {
            None
        } else if pos.0 <= compact {
            // An event at the compacted revision itself: the version it replaced may be gone, as
            // in etcd, so it comes without prev_kv when it is.
            match log.get(rec.prev).map_err(internal)? {
                Some(bytes) => Some(Record::decode(bytes.value())?.into_kv(rec.prev)),
                None => None,
            }
        } else {
            Some(load(log, rec.prev)?.into_kv(rec.prev))
        };
        out.push(event_of(rec, pos, prev_kv));
    }
    Ok((out, to))
}

fn event_of(rec: Record, pos: Pos, prev_kv: Option<KeyValue>) -> Event {
    let kind = match rec.kind {
        Kind::Put => EventKind::Put,
        Kind::Delete => EventKind::Delete,
    };
    Event { kind, kv: rec.into_kv(pos), prev_kv }
}

/// The tables of one write transaction, plus what it has done so far.
pub(crate) struct Writer<'t> {
    pub log: Table<'t, Pos, &'static [u8]>,
    pub latest: Table<'t, &'static [u8], Pos>,
    pub leases: Table<'t, i64, (i64, u64)>,
    pub lease_keys: Table<'t, (i64, &'static [u8]), ()>,
    /// The store's revision, advanced by each transaction that writes.
    pub revision: u64,
    pub compact: u64,
    /// Events of the writes applied so far, in order, for the watch hub.
    pub events: Vec<Event>,
}

impl Writer<'_> {
    /// Evaluates the compares and checks the chosen branch, writing nothing. Returns which branch
    /// runs. An error here leaves the transaction untouched, so only this request fails.
    pub fn prepare(&self, txn: &Txn) -> Result<bool> {
        let mut succeeded = true;
        for cmp in &txn.compares {
            let current = get_latest(&self.latest, &self.log, &cmp.key)?;
            if !cmp.holds(current.as_ref()) {
                succeeded = false;
                break;
            }
        }
        self.check_ops(if succeeded { &txn.success } else { &txn.failure })?;
        Ok(succeeded)
    }

    /// Runs the branch `prepare` chose. An error here is an I/O fault or corruption that may leave the
    /// redb transaction half-written: the caller must abort the whole redb transaction.
    pub fn execute(&mut self, txn: &Txn, succeeded: bool) -> Result<TxnResult> {
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let rev = self.revision + 1;
        let mut sub = 0u32;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Range(req) => {
                    let req = RangeRequest { revision: 0, ..req.clone() };
                    OpResult::Range(range(&self.latest, &self.log, &req, self.revision, self.compact)?)
                }
                TxnOp::Put { key, value, lease } => {
                    let (prev, kv) = self.put((rev, sub), key, value, *lease)?;
                    sub += 1;
                    OpResult::Put { prev, kv }
                }
                TxnOp::Delete { key, range_end } => {
                    let mut keys = Vec::new();
                    let b = bounds(key, range_end);
                    let borrowed = (b.0.as_ref().map(|v| v.as_slice()), b.1.as_ref().map(|v| v.as_slice()));
                    for entry in self.latest.range::<&[u8]>(borrowed).map_err(internal)? {
                        keys.push(entry.map_err(internal)?.0.value().to_vec());
                    }
                    let mut deleted = Vec::with_capacity(keys.len());
                    for k in keys {
                        deleted.push(self.delete((rev, sub), &k)?);
                        sub += 1;
                    }
                    OpResult::Delete { deleted }
                }
            });
        }
        if sub > 0 {
            self.revision = rev;
        }
        Ok(TxnResult { succeeded, revision: self.revision as i64, results })
    }

    /// Refuses, before anything is written, a branch etcd would refuse: two puts to one key, a put to
    /// a lease that does not exist, or a range at an old revision inside a transaction.
    fn check_ops(&self, ops: &[TxnOp]) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            match op {
                TxnOp::Put { key, lease, .. } => {
                    if !seen.insert(key.as_str()) {
                        return Err(Error::Unsupported(format!("duplicate key {key:?} in one transaction")));
                    }
                    if *lease != 0 && self.leases.get(*lease).map_err(internal)?.is_none() {
                        return Err(Error::LeaseNotFound { id: *lease });
                    }
                }
                TxnOp::Range(req) if req.revision > 0 && req.revision as u64 != self.revision => {
                    return Err(Error::Unsupported(
                        "a range inside a transaction reads the latest revision only".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn put(&mut self, pos: Pos, key: &str, value: &[u8], lease: i64) -> Result<(Option<KeyValue>, KeyValue)> {
        let prev_pos = self.latest.get(key.as_bytes()).map_err(internal)?.map(|g| g.value());
        let prev = match prev_pos {
            Some(p) => Some(load(&self.log, p)?.into_kv(p)),
            None => None,
        };
        let rec = Record {
            kind: Kind::Put,
            key: key.to_string(),
            value: value.to_vec(),
            create_rev: prev.as_ref().map_or(pos.0 as i64, |p| p.create_revision),
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            prev: prev_pos.unwrap_or(NO_POS),
        };
        self.log.insert(pos, rec.encode().as_slice()).map_err(internal)?;
        self.latest.insert(key.as_bytes(), pos).map_err(internal)?;
        let old_lease = prev.as_ref().map_or(0, |p| p.lease);
        if old_lease != 0 && old_lease != lease {
            self.lease_keys.remove((old_lease, key.as_bytes())).map_err(internal)?;
        }
        if lease != 0 {
            self.lease_keys.insert((lease, key.as_bytes()), ()).map_err(internal)?;
        }
        let ev = event_of(rec, pos, prev.clone());
        let kv = ev.kv.clone();
        self.events.push(ev);
        Ok((prev, kv))
    }

    fn delete(&mut self, pos: Pos, key: &[u8]) -> Result<KeyValue> {
        let prev_pos = match self.latest.remove(key).map_err(internal)? {
            Some(p) => p.value(),
            None => return Err(Error::Internal("deleting a key that is not live".into())),
        };
        let prev = load(&self.log, prev_pos)?.into_kv(prev_pos);
        if prev.lease != 0 {
            self.lease_keys.remove((prev.lease, key)).map_err(internal)?;
        }
        let rec = Record {
            kind: Kind::Delete,
            key: prev.key.clone(),
            value: Vec::new(),
            create_rev: 0,
            version: 0,
            lease: 0,
            prev: prev_pos,
        };
        self.log.insert(pos, rec.encode().as_slice()).map_err(internal)?;
        self.events.push(event_of(rec, pos, Some(prev.clone())));
        Ok(prev)
    }

    /// Revokes a lease: deletes its keys at one new revision, then the lease.
    pub fn revoke_lease(&mut self, id: i64) -> Result<()> {
        if self.leases.remove(id).map_err(internal)?.is_none() {
            return Err(Error::LeaseNotFound { id });
        }
        let mut keys = Vec::new();
        for entry in self.lease_keys.range((id, &[][..])..).map_err(internal)? {
            let (guard, _) = entry.map_err(internal)?;
            let (lease, key) = guard.value();
            if lease != id {
                break;
            }
            keys.push(key.to_vec());
        }
        let rev = self.revision + 1;
        for (sub, key) in keys.iter().enumerate() {
            self.delete((rev, sub as u32), key)?;
        }
        if !keys.is_empty() {
            self.revision = rev;
        }
        Ok(())
    }

    /// Removes up to [`COMPACT_STEP`] superseded entries at or below the compacted revision.
    /// Returns the new `compact_scanned`.
    pub fn compact_step(&mut self, scanned: u64) -> Result<u64> {
        if scanned >= self.compact {
            return Ok(scanned);
        }
        let mut doomed = Vec::new();
        let mut reached = scanned;
        let mut finished = true;
        for (seen, entry) in
            self.log.range((scanned + 1, 0)..=(self.compact, u32::MAX)).map_err(internal)?.enumerate()
        {
            let (pos, bytes) = entry.map_err(internal)?;
            let pos = pos.value();
            // Stop only between revisions, so `compact_scanned` never splits a transaction.
            if seen >= COMPACT_STEP && pos.0 != reached {
                finished = false;
                break;
            }
            reached = pos.0;
            let rec = Record::decode(bytes.value())?;
            // This entry is at or below the compacted revision, so the version it replaced is
            // superseded there; a tombstone there is not needed by any read at or above it.
            if rec.prev != NO_POS {
                doomed.push(rec.prev);
            }
            if rec.kind == Kind::Delete {
                doomed.push(pos);
            }
        }
        if finished {
            reached = self.compact;
        }
        for pos in doomed {
            self.log.remove(pos).map_err(internal)?;
        }
        Ok(reached)
    }
}
