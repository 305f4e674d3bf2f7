//! Authorization: RBAC, as upstream's authorizer evaluates it. A request is allowed when some rule
//! of a role bound to the user (ClusterRoleBindings anywhere, RoleBindings in the request's
//! namespace) covers its verb, API group, resource (with subresource), name, or non-resource path.
//! `system:masters` may do everything. Bindings and roles are read from the watch cache (the store
//! while the cache warms up), so a new binding applies as soon as it is written.

use std::sync::Arc;

use api_types::ResourceDef;
use axum::http::Method;
use serde_json::{json, Value};

use super::UserInfo;
use crate::error::ApiError;
use crate::AppState;

/// What a request asks to do, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attributes {
    Resource {
        verb: String,
        group: String,
        resource: String,
        subresource: String,
        namespace: String,
        name: String,
    },
    NonResource {
        verb: String,
        path: String,
    },
}

impl Attributes {
    /// The attributes of an HTTP request, as upstream's request-info resolver derives them.
    /// Resources are resolved against `registry` (the built-ins and the server's CRDs).
    pub fn of_request(
        registry: &api_types::Registry,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Attributes {
        let watch =
            query.is_some_and(|q| q.split('&').any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True")));
        let resource = |core: bool, rest: &str| match crate::route::parse(registry, core, rest) {
            Ok(crate::route::Target::Resource(rp)) => Some(rp),
            _ => None,
        };
        let rp = if let Some(rest) = path.strip_prefix("/api/") {
            resource(true, rest)
        } else if let Some(rest) = path.strip_prefix("/apis/") {
            resource(false, rest)
        } else {
            None
        };
        if let Some(Ok(crate::metrics_api::MetricsPath::Resource { resource, namespace, name })) =
            path.strip_prefix("/apis/").and_then(crate::metrics_api::parse)
        {
            let verb = match (method.as_str(), &name) {
                ("GET" | "HEAD", _) if watch => "watch",
                ("GET" | "HEAD", None) => "list",
                ("GET" | "HEAD", Some(_)) => "get",
                _ => "",
            };
            return Attributes::Resource {
                verb: verb.into(),
                group: crate::metrics_api::GROUP.into(),
                resource: resource.into(),
                subresource: String::new(),
                namespace: namespace.unwrap_or_default(),
                name: name.unwrap_or_default(),
            };
        }
        let Some(rp) = rp else {
            let verb = match *method {
                Method::GET | Method::HEAD => "get",
                Method::POST => "post",
                Method::PUT => "put",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "options",
            };
            return Attributes::NonResource { verb: verb.into(), path: path.to_string() };
        };
        let named = rp.name.is_some();
        let verb = match (method.as_str(), named) {
            ("GET" | "HEAD", false) if watch => "watch",
            ("GET" | "HEAD", false) => "list",
            ("GET" | "HEAD", true) if watch => "watch",
            ("GET" | "HEAD", true) => "get",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", false) => "deletecollection",
            ("DELETE", true) => "delete",
            _ => "",
        };
        // Upstream (AuthorizePodWebsocketUpgradeCreatePermission): opening a pod's exec, attach or
        // portforward stream needs `create`, whether the upgrade came as POST (SPDY) or GET (WebSocket).
        let verb = if crate::streaming::is_streaming(&rp) { "create" } else { verb };
        // A namespace is its own namespace, for RoleBindings inside it.
        let namespace = match (&rp.namespace, rp.res.plural, &rp.name) {
            (Some(ns), _, _) => ns.clone(),
            (None, "namespaces", Some(name)) => name.clone(),
            _ => String::new(),
        };
        Attributes::Resource {
            verb: verb.into(),
            group: rp.res.group.into(),
            resource: rp.res.plural.into(),
            subresource: rp.subresource.unwrap_or_default(),
            namespace,
            name: rp.name.unwrap_or_default(),
        }
    }

    /// Attributes from a SubjectAccessReview spec (`resourceAttributes` or `nonResourceAttributes`).
    pub fn of_review(spec: &Value) -> Option<Attributes> {
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
            return Some(Attributes::Resource {
                verb: s(r, "verb"),
                group: s(r, "group"),
                resource: s(r, "resource"),
                subresource: s(r, "subresource"),
                namespace: s(r, "namespace"),
                name: s(r, "name"),
            });
        }
        let n = spec.get("nonResourceAttributes").filter(|v| v.is_object())?;
        Some(Attributes::NonResource { verb: s(n, "verb"), path: s(n, "path") })
    }

    fn namespace(&self) -> &str {
        match self {
            Attributes::Resource { namespace, .. } => namespace,
            Attributes::NonResource { .. } => "",
        }
    }

    /// Upstream's forbidden message for `user`.
    fn forbidden_message(&self, user: &str) -> String {
        match self {
            Attributes::NonResource { verb, path } => format!("User {user:?} cannot {verb} path {path:?}"),
            Attributes::Resource { verb, group, resource, subresource, namespace, .. } => {
                let resource =
                    if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
                if namespace.is_empty() {
                    format!("User {user:?} cannot {verb} resource {resource:?} in API group {group:?} at the cluster scope")
                } else {
                    format!("User {user:?} cannot {verb} resource {resource:?} in API group {group:?} in the namespace {namespace:?}")
                }
            }
        }
    }

    /// The 403 a denied request gets, worded as upstream's.
    pub fn forbidden(&self, user: &UserInfo) -> ApiError {
        let why = self.forbidden_message(&user.name);
        match self {
            Attributes::NonResource { .. } => ApiError::new(403, "Forbidden", format!("forbidden: {why}")),
            Attributes::Resource { group, resource, name, .. } => {
                let qualified = if group.is_empty() { resource.clone() } else { format!("{resource}.{group}") };
                let message = if name.is_empty() {
                    format!("{qualified} is forbidden: {why}")
                } else {
                    format!("{qualified} {name:?} is forbidden: {why}")
                };
                ApiError {
                    details: Some(json!({"name": name, "group": group, "kind": resource})),
                    ..ApiError::new(403, "Forbidden", message)
                }
            }
        }
    }
}

fn strs(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// The strings of a rule's list field, borrowed (no allocation: RBAC runs on every request).
fn items<'a>(v: &'a Value, k: &str) -> impl Iterator<Item = &'a str> {
    v.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str)
}

