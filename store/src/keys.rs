//! Key and value rules shared by every backend, so both reject the same writes with the same error.

use crate::{Error, Result};

/// Upstream kube-apiserver's `--etcd-prefix`, with the separator.
pub const DEFAULT_PREFIX: &str = "/registry/";

/// Upstream's per-object limit: etcd's default `--max-request-bytes` is 1.5 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;

/// The longest lease TTL, in seconds: etcd's `MaxLeaseTTL` (over 285 years); a longer grant is
/// refused, as etcd refuses it with "etcdserver: too large lease TTL".
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// What a store accepts for writes.
#[derive(Clone, Debug)]
pub struct StoreLimits {
    /// Every written key must start with this prefix.
    pub prefix: String,
    /// Values larger than this are refused with [`Error::ValueTooLarge`].
    pub max_value_bytes: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits { prefix: DEFAULT_PREFIX.to_string(), max_value_bytes: DEFAULT_MAX_VALUE_BYTES }
    }
}

impl StoreLimits {
    /// Checks a key about to be written.
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.len() <= self.prefix.len() || !key.starts_with(&self.prefix) {
            return Err(Error::InvalidKey {
                key: key.to_string(),
                reason: format!("keys must start with {:?} and name something under it", self.prefix),
            });
        }
        if key.contains('\0') {
            return Err(Error::InvalidKey { key: key.to_string(), reason: "keys must not contain NUL".into() });
        }
        Ok(())
    }

    /// Checks a key and value about to be written.
    pub fn check_write(&self, key: &str, value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        if value.len() > self.max_value_bytes {
            return Err(Error::ValueTooLarge {
                key: key.to_string(),
                size: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

/// The smallest key greater than every key with this prefix (etcd's `range_end` for a prefix).
/// An empty result means "no upper bound".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }

    #[test]
    fn keys_outside_the_prefix_are_refused() {
        let limits = StoreLimits::default();
        assert!(limits.check_key("/registry/pods/default/a").is_ok());
        assert!(matches!(limits.check_key("/other/a"), Err(Error::InvalidKey { .. })));
        assert!(matches!(limits.check_key("/registry/"), Err(Error::InvalidKey { .. })));
        let big = vec![0u8; DEFAULT_MAX_VALUE_BYTES + 1];
        assert!(matches!(limits.check_write("/registry/a", &big), Err(Error::ValueTooLarge { .. })));
    }
}
