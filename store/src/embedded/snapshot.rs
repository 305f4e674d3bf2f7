//! Backups of the embedded store: snapshots (etcd's Maintenance.Snapshot, restored with
//! [`restore`] as etcdutl's `snapshot restore` does), defragmentation, and the Hash/HashKV checks.
//!
//! A snapshot is taken in one redb read transaction, so it is the store at exactly one revision,
//! while writes go on. It is kplane's own format, not etcd's bbolt file (etcdctl only copies the
//! bytes to a file; `etcdutl snapshot status`/`restore` cannot read it, `kplane snapshot` can):
//!
//! ```text
//! "kplane-snapshot\n" | format version: u32 = 1
//! entries: tag u8, then (all integers little endian, byte strings as u32 length + bytes)
//!   1 meta      name, value u64          (revision, compact, compact_scanned)
//!   2 log       revision u64, sub u32, record bytes (record.rs's layout)
//!   3 latest    key, revision u64, sub u32
//!   4 lease     id i64, ttl i64           (the expiry restarts on restore, as after a restart)
//!   5 lease key id i64, key
//!   0 end       number of entries u64
//! zero bytes up to a multiple of 512
//! SHA-256 of everything above (32 bytes), appended as etcd appends one to its snapshots
//! ```
//!
//! The padding is there because `etcdctl snapshot save` (3.4) checks that the file it received is
//! a whole number of 512-byte blocks plus the 32-byte digest, as an etcd (bbolt) snapshot is.
//!
//! The whole history since the last compaction is kept, so after a restore every key has its
//! mod_revision, version and create_revision back (resourceVersions never go backwards) and
//! watches from a kept revision still work.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use etcd_client::proto::PbKeyValue;
use prost::Message;
use redb::{Database, ReadTransaction, ReadableTable};

use super::mvcc::{self, internal, LATEST, LEASES, LEASE_KEYS, LOG, META};
use super::record::{Kind, Pos, Record};
use super::{writer, EmbeddedStore, DB_FILE};
use crate::{Error, Result};

const MAGIC: &[u8; 16] = b"kplane-snapshot\n";
const FORMAT_VERSION: u32 = 1;
const DIGEST_LEN: usize = 32;
/// The snapshot's content is padded to a multiple of this, as etcdctl expects.
const BLOCK: u64 = 512;

const TAG_END: u8 = 0;
const TAG_META: u8 = 1;
const TAG_LOG: u8 = 2;
const TAG_LATEST: u8 = 3;
const TAG_LEASE: u8 = 4;
const TAG_LEASE_KEY: u8 = 5;

/// Why a snapshot could not be read or restored. Nothing was written when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0} already holds a store; restore into a data directory without one (like etcdutl, kplane never overwrites a store)")]
    StoreExists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("snapshot {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error(transparent)]
    Store(#[from] Error),
}

/// A snapshot taken by [`EmbeddedStore::snapshot`]: an unnamed temporary file in the data
/// directory (gone when dropped), positioned at its start.
#[derive(Debug)]
pub struct Snapshot {
    /// The store's revision the snapshot holds.
    pub revision: i64,
    /// Bytes, digest included.
    pub size: u64,
    pub file: File,
}

/// What a snapshot file holds (`kplane snapshot status`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotStatus {
    pub revision: i64,
    pub compact_revision: i64,
    /// Live keys.
    pub keys: u64,
    /// Revision-log entries (history kept, live versions included).
    pub log_entries: u64,
    pub leases: u64,
    /// Bytes, digest included.
    pub size: u64,
    /// CRC-32C of the snapshot's content: the store's Maintenance.Hash at that revision.
    pub hash: u32,
}

/// The answer to etcd's HashKV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The store's current revision.
    pub revision: i64,
    pub compact_revision: i64,
    /// The revision hashed up to.
    pub hash_revision: i64,
}

