//! The real-etcd backend (`--etcd-servers`), built on etcd-client.
//!
//! # Writes
//!
//! Every conditional write is one etcd transaction conditioned on the key's `mod_revision`, so the
//! check and the write are atomic on the server and no read-modify-write race is possible:
//!
//! - create: `If(mod_revision(key) == 0) Then(Put)`; a failed compare means `AlreadyExists`. The stored
//!   metadata is fully known from the txn header (`create_revision = mod_revision = revision`,
//!   `version = 1`), so nothing is read back.
//! - update: `If(version(key) > 0 && mod_revision(key) == expected) Then(Put, Get keys-only)
//!   Else(Get keys-only)`. The `version > 0` guard keeps an update from ever creating a key (an
//!   absent key has `mod_revision` 0). The keys-only Get after the Put returns the exact stored
//!   metadata without shipping the value back; on failure the Else Get tells `NotFound` from
//!   `Conflict { actual }` in the same round trip.
//! - delete with a precondition: `If(mod_revision(key) == rev) Then(Delete prev_kv) Else(Get keys-only)`;
//!   without one a plain Delete with prev_kv. Both return the deleted value.
//!
//! # Watches, reconnect and resume
//!
//! A watch is a background task feeding a bounded channel; the task ends when the receiver is
//! dropped. It remembers the next revision it owes the caller (`next_rev`: the start revision, then
//! one past the last delivered revision, also advanced by etcd's progress notifications). When the
//! gRPC stream fails or ends (etcd restarted, connection reset) it re-creates the watch from
//! `next_rev` with a capped exponential backoff, and drops any event below `next_rev`, so nothing is
//! lost and nothing is delivered twice. Each revision is handed over whole (etcd never splits one
//! across responses), so `next_rev` never points into a half-delivered revision. Only a compacted start revision (or a server-side cancel)
//! ends the stream, with an error.
//!
//! A watch from revision 0 ("from the next write") is pinned to `current revision + 1` up front, so a
//! reconnect knows where to resume even if no event was delivered yet.
//!
//! # Compaction
//!
//! [`EtcdStore::run_compactor`] is upstream kube-apiserver's compactor (`storage/etcd3/compact.go`):
//! every interval, a compare-and-swap on the version of the key `compact_rev_key` (the logical
//! "compact time") decides which of several API servers sharing the etcd compacts this interval;
//! the winner writes the revision it saw at its previous tick into the key and compacts to it, so
//! one interval of history always stays. A loser adopts the key's version and tries next time.
//!
//! # Several members: failover
//!
//! With several `--etcd-servers` the store keeps one etcd-client [`Client`] per member (each its own
//! gRPC channel) and sends every request to one *current* member. etcd-client's own balanced channel
//! spreads requests over all endpoints and keeps picking a dead one (each pick then fails with `tcp
//! connect error`), so it is used only per member. A request fails over to the next member when:
//!
//! - the connection could not be made (`connect error`): nothing was sent, so any request, writes
//!   included, is retried on the next member;
//! - the member answered that it has no leader (`etcdserver: no leader`): it refused before
//!   proposing anything, so this too is retried for any request;
//! - any other connection-level failure, for reads only (a read is safe to repeat; a write whose
//!   connection broke after it was sent may have been applied, so it fails with `Unavailable` and the
//!   client decides, as upstream's clientv3 does for non-idempotent requests).
//!
//! A failure moves the current member on once (a compare-and-swap, so many requests failing at once
//! do not skip a live member). Each request tries each member at most once. Watches re-create their
//! etcd watch on the current member after a failure, from the next revision they owe; revisions are
//! cluster-wide, so resuming on another member loses and repeats nothing. Requests carry etcd's
//! `hasleader` metadata (`require_leader`), as upstream's watches do, so a member cut off from the
//! quorum answers with an error instead of serving stale data or a silent watch.
//!
//! # Errors
//!
//! [`map_err`] is the one place etcd-client errors become [`Error`]s: connection-level failures are
//! [`Error::Unavailable`] (retryable), etcd's revision errors become the typed `Compacted` /
//! `FutureRevision`, and anything else is [`Error::Internal`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::sync::mpsc;

use crate::{
    prefix_end, Deleted, Error, Event, EventKind, KeyValue, ListOptions, ListResult, Result, RevisionStream,
    Store, StoreLimits,
};

/// Largest response accepted from etcd. A list of 10k pods is several MiB, past tonic's 4 MiB
/// default; kube-apiserver likewise lifts etcd's client receive limit to the maximum.
const MAX_RESPONSE: usize = i32::MAX as usize;

