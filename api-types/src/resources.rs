//! The resource table: every resource kplane serves, described once. The API server's routes,
//! discovery, storage keys, printing and OpenAPI are all driven by it, so adding a resource is one
//! entry here (plus an optional strategy in the API server), never new handler code.

/// A subresource a resource serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `<plural>/status`: writes only the status half.
    Status,
    /// `<plural>/scale`: an `autoscaling/v1` Scale view of `spec.replicas`.
    Scale,
    /// `pods/binding`: assigns a pod to a node.
    Binding,
    /// `pods/log`: the pod's log.
    Log,
    /// `pods/eviction`: a policy/v1 Eviction, honouring PodDisruptionBudgets.
    Eviction,
    /// `namespaces/finalize`: the namespace controller's removal of `spec.finalizers`.
    Finalize,
    /// `serviceaccounts/token`: a TokenRequest, answered with a signed token.
    Token,
    /// `certificatesigningrequests/approval`: the Approved/Denied conditions.
    Approval,
    /// `pods/exec`, `pods/attach`, `pods/portforward`: streaming connections proxied to the kubelet.
    Exec,
    Attach,
    PortForward,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Eviction => "eviction",
            Subresource::Finalize => "finalize",
            Subresource::Token => "token",
            Subresource::Approval => "approval",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
        }
    }
}

/// One served resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceDef {
    /// API group; "" for the legacy core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    /// Upstream kube-apiserver's etcd prefix, without the trailing slash: objects live at
    /// `<prefix>/<namespace>/<name>` or `<prefix>/<name>`.
    pub etcd_prefix: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// False for resources that are computed, not stored (componentstatuses).
    pub stored: bool,
    /// Field selectors beyond `metadata.name` and `metadata.namespace`, as upstream allows them.
    pub field_selectors: &'static [&'static str],
}

impl ResourceDef {
    /// `v1` for core, `apps/v1` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The etcd key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{}/{}", self.etcd_prefix, ns, name),
            _ => format!("{}/{}", self.etcd_prefix, name),
        }
    }

    /// The etcd prefix of a list: one namespace, or all of them.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}/{}/", self.etcd_prefix, ns),
            _ => format!("{}/", self.etcd_prefix),
        }
    }

    /// The verbs discovery advertises.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.stored {
            &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        } else if self.is_create_only() {
            &["create"]
        } else {
            &["get", "list"]
        }
    }

    /// Created, answered, never stored or read back: a review (SelfSubjectAccessReview, ...) or
    /// core/v1 `bindings` (the older form of `pods/binding`).
    pub fn is_create_only(&self) -> bool {
        !self.stored && (self.kind.ends_with("Review") || self.kind == "Binding")
    }
}

use Subresource::*;

const NONE: &[&str] = &[];
const ALL: &[&str] = &["all"];
const API_EXTENSIONS: &[&str] = &["api-extensions"];

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr, $prefix:expr,
     short: $short:expr, cat: $cat:expr, sub: $sub:expr, fields: $fields:expr) => {
        ResourceDef {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            etcd_prefix: $prefix,
            short_names: $short,
            categories: $cat,
            subresources: $sub,
            stored: true,
            field_selectors: $fields,
        }
    };
}

/// A create-only review kind of `group`/v1: answered, never stored.
macro_rules! review {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr) => {
        ResourceDef {
            group: $group,
            version: "v1",
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            etcd_prefix: "",
            short_names: NONE,
            categories: NONE,
            subresources: &[],
            stored: false,
            field_selectors: NONE,
        }
    };
}

