//! Service IP and node-port allocation, as upstream's service registry does it: ClusterIPs from
//! `--service-cluster-ip-range`, node ports from `--service-node-port-range`, each range persisted in
//! the store as upstream's `RangeAllocation` (`/registry/ranges/serviceips`,
//! `/registry/ranges/servicenodeports`): the range and a bitmap of taken offsets (`data`, the
//! big-endian bytes of an integer whose bit i is offset i, base64 in JSON, as Go's `big.Int.Bytes`).
//! Every change is one `guaranteed_update` (a write at the revision read), so concurrent creates
//! never get the same value. The lower band of a range (upstream's range offset) is left to values
//! asked for by value and used only when the upper one is full. A dynamic pick rotates through the
//! upper band: the first free offset above the highest taken one, wrapping to the band's start when
//! the top is reached, scanning a word at a time — so a freed value is not handed out again at
//! once, and the stored bitmap stays as short as the highest taken offset (upstream starts each
//! scan at a random offset, which makes a /12's `data` ~175 KB from the first Service on, written
//! on every create). A create that fails after allocating releases what it took; a dry run checks
//! and picks but writes nothing.

use std::net::Ipv4Addr;

use api_types::ResourceDef;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};
use crate::AppState;

pub const SERVICE_IPS_KEY: &str = "/registry/ranges/serviceips";
pub const NODE_PORTS_KEY: &str = "/registry/ranges/servicenodeports";

/// An IPv4 range in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub bits: u8,
}

impl std::str::FromStr for Cidr {
    // A String: clap shows it as the flag's error.
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, bits) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let bits: u8 = bits.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{s:?}: prefix length must be between 8 and 30"));
        }
        let mask = u32::MAX << (32 - bits);
        Ok(Cidr { base: Ipv4Addr::from(u32::from(ip) & mask), bits })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.bits)
    }
}

impl Cidr {
    /// Usable addresses: the network and broadcast addresses are never handed out.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - self.bits)) - 2
    }
    /// The n-th usable address, from 1.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + n)
    }
    pub fn offset_of(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(u32::from(self.base))?;
        (off >= 1 && off <= self.size()).then_some(off)
    }
}

/// The two ranges a Service draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    ServiceIps,
    NodePorts,
}

impl Pool {
    fn key(self) -> &'static str {
        match self {
            Pool::ServiceIps => SERVICE_IPS_KEY,
            Pool::NodePorts => NODE_PORTS_KEY,
        }
    }

    fn range(self, st: &AppState) -> String {
        match self {
            Pool::ServiceIps => st.config.service_cidr.to_string(),
            Pool::NodePorts => st.config.node_port_range_text(),
        }
    }

    fn size(self, st: &AppState) -> u32 {
        match self {
            Pool::ServiceIps => st.config.service_cidr.size(),
            Pool::NodePorts => {
                let (lo, hi) = st.config.node_port_range;
                u32::try_from(hi - lo + 1).unwrap_or(0)
            }
        }
    }

    /// The offset of a value (an IP string or a port number), if it is in the range.
    fn offset_of(self, st: &AppState, value: &Value) -> Option<u32> {
        match self {
            Pool::ServiceIps => {
                let ip: Ipv4Addr = value.as_str()?.parse().ok()?;
                st.config.service_cidr.offset_of(ip).map(|n| n - 1)
            }
            Pool::NodePorts => {
                let (lo, hi) = st.config.node_port_range;
                let p = value.as_i64().filter(|p| (lo..=hi).contains(p))?;
                u32::try_from(p - lo).ok()
            }
        }
    }

    fn value_at(self, st: &AppState, offset: u32) -> Value {
        match self {
            Pool::ServiceIps => json!(st.config.service_cidr.nth(offset + 1).to_string()),
            Pool::NodePorts => json!(st.config.node_port_range.0 + i64::from(offset)),
        }
    }

    /// Upstream's `ErrAllocated` for the pool.
    fn taken_message(self) -> &'static str {
        match self {
            Pool::ServiceIps => "provided IP is already allocated",
            Pool::NodePorts => "provided port is already allocated",
        }
    }
}

/// Upstream's `calculateRangeOffset`: the size of the lower band kept for values asked for by value
/// (a sixteenth of the range, at least 16 and at most 256; none in a range smaller than 16).
pub(crate) fn band_offset(size: u32) -> u32 {
    if size < 16 {
        0
    } else {
        (size / 16).clamp(16, 256)
    }
}

/// The taken offsets of one range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bitmap {
    size: u32,
    words: Vec<u64>,
}