/// How long creating one watch may take before the attempt counts as failed and is retried.
const WATCH_CREATE_TIMEOUT: Duration = Duration::from_secs(5);
/// First delay between watch reconnect attempts.
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Cap of the watch reconnect delay: etcd restarts take about a second, so retrying more slowly would
/// only add latency after it is back.
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Events buffered between the watch task and the consumer. Bounded so a slow consumer slows the
/// task (and etcd's stream, through gRPC flow control) instead of growing memory without limit.
const WATCH_CHANNEL_CAPACITY: usize = 256;
/// The key upstream's compactor keeps its logical compact time in (its version) and the last
/// compacted revision (its value). Outside `/registry`, so object lists never see it.
pub const COMPACT_REV_KEY: &str = "compact_rev_key";
/// How long to wait for etcd to report the compacted revision when it is looked up after an error.
const COMPACT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 keep-alive, so a watch on a connection to a vanished host (no RST ever arrives) fails and
/// reconnects instead of hanging. etcd refuses pings more often than every 5 s by default.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd. Mirrors kube-apiserver's `--etcd-servers`, `--etcd-cafile`, `--etcd-certfile`
/// and `--etcd-keyfile`.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379` or `https://...` with TLS.
    pub endpoints: Vec<String>,
    /// CA bundle that signed etcd's serving certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), used together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM), used together with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Which writes are accepted (key prefix, value size).
    pub limits: StoreLimits,
    /// How long to wait for a TCP/TLS connection to an endpoint, and for the first probe in
    /// [`EtcdStore::connect`].
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    /// Plain-text connection to `endpoints` with the default limits and a 5 s connect timeout.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            ca_file: None,
            cert_file: None,
            key_file: None,
            limits: StoreLimits::default(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// [`Store`] over a real etcd cluster. Cheap to clone: clones share the members' gRPC channels.
#[derive(Clone)]
pub struct EtcdStore {
    members: Arc<Members>,
    limits: StoreLimits,
}

/// One client per etcd member and which member requests go to (see "Several members" above).
struct Members {
    clients: Vec<Client>,
    endpoints: Vec<String>,
    current: AtomicUsize,
}

/// Which failures a request may be retried on another member after.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Only failures that prove the request never reached etcd's log (writes).
    NotSent,
    /// Any connection-level failure (reads, which are safe to repeat).
    Unavailable,
}

