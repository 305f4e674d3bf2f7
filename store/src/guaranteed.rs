//! `guaranteed_update`: upstream's GuaranteedUpdate read-modify-CAS loop, over any [`Store`].

use crate::{Error, KeyValue, Result, Store};

/// Reads `key`, lets `modify` compute the new value from the current one (`None` when absent), and
/// writes it conditioned on the mod_revision it read. On a conflict it reads again and retries, so no
/// concurrent update is lost.
///
/// `modify` returns `Ok(None)` to leave the key as it is (the current value is returned, nothing is
/// written), and an error to stop without writing. It may run several times, so it must not have side
/// effects.
pub async fn guaranteed_update<S, F>(store: &S, key: &str, mut modify: F) -> Result<KeyValue>
where
    S: Store + ?Sized,
    F: FnMut(Option<&KeyValue>) -> Result<Option<Vec<u8>>> + Send,
{
    loop {
        let current = match store.get(key).await {
            Ok(kv) => Some(kv),
            Err(Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let Some(value) = modify(current.as_ref())? else {
            return current.ok_or_else(|| Error::NotFound { key: key.to_string() });
        };
        if let Some(kv) = current.as_ref().filter(|kv| kv.value == value) {
            // Nothing changes: upstream skips the write too, so the resourceVersion stays.
            return Ok(kv.clone());
        }
        let written = match &current {
            None => store.create(key, value, 0).await,
            Some(kv) => store.update(key, value, kv.mod_revision, kv.lease).await,
        };
        match written {
            Ok(kv) => return Ok(kv),
            // Someone else wrote (or created, or deleted) in between: read again and retry.
            Err(Error::Conflict { .. } | Error::AlreadyExists { .. } | Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}