/// Every resource kplane serves, in discovery order.
pub static RESOURCES: &[ResourceDef] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, "/registry/namespaces",
        short: &["ns"], cat: NONE, sub: &[Status, Finalize], fields: &["status.phase"]),
    // POST a Binding named after a pod: upstream's older form of `pods/binding`.
    review!("", "Binding", "bindings", "binding", true),
    res!("", "v1", "Pod", "pods", "pod", true, "/registry/pods",
        short: &["po"], cat: ALL, sub: &[Status, Binding, Eviction, Log, Exec, Attach, PortForward],
        fields: &["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                  "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"]),
    res!("", "v1", "Service", "services", "service", true, "/registry/services/specs",
        short: &["svc"], cat: ALL, sub: &[Status], fields: &["spec.clusterIP", "spec.type"]),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, "/registry/services/endpoints",
        short: &["ep"], cat: NONE, sub: &[], fields: NONE),
    res!("", "v1", "Node", "nodes", "node", false, "/registry/minions",
        short: &["no"], cat: NONE, sub: &[Status], fields: &["spec.unschedulable"]),
    res!("", "v1", "Event", "events", "event", true, "/registry/events",
        short: &["ev"], cat: NONE, sub: &[],
        fields: &["involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                  "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                  "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type"]),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, "/registry/configmaps",
        short: &["cm"], cat: NONE, sub: &[], fields: NONE),
    res!("", "v1", "Secret", "secrets", "secret", true, "/registry/secrets",
        short: NONE, cat: NONE, sub: &[], fields: &["type"]),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, "/registry/serviceaccounts",
        short: &["sa"], cat: NONE, sub: &[Token], fields: NONE),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true,
        "/registry/controllers",
        short: &["rc"], cat: ALL, sub: &[Status, Scale], fields: &["status.replicas"]),
    res!("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false,
        "/registry/persistentvolumes", short: &["pv"], cat: NONE, sub: &[Status], fields: NONE),
    res!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true,
        "/registry/persistentvolumeclaims", short: &["pvc"], cat: NONE, sub: &[Status], fields: NONE),
    res!("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, "/registry/resourcequotas",
        short: &["quota"], cat: NONE, sub: &[Status], fields: NONE),
    res!("", "v1", "LimitRange", "limitranges", "limitrange", true, "/registry/limitranges",
        short: &["limits"], cat: NONE, sub: &[], fields: NONE),
    res!("", "v1", "PodTemplate", "podtemplates", "podtemplate", true, "/registry/podtemplates",
        short: NONE, cat: NONE, sub: &[], fields: NONE),
    ResourceDef {
        group: "",
        version: "v1",
        kind: "ComponentStatus",
        plural: "componentstatuses",
        singular: "componentstatus",
        namespaced: false,
        etcd_prefix: "",
        short_names: &["cs"],
        categories: NONE,
        subresources: &[],
        stored: false,
        field_selectors: NONE,
    },
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, "/registry/deployments",
        short: &["deploy"], cat: ALL, sub: &[Status, Scale], fields: NONE),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, "/registry/replicasets",
        short: &["rs"], cat: ALL, sub: &[Status, Scale], fields: &["status.replicas"]),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, "/registry/statefulsets",
        short: &["sts"], cat: ALL, sub: &[Status, Scale], fields: NONE),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, "/registry/daemonsets",
        short: &["ds"], cat: ALL, sub: &[Status], fields: NONE),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true,
        "/registry/controllerrevisions", short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("batch", "v1", "Job", "jobs", "job", true, "/registry/jobs",
        short: NONE, cat: ALL, sub: &[Status], fields: &["status.successful"]),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, "/registry/cronjobs",
        short: &["cj"], cat: ALL, sub: &[Status], fields: NONE),
    res!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler",
        true, "/registry/horizontalpodautoscalers", short: &["hpa"], cat: ALL, sub: &[Status], fields: NONE),
    // autoscaling/v1 serves the same stored (v2) objects, converted (`crate::hpa`); listed after v2
    // so that v2 stays the group's preferred version.
    res!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler",
        true, "/registry/horizontalpodautoscalers", short: &["hpa"], cat: ALL, sub: &[Status], fields: NONE),
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true,
        "/registry/poddisruptionbudgets", short: &["pdb"], cat: NONE, sub: &[Status], fields: NONE),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true,
        "/registry/endpointslices", short: NONE, cat: NONE, sub: &[], fields: &["addressType"]),
    res!("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", true, "/registry/ingress",
        short: &["ing"], cat: NONE, sub: &[Status], fields: NONE),
    res!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", "ingressclass", false,
        "/registry/ingressclasses", short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", "networkpolicy", true,
        "/registry/networkpolicies", short: &["netpol"], cat: NONE, sub: &[], fields: NONE),
    res!("networking.k8s.io", "v1", "IPAddress", "ipaddresses", "ipaddress", false, "/registry/ipaddresses",
        short: &["ip"], cat: NONE, sub: &[], fields: NONE),
    res!("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", "servicecidr", false, "/registry/servicecidrs",
        short: NONE, cat: NONE, sub: &[Status], fields: NONE),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, "/registry/leases",
        short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, "/registry/roles",
        short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true,
        "/registry/rolebindings", short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false,
        "/registry/clusterroles", short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding",
        false, "/registry/clusterrolebindings", short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
        "customresourcedefinition", false, "/registry/apiextensions.k8s.io/customresourcedefinitions",
        short: &["crd", "crds"], cat: &["api-extensions"], sub: &[Status], fields: NONE),
    // Reviews: computed per request, never stored (`kubectl auth can-i`, `kubectl auth whoami`,
    // webhook token and authorization checks), in upstream's discovery order.
    review!("authentication.k8s.io", "SelfSubjectReview", "selfsubjectreviews", "selfsubjectreview", false),
    review!("authentication.k8s.io", "TokenReview", "tokenreviews", "tokenreview", false),
    review!(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true
    ),
    review!(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false
    ),
    review!(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false
    ),
    review!(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
        false
    ),
    res!("storage.k8s.io", "v1", "StorageClass", "storageclasses", "storageclass", false,
        "/registry/storageclasses", short: &["sc"], cat: NONE, sub: &[], fields: NONE),
    res!("storage.k8s.io", "v1", "CSIDriver", "csidrivers", "csidriver", false, "/registry/csidrivers",
        short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("storage.k8s.io", "v1", "CSINode", "csinodes", "csinode", false, "/registry/csinodes",
        short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities", "csistoragecapacity", true,
        "/registry/csistoragecapacities", short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("storage.k8s.io", "v1", "VolumeAttachment", "volumeattachments", "volumeattachment", false,
        "/registry/volumeattachments", short: NONE, cat: NONE, sub: &[Status], fields: NONE),
    res!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false,
        "/registry/priorityclasses", short: &["pc"], cat: NONE, sub: &[], fields: NONE),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", false, "/registry/runtimeclasses",
        short: NONE, cat: NONE, sub: &[], fields: NONE),
    res!("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration", false, "/registry/mutatingwebhookconfigurations",
        short: NONE, cat: API_EXTENSIONS, sub: &[], fields: NONE),
    res!("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations", "validatingwebhookconfiguration", false,
        "/registry/validatingwebhookconfigurations", short: NONE, cat: API_EXTENSIONS, sub: &[], fields: NONE),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies",
        "validatingadmissionpolicy", false, "/registry/validatingadmissionpolicies",
        short: NONE, cat: API_EXTENSIONS, sub: &[Status], fields: NONE),
    res!("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings", "validatingadmissionpolicybinding", false,
        "/registry/validatingadmissionpolicybindings", short: NONE, cat: API_EXTENSIONS, sub: &[], fields: NONE),
    res!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests",
        "certificatesigningrequest", false, "/registry/certificatesigningrequests",
        short: &["csr"], cat: NONE, sub: &[Status, Approval], fields: &["spec.signerName"]),
    res!("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema", "flowschemas", "flowschema", false,
        "/registry/flowschemas", short: NONE, cat: NONE, sub: &[Status], fields: NONE),
    res!("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration", "prioritylevelconfigurations",
        "prioritylevelconfiguration", false, "/registry/prioritylevelconfigurations",
        short: NONE, cat: NONE, sub: &[Status], fields: NONE),
    res!("apiregistration.k8s.io", "v1", "APIService", "apiservices", "apiservice", false,
        "/registry/apiregistration.k8s.io/apiservices", short: NONE, cat: API_EXTENSIONS, sub: &[Status],
        fields: NONE),
    // events.k8s.io/v1 Events share the core Events' storage, as upstream.
    res!("events.k8s.io", "v1", "Event", "events", "event", true, "/registry/events",
        short: &["ev"], cat: NONE, sub: &[],
        fields: &["regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid", "reason",
                  "reportingController", "type"]),
];

