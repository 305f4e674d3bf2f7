//! The JSON schemas of every served kind, generated from k8s-openapi's types (their `schemars`
//! impls carry upstream's definition names and descriptions), and a small walker over them.
//!
//! The OpenAPI documents, strict field validation and strategic merge patch all read these, so the
//! schemas are built once, in a `OnceLock`, and handed out as `&'static` references.
//!
//! What the generated schemas do and don't carry (k8s-openapi 0.29, v1_33): descriptions, `type`,
//! `format`, `required`, `items`, `additionalProperties` and `x-kubernetes-int-or-string` (on
//! IntOrString and Quantity). They carry none of `x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` or
//! `x-kubernetes-group-version-kind`; the last is added here from the resource table, the others
//! are simply absent, so `patch_meta` answers `(None, None)` for every built-in field.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use k8s_openapi::api::{
    admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates, coordination,
    core, discovery, events, flowcontrol, networking, node, policy, rbac, scheduling, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::resources::{self, RESOURCES};

/// Where definitions live in an OpenAPI v3 document, and so the prefix of every `$ref`.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// Upstream's name of the extension that ties a schema (an array of GVKs) or an operation (one
/// GVK) to a kind.
pub const GVK_EXTENSION: &str = "x-kubernetes-group-version-kind";

/// One kind with a schema: its group-version-kind and the definition that describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindSchema {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: String,
    /// The definition's name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: String,
}

struct Registry {
    definitions: Map<String, Value>,
    kinds: Vec<KindSchema>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(build)
}