impl EmbeddedStore {
    /// A snapshot of the whole store at its current revision, written to a temporary file. Writes
    /// are not blocked while it is taken.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let db = self.inner.db.clone();
        let dir = self.inner.path.parent().map(Path::to_path_buf).unwrap_or_default();
        blocking(move || {
            let rtx = db.begin_read().map_err(internal)?;
            let (revision, _) = mvcc::meta_revisions(&rtx.open_table(META).map_err(internal)?)?;
            let io_err =
                |e: io::Error| Error::Unavailable(format!("writing a snapshot in {}: {e}", dir.display()));
            let mut file = tempfile::tempfile_in(&dir).map_err(io_err)?;
            let mut out = Digesting::new(BufWriter::new(&mut file));
            write_body(&rtx, &mut out).map_err(io_err)?;
            drop(rtx);
            let (mut buffered, digest, _) = out.finish();
            buffered.write_all(&digest).map_err(io_err)?;
            buffered.flush().map_err(io_err)?;
            drop(buffered);
            let size = file.stream_position().map_err(io_err)?;
            file.rewind().map_err(io_err)?;
            Ok(Snapshot { revision: revision as i64, size, file })
        })
        .await
    }

    /// Finishes pending physical compaction, then shrinks the database file (etcd's Defragment).
    /// Writes wait while it runs, as on etcd.
    pub async fn defragment(&self) -> Result<()> {
        self.request(writer::Request::Defragment).await.map(drop)
    }

    /// etcd's Hash: a CRC-32C of the whole store (what a snapshot holds), and the revision.
    pub async fn hash(&self) -> Result<(u32, i64)> {
        let db = self.inner.db.clone();
        blocking(move || {
            let rtx = db.begin_read().map_err(internal)?;
            let (revision, _) = mvcc::meta_revisions(&rtx.open_table(META).map_err(internal)?)?;
            let mut out = Digesting::new(io::sink());
            write_body(&rtx, &mut out).map_err(internal)?;
            Ok((out.finish().2, revision as i64))
        })
        .await
    }

    /// etcd's HashKV: a CRC-32C (Castagnoli) over the key-value history up to `revision` (0: the
    /// current one), computed as etcd's mvcc `HashByRev` does — the bucket name `key`, then, in
    /// revision order, each entry's revision key (main and sub, big endian, `_` between, `t` after
    /// a tombstone) and its `mvccpb.KeyValue` bytes; entries at or below the compacted revision
    /// count only while they are still a key's live version at `revision`. The same history
    /// hashes the same here and on a real etcd (a test checks it against one).
    pub async fn hash_kv(&self, revision: i64) -> Result<KvHash> {
        let db = self.inner.db.clone();
        blocking(move || {
            let rtx = db.begin_read().map_err(internal)?;
            let (current, compact) = mvcc::meta_revisions(&rtx.open_table(META).map_err(internal)?)?;
            if revision > 0 && revision as u64 <= compact {
                return Err(Error::Compacted { requested: revision, compact_revision: compact as i64 });
            }
            if revision > current as i64 {
                return Err(Error::FutureRevision { requested: revision, current: current as i64 });
            }
            let upto = if revision <= 0 { current } else { revision as u64 };
            let log = rtx.open_table(LOG).map_err(internal)?;
            // etcd's `kvindex.Keep(rev)`: each key's newest version at or below the revision hashed,
            // unless it is a tombstone. Of the entries at or below the compacted revision, only
            // these count (all of them when there are none, as etcd does).
            let mut live: HashMap<String, Pos> = HashMap::new();
            for entry in log.range(..=(upto, u32::MAX)).map_err(internal)? {
                let (pos, bytes) = entry.map_err(internal)?;
                let rec = Record::decode(bytes.value())?;
                match rec.kind {
                    Kind::Put => live.insert(rec.key, pos.value()),
                    Kind::Delete => live.remove(&rec.key),
                };
            }
            let kept: HashSet<Pos> = live.into_values().collect();
            let mut crc = crc32c::crc32c(b"key");
            for entry in log.range(..=(upto, u32::MAX)).map_err(internal)? {
                let (pos, bytes) = entry.map_err(internal)?;
                let pos = pos.value();
                if pos.0 <= compact && !kept.is_empty() && !kept.contains(&pos) {
                    continue;
                }
                let rec = Record::decode(bytes.value())?;
                let mut rev_key = Vec::with_capacity(18);
                rev_key.extend_from_slice(&pos.0.to_be_bytes());
                rev_key.push(b'_');
                rev_key.extend_from_slice(&u64::from(pos.1).to_be_bytes());
                let kv = match rec.kind {
                    Kind::Put => PbKeyValue {
                        key: rec.key.into_bytes(),
                        create_revision: rec.create_rev,
                        mod_revision: pos.0 as i64,
                        version: rec.version,
                        value: rec.value,
                        lease: rec.lease,
                    },
                    Kind::Delete => {
                        rev_key.push(b't');
                        PbKeyValue { key: rec.key.into_bytes(), ..Default::default() }
                    }
                };
                crc = crc32c::crc32c_append(crc, &rev_key);
                crc = crc32c::crc32c_append(crc, &kv.encode_to_vec());
            }
            Ok(KvHash {
                hash: crc,
                revision: current as i64,
                compact_revision: compact as i64,
                hash_revision: upto as i64,
            })
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Internal(format!("a store task failed: {e}")))?
}

/// The snapshot's content: every table, then the padding (not the digest).
fn write_body<W: Write>(rtx: &ReadTransaction, out: &mut Digesting<W>) -> io::Result<()> {
    dump(rtx, out)?;
    let pad = (BLOCK - out.len % BLOCK) % BLOCK;
    out.write_all(&vec![0u8; pad as usize])
}

/// Writes every table of `rtx` in the snapshot format.
fn dump(rtx: &ReadTransaction, out: &mut impl Write) -> io::Result<()> {
    fn bytes(out: &mut impl Write, b: &[u8]) -> io::Result<()> {
        out.write_all(&(b.len() as u32).to_le_bytes())?;
        out.write_all(b)
    }
    fn pos(out: &mut impl Write, (rev, sub): Pos) -> io::Result<()> {
        out.write_all(&rev.to_le_bytes())?;
        out.write_all(&sub.to_le_bytes())
    }
    let table_err = |e: redb::TableError| io::Error::other(e.to_string());
    let storage_err = |e: redb::StorageError| io::Error::other(e.to_string());
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT_VERSION.to_le_bytes())?;
    let mut entries = 0u64;
    for entry in rtx.open_table(META).map_err(table_err)?.iter().map_err(storage_err)? {
        let (name, value) = entry.map_err(storage_err)?;
        out.write_all(&[TAG_META])?;
        bytes(out, name.value().as_bytes())?;
        out.write_all(&value.value().to_le_bytes())?;
        entries += 1;
    }
    for entry in rtx.open_table(LOG).map_err(table_err)?.iter().map_err(storage_err)? {
        let (at, record) = entry.map_err(storage_err)?;
        out.write_all(&[TAG_LOG])?;
        pos(out, at.value())?;
        bytes(out, record.value())?;
        entries += 1;
    }
    for entry in rtx.open_table(LATEST).map_err(table_err)?.iter().map_err(storage_err)? {
        let (key, at) = entry.map_err(storage_err)?;
        out.write_all(&[TAG_LATEST])?;
        bytes(out, key.value())?;
        pos(out, at.value())?;
        entries += 1;
    }
    for entry in rtx.open_table(LEASES).map_err(table_err)?.iter().map_err(storage_err)? {
        let (id, v) = entry.map_err(storage_err)?;
        out.write_all(&[TAG_LEASE])?;
        out.write_all(&id.value().to_le_bytes())?;
        out.write_all(&v.value().0.to_le_bytes())?;
        entries += 1;
    }
    for entry in rtx.open_table(LEASE_KEYS).map_err(table_err)?.iter().map_err(storage_err)? {
        let (k, _) = entry.map_err(storage_err)?;
        let (id, key) = k.value();
        out.write_all(&[TAG_LEASE_KEY])?;
        out.write_all(&id.to_le_bytes())?;
        bytes(out, key)?;
        entries += 1;
    }
    out.write_all(&[TAG_END])?;
    out.write_all(&entries.to_le_bytes())
}

