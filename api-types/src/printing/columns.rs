//! Column definitions per resource, in upstream's order, types and priorities
//! (`pkg/printers/internalversion` `AddHandlers`, Kubernetes 1.33). Priority 1 columns are the ones
//! kubectl shows only with `-o wide`; the server always sends them, as upstream does.

use super::descriptions::*;

/// One `meta.k8s.io/v1` `TableColumnDefinition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// OpenAPI type: `string`, `integer`, `boolean`, `date`.
    pub ty: &'static str,
    /// `name` for the object's name column, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for default output, 1 for `-o wide`.
    pub priority: i32,
}

impl Column {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", description, priority: 0 }
}

const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column { name, ty, format: "", description, priority: 1 }
}

const NAME: Column =
    Column { name: "Name", ty: "string", format: "name", description: OBJECT_META_NAME, priority: 0 };
const AGE: Column = col("Age", "string", OBJECT_META_CREATION_TIMESTAMP);
const CONTAINERS: Column = wide("Containers", "string", "Names of each container in the template.");
const IMAGES: Column = wide("Images", "string", "Images referenced by each container in the template.");

pub(crate) const POD: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", POD_STATUS_POD_IP),
    wide("Node", "string", POD_SPEC_NODE_NAME),
    wide("Nominated Node", "string", POD_STATUS_NOMINATED_NODE_NAME),
    wide("Readiness Gates", "string", POD_SPEC_READINESS_GATES),
];

pub(crate) const REPLICATION_CONTROLLER: &[Column] = &[
    NAME,
    col("Desired", "integer", RC_SPEC_REPLICAS),
    col("Current", "integer", RC_STATUS_REPLICAS),
    col("Ready", "integer", RC_STATUS_READY_REPLICAS),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", RC_SPEC_SELECTOR),
];

pub(crate) const REPLICA_SET: &[Column] = &[
    NAME,
    col("Desired", "integer", RS_SPEC_REPLICAS),
    col("Current", "integer", RS_STATUS_REPLICAS),
    col("Ready", "integer", RS_STATUS_READY_REPLICAS),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", RS_SPEC_SELECTOR),
];

pub(crate) const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", DEPLOYMENT_STATUS_UPDATED_REPLICAS),
    col("Available", "string", DEPLOYMENT_STATUS_AVAILABLE_REPLICAS),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", DEPLOYMENT_SPEC_SELECTOR),
];

pub(crate) const SERVICE: &[Column] = &[
    NAME,
    col("Type", "string", SERVICE_SPEC_TYPE),
    col("Cluster-IP", "string", SERVICE_SPEC_CLUSTER_IP),
    col("External-IP", "string", SERVICE_SPEC_EXTERNAL_IPS),
    col("Port(s)", "string", SERVICE_SPEC_PORTS),
    AGE,
    wide("Selector", "string", SERVICE_SPEC_SELECTOR),
];

pub(crate) const INGRESS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

pub(crate) const INGRESS_CLASS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller that is responsible for handling this class"),
    col("Parameters", "string", "A reference to a resource with additional parameters"),
    AGE,
];

pub(crate) const ENDPOINTS: &[Column] = &[NAME, col("Endpoints", "string", ENDPOINTS_SUBSETS), AGE];

pub(crate) const NODE: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", NODE_INFO_KUBELET_VERSION),
    wide("Internal-IP", "string", NODE_STATUS_ADDRESSES),
    wide("External-IP", "string", NODE_STATUS_ADDRESSES),
    wide("OS-Image", "string", NODE_INFO_OS_IMAGE),
    wide("Kernel-Version", "string", NODE_INFO_KERNEL_VERSION),
    wide("Container-Runtime", "string", NODE_INFO_CONTAINER_RUNTIME_VERSION),
];

pub(crate) const EVENT: &[Column] = &[
    col("Last Seen", "string", EVENT_LAST_TIMESTAMP),
    col("Type", "string", EVENT_TYPE),
    col("Reason", "string", EVENT_REASON),
    col("Object", "string", EVENT_INVOLVED_OBJECT),
    wide("Subobject", "string", OBJECT_REFERENCE_FIELD_PATH),
    wide("Source", "string", EVENT_SOURCE),
    col("Message", "string", EVENT_MESSAGE),
    wide("First Seen", "string", EVENT_FIRST_TIMESTAMP),
    // Upstream declares Count a string column yet fills it with an integer; kept as is.
    wide("Count", "string", EVENT_COUNT),
    Column { name: "Name", ty: "string", format: "name", description: OBJECT_META_NAME, priority: 1 },
];

pub(crate) const NAMESPACE: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

pub(crate) const SECRET: &[Column] =
    &[NAME, col("Type", "string", SECRET_TYPE), col("Data", "string", SECRET_DATA), AGE];

pub(crate) const SERVICE_ACCOUNT: &[Column] = &[NAME, col("Secrets", "string", SERVICE_ACCOUNT_SECRETS), AGE];

pub(crate) const CONFIG_MAP: &[Column] = &[NAME, col("Data", "string", CONFIG_MAP_DATA), AGE];

pub(crate) const COMPONENT_STATUS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the component conditions"),
    col("Message", "string", "Message of the component conditions"),
    col("Error", "string", "Error of the component conditions"),
];

pub(crate) const LEASE: &[Column] = &[NAME, col("Holder", "string", LEASE_SPEC_HOLDER_IDENTITY), AGE];

pub(crate) const ENDPOINT_SLICE: &[Column] = &[
    NAME,
    col("AddressType", "string", ENDPOINT_SLICE_ADDRESS_TYPE),
    col("Ports", "string", ENDPOINT_SLICE_PORTS),
    col("Endpoints", "string", ENDPOINT_SLICE_ENDPOINTS),
    AGE,
];

/// For resources without a dedicated printer.
pub(crate) const DEFAULT: &[Column] = &[NAME, AGE];