impl Bitmap {
    pub(crate) fn new(size: u32) -> Bitmap {
        Bitmap { size, words: vec![0; (size as usize).div_ceil(64)] }
    }

    pub(crate) fn has(&self, i: u32) -> bool {
        i < self.size && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Marks `i`; false if it was taken already (or is outside the range).
    pub(crate) fn set(&mut self, i: u32) -> bool {
        if i >= self.size || self.has(i) {
            return false;
        }
        self.words[(i / 64) as usize] |= 1 << (i % 64);
        true
    }

    /// Frees `i`; false if it was free.
    pub(crate) fn clear(&mut self, i: u32) -> bool {
        if !self.has(i) {
            return false;
        }
        self.words[(i / 64) as usize] &= !(1 << (i % 64));
        true
    }

    #[cfg(test)]
    fn count(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// The first free offset in `[from, to)`, a word at a time.
    fn free_in(&self, from: u32, to: u32) -> Option<u32> {
        let to = to.min(self.size);
        let mut i = from;
        while i < to {
            let word = self.words[(i / 64) as usize] | ((1u64 << (i % 64)) - 1);
            if word != u64::MAX {
                let free = (i / 64) * 64 + (!word).trailing_zeros();
                return (free < to).then_some(free);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }

    /// The highest taken offset.
    fn highest(&self) -> Option<u32> {
        let (i, w) = self.words.iter().enumerate().rev().find(|(_, w)| **w != 0)?;
        Some(u32::try_from(i).ok()? * 64 + 63 - w.leading_zeros())
    }

    /// A free offset, rotating through the upper band `[offset, size)`: the first free one above
    /// the highest taken, else (wrapped) the first free one in the band, else one in the lower band.
    pub(crate) fn pick(&self, offset: u32) -> Option<u32> {
        let offset = offset.min(self.size);
        let start = self.highest().map_or(offset, |h| (h + 1).max(offset)).min(self.size);
        self.free_in(start, self.size)
            .or_else(|| self.free_in(offset, start))
            .or_else(|| self.free_in(0, offset))
    }

    /// Go's `big.Int.Bytes()` of the integer whose bit i is offset i: big-endian, no leading zeros.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.words.iter().rev().flat_map(|w| w.to_be_bytes()).collect();
        let zeros = out.iter().take_while(|b| **b == 0).count();
        out.drain(..zeros);
        out
    }

    /// The inverse of [`Bitmap::to_bytes`]; bits beyond `size` are dropped.
    pub(crate) fn from_bytes(size: u32, bytes: &[u8]) -> Bitmap {
        let mut map = Bitmap::new(size);
        let words = map.words.len();
        for (k, byte) in bytes.iter().rev().enumerate().take(words * 8) {
            map.words[k / 8] |= u64::from(*byte) << ((k % 8) * 8);
        }
        if !size.is_multiple_of(64) {
            if let Some(last) = map.words.last_mut() {
                *last &= (1u64 << (size % 64)) - 1;
            }
        }
        map
    }
}

/// The stored `RangeAllocation`'s bitmap: empty when absent, when it is of another range, or when
/// it does not parse. Earlier kplane versions stored the taken values as an `allocated` list; those
/// are read as well.
fn bitmap_of(st: &AppState, pool: Pool, kv: Option<&store::KeyValue>) -> Bitmap {
    use base64::Engine;
    let size = pool.size(st);
    let Some(doc) = kv.and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()) else {
        return Bitmap::new(size);
    };
    if let Some(list) = doc.get("allocated").and_then(Value::as_array) {
        let mut map = Bitmap::new(size);
        for v in list {
            if let Some(i) = pool.offset_of(st, v) {
                map.set(i);
            }
        }
        return map;
    }
    let range = pool.range(st);
    if doc.get("range").and_then(Value::as_str) != Some(range.as_str()) {
        tracing::warn!(key = pool.key(), range, "the stored allocations are of another range; starting empty");
        return Bitmap::new(size);
    }
    let data = doc.get("data").and_then(Value::as_str).unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(data) {
        Ok(bytes) => Bitmap::from_bytes(size, &bytes),
        Err(e) => {
            tracing::warn!(key = pool.key(), error = %e, "the stored allocation bitmap does not decode; starting empty");
            Bitmap::new(size)
        }
    }
}

fn range_doc(range: &str, map: &Bitmap) -> Vec<u8> {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(map.to_bytes());
    let doc = json!({
        "kind": "RangeAllocation", "apiVersion": "v1", "metadata": {"creationTimestamp": null},
        "range": range, "data": data,
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Why nothing could be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NotTaken {
    /// The value asked for is taken (upstream's `ErrAllocated`).
    Allocated,
    /// No value is free (upstream's `ErrFull`, "range is full").
    Full,
}

/// Takes the value at offset `want`, or a free one, in one write at the revision read (none in a
/// dry run). Returns the offset taken.
async fn take(st: &AppState, pool: Pool, want: Option<u32>, dry_run: bool) -> ApiResult<Result<u32, NotTaken>> {
    let range = pool.range(st);
    let mut chosen = Err(NotTaken::Full);
    let written = store::guaranteed_update(st.store.as_ref(), pool.key(), |cur| {
        let mut map = bitmap_of(st, pool, cur);
        let pick = match want {
            Some(i) => Some(i).filter(|i| !map.has(*i)).ok_or(NotTaken::Allocated),
            None => map.pick(band_offset(map.size)).ok_or(NotTaken::Full),
        };
        chosen = pick;
        match pick {
            Ok(i) if !dry_run => {
                map.set(i);
                Ok(Some(range_doc(&range, &map)))
            }
            _ => Ok(None),
        }
    })
    .await;
    match written {
        // Nothing was written to a range that was never stored (nothing taken, or a dry run).
        Ok(_) | Err(store::Error::NotFound { .. }) => Ok(chosen),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Frees the value at `offset`.
async fn release(st: &AppState, pool: Pool, offset: u32) -> ApiResult<()> {
    let range = pool.range(st);
    let done = store::guaranteed_update(st.store.as_ref(), pool.key(), |cur| {
        let mut map = bitmap_of(st, pool, cur);
        Ok(map.clear(offset).then(|| range_doc(&range, &map)))
    })
    .await;
    match done {
        Ok(_) | Err(store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// What a create took, to give back if it fails.
#[derive(Debug, Default)]
pub struct Allocation {
    taken: Vec<(Pool, u32)>,
}

impl Allocation {
    pub async fn release(self, st: &AppState) {
        for (pool, offset) in self.taken {
            if let Err(e) = release(st, pool, offset).await {
                let value = pool.value_at(st, offset);
                tracing::warn!(%value, error = %e.message, "could not release a service IP or node port");
            }
        }
    }
}

/// Sets `obj.spec.<field>`, making `spec` an object first if a client sent something else.
fn set_spec(obj: &mut Value, field: &str, value: Value) {
    crate::meta::set_path(obj, &["spec", field], value);
}

/// Allocates a new Service's ClusterIP and node ports (on update, only what the old one lacked).
/// A dry run checks and picks the same way but keeps nothing.
pub async fn allocate(
    st: &AppState,
    res: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> ApiResult<Allocation> {
    let mut took = Allocation::default();
    if res.kind != "Service" {
        return Ok(took);
    }
    match allocate_into(st, res, obj, old, dry_run, &mut took).await {
        Ok(()) if dry_run => Ok(Allocation::default()),
        Ok(()) => Ok(took),
        Err(e) => {
            took.release(st).await;
            Err(e)
        }
    }
}

async fn allocate_into(
    st: &AppState,
    res: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
    took: &mut Allocation,
) -> ApiResult<()> {
    let name = crate::meta::name(obj).unwrap_or("").to_string();
    let ty = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    let cidr = st.config.service_cidr;
    if ty != "ExternalName" && old.is_none() {
        let requested = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        match requested.as_deref() {
            Some("None") => set_spec(obj, "clusterIPs", json!(["None"])),
            Some(ip) => {
                let Some(offset) = Pool::ServiceIps.offset_of(st, &json!(ip)) else {
                    return Err(ApiError::invalid(res, &name, vec![Cause::invalid(
                        "spec.clusterIPs[0]",
                        format!("\"{ip}\""),
                        &format!("failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {cidr}"),
                    )]));
                };
                match take(st, Pool::ServiceIps, Some(offset), dry_run).await? {
                    Ok(i) => took.taken.push((Pool::ServiceIps, i)),
                    Err(why) => {
                        let why = match why {
                            NotTaken::Allocated => Pool::ServiceIps.taken_message(),
                            NotTaken::Full => "range is full",
                        };
                        return Err(ApiError::invalid(
                            res,
                            &name,
                            vec![Cause::invalid(
                                "spec.clusterIPs",
                                format!("[]string{{\"{ip}\"}}"),
                                &format!("failed to allocate IP {ip}: {why}"),
                            )],
                        ));
                    }
                }
                set_spec(obj, "clusterIPs", json!([ip]));
            }
            None => match take(st, Pool::ServiceIps, None, dry_run).await? {
                Ok(i) => {
                    took.taken.push((Pool::ServiceIps, i));
                    let ip = Pool::ServiceIps.value_at(st, i);
                    set_spec(obj, "clusterIP", ip.clone());
                    set_spec(obj, "clusterIPs", json!([ip]));
                }
                Err(_) => return Err(ApiError::internal("failed to allocate a serviceIP: range is full")),
            },
        }
        if obj.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None") || requested.is_some() {
            set_spec(obj, "ipFamilies", json!(["IPv4"]));
            set_spec(obj, "ipFamilyPolicy", json!("SingleStack"));
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let (lo, hi) = st.config.node_port_range;
        let kept_ports: Vec<i64> = old
            .and_then(|o| o.pointer("/spec/ports").and_then(Value::as_array))
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
            .collect();
        let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else { return Ok(()) };
        for (i, port) in ports.iter_mut().enumerate() {
            let existing = port.get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0);
            if existing.is_some_and(|p| kept_ports.contains(&p)) {
                continue;
            }
            let Some(port) = port.as_object_mut() else { continue };
            let want = match existing {
                Some(p) => match Pool::NodePorts.offset_of(st, &json!(p)) {
                    Some(offset) => Some(offset),
                    None => {
                        return Err(ApiError::invalid(res, &name, vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            p,
                            &format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                        )]));
                    }
                },
                None => None,
            };
            match take(st, Pool::NodePorts, want, dry_run).await? {
                Ok(offset) => {
                    took.taken.push((Pool::NodePorts, offset));
                    port.insert("nodePort".into(), Pool::NodePorts.value_at(st, offset));
                }
                Err(NotTaken::Allocated) => {
                    return Err(ApiError::invalid(
                        res,
                        &name,
                        vec![Cause::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            existing.unwrap_or_default(),
                            Pool::NodePorts.taken_message(),
                        )],
                    ));
                }
                Err(NotTaken::Full) => {
                    return Err(ApiError::internal("failed to allocate a nodePort: range is full"));
                }
            }
        }
    }
    Ok(())
}

/// Releases a deleted Service's IP and node ports.
pub async fn after_delete(st: &AppState, res: &ResourceDef, old: &Value) {
    if res.kind != "Service" {
        return;
    }
    let mut took = Allocation::default();
    if let Some(i) = old.pointer("/spec/clusterIP").and_then(|ip| Pool::ServiceIps.offset_of(st, ip)) {
        took.taken.push((Pool::ServiceIps, i));
    }
    for p in old.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        if let Some(i) = p.get("nodePort").and_then(|n| Pool::NodePorts.offset_of(st, n)) {
            took.taken.push((Pool::NodePorts, i));
        }
    }
    took.release(st).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_rotates_through_the_upper_band_then_fills_up() {
        let mut map = Bitmap::new(300);
        let offset = band_offset(300);
        assert_eq!(offset, 18);
        assert!(map.set(9), "a static value in the lower band");
        for want in offset..100 {
            assert_eq!(map.pick(offset), Some(want));
            assert!(map.set(want));
        }
        // A freed value is not reused at once: the pick goes on above the highest taken.
        assert!(map.clear(50));
        assert_eq!(map.pick(offset), Some(100));
        for _ in 100..300 {
            let i = map.pick(offset).unwrap();
            assert!(map.set(i));
        }
        // At the top it wraps to the band's start, then takes the lower band.
        assert_eq!(map.pick(offset), Some(50));
        assert!(map.set(50));
        for _ in 0..offset - 1 {
            let i = map.pick(offset).unwrap();
            assert!(i < offset);
            assert!(map.set(i));
        }
        assert_eq!((map.count(), map.pick(offset)), (300, None));
        assert!(map.clear(140) && !map.clear(140));
        assert_eq!(map.pick(offset), Some(140));
        assert!(!map.set(300) && !map.has(300), "outside the range");
    }

    #[test]
    fn bitmap_bytes_are_go_big_int_bytes() {
        let mut map = Bitmap::new(1000);
        assert!(map.to_bytes().is_empty());
        map.set(0);
        map.set(9);
        assert_eq!(map.to_bytes(), vec![0x02, 0x01]);
        map.set(999);
        let bytes = map.to_bytes();
        assert_eq!(bytes.len(), 125);
        assert_eq!(Bitmap::from_bytes(1000, &bytes), map);
        // Bits past a (smaller) range are dropped.
        assert_eq!(Bitmap::from_bytes(10, &bytes).count(), 2);
    }

    #[test]
    fn band_offsets_are_upstreams() {
        assert_eq!(band_offset(14), 0);
        assert_eq!(band_offset(254), 16);
        assert_eq!(band_offset(2768), 173);
        assert_eq!(band_offset((1 << 20) - 2), 256);
    }
}