/// A writer or reader that passes bytes through while computing their SHA-256 and CRC-32C.
struct Digesting<T> {
    inner: T,
    sha: ring::digest::Context,
    crc: u32,
    len: u64,
}

impl<T> Digesting<T> {
    fn new(inner: T) -> Self {
        Digesting { inner, sha: ring::digest::Context::new(&ring::digest::SHA256), crc: 0, len: 0 }
    }

    fn update(&mut self, b: &[u8]) {
        self.sha.update(b);
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.len += b.len() as u64;
    }

    fn finish(self) -> (T, [u8; DIGEST_LEN], u32) {
        let mut digest = [0u8; DIGEST_LEN];
        digest.copy_from_slice(self.sha.finish().as_ref());
        (self.inner, digest, self.crc)
    }
}

impl<T: Write> Write for Digesting<T> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.update(&b[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Digesting<T> {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(b)?;
        self.update(&b[..n]);
        Ok(n)
    }
}

/// A snapshot's content as it is read: digested, and limited to before the digest.
type Body = Digesting<io::Take<BufReader<File>>>;

/// One entry of a snapshot.
enum Entry {
    Meta(String, u64),
    Log(Pos, Vec<u8>),
    Latest(Vec<u8>, Pos),
    Lease(i64, i64),
    LeaseKey(i64, Vec<u8>),
}

/// Reads a snapshot file: first checks its digest (so a damaged file is refused before anything
/// is done with it), then hands every entry to `each`, checking the digest again at the end.
fn read_snapshot(
    path: &Path,
    mut each: impl FnMut(Entry) -> std::result::Result<(), SnapshotError>,
) -> std::result::Result<SnapshotStatus, SnapshotError> {
    let corrupt = |why: &str| SnapshotError::Corrupt { path: path.to_path_buf(), why: why.to_string() };
    let io_err = |source: io::Error| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            corrupt("it ends in the middle of an entry")
        } else {
            SnapshotError::Io { path: path.to_path_buf(), source }
        }
    };
    let open = || -> std::result::Result<(Body, u64), SnapshotError> {
        let file = File::open(path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        if size < (MAGIC.len() + 4 + 1 + 8 + DIGEST_LEN) as u64 {
            return Err(corrupt("it is too short to be a kplane snapshot"));
        }
        Ok((Digesting::new(BufReader::new(file).take(size - DIGEST_LEN as u64)), size))
    };
    let check_digest = |body: Body| {
        let (mut rest, digest, crc) = body.finish();
        let mut stored = [0u8; DIGEST_LEN];
        rest.set_limit(DIGEST_LEN as u64);
        rest.read_exact(&mut stored).map_err(io_err)?;
        if stored != digest {
            return Err(corrupt("its SHA-256 does not match its content (truncated or damaged)"));
        }
        Ok(crc)
    };
    // Pass 1: the digest alone.
    let (mut body, size) = open()?;
    io::copy(&mut body, &mut io::sink()).map_err(io_err)?;
    check_digest(body)?;

    // Pass 2: the entries.
    let (mut r, _) = open()?;
    let mut header = [0u8; 20];
    r.read_exact(&mut header).map_err(io_err)?;
    if &header[..16] != MAGIC {
        return Err(corrupt(
            "it is not a kplane snapshot (kplane restores the snapshots `etcdctl snapshot save` takes from its own endpoint, not etcd's bbolt files)",
        ));
    }
    let version = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!(
            "format version {version} is not supported (this kplane reads {FORMAT_VERSION})"
        )));
    }
    let mut status =
        SnapshotStatus { revision: 0, compact_revision: 0, keys: 0, log_entries: 0, leases: 0, size, hash: 0 };
    let mut seen_revision = false;
    let mut entries = 0u64;
    loop {
        let tag = read_u8(&mut r).map_err(io_err)?;
        let entry = match tag {
            TAG_END => {
                let count = read_u64(&mut r).map_err(io_err)?;
                if count != entries {
                    return Err(corrupt(&format!("it says {count} entries but holds {entries}")));
                }
                let left = r.inner.limit();
                let mut padding = vec![0u8; left.min(BLOCK) as usize];
                r.read_exact(&mut padding).map_err(io_err)?;
                if left >= BLOCK || padding.iter().any(|&b| b != 0) {
                    return Err(corrupt("there are bytes after its end"));
                }
                break;
            }
            TAG_META => {
                let name = String::from_utf8(read_bytes(&mut r).map_err(io_err)?)
                    .map_err(|_| corrupt("a meta name is not UTF-8"))?;
                let value = read_u64(&mut r).map_err(io_err)?;
                match name.as_str() {
                    mvcc::META_REVISION => {
                        status.revision = value as i64;
                        seen_revision = true;
                    }
                    mvcc::META_COMPACT => status.compact_revision = value as i64,
                    _ => {}
                }
                Entry::Meta(name, value)
            }
            TAG_LOG => {
                let pos = (read_u64(&mut r).map_err(io_err)?, read_u32(&mut r).map_err(io_err)?);
                let record = read_bytes(&mut r).map_err(io_err)?;
                Record::decode(&record).map_err(|e| corrupt(&e.to_string()))?;
                status.log_entries += 1;
                Entry::Log(pos, record)
            }
            TAG_LATEST => {
                let key = read_bytes(&mut r).map_err(io_err)?;
                let pos = (read_u64(&mut r).map_err(io_err)?, read_u32(&mut r).map_err(io_err)?);
                status.keys += 1;
                Entry::Latest(key, pos)
            }
            TAG_LEASE => {
                let id = read_u64(&mut r).map_err(io_err)? as i64;
                let ttl = read_u64(&mut r).map_err(io_err)? as i64;
                status.leases += 1;
                Entry::Lease(id, ttl)
            }
            TAG_LEASE_KEY => {
                let id = read_u64(&mut r).map_err(io_err)? as i64;
                Entry::LeaseKey(id, read_bytes(&mut r).map_err(io_err)?)
            }
            other => return Err(corrupt(&format!("unknown entry tag {other}"))),
        };
        entries += 1;
        each(entry)?;
    }
    if !seen_revision {
        return Err(corrupt("it has no revision"));
    }
    // The file could have changed since pass 1.
    status.hash = check_digest(r)?;
    Ok(status)
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A length-prefixed byte string, never longer than what is left of the body (a damaged length
/// must not allocate gigabytes).
fn read_bytes(r: &mut Body) -> io::Result<Vec<u8>> {
    let len = u64::from(read_u32(r)?);
    if len > r.inner.limit() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b)?;
    Ok(b)
}