/// Whether one PolicyRule covers the request.
pub fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let verb_ok = |verb: &str| items(rule, "verbs").any(|v| v == "*" || v == verb);
    match attrs {
        Attributes::NonResource { verb, path } => {
            verb_ok(verb)
                && items(rule, "nonResourceURLs").any(|u| {
                    u == "*" || u == path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
                })
        }
        Attributes::Resource { verb, group, resource, subresource, name, .. } => {
            // `resource` or `resource/subresource`, compared without building the combined string.
            let is_combined = |r: &str| match r.strip_prefix(resource.as_str()) {
                Some(rest) if subresource.is_empty() => rest.is_empty(),
                Some(rest) => rest.strip_prefix('/') == Some(subresource.as_str()),
                None => false,
            };
            verb_ok(verb)
                && items(rule, "apiGroups").any(|g| g == "*" || g == group)
                && items(rule, "resources").any(|r| {
                    r == "*"
                        || is_combined(r)
                        || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource.as_str()))
                })
                && {
                    let mut names = items(rule, "resourceNames").peekable();
                    names.peek().is_none() || names.any(|n| n == name)
                }
        }
    }
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let field = |k: &str| subject.get(k).and_then(Value::as_str).unwrap_or("");
    match field("kind") {
        "User" => field("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == field("name")),
        "ServiceAccount" => {
            let ns = if field("namespace").is_empty() { binding_ns } else { field("namespace") };
            // `system:serviceaccount:<ns>:<name>`, compared piecewise (no string built per subject).
            user.name
                .strip_prefix("system:serviceaccount:")
                .and_then(|rest| rest.strip_prefix(ns))
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| rest == field("name"))
        }
        _ => false,
    }
}

fn rbac_resource(plural: &str) -> Option<&'static ResourceDef> {
    api_types::resources::lookup("rbac.authorization.k8s.io", "v1", plural)
}

