//! X-ray: shows where a request goes through the cluster and where every object it touches lives
//! in the store.
//!
//! - [`route`] follows a request (by Ingress host and path, by Service, or by URL) through the
//!   objects that decide its path, and says plainly where a hop is missing; [`probe`] really sends
//!   one along that path.
//! - [`etcd`] draws the `/registry` tree and streams writes live.
//! - [`web`] serves the live topology page that `kplane up` offers.
//!
//! Everything here reads the cluster through the API (or, for [`etcd`], the store's etcd
//! endpoint); nothing writes.

pub mod etcd;
pub mod probe;
pub mod render;
pub mod route;
pub mod web;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// Where one object lives: its `/registry` key, the revision that last wrote it, and who wrote it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The upstream etcd key, e.g. `/registry/services/specs/default/nginx-svc`.
    pub key: String,
    /// The object's resourceVersion, which is the key's etcd mod_revision.
    pub mod_revision: i64,
    /// The last writer, from the newest `managedFields` entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<Writer>,
}

/// One `managedFields` entry, reduced to who did what when.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Writer {
    pub manager: String,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl Stored {
    /// Describes an object of the resource `plural` in `group` (`""` for core) from its metadata.
    /// `None` when kplane does not store that resource.
    pub fn of(group: &str, plural: &str, meta: &ObjectMeta) -> Option<Stored> {
        let def = api_types::resources::RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural && !r.etcd_prefix.is_empty())?;
        let name = meta.name.clone().unwrap_or_default();
        let namespace = if def.namespaced { meta.namespace.clone() } else { None };
        Some(Stored {
            kind: def.kind.to_string(),
            key: def.key(namespace.as_deref(), &name),
            namespace,
            name,
            mod_revision: meta.resource_version.as_deref().and_then(|rv| rv.parse().ok()).unwrap_or(0),
            writer: last_writer(meta),
        })
    }
}

/// The newest `managedFields` entry: the component (or user's tool) that last changed the object.
pub fn last_writer(meta: &ObjectMeta) -> Option<Writer> {
    let entries = meta.managed_fields.as_ref()?;
    let newest = entries.iter().enumerate().max_by(|(ia, a), (ib, b)| {
        // RFC 3339 times in UTC order as strings; later entries win ties.
        let ta = a.time.as_ref().map(|t| t.0);
        let tb = b.time.as_ref().map(|t| t.0);
        ta.cmp(&tb).then(ia.cmp(ib))
    })?;
    let e = newest.1;
    Some(Writer {
        manager: e.manager.clone().unwrap_or_else(|| "unknown".into()),
        operation: e.operation.clone().unwrap_or_default(),
        subresource: e.subresource.clone().filter(|s| !s.is_empty()),
        time: e.time.as_ref().map(|t| t.0.to_string()),
    })
}