/// Adds `T`'s schema (and every schema it references) to the generator; returns its name.
fn add<T: JsonSchema>(gen: &mut SchemaGenerator) -> String {
    gen.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Adds the definition of a served `(group, version, kind)`. This match is the one place a kind is
/// tied to its k8s-openapi type: a new entry in the resource table needs a line here too (a test
/// checks that every entry has one).
fn add_served_kind(gen: &mut SchemaGenerator, group: &str, version: &str, kind: &str) -> Option<String> {
    let name = match (group, version, kind) {
        ("", "v1", "Namespace") => add::<core::v1::Namespace>(gen),
        ("", "v1", "Pod") => add::<core::v1::Pod>(gen),
        ("", "v1", "Service") => add::<core::v1::Service>(gen),
        ("", "v1", "Endpoints") => add::<core::v1::Endpoints>(gen),
        ("", "v1", "Node") => add::<core::v1::Node>(gen),
        ("", "v1", "Event") => add::<core::v1::Event>(gen),
        ("", "v1", "ConfigMap") => add::<core::v1::ConfigMap>(gen),
        ("", "v1", "Secret") => add::<core::v1::Secret>(gen),
        ("", "v1", "ServiceAccount") => add::<core::v1::ServiceAccount>(gen),
        ("", "v1", "ReplicationController") => add::<core::v1::ReplicationController>(gen),
        ("", "v1", "ComponentStatus") => add::<core::v1::ComponentStatus>(gen),
        ("", "v1", "PersistentVolume") => add::<core::v1::PersistentVolume>(gen),
        ("", "v1", "PersistentVolumeClaim") => add::<core::v1::PersistentVolumeClaim>(gen),
        ("", "v1", "ResourceQuota") => add::<core::v1::ResourceQuota>(gen),
        ("", "v1", "LimitRange") => add::<core::v1::LimitRange>(gen),
        ("", "v1", "PodTemplate") => add::<core::v1::PodTemplate>(gen),
        ("apps", "v1", "StatefulSet") => add::<apps::v1::StatefulSet>(gen),
        ("apps", "v1", "DaemonSet") => add::<apps::v1::DaemonSet>(gen),
        ("apps", "v1", "ControllerRevision") => add::<apps::v1::ControllerRevision>(gen),
        ("batch", "v1", "Job") => add::<batch::v1::Job>(gen),
        ("batch", "v1", "CronJob") => add::<batch::v1::CronJob>(gen),
        ("autoscaling", "v2", "HorizontalPodAutoscaler") => {
            add::<autoscaling::v2::HorizontalPodAutoscaler>(gen)
        }
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            add::<autoscaling::v1::HorizontalPodAutoscaler>(gen)
        }
        ("policy", "v1", "PodDisruptionBudget") => add::<policy::v1::PodDisruptionBudget>(gen),
        ("networking.k8s.io", "v1", "NetworkPolicy") => add::<networking::v1::NetworkPolicy>(gen),
        ("networking.k8s.io", "v1", "IPAddress") => add::<networking::v1::IPAddress>(gen),
        ("networking.k8s.io", "v1", "ServiceCIDR") => add::<networking::v1::ServiceCIDR>(gen),
        ("storage.k8s.io", "v1", "StorageClass") => add::<storage::v1::StorageClass>(gen),
        ("storage.k8s.io", "v1", "CSIDriver") => add::<storage::v1::CSIDriver>(gen),
        ("storage.k8s.io", "v1", "CSINode") => add::<storage::v1::CSINode>(gen),
        ("storage.k8s.io", "v1", "CSIStorageCapacity") => add::<storage::v1::CSIStorageCapacity>(gen),
        ("storage.k8s.io", "v1", "VolumeAttachment") => add::<storage::v1::VolumeAttachment>(gen),
        ("scheduling.k8s.io", "v1", "PriorityClass") => add::<scheduling::v1::PriorityClass>(gen),
        ("node.k8s.io", "v1", "RuntimeClass") => add::<node::v1::RuntimeClass>(gen),
        ("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration") => {
            add::<admissionregistration::v1::MutatingWebhookConfiguration>(gen)
        }
        ("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration") => {
            add::<admissionregistration::v1::ValidatingWebhookConfiguration>(gen)
        }
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy") => {
            add::<admissionregistration::v1::ValidatingAdmissionPolicy>(gen)
        }
        ("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding") => {
            add::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(gen)
        }
        ("certificates.k8s.io", "v1", "CertificateSigningRequest") => {
            add::<certificates::v1::CertificateSigningRequest>(gen)
        }
        ("flowcontrol.apiserver.k8s.io", "v1", "FlowSchema") => add::<flowcontrol::v1::FlowSchema>(gen),
        ("flowcontrol.apiserver.k8s.io", "v1", "PriorityLevelConfiguration") => {
            add::<flowcontrol::v1::PriorityLevelConfiguration>(gen)
        }
        ("apiregistration.k8s.io", "v1", "APIService") => add::<apiregistration::v1::APIService>(gen),

        ("", "v1", "Binding") => add::<core::v1::Binding>(gen),
        ("policy", "v1", "Eviction") => add::<policy::v1::Eviction>(gen),
        ("apps", "v1", "Deployment") => add::<apps::v1::Deployment>(gen),
        ("apps", "v1", "ReplicaSet") => add::<apps::v1::ReplicaSet>(gen),
        ("autoscaling", "v1", "Scale") => add::<autoscaling::v1::Scale>(gen),
        ("authentication.k8s.io", "v1", "TokenRequest") => add::<authentication::v1::TokenRequest>(gen),
        ("discovery.k8s.io", "v1", "EndpointSlice") => add::<discovery::v1::EndpointSlice>(gen),
        ("networking.k8s.io", "v1", "Ingress") => add::<networking::v1::Ingress>(gen),
        ("networking.k8s.io", "v1", "IngressClass") => add::<networking::v1::IngressClass>(gen),
        ("coordination.k8s.io", "v1", "Lease") => add::<coordination::v1::Lease>(gen),
        ("events.k8s.io", "v1", "Event") => add::<events::v1::Event>(gen),
        ("rbac.authorization.k8s.io", "v1", "Role") => add::<rbac::v1::Role>(gen),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding") => add::<rbac::v1::RoleBinding>(gen),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole") => add::<rbac::v1::ClusterRole>(gen),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding") => add::<rbac::v1::ClusterRoleBinding>(gen),
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition") => add::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(gen),
        ("authorization.k8s.io", "v1", "SelfSubjectAccessReview") => {
            add::<authorization::v1::SelfSubjectAccessReview>(gen)
        }
        ("authentication.k8s.io", "v1", "SelfSubjectReview") => {
            add::<authentication::v1::SelfSubjectReview>(gen)
        }
        ("authentication.k8s.io", "v1", "TokenReview") => add::<authentication::v1::TokenReview>(gen),
        ("authorization.k8s.io", "v1", "SubjectAccessReview") => {
            add::<authorization::v1::SubjectAccessReview>(gen)
        }
        ("authorization.k8s.io", "v1", "LocalSubjectAccessReview") => {
            add::<authorization::v1::LocalSubjectAccessReview>(gen)
        }
        ("authorization.k8s.io", "v1", "SelfSubjectRulesReview") => {
            add::<authorization::v1::SelfSubjectRulesReview>(gen)
        }
        _ => return None,
    };
    Some(name)
}