impl Members {
    /// The member requests go to now, and its index.
    fn pick(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Moves off member `i` after a failure there, unless another request already did.
    fn failed(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        if self.current.compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            && self.clients.len() > 1
        {
            tracing::warn!(failed = %self.endpoints[i], next = %self.endpoints[next], "etcd: failing over to the next member");
        }
    }

    /// Runs `op` on the current member, moving on to the next (each member at most once) when it
    /// fails in a way `retry` allows.
    async fn call<T, F, Fut>(&self, retry: Retry, op: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut tries = 0;
        loop {
            let (i, client) = self.pick();
            match op(client).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let failover = not_sent(&e) || (retry == Retry::Unavailable && is_unavailable(&e));
                    if failover {
                        self.failed(i);
                    }
                    tries += 1;
                    if !failover || tries >= self.clients.len() {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Whether `err` proves the request never got into etcd's log: the connection could not be made,
/// or the member refused because it has no leader.
fn not_sent(err: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    fn chain_says(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::ConnectionRefused {
                    return true;
                }
            }
            let text = e.to_string();
            if text.contains("connect error") || text.contains("error trying to connect") {
                return true;
            }
            cur = e.source();
        }
        false
    }
    match err {
        E::TransportError(e) => chain_says(e),
        E::GRpcStatus(status) => {
            status.message().contains("etcdserver: no leader")
                || status.message().contains("connect error")
                || chain_says(status)
        }
        _ => false,
    }
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // etcd-client's Client has no Debug; the limits are what tells two stores apart in logs.
        f.debug_struct("EtcdStore").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Reads on the current member, failing over on any connection-level failure.
    async fn read<T, F, Fut>(&self, op: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: Fn(etcd_client::KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.members.call(Retry::Unavailable, |c| op(kv(&c))).await
    }

    /// Writes on the current member, failing over only when the write cannot have been applied.
    async fn write<T, F, Fut>(&self, op: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: Fn(etcd_client::KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.members.call(Retry::NotSent, |c| op(kv(&c))).await
    }

    /// The client URLs of the members, in the configured order.
    pub fn endpoints(&self) -> &[String] {
        &self.members.endpoints
    }

    /// The member requests go to now.
    pub fn current_endpoint(&self) -> &str {
        &self.members.endpoints[self.members.pick().0]
    }

    /// Connects to etcd and checks that it answers, so a wrong endpoint or TLS setup fails at startup
    /// rather than on the first request. With several endpoints, one member answering is enough.
    pub async fn connect(cfg: EtcdConfig) -> Result<EtcdStore> {
        if cfg.endpoints.is_empty() {
            return Err(Error::Internal("no etcd endpoints configured".into()));
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_require_leader(true);
        if let Some(tls) = tls_options(&cfg).await? {
            options = options.with_tls(tls);
        }
        let tls = cfg.ca_file.is_some() || cfg.cert_file.is_some();
        let mut clients = Vec::with_capacity(cfg.endpoints.len());
        for endpoint in &cfg.endpoints {
            // Channels connect lazily: a member that is down now is only tried when it is current.
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .map_err(|e| Error::Unavailable(format!("etcd member {endpoint}: {}", map_err(e))))?;
            clients.push(client);
        }
        let members = Members { clients, endpoints: cfg.endpoints.clone(), current: AtomicUsize::new(0) };
        let store = EtcdStore { members: Arc::new(members), limits: cfg.limits };
        match tokio::time::timeout(cfg.connect_timeout, store.current_revision()).await {
            Ok(Ok(_)) => Ok(store),
            // etcd with --client-cert-auth ends the handshake of a client without a certificate,
            // which gRPC reports only as "cancelled": say what is likely missing.
            Ok(Err(Error::Unavailable(msg))) if tls && cfg.cert_file.is_none() => Err(Error::Unavailable(
                format!("{msg} (no client certificate was configured; etcd may require one)"),
            )),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable(format!(
                "etcd at {:?} did not answer within {:?}",
                cfg.endpoints, cfg.connect_timeout
            ))),
        }
    }

    /// The compacted revision, learned from a watch at revision 1: etcd's "compacted" error message
    /// does not carry it, but a watch below it is cancelled with `compact_revision` set. 0 when it
    /// cannot be learned (nothing compacted, or etcd did not answer in time).
    async fn compacted_revision(&self) -> i64 {
        let lookup = async {
            // An unlikely key keeps the probe from ever receiving real events.
            let options = WatchOptions::new().with_start_revision(1);
            let (_, client) = self.members.pick();
            let mut stream = client.watch_client().watch("\0kplane-compact-probe", Some(options)).await.ok()?;
            loop {
                let resp = stream.message().await.ok()??;
                if resp.compact_revision() != 0 {
                    return Some(resp.compact_revision());
                }
                if resp.canceled() {
                    return None;
                }
            }
        };
        tokio::time::timeout(COMPACT_LOOKUP_TIMEOUT, lookup).await.ok().flatten().unwrap_or(0)
    }

    /// Turns etcd's revision errors into the typed ones, looking up what the message lacks.
    async fn map_revision_err(&self, err: etcd_client::Error, requested: i64) -> Error {
        match map_err(err) {
            Error::Compacted { .. } => {
                Error::Compacted { requested, compact_revision: self.compacted_revision().await }
            }
            Error::FutureRevision { .. } => {
                let current = self.current_revision().await.unwrap_or(0);
                Error::FutureRevision { requested, current }
            }
            other => other,
        }
    }
}

/// What upstream's compactor remembers between ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactorState {
    /// The version of [`COMPACT_REV_KEY`] this API server last saw or wrote: its compact time.
    pub time: i64,
    /// The store's revision at the previous tick: what the next winning tick compacts to.
    pub revision: i64,
}

impl EtcdStore {
    /// One tick of upstream's compactor. Returns the revision compacted to, or None when another API
    /// server won this interval or there is nothing to compact yet (the first tick only records the
    /// revision). A compaction etcd refuses because that revision is already compacted counts as done.
    pub async fn compact_tick(&self, state: &mut CompactorState) -> Result<Option<i64>> {
        let txn = Txn::new()
            .when([Compare::version(COMPACT_REV_KEY, CompareOp::Equal, state.time)])
            .and_then([TxnOp::put(COMPACT_REV_KEY, state.revision.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_REV_KEY, None)]);
        let resp = self.write(|kv| kv_txn(kv, txn.clone())).await.map_err(map_err)?;
        let current = header_revision(resp.header())?;
        if !resp.succeeded() {
            // Someone else compacted in this interval: adopt their compact time and wait.
            let theirs = txn_get(&resp).and_then(|get| get.kvs().first().map(|kv| kv.version())).unwrap_or(0);
            *state = CompactorState { time: theirs, revision: current };
            return Ok(None);
        }
        let target = state.revision;
        *state = CompactorState { time: state.time + 1, revision: current };
        if target == 0 {
            // Upstream does not compact on the first tick.
            return Ok(None);
        }
        match self.write(|mut kv| async move { kv.compact(target, None).await }).await {
            Ok(_) => Ok(Some(target)),
            Err(e) => match self.map_revision_err(e, target).await {
                Error::Compacted { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Runs upstream's compactor every `interval` until the task is aborted. The first compaction
    /// happens two intervals in (the first tick only records the revision).
    pub fn run_compactor(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut state = CompactorState::default();
            loop {
                tokio::time::sleep(interval).await;
                match store.compact_tick(&mut state).await {
                    Ok(Some(rev)) => tracing::info!(revision = rev, "etcd: compacted"),
                    Ok(None) => tracing::debug!(?state, "etcd: compactor tick without compaction"),
                    Err(e) => tracing::warn!(error = %e, "etcd: compaction failed"),
                }
            }
        })
    }
}

/// Builds the TLS settings from the configured PEM files, or `None` when none is configured.
async fn tls_options(cfg: &EtcdConfig) -> Result<Option<TlsOptions>> {
    if cfg.ca_file.is_none() && cfg.cert_file.is_none() && cfg.key_file.is_none() {
        return Ok(None);
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &cfg.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca).await?));
    }
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(read_pem(cert).await?, read_pem(key).await?));
        }
        (None, None) => {}
        _ => {
            return Err(Error::Internal("etcd client TLS needs both a certificate file and a key file".into()))
        }
    }
    Ok(Some(tls))
}