/// What a snapshot file holds, after checking it whole (`kplane snapshot status`).
pub fn snapshot_status(path: &Path) -> std::result::Result<SnapshotStatus, SnapshotError> {
    read_snapshot(path, |_| Ok(()))
}

/// Restores a snapshot into `data_dir` (created if absent), as etcdutl's `snapshot restore`: the
/// data directory must not hold a store yet. The store is built in a temporary file beside it and
/// appears under its name only once complete and durable, so a failed restore leaves nothing.
pub fn restore(snapshot: &Path, data_dir: &Path) -> std::result::Result<SnapshotStatus, SnapshotError> {
    let target = data_dir.join(DB_FILE);
    if target.exists() {
        return Err(SnapshotError::StoreExists(target));
    }
    let dir_err = |source: io::Error| SnapshotError::Io { path: data_dir.to_path_buf(), source };
    std::fs::create_dir_all(data_dir).map_err(dir_err)?;
    let partial = data_dir.join(format!("{DB_FILE}.restoring"));
    let remove_partial = || match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(dir_err(e)),
        _ => Ok(()),
    };
    remove_partial()?;
    let status = match build(snapshot, &partial) {
        Ok(status) => status,
        Err(e) => {
            // The restore's own error matters more than one removing its partial file (which the
            // next restore removes anyway).
            let _ = remove_partial();
            return Err(e);
        }
    };
    // A hard link never replaces a store that appeared meanwhile, unlike a rename.
    let linked = std::fs::hard_link(&partial, &target);
    remove_partial()?;
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(SnapshotError::StoreExists(target)),
        Err(e) => return Err(dir_err(e)),
    }
    File::open(data_dir).and_then(|d| d.sync_all()).map_err(dir_err)?;
    Ok(status)
}