fn build() -> Registry {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let mut kinds = Vec::new();
    // Subresource kinds are served too (pods/binding, */scale, serviceaccounts/token), so they get GVKs like upstream's.
    let extras: [(&'static str, &'static str, &str); 4] = [
        ("", "v1", "Binding"),
        ("policy", "v1", "Eviction"),
        ("autoscaling", "v1", "Scale"),
        ("authentication.k8s.io", "v1", "TokenRequest"),
    ];
    for r in RESOURCES {
        if let Some(def) = add_served_kind(&mut gen, r.group, r.version, r.kind) {
            push(&mut kinds, r.group, r.version, r.kind, def);
        }
    }
    for (g, v, k) in extras {
        if let Some(def) = add_served_kind(&mut gen, g, v, k) {
            push(&mut kinds, g, v, k, def);
        }
    }
    let status = add::<meta::Status>(&mut gen);
    let delete_options = add::<meta::DeleteOptions>(&mut gen);
    // WatchEvent's schema does not depend on its parameter; any served type will do.
    let watch_event = add::<meta::WatchEvent<core::v1::Namespace>>(&mut gen);
    let list_meta = add::<meta::ListMeta>(&mut gen);
    add::<meta::Patch>(&mut gen);
    add::<meta::APIResourceList>(&mut gen);
    let mut definitions = gen.take_definitions(true);

    // k8s-openapi has no schema impl for its generic `List<T>`, so each `<Kind>List` definition is
    // derived from the item's generated definition and ListMeta's, with List<T>'s four fields.
    for r in RESOURCES {
        let Some(item) =
            kinds.iter().find(|k| k.group == r.group && k.version == r.version && k.kind == r.kind)
        else {
            continue;
        };
        let list_name = list_definition_name(&item.definition, r.kind);
        let list = list_schema(&definitions, &item.definition, &list_meta, r.kind);
        definitions.insert(list_name.clone(), list);
        push(&mut kinds, r.group, r.version, &r.list_kind(), list_name);
    }
    let gvs = resources::group_versions();
    for (g, v) in &gvs {
        push(&mut kinds, g, v, "DeleteOptions", delete_options.clone());
        push(&mut kinds, g, v, "WatchEvent", watch_event.clone());
    }
    push(&mut kinds, "", "v1", "Status", status);

    for k in &kinds {
        if let Some(Value::Object(def)) = definitions.get_mut(&k.definition) {
            let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
            let slot = def.entry(GVK_EXTENSION).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = slot {
                if !list.contains(&gvk) {
                    list.push(gvk);
                }
            }
            unrequire_metadata(def);
        }
    }
    Registry { definitions, kinds }
}

fn push(
    kinds: &mut Vec<KindSchema>,
    group: &'static str,
    version: &'static str,
    kind: &str,
    definition: String,
) {
    kinds.push(KindSchema { group, version, kind: kind.to_string(), definition });
}

/// k8s-openapi models a resource's `metadata` as non-optional and so lists it as required, but
/// upstream's schema (what kubectl explain shows) does not require it: creates may omit it.
fn unrequire_metadata(def: &mut Map<String, Value>) {
    if let Some(Value::Array(required)) = def.get_mut("required") {
        required.retain(|r| r != "metadata");
        if required.is_empty() {
            def.remove("required");
        }
    }
}

/// `io.k8s.api.apps.v1.Deployment` -> `io.k8s.api.apps.v1.DeploymentList`.
fn list_definition_name(item_definition: &str, kind: &str) -> String {
    match item_definition.rsplit_once('.') {
        Some((package, _)) => format!("{package}.{kind}List"),
        None => format!("{kind}List"),
    }
}

const LIST_METADATA: &str = concat!(
    "Standard list metadata. More info: ",
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
);

fn list_schema(definitions: &Map<String, Value>, item: &str, list_meta: &str, kind: &str) -> Value {
    // apiVersion and kind mean the same on a list as on its items, so their descriptions are reused.
    let item_prop = |name: &str| {
        definitions
            .get(item)
            .and_then(|d| d.get("properties"))
            .and_then(|p| p.get(name))
            .cloned()
            .unwrap_or_else(|| json!({"type": "string"}))
    };
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": item_prop("apiVersion"),
            "kind": item_prop("kind"),
            "metadata": {
                "description": LIST_METADATA,
                "allOf": [{"$ref": format!("{REF_PREFIX}{list_meta}")}],
            },
            "items": {
                "description": format!("List of {kind} objects."),
                "type": "array",
                "items": {"$ref": format!("{REF_PREFIX}{item}")},
            },
        },
        "required": ["items"],
    })
}