/// Objects of an RBAC resource (in `namespace`, or all), from the watch cache or the store.
async fn objects(st: &AppState, plural: &str, namespace: Option<&str>) -> Vec<Arc<Value>> {
    let Some(res) = rbac_resource(plural) else { return Vec::new() };
    let prefix = match namespace {
        Some(ns) => format!("{}/{ns}/", res.etcd_prefix),
        None => format!("{}/", res.etcd_prefix),
    };
    if let Some(found) = st.cacher.cache(&st.store, res).and_then(|c| c.under(&prefix)) {
        return found;
    }
    let opts = store::ListOptions { prefix, ..Default::default() };
    match st.store.list(opts).await {
        Ok(list) => {
            list.items.iter().filter_map(|kv| crate::objects::decode(res, kv).ok()).map(Arc::new).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, plural, "cannot read RBAC objects; denying");
            Vec::new()
        }
    }
}

async fn role(st: &AppState, kind: &str, name: &str, namespace: &str) -> Option<Arc<Value>> {
    let (plural, ns) = match kind {
        "ClusterRole" => ("clusterroles", None),
        "Role" => ("roles", Some(namespace)),
        _ => return None,
    };
    let res = rbac_resource(plural)?;
    let key = res.key(ns, name);
    if let Some(hit) = st.cacher.cache(&st.store, res).and_then(|c| c.get(&key)) {
        return Some(hit);
    }
    let kv = st.store.get(&key).await.ok()?;
    crate::objects::decode(res, &kv).ok().map(Arc::new)
}

/// The bindings whose subjects include `user`: every ClusterRoleBinding, and the RoleBindings of
/// `namespace` when there is one, each with its kind.
async fn bindings_of(st: &AppState, user: &UserInfo, namespace: &str) -> Vec<(Arc<Value>, &'static str)> {
    let mut bindings: Vec<(Arc<Value>, &'static str)> =
        objects(st, "clusterrolebindings", None).await.into_iter().map(|b| (b, "ClusterRoleBinding")).collect();
    if !namespace.is_empty() {
        bindings
            .extend(objects(st, "rolebindings", Some(namespace)).await.into_iter().map(|b| (b, "RoleBinding")));
    }
    bindings.retain(|(binding, _)| {
        let binding_ns = binding.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("");
        let subjects = binding.get("subjects").and_then(Value::as_array);
        subjects.is_some_and(|subjects| subjects.iter().any(|s| subject_matches(s, user, binding_ns)))
    });
    bindings
}

fn binding_field<'a>(binding: &'a Value, pointer: &str) -> &'a str {
    binding.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Why a request is allowed (upstream's RBAC reason), or None if it is not.
pub async fn allowed(st: &AppState, user: &UserInfo, attrs: &Attributes) -> Option<String> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Some(format!("User {:?} is in group \"system:masters\"", user.name));
    }
    for (binding, binding_kind) in bindings_of(st, user, attrs.namespace()).await {
        let binding_ns = binding_field(&binding, "/metadata/namespace");
        let role_kind = binding_field(&binding, "/roleRef/kind");
        let role_name = binding_field(&binding, "/roleRef/name");
        let Some(role) = role(st, role_kind, role_name, binding_ns).await else { continue };
        let mut rules = role.get("rules").and_then(Value::as_array).into_iter().flatten();
        if rules.any(|r| rule_allows(r, attrs)) {
            let binding_name = binding_field(&binding, "/metadata/name");
            return Some(format!(
                "RBAC: allowed by {binding_kind} {binding_name:?} of {role_kind} {role_name:?} to User {:?}",
                user.name
            ));
        }
    }
    None
}

