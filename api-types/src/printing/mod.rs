//! Server-side printing: the `meta.k8s.io/v1` `Table` kube-apiserver returns for
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, which is what `kubectl get` prints.
//!
//! Columns and cells follow upstream's `pkg/printers/internalversion` (Kubernetes 1.33) exactly,
//! with the server's fixed `Wide: true` (priority-1 columns always sent; kubectl hides them unless
//! `-o wide`). Objects are the stored JSON; a missing or mistyped field reads as Go's zero value, and
//! fields upstream's decoding defaults (replicas, service type, port protocol...) read as that default,
//! so the cells equal what upstream shows for the same stored bytes.
//!
//! - `columns.rs` / `descriptions.rs`: column definitions.
//! - `pods.rs`, `workloads.rs`, `network.rs`, `cluster.rs`, `batch.rs`, `admin.rs`: one row function per
//!   resource.
//! - `duration.rs`: upstream's `HumanDuration` family.
//! - `json.rs`: tolerant field readers and label/selector formatting.

mod admin;
mod batch;
mod cluster;
mod columns;
mod custom;
mod descriptions;
mod duration;
mod json;
mod network;
mod pods;
mod stream;
mod workloads;

#[cfg(test)]
mod tests;

use crate::resources::ResourceDef;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

pub use columns::Column;
pub use duration::{human_duration, short_human_duration};
pub use stream::{decode_for_row, TableWriter};

/// The `includeObject` query parameter: what each row's `object` carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object: `"object": null`.
    None,
    /// A `PartialObjectMetadata` holding the object's metadata (upstream's default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter as upstream validates it: `None`, `Metadata`, `Object`, or empty
    /// (the default). Anything else is `None` here, which the caller turns into upstream's 400
    /// ("must be 'Metadata', 'Object', 'None', or empty").
    pub fn from_query(value: &str) -> Option<Self> {
        match value {
            "None" => Some(IncludeObject::None),
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IncludeObject::None => "None",
            IncludeObject::Metadata => "Metadata",
            IncludeObject::Object => "Object",
        }
    }
}

/// How to build a table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableOptions {
    /// The instant ages are measured from. Passed in (not read from the clock) so this crate stays
    /// free of I/O and printing is deterministic under test.
    pub now: Timestamp,
    pub include_object: IncludeObject,
    /// `TableOptions.noHeaders`: omit the column definitions (kubectl sets it on watch continuations).
    pub no_headers: bool,
}

impl TableOptions {
    /// Upstream's defaults: metadata objects, with headers.
    pub fn new(now: Timestamp) -> Self {
        TableOptions { now, include_object: IncludeObject::default(), no_headers: false }
    }
}

/// One printed row, before its `object` is attached.
#[derive(Debug, Default)]
pub(crate) struct Row {
    cells: Vec<Value>,
    /// `TableRowCondition`s; only finished pods carry one.
    conditions: Vec<Value>,
}

impl Row {
    fn new(cells: Vec<Value>) -> Self {
        Row { cells, conditions: Vec::new() }
    }
}

/// Which upstream print handler serves a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Printer {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    Deployment,
    ReplicaSet,
    ReplicationController,
    Node,
    Namespace,
    Ingress,
    IngressClass,
    CoreEvent,
    EventsV1Event,
    Lease,
    ConfigMap,
    Secret,
    ServiceAccount,
    ComponentStatus,
    Job,
    CronJob,
    StatefulSet,
    DaemonSet,
    ControllerRevision,
    PodDisruptionBudget,
    HorizontalPodAutoscaler,
    NetworkPolicy,
    IPAddress,
    ServiceCIDR,
    PersistentVolume,
    PersistentVolumeClaim,
    ResourceQuota,
    LimitRange,
    PodTemplate,
    StorageClass,
    CsiDriver,
    CsiNode,
    CsiStorageCapacity,
    VolumeAttachment,
    PriorityClass,
    RuntimeClass,
    MutatingWebhookConfiguration,
    ValidatingWebhookConfiguration,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    CertificateSigningRequest,
    FlowSchema,
    PriorityLevelConfiguration,
    ApiService,
    Default,
}