async fn read_pem(path: &std::path::Path) -> Result<Vec<u8>> {
    tokio::fs::read(path).await.map_err(|e| Error::Internal(format!("reading {}: {e}", path.display())))
}

/// Maps an etcd-client error onto the store's errors. The revision errors come back without the
/// numbers etcd's message lacks; [`EtcdStore::map_revision_err`] fills them in.
fn map_err(err: etcd_client::Error) -> Error {
    use etcd_client::Error as E;
    match err {
        E::TransportError(e) => Error::Unavailable(format!("etcd transport error: {e}")),
        E::IoError(e) => Error::Unavailable(format!("etcd i/o error: {e}")),
        E::GRpcStatus(status) => {
            let msg = status.message();
            if msg.contains("required revision has been compacted") {
                return Error::Compacted { requested: 0, compact_revision: 0 };
            }
            if msg.contains("required revision is a future revision") {
                return Error::FutureRevision { requested: 0, current: 0 };
            }
            if msg.contains("requested lease not found") {
                return Error::LeaseNotFound { id: 0 };
            }
            let unavailable = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || std::error::Error::source(&status).is_some();
            // A status with a source was made on this side from a connection failure (reset,
            // h2 error, refused connect); statuses sent by etcd never carry one.
            if unavailable {
                Error::Unavailable(format!("etcd: {msg} ({:?})", status.code()))
            } else {
                Error::Internal(format!("etcd: {msg} ({:?})", status.code()))
            }
        }
        // The lease client reports "lease not found" this way when a keep-alive answers TTL <= 0.
        E::LeaseKeepAliveError(msg) if msg.contains("not found") => Error::LeaseNotFound { id: 0 },
        // Our side of a watch/keep-alive stream was closed: the stream is gone like the connection.
        E::WatchError(msg) | E::LeaseKeepAliveError(msg) => Error::Unavailable(msg),
        other => Error::Internal(format!("etcd client: {other}")),
    }
}

/// [`map_err`] that fills in the lease id for lease errors.
fn map_lease_err(err: etcd_client::Error, id: i64) -> Error {
    match map_err(err) {
        Error::LeaseNotFound { .. } => Error::LeaseNotFound { id },
        other => other,
    }
}

fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    let key = String::from_utf8(kv.key().to_vec())
        .map_err(|_| Error::Internal(format!("etcd returned a non-UTF-8 key {:?}", kv.key())))?;
    Ok(KeyValue {
        key,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header.map(|h| h.revision()).ok_or_else(|| Error::Internal("etcd response without a header".into()))
}

/// The key range etcd should read or watch for `prefix`, starting at `start`. etcd treats an empty
/// `range_end` as "this key only" and `"\0"` as "no upper bound", and rejects an empty key.
fn range_for(prefix: &str, start: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix_end(prefix.as_bytes());
    if end.is_empty() {
        end = vec![0];
    }
    let start = if start.is_empty() { vec![0] } else { start };
    (start, end)
}

/// The first Get response of a txn branch (the branches below always end with a Get).
fn txn_get(resp: &TxnResponse) -> Option<etcd_client::GetResponse> {
    resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    })
}