/// Writes the snapshot's tables into a new database at `path`, in one transaction committed only
/// after the whole file has been read and its digest checked.
fn build(snapshot: &Path, path: &Path) -> std::result::Result<SnapshotStatus, SnapshotError> {
    let db = Database::create(path)
        .map_err(|e| Error::Unavailable(format!("cannot create {}: {e}", path.display())))?;
    let wtx = db.begin_write().map_err(internal)?;
    let status = {
        let mut meta = wtx.open_table(META).map_err(internal)?;
        let mut log = wtx.open_table(LOG).map_err(internal)?;
        let mut latest = wtx.open_table(LATEST).map_err(internal)?;
        let mut leases = wtx.open_table(LEASES).map_err(internal)?;
        let mut lease_keys = wtx.open_table(LEASE_KEYS).map_err(internal)?;
        let now = writer::now_ms();
        read_snapshot(snapshot, |entry| {
            match entry {
                Entry::Meta(name, value) => drop(meta.insert(name.as_str(), value).map_err(internal)?),
                Entry::Log(pos, record) => drop(log.insert(pos, record.as_slice()).map_err(internal)?),
                Entry::Latest(key, pos) => drop(latest.insert(key.as_slice(), pos).map_err(internal)?),
                Entry::Lease(id, ttl) => {
                    drop(leases.insert(id, (ttl, super::writer::expiry_at(now, ttl))).map_err(internal)?)
                }
                Entry::LeaseKey(id, key) => {
                    drop(lease_keys.insert((id, key.as_slice()), ()).map_err(internal)?)
                }
            }
            Ok(())
        })?
    };
    wtx.commit().map_err(internal)?;
    Ok(status)
}
