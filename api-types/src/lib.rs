//! kplane's API types: the table of served resources and pure helpers over Kubernetes objects, shared
//! by the API server and the controllers. Built on k8s-openapi (exactly one version feature, `v1_33`,
//! set in the workspace).
//!
//! - `protobuf/`: Kubernetes protobuf request bodies (what kubectl's typed clients send) decoded
//!   into upstream's JSON form, by a field table generated from k8s-pb.
//! - `resources.rs`: the resource table (group, version, kind, plural, etcd prefix, short names,
//!   categories, subresources, field selectors).
//! - `patch/`: JSON patch, JSON merge patch and strategic merge patch, with upstream's errors.
//! - `patchmeta.rs`: upstream's strategic-merge list strategies and merge keys over the schemas.
//! - `printing/`: server-side printing, the `meta.k8s.io/v1` Tables `kubectl get` shows, with
//!   upstream's columns.
//! - `crd/`: CustomResourceDefinitions: served versions interned as resource entries, CRD
//!   validation and status, structural schemas (pruning, defaulting, validation of custom
//!   resources), printer columns (JSONPath), OpenAPI v3 of CRD group-versions.
//! - `events.rs`: core/v1 ⇄ events.k8s.io/v1 Event conversion (one storage, two APIs).
//! - `hpa.rs`: autoscaling/v2 ⇄ autoscaling/v1 HorizontalPodAutoscaler conversion (stored as v2).
//! - `schema.rs`: every served kind's JSON schema, generated from k8s-openapi's types, and a walker.
//! - `openapi.rs`: the `/openapi/v3` index and per-group-version OpenAPI 3.0 documents.
//! - `openapi_v2.rs`: the `/openapi/v2` Swagger 2.0 document (JSON and gnostic's protobuf),
//!   converted from the v3 documents.
//! - `goorder.rs`: objects serialized in upstream's Go struct field order (`kind, apiVersion,
//!   metadata, spec, status` and every nested type of the protobuf table), for responses and storage.
//! - `fieldcheck.rs`: strict field validation (unknown and duplicate fields), as upstream reports it.
//! - `typecheck.rs`: typed decoding by schema — type errors with upstream's wording, unknown fields
//!   pruned, values normalised as Go's types re-emit them (one pass, reusable for CRD schemas).
//! - `selectors/`: label and field selectors (`labelSelector` / `fieldSelector` query parameters and
//!   `metav1.LabelSelector`), parsed, validated, printed and matched as upstream does.
//! - `scheduling.rs`: taints against tolerations, nodeSelector and required node affinity against a
//!   node (shared by the scheduler and the DaemonSet controller).
//!
//! Invariant: this crate does no I/O. Everything here is a function of its arguments.

pub mod apply;
pub mod crd;
pub mod events;
pub mod fieldcheck;
pub mod fuzzing;
pub mod goorder;
pub mod hpa;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod patchmeta;
pub mod printing;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod scheduling;
pub mod schema;
pub mod selectors;
pub mod typecheck;

pub use k8s_openapi;
pub use resources::{Registry, ResourceDef, Subresource, RESOURCES};
pub use selectors::{labels_of, FieldSelector, LabelSelector, SelectorError};

// The protobuf field-table generator (src/protobuf/gen.rs) is shared with an example, where the
// crate is `api_types`; this lets the same file name it so inside the crate's own tests.
#[cfg(test)]
extern crate self as api_types;