/// A KV client that accepts responses of any size (big lists).
fn kv(client: &Client) -> etcd_client::KvClient {
    client.kv_client().max_decoding_message_size(MAX_RESPONSE)
}

async fn kv_txn(
    mut kv: etcd_client::KvClient,
    txn: Txn,
) -> std::result::Result<TxnResponse, etcd_client::Error> {
    kv.txn(txn).await
}

async fn kv_get(
    mut kv: etcd_client::KvClient,
    key: Vec<u8>,
    opts: GetOptions,
) -> std::result::Result<etcd_client::GetResponse, etcd_client::Error> {
    kv.get(key, Some(opts)).await
}

/// Whether `err` is a connection-level failure ([`map_err`] makes it [`Error::Unavailable`]).
fn is_unavailable(err: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match err {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => true,
        E::LeaseKeepAliveError(msg) => !msg.contains("not found"),
        E::GRpcStatus(status) => {
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) || std::error::Error::source(status).is_some()
        }
        _ => false,
    }
}

fn keys_only() -> Option<GetOptions> {
    Some(GetOptions::new().with_keys_only())
}

#[async_trait]
impl Store for EtcdStore {
    fn backend_name(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> Result<KeyValue> {
        if key.is_empty() {
            return Err(Error::InvalidKey { key: String::new(), reason: "empty key".into() });
        }
        let resp = self.read(|mut kv| async move { kv.get(key, None).await }).await.map_err(map_err)?;
        match resp.kvs().first() {
            Some(kv) => convert_kv(kv),
            None => Err(Error::NotFound { key: key.to_string() }),
        }
    }

    async fn list(&self, opts: ListOptions) -> Result<ListResult> {
        let start = match &opts.continue_after {
            Some(after) => {
                if !after.starts_with(&opts.prefix) {
                    return Err(Error::InvalidKey {
                        key: after.clone(),
                        reason: format!("continue key is outside the listed prefix {:?}", opts.prefix),
                    });
                }
                // The smallest key strictly after `after`.
                let mut start = after.as_bytes().to_vec();
                start.push(0);
                start
            }
            None => opts.prefix.as_bytes().to_vec(),
        };
        let (start, end) = range_for(&opts.prefix, start);
        let get_opts =
            GetOptions::new().with_range(end).with_revision(opts.revision.max(0)).with_limit(opts.limit.max(0));
        let resp = match self.read(|kv| kv_get(kv, start.clone(), get_opts.clone())).await {
            Ok(resp) => resp,
            Err(e) => return Err(self.map_revision_err(e, opts.revision).await),
        };
        let items = resp.kvs().iter().map(convert_kv).collect::<Result<Vec<_>>>()?;
        // etcd's count is every key in [start, end) at that revision, limit or not.
        let remaining = (resp.count() - items.len() as i64).max(0);
        let revision = if opts.revision > 0 { opts.revision } else { header_revision(resp.header())? };
        Ok(ListResult { items, revision, more: resp.more() || remaining > 0, remaining })
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<KeyValue> {
        self.limits.check_write(key, &value)?;
        let txn = Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key,
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
        let resp = self.write(|kv| kv_txn(kv, txn.clone())).await.map_err(|e| map_lease_err(e, lease))?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists { key: key.to_string() });
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: revision,
            mod_revision: revision,
            version: 1,
            lease,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected_mod_revision: i64,
        lease: i64,
    ) -> Result<KeyValue> {
        self.limits.check_write(key, &value)?;
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected_mod_revision),
            ])
            .and_then([
                TxnOp::put(key, value.clone(), Some(PutOptions::new().with_lease(lease))),
                TxnOp::get(key, keys_only()),
            ])
            .or_else([TxnOp::get(key, keys_only())]);
        let resp = self.write(|kv| kv_txn(kv, txn.clone())).await.map_err(|e| map_lease_err(e, lease))?;
        let current = txn_get(&resp).and_then(|get| get.kvs().first().cloned());
        let Some(current) = current else {
            // The Else Get found nothing, or (impossibly) the Then Get did not see the Put.
            return if resp.succeeded() {
                Err(Error::Internal(format!("etcd lost the update of {key} within its txn")))
            } else {
                Err(Error::NotFound { key: key.to_string() })
            };
        };
        if !resp.succeeded() {
            return Err(Error::Conflict {
                key: key.to_string(),
                expected: expected_mod_revision,
                actual: current.mod_revision(),
            });
        }
        let mut kv = convert_kv(&current)?;
        kv.value = value;
        Ok(kv)
    }

    async fn delete(&self, key: &str, expected_mod_revision: Option<i64>) -> Result<Deleted> {
        let delete_opts = Some(DeleteOptions::new().with_prev_key());
        let (revision, prev) = match expected_mod_revision {
            Some(expected) => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
                    .and_then([TxnOp::delete(key, delete_opts)])
                    .or_else([TxnOp::get(key, keys_only())]);
                let resp = self.write(|kv| kv_txn(kv, txn.clone())).await.map_err(map_err)?;
                if !resp.succeeded() {
                    let actual = txn_get(&resp).and_then(|get| get.kvs().first().map(|kv| kv.mod_revision()));
                    return Err(match actual {
                        Some(actual) => Error::Conflict { key: key.to_string(), expected, actual },
                        None => Error::NotFound { key: key.to_string() },
                    });
                }
                let prev = resp.op_responses().into_iter().find_map(|op| match op {
                    TxnOpResponse::Delete(del) => del.prev_kvs().first().cloned(),
                    _ => None,
                });
                (header_revision(resp.header())?, prev)
            }
            None => {
                let resp = self
                    .write(|mut kv| {
                        let opts = delete_opts.clone();
                        async move { kv.delete(key, opts).await }
                    })
                    .await
                    .map_err(map_err)?;
                (header_revision(resp.header())?, resp.prev_kvs().first().cloned())
            }
        };
        // Nothing deleted: the key was absent (with `expected == 0` the compare holds for an absent
        // key, so the txn "succeeds" without deleting anything).
        let prev = prev.ok_or_else(|| Error::NotFound { key: key.to_string() })?;
        Ok(Deleted { prev: convert_kv(&prev)?, revision })
    }

    /// With `prev_kv` false etcd skips a read of the previous revision for every event it sends.
    async fn watch_revisions(&self, prefix: &str, from_revision: i64, prev_kv: bool) -> Result<RevisionStream> {
        Ok(crate::revisions_only(self.watch_task(prefix, from_revision, prev_kv, None).await?))
    }

    /// Each notification of `ask` sends etcd a `WatchProgressRequest` on the watch's stream; etcd
    /// answers with a progress notification at its current revision once the watcher is synced.
    /// Only on etcd versions whose answer is ordered after the events it covers (as upstream's
    /// `RequestWatchProgress` feature check): older ones may send it ahead of them (etcd#15220).
    async fn watch_progress(
        &self,
        prefix: &str,
        from_revision: i64,
        ask: Arc<tokio::sync::Notify>,
    ) -> Result<Option<crate::ProgressStream>> {
        let status = self
            .members
            .call(Retry::Unavailable, |c| async move { c.maintenance_client().status().await })
            .await
            .map_err(map_err)?;
        if !progress_is_exact(status.version()) {
            return Ok(None);
        }
        Ok(Some(self.watch_task(prefix, from_revision, false, Some(ask)).await?))
    }

    async fn current_revision(&self) -> Result<i64> {
        let opts = GetOptions::new().with_count_only();
        let prefix = self.limits.prefix.as_str();
        let resp = self
            .read(|mut kv| {
                let opts = opts.clone();
                async move { kv.get(prefix, Some(opts)).await }
            })
            .await
            .map_err(map_err)?;
        header_revision(resp.header())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        match self.write(|mut kv| async move { kv.compact(revision, None).await }).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.map_revision_err(e, revision).await),
        }
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> Result<i64> {
        let resp = self
            .members
            .call(Retry::NotSent, |c| async move { c.lease_client().grant(ttl_seconds, None).await })
            .await
            .map_err(map_err)?;
        if !resp.error().is_empty() {
            return Err(Error::Internal(format!("etcd refused the lease: {}", resp.error())));
        }
        Ok(resp.id())
    }

    async fn revoke_lease(&self, id: i64) -> Result<()> {
        self.members
            .call(Retry::Unavailable, |c| async move { c.lease_client().revoke(id).await })
            .await
            .map_err(|e| map_lease_err(e, id))?;
        Ok(())
    }

    async fn keep_alive(&self, id: i64) -> Result<i64> {
        // etcd-client's keep_alive sends one renewal and consumes its answer (failing when the TTL is
        // <= 0, i.e. the lease is gone) but does not return the TTL; a second renewal on the same
        // stream does. Renewing twice is harmless: both reset the lease to its full TTL.
        let (mut keeper, mut stream) = self
            .members
            .call(Retry::Unavailable, |c| async move { c.lease_client().keep_alive(id).await })
            .await
            .map_err(|e| map_lease_err(e, id))?;
        keeper.keep_alive().await.map_err(|e| map_lease_err(e, id))?;
        let resp =
            stream.message().await.map_err(|e| map_lease_err(e, id))?.ok_or_else(|| {
                Error::Unavailable(format!("etcd closed the keep-alive stream of lease {id}"))
            })?;
        if resp.ttl() <= 0 {
            return Err(Error::LeaseNotFound { id });
        }
        Ok(resp.ttl())
    }
}