/// Every generated definition, keyed by upstream's definition name.
pub fn definitions() -> &'static Map<String, Value> {
    &registry().definitions
}

/// One definition by name (`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`).
pub fn definition(name: &str) -> Option<&'static Value> {
    registry().definitions.get(name)
}

/// Every kind with a schema: served kinds, their lists, Binding, Scale, Status, and DeleteOptions
/// and WatchEvent in every served group-version.
pub fn kinds() -> &'static [KindSchema] {
    &registry().kinds
}

/// The definition name of a kind.
pub fn definition_name(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    registry()
        .kinds
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| k.definition.as_str())
}

/// The schema of a kind (its top-level definition; `$ref`s inside resolve with [`resolve`]).
pub fn schema_of(group: &str, version: &str, kind: &str) -> Option<&'static Value> {
    definition_name(group, version, kind).and_then(definition)
}

/// Follows `$ref`s (and the single-element `allOf` that OpenAPI 3.0 wraps a `$ref` with siblings
/// in) to the schema that has the content. Unresolvable refs yield the schema as given.
pub fn resolve(schema: &Value) -> &Value {
    let mut cur = schema;
    // Bounded, so a malformed cycle of bare refs cannot spin forever.
    for _ in 0..16 {
        if let Some(target) = cur.get("$ref").and_then(Value::as_str) {
            match target.strip_prefix(REF_PREFIX).and_then(definition) {
                Some(def) => cur = def,
                None => return cur,
            }
        } else if let Some([only]) = cur.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            if cur.get("properties").is_some() {
                return cur;
            }
            cur = only;
        } else {
            return cur;
        }
    }
    cur
}

/// The (unresolved) schema of a named property of an object schema.
pub fn property<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    resolve(schema).get("properties").and_then(|p| p.get(name))
}

/// The (unresolved) schema of an array schema's items.
pub fn items(schema: &Value) -> Option<&Value> {
    resolve(schema).get("items").filter(|i| i.is_object())
}

/// The (unresolved) schema of a map's values: `additionalProperties` when it is a schema (labels,
/// annotations, data, resource lists). `additionalProperties: true` is free-form, not a map schema.
pub fn map_values(schema: &Value) -> Option<&Value> {
    resolve(schema).get("additionalProperties").filter(|a| a.is_object())
}

/// Whether a schema accepts any fields: upstream's preserve-unknown-fields, or an object with
/// neither properties nor a value schema (FieldsV1, RawExtension, Patch, which Go decodes raw).
pub fn is_free_form(schema: &Value) -> bool {
    let s = resolve(schema);
    if s.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true) {
        return true;
    }
    let is_object = s.get("type").and_then(Value::as_str) == Some("object");
    is_object && s.get("properties").is_none() && !s.get("additionalProperties").is_some_and(Value::is_object)
}

/// One step into a schema by an object key: a property of a struct, or any key of a map. An array
/// schema is stepped through to its items first, so a path names list fields like
/// `spec.template.spec.containers.image` as well as `containers[0].image`.
pub fn step<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    let s = match items(schema) {
        Some(item) => item,
        None => schema,
    };
    property(s, key).or_else(|| map_values(s))
}

/// The (unresolved) schema at a path of object keys from `root`. See [`step`] for arrays.
pub fn at_segments<'a>(root: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    let mut cur = root;
    for seg in segments {
        cur = step(cur, seg)?;
    }
    Some(cur)
}

/// The (unresolved) schema at a dotted path such as `spec.template.spec.containers[0].ports`.
/// `[N]` or `[]` after a key steps into the array's items. Map keys containing dots cannot be
/// named this way; use [`at_segments`].
pub fn at_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            cur = step(cur, key)?;
        }
        for _ in indexes.matches('[') {
            cur = items(cur)?;
        }
    }
    Some(cur)
}

/// The schema at `path` within a kind, e.g. `lookup("apps", "v1", "Deployment", "spec.template")`.
pub fn lookup(group: &str, version: &str, kind: &str, path: &str) -> Option<&'static Value> {
    at_path(schema_of(group, version, kind)?, path)
}

/// A string extension on the field's own schema, else on what it resolves to. Upstream puts patch
/// and list extensions on the property (beside the `$ref`), so the property is read first.
fn extension(field: &Value, name: &str) -> Option<String> {
    field.get(name).or_else(|| resolve(field).get(name)).and_then(Value::as_str).map(str::to_string)
}