/// The resources one API server serves: the built-in table plus dynamic entries (one per served
/// version of each established CustomResourceDefinition), replaced whole whenever the set of CRDs
/// changes. Each API server instance owns one (tests run many servers in one process), so there is
/// no process-global mutable registry.
///
/// Dynamic entries are `&'static ResourceDef`s interned by [`crate::crd::intern`]: every call site
/// that holds a `&'static ResourceDef` (routing, handlers, the watch cache) keeps working unchanged.
/// The cost is a leak bounded by the number of distinct CRD definitions ever seen by the process.
#[derive(Debug, Default)]
pub struct Registry {
    dynamic: std::sync::RwLock<Vec<&'static ResourceDef>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Replaces the dynamic entries.
    pub fn set_dynamic(&self, defs: Vec<&'static ResourceDef>) {
        if let Ok(mut d) = self.dynamic.write() {
            *d = defs;
        }
    }

    /// The dynamic entries, in the order they were set.
    pub fn dynamic(&self) -> Vec<&'static ResourceDef> {
        self.dynamic.read().map(|d| d.clone()).unwrap_or_default()
    }

    /// Every served resource: the built-ins, then the dynamic entries.
    pub fn all(&self) -> Vec<&'static ResourceDef> {
        let mut out: Vec<&'static ResourceDef> = RESOURCES.iter().collect();
        out.extend(self.dynamic());
        out
    }

    /// The resource served at `group/version/plural`.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
        lookup(group, version, plural).or_else(|| {
            self.dynamic().into_iter().find(|r| r.group == group && r.version == version && r.plural == plural)
        })
    }

    /// The resource of a kind in a group (any served version).
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<&'static ResourceDef> {
        by_kind(group, kind).or_else(|| self.dynamic().into_iter().find(|r| r.group == group && r.kind == kind))
    }

    /// Every group-version served, core first, the built-ins' in table order, then the dynamic ones.
    pub fn group_versions(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = group_versions();
        for r in self.dynamic() {
            if !out.contains(&(r.group, r.version)) {
                out.push((r.group, r.version));
            }
        }
        out
    }

    /// The versions of a group, preferred first (the built-ins' one, or the CRD's by Kubernetes
    /// version priority).
    pub fn versions_of(&self, group: &str) -> Vec<&'static str> {
        let mut out: Vec<&'static str> =
            self.group_versions().into_iter().filter(|(g, _)| *g == group).map(|(_, v)| v).collect();
        if lookup_group(group).is_none() {
            out.sort_by(crate::crd::version_priority);
        }
        out
    }
}