impl EtcdStore {
    /// [`Store::watch_progress`] without its version check: progress requests are sent whatever the
    /// etcd version. For tests of the mechanism on an etcd whose answers may overtake their events
    /// under concurrent writes (before 3.4.31/3.5.13); callers that rely on progress use
    /// `watch_progress`.
    pub async fn watch_progress_any_version(
        &self,
        prefix: &str,
        from_revision: i64,
        ask: Arc<tokio::sync::Notify>,
    ) -> Result<crate::ProgressStream> {
        self.watch_task(prefix, from_revision, false, Some(ask)).await
    }

    async fn watch_task(
        &self,
        prefix: &str,
        from_revision: i64,
        prev_kv: bool,
        ask: Option<Arc<tokio::sync::Notify>>,
    ) -> Result<crate::ProgressStream> {
        let start_rev = if from_revision > 0 { from_revision } else { self.current_revision().await? + 1 };
        let (key, range_end) = range_for(prefix, prefix.as_bytes().to_vec());
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
        let task =
            WatchTask { members: self.members.clone(), key, range_end, prev_kv, next_rev: start_rev, ask, tx };
        tokio::spawn(task.run());
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}

/// The background half of [`EtcdStore::watch_revisions`].
struct WatchTask {
    members: Arc<Members>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// Whether events carry the previous value.
    prev_kv: bool,
    /// The lowest revision not yet delivered; a (re)created etcd watch starts here.
    next_rev: i64,
    /// Progress requests from the consumer (`Store::watch_progress`), if it takes progress.
    ask: Option<Arc<tokio::sync::Notify>>,
    tx: mpsc::Sender<Result<crate::WatchItem>>,
}

/// Why one etcd watch stream stopped.
enum StreamEnd {
    /// The consumer is gone or the watch ended for good: stop the task.
    Stop,
    /// The connection failed or etcd went away: re-create the watch from `next_rev`.
    Reconnect,
}

impl WatchTask {
    async fn run(mut self) {
        let mut backoff = WATCH_BACKOFF_MIN;
        loop {
            let mut options = WatchOptions::new()
                .with_range(self.range_end.clone())
                .with_start_revision(self.next_rev)
                .with_progress_notify();
            if self.prev_kv {
                options = options.with_prev_key();
            }
            let (member, client) = self.members.pick();
            let mut watch_client = client.watch_client().max_decoding_message_size(MAX_RESPONSE);
            let create =
                tokio::time::timeout(WATCH_CREATE_TIMEOUT, watch_client.watch(self.key.clone(), Some(options)));
            let attempt = tokio::select! {
                _ = self.tx.closed() => return,
                attempt = create => attempt,
            };
            let end = match attempt {
                Ok(Ok(stream)) => self.pump(stream, &mut backoff).await,
                Ok(Err(e)) => match map_err(e) {
                    e if e.is_retryable() => {
                        let next_rev = self.next_rev;
                        tracing::debug!(error = %e, next_rev, "etcd watch create failed, retrying");
                        StreamEnd::Reconnect
                    }
                    e => {
                        let _ = self.tx.send(Err(e)).await;
                        StreamEnd::Stop
                    }
                },
                Err(_) => StreamEnd::Reconnect,
            };
            if let StreamEnd::Stop = end {
                return;
            }
            // The member failed this watch: the next attempt goes to the next member, if any.
            self.members.failed(member);
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
        }
    }

