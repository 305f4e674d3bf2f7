//! The transaction model shared by the [`crate::Store`] operations and the etcd endpoint: etcd's
//! `Txn` — compares, then a success or failure branch of ranges, puts and deletes. Every write the
//! embedded store does is one of these, run by the writer thread (`writer.rs`).

use crate::KeyValue;

/// etcd's `Compare`, on a single key.
#[derive(Clone, Debug)]
pub struct Compare {
    pub key: Vec<u8>,
    pub target: CompareTarget,
    pub result: CompareResult,
}

/// What a compare looks at and the value it compares with.
#[derive(Clone, Debug)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Value(Vec<u8>),
    Lease(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// A read of one key or a key range, as etcd's `RangeRequest`.
#[derive(Clone, Debug, Default)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    /// Empty: just `key`. `[0]`: every key >= `key`. Otherwise the exclusive end.
    pub range_end: Vec<u8>,
    /// 0 for the latest revision.
    pub revision: i64,
    /// 0 for no limit.
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
    /// Do not count the whole range: `count` is then only the returned keys, `more` stays exact.
    /// For the continue pages of a list whose first page counted (at one revision the count cannot
    /// change), so a paged list costs its pages, not a scan of the range per page.
    pub skip_count: bool,
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Keys in range at that revision, ignoring the limit.
    pub count: i64,
    /// True when the limit cut the answer short.
    pub more: bool,
    /// The revision the range was read at.
    pub revision: i64,
}

/// One operation of a transaction branch.
#[derive(Clone, Debug)]
pub enum TxnOp {
    Range(RangeRequest),
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    /// Deletes `key`, or the range [`key`, `range_end`) with etcd's `range_end` conventions.
    Delete {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

/// What one [`TxnOp`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResult {
    Range(RangeResult),
    Put { prev: Option<KeyValue>, kv: KeyValue },
    Delete { deleted: Vec<KeyValue> },
}

/// etcd's `TxnRequest`. A plain put is a transaction with no compares and one put.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

/// The answer to a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after the transaction (the transaction's own revision if it wrote).
    pub revision: i64,
    pub results: Vec<OpResult>,
}

impl Compare {
    /// etcd's rules: a compare on a missing key sees zero for every number, and a value compare on a
    /// missing key is false.
    pub(crate) fn holds(&self, current: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ordering: Ordering = match (&self.target, current) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(want), Some(kv)) => kv.value.as_slice().cmp(want.as_slice()),
            (CompareTarget::Version(want), kv) => kv.map_or(0, |kv| kv.version).cmp(want),
            (CompareTarget::CreateRevision(want), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(want),
            (CompareTarget::ModRevision(want), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(want),
            (CompareTarget::Lease(want), kv) => kv.map_or(0, |kv| kv.lease).cmp(want),
        };
        match self.result {
            CompareResult::Equal => ordering == Ordering::Equal,
            CompareResult::NotEqual => ordering != Ordering::Equal,
            CompareResult::Less => ordering == Ordering::Less,
            CompareResult::Greater => ordering == Ordering::Greater,
        }
    }
}

impl Txn {
    /// `If(mod_revision(key) == rev) Then(ops) Else(Get(key))`: the shape of every conditional write
    /// the API server makes, with rev 0 meaning "absent".
    pub(crate) fn if_mod_revision(key: &str, rev: i64, then: TxnOp) -> Txn {
        Txn {
            compares: vec![Compare {
                key: key.as_bytes().to_vec(),
                target: CompareTarget::ModRevision(rev),
                result: CompareResult::Equal,
            }],
            success: vec![then],
            failure: vec![TxnOp::Range(RangeRequest { key: key.as_bytes().to_vec(), ..Default::default() })],
        }
    }
}