impl Printer {
    fn of(res: &ResourceDef) -> Self {
        match (res.group, res.kind) {
            ("", "Pod") => Printer::Pod,
            ("", "Service") => Printer::Service,
            ("", "Endpoints") => Printer::Endpoints,
            ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
            ("apps", "Deployment") => Printer::Deployment,
            ("apps", "ReplicaSet") => Printer::ReplicaSet,
            ("", "ReplicationController") => Printer::ReplicationController,
            ("", "Node") => Printer::Node,
            ("", "Namespace") => Printer::Namespace,
            ("networking.k8s.io", "Ingress") => Printer::Ingress,
            ("networking.k8s.io", "IngressClass") => Printer::IngressClass,
            ("", "Event") => Printer::CoreEvent,
            ("events.k8s.io", "Event") => Printer::EventsV1Event,
            ("coordination.k8s.io", "Lease") => Printer::Lease,
            ("", "ConfigMap") => Printer::ConfigMap,
            ("", "Secret") => Printer::Secret,
            ("", "ServiceAccount") => Printer::ServiceAccount,
            ("", "ComponentStatus") => Printer::ComponentStatus,
            ("batch", "Job") => Printer::Job,
            ("batch", "CronJob") => Printer::CronJob,
            ("apps", "StatefulSet") => Printer::StatefulSet,
            ("apps", "DaemonSet") => Printer::DaemonSet,
            ("apps", "ControllerRevision") => Printer::ControllerRevision,
            ("policy", "PodDisruptionBudget") => Printer::PodDisruptionBudget,
            ("autoscaling", "HorizontalPodAutoscaler") => Printer::HorizontalPodAutoscaler,
            ("networking.k8s.io", "NetworkPolicy") => Printer::NetworkPolicy,
            ("networking.k8s.io", "IPAddress") => Printer::IPAddress,
            ("networking.k8s.io", "ServiceCIDR") => Printer::ServiceCIDR,
            ("", "PersistentVolume") => Printer::PersistentVolume,
            ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
            ("", "ResourceQuota") => Printer::ResourceQuota,
            ("", "LimitRange") => Printer::LimitRange,
            ("", "PodTemplate") => Printer::PodTemplate,
            ("storage.k8s.io", "StorageClass") => Printer::StorageClass,
            ("storage.k8s.io", "CSIDriver") => Printer::CsiDriver,
            ("storage.k8s.io", "CSINode") => Printer::CsiNode,
            ("storage.k8s.io", "CSIStorageCapacity") => Printer::CsiStorageCapacity,
            ("storage.k8s.io", "VolumeAttachment") => Printer::VolumeAttachment,
            ("scheduling.k8s.io", "PriorityClass") => Printer::PriorityClass,
            ("node.k8s.io", "RuntimeClass") => Printer::RuntimeClass,
            ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
                Printer::MutatingWebhookConfiguration
            }
            ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
                Printer::ValidatingWebhookConfiguration
            }
            ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => Printer::ValidatingAdmissionPolicy,
            ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
                Printer::ValidatingAdmissionPolicyBinding
            }
            ("certificates.k8s.io", "CertificateSigningRequest") => Printer::CertificateSigningRequest,
            ("flowcontrol.apiserver.k8s.io", "FlowSchema") => Printer::FlowSchema,
            ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
                Printer::PriorityLevelConfiguration
            }
            ("apiregistration.k8s.io", "APIService") => Printer::ApiService,
            _ => Printer::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => columns::POD,
            Printer::Service => columns::SERVICE,
            Printer::Endpoints => columns::ENDPOINTS,
            Printer::EndpointSlice => columns::ENDPOINT_SLICE,
            Printer::Deployment => columns::DEPLOYMENT,
            Printer::ReplicaSet => columns::REPLICA_SET,
            Printer::ReplicationController => columns::REPLICATION_CONTROLLER,
            Printer::Node => columns::NODE,
            Printer::Namespace => columns::NAMESPACE,
            Printer::Ingress => columns::INGRESS,
            Printer::IngressClass => columns::INGRESS_CLASS,
            Printer::CoreEvent | Printer::EventsV1Event => columns::EVENT,
            Printer::Lease => columns::LEASE,
            Printer::ConfigMap => columns::CONFIG_MAP,
            Printer::Secret => columns::SECRET,
            Printer::ServiceAccount => columns::SERVICE_ACCOUNT,
            Printer::ComponentStatus => columns::COMPONENT_STATUS,
            Printer::Job => columns::JOB,
            Printer::CronJob => columns::CRON_JOB,
            Printer::StatefulSet => columns::STATEFUL_SET,
            Printer::DaemonSet => columns::DAEMON_SET,
            Printer::ControllerRevision => columns::CONTROLLER_REVISION,
            Printer::PodDisruptionBudget => columns::POD_DISRUPTION_BUDGET,
            Printer::HorizontalPodAutoscaler => columns::HORIZONTAL_POD_AUTOSCALER,
            Printer::NetworkPolicy => columns::NETWORK_POLICY,
            Printer::IPAddress => columns::IP_ADDRESS,
            Printer::ServiceCIDR => columns::SERVICE_CIDR,
            Printer::PersistentVolume => columns::PERSISTENT_VOLUME,
            Printer::PersistentVolumeClaim => columns::PERSISTENT_VOLUME_CLAIM,
            Printer::ResourceQuota => columns::RESOURCE_QUOTA,
            Printer::LimitRange => columns::LIMIT_RANGE,
            Printer::PodTemplate => columns::POD_TEMPLATE,
            Printer::StorageClass => columns::STORAGE_CLASS,
            Printer::CsiDriver => columns::CSI_DRIVER,
            Printer::CsiNode => columns::CSI_NODE,
            Printer::CsiStorageCapacity => columns::CSI_STORAGE_CAPACITY,
            Printer::VolumeAttachment => columns::VOLUME_ATTACHMENT,
            Printer::PriorityClass => columns::PRIORITY_CLASS,
            Printer::RuntimeClass => columns::RUNTIME_CLASS,
            Printer::MutatingWebhookConfiguration => columns::WEBHOOK_CONFIGURATION,
            Printer::ValidatingWebhookConfiguration => columns::WEBHOOK_CONFIGURATION,
            Printer::ValidatingAdmissionPolicy => columns::VALIDATING_ADMISSION_POLICY,
            Printer::ValidatingAdmissionPolicyBinding => columns::VALIDATING_ADMISSION_POLICY_BINDING,
            Printer::CertificateSigningRequest => columns::CERTIFICATE_SIGNING_REQUEST,
            Printer::FlowSchema => columns::FLOW_SCHEMA,
            Printer::PriorityLevelConfiguration => columns::PRIORITY_LEVEL_CONFIGURATION,
            Printer::ApiService => columns::API_SERVICE,
            Printer::Default => columns::DEFAULT,
        }
    }

    fn row(self, v: &Value, now: Timestamp) -> Row {
        match self {
            Printer::Pod => pods::pod_row(v, now),
            Printer::Service => network::service_row(v, now),
            Printer::Endpoints => network::endpoints_row(v, now),
            Printer::EndpointSlice => network::endpoint_slice_row(v, now),
            Printer::Deployment => workloads::deployment_row(v, now),
            Printer::ReplicaSet => workloads::replica_set_row(v, now),
            Printer::ReplicationController => workloads::replication_controller_row(v, now),
            Printer::Node => cluster::node_row(v, now),
            Printer::Namespace => cluster::namespace_row(v, now),
            Printer::Ingress => network::ingress_row(v, now),
            Printer::IngressClass => network::ingress_class_row(v, now),
            Printer::CoreEvent => cluster::core_event_row(v, now),
            Printer::EventsV1Event => cluster::events_v1_event_row(v, now),
            Printer::Lease => cluster::lease_row(v, now),
            Printer::ConfigMap => cluster::config_map_row(v, now),
            Printer::Secret => cluster::secret_row(v, now),
            Printer::ServiceAccount => cluster::service_account_row(v, now),
            Printer::ComponentStatus => cluster::component_status_row(v),
            Printer::Job => batch::job_row(v, now),
            Printer::CronJob => batch::cron_job_row(v, now),
            Printer::StatefulSet => batch::stateful_set_row(v, now),
            Printer::DaemonSet => batch::daemon_set_row(v, now),
            Printer::ControllerRevision => batch::controller_revision_row(v, now),
            Printer::PodDisruptionBudget => batch::pod_disruption_budget_row(v, now),
            // Upstream prints the internal form: autoscaling/v1 objects are printed as their v2 form.
            Printer::HorizontalPodAutoscaler if v["apiVersion"] == "autoscaling/v1" => {
                batch::horizontal_pod_autoscaler_row(&crate::hpa::from_v1(v), now)
            }
            Printer::HorizontalPodAutoscaler => batch::horizontal_pod_autoscaler_row(v, now),
            Printer::NetworkPolicy => admin::network_policy_row(v, now),
            Printer::IPAddress => admin::ip_address_row(v),
            Printer::ServiceCIDR => admin::service_cidr_row(v, now),
            Printer::PersistentVolume => admin::persistent_volume_row(v, now),
            Printer::PersistentVolumeClaim => admin::persistent_volume_claim_row(v, now),
            Printer::ResourceQuota => admin::resource_quota_row(v, now),
            Printer::LimitRange => admin::limit_range_row(v),
            Printer::PodTemplate => admin::pod_template_row(v),
            Printer::StorageClass => admin::storage_class_row(v, now),
            Printer::CsiDriver => admin::csi_driver_row(v, now),
            Printer::CsiNode => admin::csi_node_row(v, now),
            Printer::CsiStorageCapacity => admin::csi_storage_capacity_row(v),
            Printer::VolumeAttachment => admin::volume_attachment_row(v, now),
            Printer::PriorityClass => admin::priority_class_row(v, now),
            Printer::RuntimeClass => admin::runtime_class_row(v, now),
            Printer::MutatingWebhookConfiguration => admin::webhook_configuration_row(v, now),
            Printer::ValidatingWebhookConfiguration => admin::webhook_configuration_row(v, now),
            Printer::ValidatingAdmissionPolicy => admin::validating_admission_policy_row(v, now),
            Printer::ValidatingAdmissionPolicyBinding => admin::validating_admission_policy_binding_row(v, now),
            Printer::CertificateSigningRequest => admin::certificate_signing_request_row(v, now),
            Printer::FlowSchema => admin::flow_schema_row(v, now),
            Printer::PriorityLevelConfiguration => admin::priority_level_configuration_row(v, now),
            Printer::ApiService => admin::api_service_row(v, now),
            Printer::Default => cluster::default_row(v, now),
        }
    }
}