/// `(x-kubernetes-patch-strategy, x-kubernetes-patch-merge-key)` of the field at `path` in a
/// kind's schema. The generated built-in schemas have neither (see the module docs), so today
/// this is `(None, None)` for them; it reads the extensions should a schema carry them.
pub fn patch_meta(kind_schema: &Value, path: &str) -> (Option<String>, Option<String>) {
    match at_path(kind_schema, path) {
        Some(field) => {
            (extension(field, "x-kubernetes-patch-strategy"), extension(field, "x-kubernetes-patch-merge-key"))
        }
        None => (None, None),
    }
}

/// `(x-kubernetes-list-type, x-kubernetes-list-map-keys)` of the list at `path`; absent from the
/// generated built-in schemas, like the patch extensions.
pub fn list_meta(kind_schema: &Value, path: &str) -> (Option<String>, Vec<String>) {
    let Some(field) = at_path(kind_schema, path) else {
        return (None, Vec::new());
    };
    let keys = field
        .get("x-kubernetes-list-map-keys")
        .or_else(|| resolve(field).get("x-kubernetes-list-map-keys"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    (extension(field, "x-kubernetes-list-type"), keys)
}

/// Every definition name referenced (transitively) from `roots`, including the roots' own names
/// when they are definition names. Used to cut one group-version's share out of the registry.
pub fn referenced_definitions<'a>(roots: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&Value> = roots.into_iter().collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(name) =
                    map.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix(REF_PREFIX))
                {
                    if seen.insert(name.to_string()) {
                        if let Some(def) = definition(name) {
                            stack.push(def);
                        }
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(list) => stack.extend(list.iter()),
            _ => {}
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_kind_and_list_has_a_schema_with_its_gvk() {
        for r in RESOURCES {
            for kind in [r.kind.to_string(), r.list_kind()] {
                let s = schema_of(r.group, r.version, &kind).unwrap_or_else(|| panic!("{kind}"));
                let gvk = json!({"group": r.group, "version": r.version, "kind": kind});
                assert!(s[GVK_EXTENSION].as_array().unwrap().contains(&gvk), "{kind}");
            }
        }
        assert_eq!(definition_name("apps", "v1", "Deployment"), Some("io.k8s.api.apps.v1.Deployment"));
        assert_eq!(definition_name("", "v1", "PodList"), Some("io.k8s.api.core.v1.PodList"));
        assert!(schema_of("autoscaling", "v1", "Scale").is_some());
    }

    #[test]
    fn walks_refs_items_and_maps() {
        let containers = lookup("apps", "v1", "Deployment", "spec.template.spec.containers").unwrap();
        assert_eq!(resolve(containers)["type"], "array");
        let image = lookup("apps", "v1", "Deployment", "spec.template.spec.containers[0].image").unwrap();
        assert_eq!(resolve(image)["type"], "string");
        // Without the index, the list is stepped through implicitly.
        assert!(lookup("apps", "v1", "Deployment", "spec.template.spec.containers.image").is_some());
        let label = lookup("", "v1", "Pod", "metadata.labels.anything").unwrap();
        assert_eq!(resolve(label)["type"], "string");
        assert!(lookup("apps", "v1", "Deployment", "spec.foo").is_none());
        let port = lookup("", "v1", "Service", "spec.ports.targetPort").unwrap();
        assert_eq!(resolve(port)["x-kubernetes-int-or-string"], true);
        let desc = resolve(lookup("apps", "v1", "Deployment", "spec").unwrap())["description"].as_str();
        assert!(desc.unwrap().contains("DeploymentSpec"), "{desc:?}");
    }

    #[test]
    fn metadata_is_not_required_and_free_form_is_recognized() {
        let d = schema_of("apps", "v1", "Deployment").unwrap();
        assert!(d.get("required").is_none_or(|r| !r.as_array().unwrap().contains(&json!("metadata"))));
        let fields = lookup("", "v1", "Pod", "metadata.managedFields[0].fieldsV1").unwrap();
        assert!(is_free_form(fields));
        assert!(!is_free_form(lookup("", "v1", "Pod", "metadata.labels").unwrap()));
    }

    #[test]
    fn patch_extensions_are_absent_from_generated_schemas() {
        let pod = schema_of("", "v1", "Pod").unwrap();
        assert_eq!(patch_meta(pod, "spec.containers"), (None, None));
        assert_eq!(list_meta(pod, "spec.containers"), (None, Vec::new()));
        let with_ext = json!({"properties": {"xs": {
            "type": "array", "x-kubernetes-patch-strategy": "merge", "x-kubernetes-patch-merge-key": "name"}}});
        assert_eq!(patch_meta(&with_ext, "xs"), (Some("merge".into()), Some("name".into())));
    }
}