/// Whether a group is one of the built-ins.
fn lookup_group(group: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.group == group)
}

/// The built-in resource served at `group/version/plural` (see [`Registry::lookup`] for CRDs too).
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The built-in resource of a kind in a group.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// Every built-in group-version, core (`""`, `v1`) first, in the table's order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_upstreams() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "a"), "/registry/pods/default/a");
        let svc = lookup("", "v1", "services").unwrap();
        assert_eq!(svc.key(Some("default"), "nginx-svc"), "/registry/services/specs/default/nginx-svc");
        let ep = lookup("", "v1", "endpoints").unwrap();
        assert_eq!(ep.list_prefix(Some("kube-system")), "/registry/services/endpoints/kube-system/");
        assert_eq!(lookup("", "v1", "nodes").unwrap().key(None, "worker0"), "/registry/minions/worker0");
        let rc = lookup("", "v1", "replicationcontrollers").unwrap();
        assert_eq!(rc.key(Some("default"), "x"), "/registry/controllers/default/x");
        let ing = lookup("networking.k8s.io", "v1", "ingresses").unwrap();
        assert_eq!(ing.key(Some("default"), "i"), "/registry/ingress/default/i");
    }

    #[test]
    fn plurals_are_unique_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{}",
                    a.plural
                );
            }
        }
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}