/// The column definitions served for a resource, wide ones included.
pub fn columns(res: &ResourceDef) -> &'static [Column] {
    Printer::of(res).columns()
}

/// The `meta.k8s.io/v1` `Table` for `objects` (one for a get, many for a list), each a stored object
/// of `res`'s kind. `metadata` is left empty for the caller to fill (`resourceVersion`, `continue`,
/// `remainingItemCount`), as upstream copies the list's metadata there.
pub fn table(res: &ResourceDef, objects: &[Value], opts: &TableOptions) -> Value {
    if let Some(cr) = crate::crd::custom(res) {
        return custom::table(cr, objects, opts);
    }
    let printer = Printer::of(res);
    // Upstream's Table has no omitempty on columnDefinitions, so "no headers" serializes as null.
    let column_definitions = if opts.no_headers {
        Value::Null
    } else {
        Value::Array(printer.columns().iter().map(Column::to_json).collect())
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let row = printer.row(obj, opts.now);
            let mut out = Map::new();
            out.insert("cells".to_string(), Value::Array(row.cells));
            if !row.conditions.is_empty() {
                out.insert("conditions".to_string(), Value::Array(row.conditions));
            }
            // `object` is a RawExtension (a struct) upstream, so omitempty never drops it: None is null.
            out.insert("object".to_string(), row_object(obj, opts.include_object));
            Value::Object(out)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").filter(|m| m.is_object()).cloned().unwrap_or_else(|| json!({})),
        }),
    }
}