/// What `user` may do in `namespace`, as upstream's RBAC `RulesFor` lists it (a
/// SelfSubjectRulesReview, `kubectl auth can-i --list`): every rule of every role bound to the user
/// by a ClusterRoleBinding or a RoleBinding of the namespace, split into resource rules
/// (`verbs`, `apiGroups`, `resources`, `resourceNames`) and non-resource rules (`verbs`,
/// `nonResourceURLs`); plus the errors met on the way (a binding naming a missing role), which
/// make the answer incomplete.
pub async fn rules_for(
    st: &AppState,
    user: &UserInfo,
    namespace: &str,
) -> (Vec<Value>, Vec<Value>, Vec<String>) {
    let (mut resource_rules, mut non_resource_rules, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for (binding, _) in bindings_of(st, user, namespace).await {
        let binding_ns = binding_field(&binding, "/metadata/namespace");
        let role_kind = binding_field(&binding, "/roleRef/kind");
        let role_name = binding_field(&binding, "/roleRef/name");
        let Some(role) = role(st, role_kind, role_name, binding_ns).await else {
            let what = if role_kind == "Role" { "role" } else { "clusterrole" };
            errors.push(format!("{what}.rbac.authorization.k8s.io {role_name:?} not found"));
            continue;
        };
        for rule in role.get("rules").and_then(Value::as_array).into_iter().flatten() {
            let list = |k: &str| json!(strs(rule, k));
            let has = |k: &str| !strs(rule, k).is_empty();
            if has("resources") {
                let mut r = serde_json::Map::new();
                r.insert("verbs".into(), list("verbs"));
                for k in ["apiGroups", "resources", "resourceNames"] {
                    if has(k) {
                        r.insert(k.into(), list(k));
                    }
                }
                resource_rules.push(Value::Object(r));
            }
            if has("nonResourceURLs") {
                non_resource_rules
                    .push(json!({"verbs": list("verbs"), "nonResourceURLs": list("nonResourceURLs")}));
            }
        }
    }
    (resource_rules, non_resource_rules, errors)
}

/// The bootstrap policy: upstream's default ClusterRoles (cluster-admin, admin, edit, view, the
/// discovery and basic-user roles) and one role per kplane component, each bound as upstream binds
/// them. Returned as (plural, object) in creation order.
pub fn bootstrap_policy() -> Vec<(&'static str, Value)> {
    let meta = |name: &str| {
        json!({"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
               "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
    };
    // Every list sorted, as upstream's PolicyRuleBuilder.Rule() leaves them (kubectl get clusterrole
    // and `auth can-i --list` show them so).
    let sorted = |l: &[&str]| {
        let mut v: Vec<String> = l.iter().map(|s| s.to_string()).collect();
        v.sort_unstable();
        v
    };
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| json!({"apiGroups": sorted(groups), "resources": sorted(resources), "verbs": sorted(verbs)});
    let urls =
        |paths: &[&str], verbs: &[&str]| json!({"nonResourceURLs": sorted(paths), "verbs": sorted(verbs)});
    let read = ["get", "list", "watch"];
    let write = ["create", "delete", "deletecollection", "patch", "update"];
    let rw: Vec<&str> = read.iter().chain(write.iter()).copied().collect();
    let workloads_core = [
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "services",
        "services/status",
        "endpoints",
        "configmaps",
        "persistentvolumeclaims",
        "serviceaccounts",
        "events",
    ];
    let workloads_apps = [
        "deployments",
        "deployments/scale",
        "deployments/status",
        "replicasets",
        "replicasets/scale",
        "replicasets/status",
        "statefulsets",
        "daemonsets",
    ];
    let view_rules = vec![
        rule(&[""], &workloads_core, &read),
        rule(&[""], &["namespaces", "namespaces/status", "resourcequotas", "limitranges"], &read),
        rule(&["apps"], &workloads_apps, &read),
        rule(&["networking.k8s.io"], &["ingresses", "ingresses/status"], &read),
        rule(&["discovery.k8s.io"], &["endpointslices"], &read),
        rule(&["events.k8s.io"], &["events"], &read),
        rule(&["coordination.k8s.io"], &["leases"], &read),
        // Upstream's system:aggregated-metrics-reader, aggregated into view, edit and admin.
        rule(&["metrics.k8s.io"], &["pods", "nodes"], &["get", "list", "watch"]),
    ];
    let mut edit_rules = vec![
        rule(&[""], &workloads_core, &rw),
        rule(&[""], &["secrets"], &rw),
        // As upstream's edit role: workloads may be given a ServiceAccount's token.
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(&[""], &["serviceaccounts"], &["impersonate"]),
        rule(&["apps"], &workloads_apps, &rw),
        rule(&["networking.k8s.io"], &["ingresses"], &rw),
        rule(&["discovery.k8s.io"], &["endpointslices"], &rw),
        rule(&["coordination.k8s.io"], &["leases"], &rw),
        // As upstream's edit role: stepping into pods, and reading those subresources.
        rule(&[""], &["pods/attach", "pods/exec", "pods/portforward", "pods/proxy"], &rw),
        // As upstream's edit role: evicting pods (kubectl drain).
        rule(&[""], &["pods/eviction"], &["create"]),
    ];
    edit_rules.extend(view_rules.iter().cloned());
    let mut admin_rules = edit_rules.clone();
    admin_rules.push(rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &rw));
    admin_rules.push(rule(&["authorization.k8s.io"], &["localsubjectaccessreviews"], &["create"]));

    let events = rule(&["", "events.k8s.io"], &["events"], &["create", "patch", "update"]);
    let leases =
        rule(&["coordination.k8s.io"], &["leases"], &["create", "get", "list", "watch", "update", "patch"]);
    let controller_manager = vec![
        // The garbage collector and the namespace controller read and delete anything.
        rule(&["*"], &["*"], &["get", "list", "watch", "delete", "deletecollection"]),
        rule(&[""], &["pods", "endpoints", "serviceaccounts", "events", "secrets", "configmaps"], &rw),
        rule(
            &[""],
            &[
                "pods/status",
                "nodes",
                "nodes/status",
                "namespaces",
                "namespaces/status",
                "namespaces/finalize",
                "replicationcontrollers",
                "replicationcontrollers/status",
                "replicationcontrollers/scale",
                "services",
                "services/status",
            ],
            &["update", "patch"],
        ),
        rule(
            &["apps"],
            &[
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
                "daemonsets",
                "daemonsets/status",
                "statefulsets",
                "statefulsets/status",
                "controllerrevisions",
            ],
            &rw,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], &rw),
        // The CronJob controller creates and deletes Jobs.
        rule(&["batch"], &["jobs", "jobs/status", "cronjobs", "cronjobs/status"], &rw),
        // The StatefulSet controller's claims and the persistentvolume-binder (with its default
        // StorageClass).
        rule(&[""], &["persistentvolumeclaims", "persistentvolumes", "persistentvolumes/status"], &rw),
        rule(&["storage.k8s.io"], &["storageclasses"], &rw),
        rule(&["*"], &["*"], &["update", "patch"]),
        events.clone(),
        leases.clone(),
    ];
    let scheduler = vec![
        rule(&[""], &["pods", "nodes", "namespaces", "services", "replicationcontrollers"], &read),
        rule(&["apps"], &["replicasets", "statefulsets"], &read),
        rule(&[""], &["pods/binding"], &["create"]),
        rule(&[""], &["pods/status"], &["update", "patch"]),
        rule(&[""], &["pods"], &["delete"]),
        events.clone(),
        leases.clone(),
    ];
    let node = vec![
        rule(&[""], &["nodes"], &["create", "get", "list", "watch", "update", "patch", "delete"]),
        rule(&[""], &["nodes/status"], &["update", "patch"]),
        rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
        rule(&[""], &["pods/status"], &["update", "patch"]),
        rule(&[""], &["services", "endpoints", "configmaps", "secrets"], &read),
        events.clone(),
        leases.clone(),
    ];
    let proxier = vec![
        rule(&[""], &["services", "endpoints", "nodes"], &read),
        rule(&["discovery.k8s.io"], &["endpointslices"], &read),
        events.clone(),
    ];
    // kplane's DNS is a component, not a pod: it publishes the kube-dns endpoints itself.
    let dns = vec![
        rule(&[""], &["services", "endpoints", "pods", "namespaces"], &read),
        rule(&["discovery.k8s.io"], &["endpointslices"], &read),
        rule(&["", "discovery.k8s.io"], &["endpoints", "endpointslices"], &["create"]),
        json!({"apiGroups": ["", "discovery.k8s.io"], "resources": ["endpoints", "endpointslices"],
               "resourceNames": ["kube-dns"], "verbs": ["update"]}),
    ];
    let ingress = vec![
        rule(&[""], &["services", "endpoints", "secrets"], &read),
        rule(&["discovery.k8s.io"], &["endpointslices"], &read),
        rule(&["networking.k8s.io"], &["ingresses", "ingressclasses"], &read),
        rule(&["networking.k8s.io"], &["ingresses/status"], &["update", "patch"]),
        // Create its class, and mark an older kplane's class (no annotation) the default.
        rule(&["networking.k8s.io"], &["ingressclasses"], &["create", "patch"]),
        events.clone(),
    ];
    // The X-ray page: reads the request path's objects, nothing else (no secrets), never writes.
    let xray = vec![
        rule(&[""], &["services", "endpoints", "pods", "nodes", "namespaces"], &read),
        rule(&["discovery.k8s.io"], &["endpointslices"], &read),
        rule(&["networking.k8s.io"], &["ingresses", "ingressclasses"], &read),
    ];
    let cluster_roles: Vec<(&str, Vec<Value>)> = vec![
        ("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])]),
        ("admin", admin_rules),
        ("edit", edit_rules),
        ("view", view_rules),
        (
            "system:aggregated-metrics-reader",
            vec![rule(&["metrics.k8s.io"], &["pods", "nodes"], &["get", "list", "watch"])],
        ),
        (
            "system:discovery",
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/openapi",
                    "/openapi/*",
                    "/version",
                    "/version/",
                    "/healthz",
                    "/livez",
                    "/readyz",
                ],
                &["get"],
            )],
        ),
        (
            "system:basic-user",
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(&["authentication.k8s.io"], &["selfsubjectreviews"], &["create"]),
            ],
        ),
        // Upstream's role for delegated authentication and authorization (webhook servers asking
        // the API server who a token is and what it may do); bound to nobody by default.
        (
            "system:auth-delegator",
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(&["authorization.k8s.io"], &["subjectaccessreviews"], &["create"]),
            ],
        ),
        (
            "system:public-info-viewer",
            vec![urls(&["/healthz", "/livez", "/readyz", "/version", "/version/"], &["get"])],
        ),
        ("system:kube-controller-manager", controller_manager),
        ("system:kube-scheduler", scheduler),
        ("system:node", node),
        ("system:node-proxier", proxier),
        ("system:kube-dns", dns),
        ("system:kplane:ingress-controller", ingress),
        ("system:kplane:xray", xray),
    ];
    let bindings: Vec<(&str, &str, Value)> = vec![
        ("cluster-admin", "cluster-admin", json!([{"kind": "Group", "name": "system:masters"}])),
        ("system:discovery", "system:discovery", json!([{"kind": "Group", "name": "system:authenticated"}])),
        ("system:basic-user", "system:basic-user", json!([{"kind": "Group", "name": "system:authenticated"}])),
        (
            "system:public-info-viewer",
            "system:public-info-viewer",
            json!([
            {"kind": "Group", "name": "system:authenticated"}, {"kind": "Group", "name": "system:unauthenticated"}]),
        ),
        (
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            json!([{"kind": "User", "name": "system:kube-controller-manager"}]),
        ),
        (
            "system:kube-scheduler",
            "system:kube-scheduler",
            json!([{"kind": "User", "name": "system:kube-scheduler"}]),
        ),
        ("system:node", "system:node", json!([{"kind": "Group", "name": "system:nodes"}])),
        ("system:node-proxier", "system:node-proxier", json!([{"kind": "User", "name": "system:kube-proxy"}])),
        ("system:kube-dns", "system:kube-dns", json!([{"kind": "User", "name": "system:kube-dns"}])),
        (
            "system:kplane:ingress-controller",
            "system:kplane:ingress-controller",
            json!([{"kind": "User", "name": "system:kplane:ingress-controller"}]),
        ),
        ("system:kplane:xray", "system:kplane:xray", json!([{"kind": "User", "name": "system:kplane:xray"}])),
    ];
    let mut out: Vec<(&'static str, Value)> = Vec::new();
    for (name, rules) in cluster_roles {
        out.push(("clusterroles", json!({"metadata": meta(name), "rules": rules})));
    }
    for (name, role, subjects) in bindings {
        out.push((
            "clusterrolebindings",
            json!({"metadata": meta(name), "subjects": subjects,
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}}),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn request_attributes_as_upstream_resolves_them() {
        let a = Attributes::of_request(
            &api_types::Registry::new(),
            &Method::GET,
            "/api/v1/namespaces/default/pods",
            Some("watch=true"),
        );
        assert_eq!(a, res("watch", "", "pods", "", "default", ""));
        let a = Attributes::of_request(
            &api_types::Registry::new(),
            &Method::PUT,
            "/apis/apps/v1/namespaces/x/deployments/d/scale",
            None,
        );
        assert_eq!(a, res("update", "apps", "deployments", "scale", "x", "d"));
        let a = Attributes::of_request(
            &api_types::Registry::new(),
            &Method::DELETE,
            "/api/v1/namespaces/team",
            None,
        );
        assert_eq!(a, res("delete", "", "namespaces", "", "team", "team"));
        let a = Attributes::of_request(&api_types::Registry::new(), &Method::GET, "/apis/apps/v1", None);
        assert_eq!(a, Attributes::NonResource { verb: "get".into(), path: "/apis/apps/v1".into() });
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_names_and_urls() {
        let r = json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        assert!(rule_allows(&r, &res("get", "", "pods", "", "d", "p")));
        assert!(rule_allows(&r, &res("get", "", "pods", "log", "d", "p")));
        assert!(!rule_allows(&r, &res("get", "", "pods", "status", "d", "p")));
        assert!(!rule_allows(&r, &res("delete", "", "pods", "", "d", "p")));
        assert!(!rule_allows(&r, &res("get", "apps", "pods", "", "d", "p")));
        let named =
            json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"], "resourceNames": ["web"]});
        assert!(rule_allows(&named, &res("patch", "apps", "deployments", "scale", "d", "web")));
        assert!(!rule_allows(&named, &res("patch", "apps", "deployments", "scale", "d", "db")));
        assert!(!rule_allows(&named, &res("patch", "apps", "deployments", "", "d", "web")));
        let url = json!({"nonResourceURLs": ["/apis/*", "/version"], "verbs": ["get"]});
        let path = |p: &str| Attributes::NonResource { verb: "get".into(), path: p.into() };
        assert!(rule_allows(&url, &path("/apis/apps/v1")));
        assert!(rule_allows(&url, &path("/version")));
        assert!(!rule_allows(&url, &path("/metrics")));
        assert!(!rule_allows(&r, &path("/version")), "resource rules never cover paths");
    }

    #[test]
    fn xray_reads_the_request_path_and_nothing_else() {
        let policy = bootstrap_policy();
        let named = |plural: &str| {
            policy
                .iter()
                .find(|(p, o)| *p == plural && o["metadata"]["name"] == "system:kplane:xray")
                .map(|(_, o)| o.clone())
                .unwrap()
        };
        let binding = named("clusterrolebindings");
        assert_eq!(binding["subjects"], json!([{"kind": "User", "name": "system:kplane:xray"}]));
        assert_eq!(binding["roleRef"]["name"], "system:kplane:xray");
        let role = named("clusterroles");
        let rules = role["rules"].as_array().unwrap();
        let allows = |a: &Attributes| rules.iter().any(|r| rule_allows(r, a));
        for (group, plural) in [
            ("", "pods"),
            ("", "services"),
            ("", "endpoints"),
            ("", "nodes"),
            ("", "namespaces"),
            ("discovery.k8s.io", "endpointslices"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "ingressclasses"),
        ] {
            for verb in ["get", "list", "watch"] {
                assert!(allows(&res(verb, group, plural, "", "default", "")), "{verb} {plural}");
            }
            for verb in ["create", "update", "patch", "delete", "deletecollection"] {
                assert!(!allows(&res(verb, group, plural, "", "default", "")), "{verb} {plural}");
            }
        }
        for (group, plural) in [
            ("", "secrets"),
            ("", "configmaps"),
            ("apps", "deployments"),
            ("rbac.authorization.k8s.io", "roles"),
        ] {
            assert!(!allows(&res("get", group, plural, "", "default", "")), "{plural}");
        }
        assert!(!allows(&res("get", "", "pods", "log", "default", "p")), "no pod logs");
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let alice = UserInfo::new("alice", &[]);
        let e = res("list", "", "pods", "", "default", "").forbidden(&alice);
        assert_eq!(e.message, "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"");
        let e = res("get", "apps", "deployments", "", "", "d").forbidden(&alice);
        assert_eq!(e.message, "deployments.apps \"d\" is forbidden: User \"alice\" cannot get resource \"deployments\" in API group \"apps\" at the cluster scope");
        let e = Attributes::NonResource { verb: "get".into(), path: "/metrics".into() }.forbidden(&alice);
        assert_eq!(e.message, "forbidden: User \"alice\" cannot get path \"/metrics\"");
    }
}