    /// Forwards one etcd watch stream's events until it ends.
    async fn pump(&mut self, mut stream: etcd_client::WatchStream, backoff: &mut Duration) -> StreamEnd {
        loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => return StreamEnd::Stop,
                msg = stream.message() => msg,
                _ = asked(&self.ask) => {
                    if stream.request_progress().await.is_err() {
                        return StreamEnd::Reconnect;
                    }
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    tracing::debug!(next_rev = self.next_rev, "etcd ended the watch stream, reconnecting");
                    return StreamEnd::Reconnect;
                }
                Err(e) => {
                    let e = map_err(e);
                    if e.is_retryable() {
                        let next_rev = self.next_rev;
                        tracing::debug!(error = %e, next_rev, "etcd watch stream failed, reconnecting");
                        return StreamEnd::Reconnect;
                    }
                    let _ = self.tx.send(Err(e)).await;
                    return StreamEnd::Stop;
                }
            };
            // The server answered, so the connection is healthy again.
            *backoff = WATCH_BACKOFF_MIN;
            if resp.compact_revision() != 0 {
                let err =
                    Error::Compacted { requested: self.next_rev, compact_revision: resp.compact_revision() };
                let _ = self.tx.send(Err(err)).await;
                return StreamEnd::Stop;
            }
            if resp.canceled() {
                let err = Error::Internal(format!("etcd cancelled the watch: {}", resp.cancel_reason()));
                let _ = self.tx.send(Err(err)).await;
                return StreamEnd::Stop;
            }
            if resp.events().is_empty() {
                // A progress notification: etcd sends these only to watchers that have been sent
                // everything up to the header revision, so a later reconnect may start after it.
                if !resp.created() {
                    if let Some(h) = resp.header() {
                        self.next_rev = self.next_rev.max(h.revision() + 1);
                        if self.ask.is_some()
                            && self.tx.send(Ok(crate::WatchItem::Progress(self.next_rev - 1))).await.is_err()
                        {
                            return StreamEnd::Stop;
                        }
                    }
                }
                continue;
            }
            // etcd sends all events of one revision in one response (it splits a response only
            // between revisions, and we never ask for fragments), so each revision goes to the
            // consumer whole, and `next_rev` only ever moves past fully delivered revisions.
            let mut revision: Vec<Event> = Vec::new();
            for ev in resp.events() {
                if ev.kv().is_none() {
                    continue;
                }
                let event = match convert_event(ev) {
                    Ok(event) => event,
                    Err(e) => {
                        let _ = self.tx.send(Err(e)).await;
                        return StreamEnd::Stop;
                    }
                };
                if event.revision() < self.next_rev {
                    // Already delivered before a reconnect.
                    continue;
                }
                if revision.last().is_some_and(|last| last.revision() != event.revision())
                    && !self.deliver(std::mem::take(&mut revision)).await
                {
                    return StreamEnd::Stop;
                }
                revision.push(event);
            }
            if !self.deliver(revision).await {
                return StreamEnd::Stop;
            }
        }
    }

    /// Sends one revision's events and moves `next_rev` past it; false when the consumer is gone.
    async fn deliver(&mut self, revision: Vec<Event>) -> bool {
        let Some(rev) = revision.first().map(Event::revision) else { return true };
        if self.tx.send(Ok(crate::WatchItem::Revision(revision))).await.is_err() {
            return false;
        }
        self.next_rev = self.next_rev.max(rev + 1);
        true
    }
}

