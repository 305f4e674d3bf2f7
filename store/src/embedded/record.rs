//! The on-disk encoding of one revision-log entry.
//!
//! A hand-written fixed layout rather than a serde format: it is a handful of integers and two byte
//! strings, decoding must never panic on a corrupt page, and the value bytes (already JSON) are copied
//! once, not re-encoded.
//!
//! Layout (little endian): `kind:u8 | create_rev:i64 | version:i64 | lease:i64 | prev_rev:u64 |
//! prev_sub:u32 | key_len:u32 | key | value`.

use crate::{Error, Result};

/// Position of an entry in the log: the revision and, for transactions that write several keys at
/// one revision (etcd's sub-revision), its index within that revision.
pub(crate) type Pos = (u64, u32);

/// "No previous version": the key did not exist before this write.
pub(crate) const NO_POS: Pos = (0, 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Put = 0,
    Delete = 1,
}

/// One entry of the revision log: a put or a delete of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub kind: Kind,
    pub key: String,
    pub value: Vec<u8>,
    pub create_rev: i64,
    pub version: i64,
    pub lease: i64,
    /// Where the previous live version of this key is (for a put that overwrote, or for a delete);
    /// [`NO_POS`] when the key was absent. Reads at an old revision and watch `prev_kv` follow it.
    pub prev: Pos,
}

const HEADER: usize = 1 + 8 + 8 + 8 + 8 + 4 + 4;

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.key.len() + self.value.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.create_rev.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.lease.to_le_bytes());
        out.extend_from_slice(&self.prev.0.to_le_bytes());
        out.extend_from_slice(&self.prev.1.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.value);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record> {
        let corrupt = |what: &str| Error::Internal(format!("corrupt revision-log record: {what}"));
        if bytes.len() < HEADER {
            return Err(corrupt("short header"));
        }
        let kind = match bytes[0] {
            0 => Kind::Put,
            1 => Kind::Delete,
            _ => return Err(corrupt("unknown kind")),
        };
        let i64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            i64::from_le_bytes(b)
        };
        let u32_at = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[at..at + 4]);
            u32::from_le_bytes(b)
        };
        let key_len = u32_at(37) as usize;
        let rest = &bytes[HEADER..];
        if rest.len() < key_len {
            return Err(corrupt("key runs past the end"));
        }
        let key = std::str::from_utf8(&rest[..key_len]).map_err(|_| corrupt("key is not UTF-8"))?;
        Ok(Record {
            kind,
            create_rev: i64_at(1),
            version: i64_at(9),
            lease: i64_at(17),
            prev: (i64_at(25) as u64, u32_at(33)),
            key: key.to_string(),
            value: rest[key_len..].to_vec(),
        })
    }

    /// The record as the key-value it wrote, at `pos`.
    pub fn into_kv(self, pos: Pos) -> crate::KeyValue {
        crate::KeyValue {
            key: self.key,
            value: self.value,
            create_revision: self.create_rev,
            mod_revision: pos.0 as i64,
            version: self.version,
            lease: self.lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let r = Record {
            kind: Kind::Put,
            key: "/registry/pods/default/a".into(),
            value: b"{\"kind\":\"Pod\"}".to_vec(),
            create_rev: 5,
            version: 3,
            lease: 77,
            prev: (9, 2),
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn corrupt_bytes_are_an_error_not_a_panic() {
        let good = Record {
            kind: Kind::Delete,
            key: "k".into(),
            value: vec![],
            create_rev: 0,
            version: 0,
            lease: 0,
            prev: NO_POS,
        }
        .encode();
        for len in 0..good.len() {
            let _ = Record::decode(&good[..len]);
        }
        let mut bad = good.clone();
        bad[0] = 9;
        assert!(Record::decode(&bad).is_err());
        let mut long_key = good;
        long_key[37] = 200;
        assert!(Record::decode(&long_key).is_err());
    }
}