/// Whether an etcd server version answers progress requests only after the events they cover:
/// 3.4.31+, 3.5.13+ or 3.6+ (the versions upstream's etcd feature checker accepts for
/// `RequestWatchProgress`; the ordering fix is etcd#15237 and etcd#17557).
fn progress_is_exact(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']).map(|p| p.parse::<u64>().ok());
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match (major, minor) {
        (3, 4) => patch >= 31,
        (3, 5) => patch >= 13,
        (3, m) => m >= 6,
        (m, _) => m > 3,
    }
}

/// Waits for a progress request (forever when the watch takes none).
async fn asked(ask: &Option<Arc<tokio::sync::Notify>>) {
    match ask {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

fn convert_event(ev: &etcd_client::Event) -> Result<Event> {
    let kv = ev.kv().ok_or_else(|| Error::Internal("etcd watch event without a key".into()))?;
    // A live key always has version >= 1 and a delete's tombstone has version 0. Deciding on that
    // avoids etcd-client's `event_type()`, which panics on an unknown event type.
    let kind = if kv.version() == 0 { EventKind::Delete } else { EventKind::Put };
    let mut kv = convert_kv(kv)?;
    if kind == EventKind::Delete {
        kv.value.clear();
    }
    let prev_kv = ev.prev_kv().map(convert_kv).transpose()?;
    Ok(Event { kind, kv, prev_kv })
}

#[cfg(test)]
mod tests {
    use super::progress_is_exact;

    #[test]
    fn progress_only_on_versions_with_ordered_answers() {
        for v in ["3.4.31", "3.4.35", "3.5.13", "3.5.21", "3.6.0", "v3.6.4", "4.0.0"] {
            assert!(progress_is_exact(v), "{v}");
        }
        for v in ["3.4.23", "3.4.30", "3.5.12", "3.3.27", "", "garbage", "3.5"] {
            assert!(!progress_is_exact(v), "{v}");
        }
    }
}
