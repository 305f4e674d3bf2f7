//! The OpenAPI v3 documents served at `/openapi/v3` (the index) and `/openapi/v3/<api|apis/g>/<v>`
//! (one per group-version), as kubectl 1.32 reads them:
//!
//! - `kubectl explain` finds a resource's GVK on the `x-kubernetes-group-version-kind` object of an
//!   operation at `<prefix>/<plural>[/{name}]` (or the namespaced paths), then the schema whose
//!   `x-kubernetes-group-version-kind` array contains that GVK, and walks `$ref`/`allOf`/`items`.
//! - kubectl's query-param verifier looks at the PATCH operations carrying a kind's GVK and uses
//!   server-side field validation only when such an operation lists the `fieldValidation` query
//!   parameter inline, so every PATCH (including `/status`) lists it, as do POST and PUT.
//!
//! Schemas come from [`crate::schema`] (generated from k8s-openapi's types); the operations are
//! derived from the resource table. Documents are built once and cached.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::resources::{self, ResourceDef, Subresource, RESOURCES};
use crate::schema::{self, GVK_EXTENSION, REF_PREFIX};

const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";

struct GvDocument {
    group: &'static str,
    version: &'static str,
    /// The document serialized; only these bytes are kept (heaptrack: the decoded `Value`s of all
    /// group-versions were 23 MB of heap, the bytes a small fraction of that).
    bytes: Vec<u8>,
    hash: String,
}

fn documents() -> &'static [GvDocument] {
    static DOCS: OnceLock<Vec<GvDocument>> = OnceLock::new();
    DOCS.get_or_init(|| {
        resources::group_versions()
            .into_iter()
            .map(|(group, version)| {
                let document = build_document(group, version);
                // Serializing a Value cannot fail (its keys are strings); an empty body would
                // still hash stably, so no panic path is needed.
                let bytes = serde_json::to_vec(&document).unwrap_or_default();
                let hash = stable_hash(&bytes);
                GvDocument { group, version, bytes, hash }
            })
            .collect()
    })
}

fn find(group: &str, version: &str) -> Option<&'static GvDocument> {
    documents().iter().find(|d| d.group == group && d.version == version)
}

/// `api/v1` for the core group, `apis/<group>/<version>` otherwise: the index's keys and the
/// document's path under `/openapi/v3/`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` discovery document. `prefix` is whatever the server is mounted under (`""`
/// normally) and is put before `/openapi/v3/...` in each `serverRelativeURL`. The `hash` query
/// lets clients cache a document until its content changes, as upstream's does.
pub fn v3_index(prefix: &str) -> Value {
    let prefix = prefix.trim_end_matches('/');
    let mut paths = Map::new();
    for d in documents() {
        let key = gv_path(d.group, d.version);
        let url = format!("{prefix}/openapi/v3/{key}?hash={}", d.hash);
        paths.insert(key, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// The OpenAPI 3.0 document of one group-version (`""` for core), or None if it is not served.
/// Decoded from the kept bytes on each call: its callers (the v2 document, CRDs' documents) build
/// something of their own from it once.
pub fn v3_document(group: &str, version: &str) -> Option<Value> {
    find(group, version).and_then(|d| serde_json::from_slice(&d.bytes).ok())
}

/// The same document, serialized once: what the server writes as the response body.
pub fn v3_document_bytes(group: &str, version: &str) -> Option<&'static [u8]> {
    find(group, version).map(|d| d.bytes.as_slice())
}

/// The hash the index advertises for a group-version's document (its ETag, too).
pub fn v3_hash(group: &str, version: &str) -> Option<&'static str> {
    find(group, version).map(|d| d.hash.as_str())
}

/// Two FNV-1a 64-bit passes with different offset bases, as 32 uppercase hex digits. Only needs to
/// be stable and to change when the document does; it is not a security boundary.
fn stable_hash(bytes: &[u8]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for &byte in bytes {
        a = (a ^ u64::from(byte)).wrapping_mul(PRIME);
        b = (b ^ u64::from(byte.rotate_left(3))).wrapping_mul(PRIME);
    }
    format!("{a:016X}{b:016X}")
}

fn build_document(group: &'static str, version: &'static str) -> Value {
    let mut paths = Map::new();
    let base = format!("/{}", gv_path(group, version));
    paths.insert(format!("{base}/"), api_resources_path(group, version));
    for r in RESOURCES.iter().filter(|r| r.group == group && r.version == version) {
        resource_paths(r, &base, &mut paths);
    }

    // The kinds of this group-version first (so explain finds them even when no path names them),
    // then everything the paths reference.
    let own: Vec<Value> = schema::kinds()
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(|k| json!({ "$ref": format!("{REF_PREFIX}{}", k.definition) }))
        .collect();
    let paths_value = Value::Object(paths);
    let names = schema::referenced_definitions(own.iter().chain(std::iter::once(&paths_value)));
    let mut schemas = Map::new();
    for name in names {
        if let Some(def) = schema::definition(&name) {
            schemas.insert(name, def.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": "v1.33.0" },
        "paths": paths_value,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "name": "authorization",
                    "in": "header",
                    "description": "Bearer Token authentication",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

fn schema_ref(definition: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{definition}") })
}

/// The response and request media types the server speaks for objects.
fn content(schema: Value) -> Value {
    json!({
        "application/json": { "schema": schema.clone() },
        "application/yaml": { "schema": schema },
    })
}

fn responses(codes: &[(&str, &str)], schema: &Value) -> Value {
    let mut out = Map::new();
    for (code, description) in codes {
        out.insert(
            (*code).to_string(),
            json!({ "description": description, "content": content(schema.clone()) }),
        );
    }
    out.insert("401".into(), json!({ "description": "Unauthorized" }));
    Value::Object(out)
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": ty, "uniqueItems": true },
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn pretty() -> Value {
    query("pretty", "string", "If 'true', then the output is pretty printed.")
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. The only valid value is All.",
    )
}

fn field_manager() -> Value {
    query("fieldManager", "string", "A name associated with the actor or entity that is making these changes.")
}

/// The parameter kubectl checks for before sending `fieldValidation=Strict`.
fn field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "How the server treats unknown and duplicate fields: Ignore, Warn (the default) or Strict.",
    )
}

fn list_params(with_watch: bool) -> Vec<Value> {
    let mut out = vec![
        query("allowWatchBookmarks", "boolean", "Requests watch events of type BOOKMARK."),
        query("continue", "string", "The continue token of a previous chunked list."),
        query("fieldSelector", "string", "Restricts the returned objects by their fields."),
        query("labelSelector", "string", "Restricts the returned objects by their labels."),
        query("limit", "integer", "The maximum number of objects to return in one chunk."),
        query("resourceVersion", "string", "Which resource versions the result may be served from."),
        query("resourceVersionMatch", "string", "How resourceVersion is applied to list calls."),
        query(
            "sendInitialEvents",
            "boolean",
            "Whether a watch starts with synthetic events for the current state.",
        ),
        query("timeoutSeconds", "integer", "Timeout for the list or watch call."),
    ];
    if with_watch {
        out.push(query("watch", "boolean", "Watch for changes instead of listing."));
    }
    out
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
        query(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "Delete even if the stored object cannot be read.",
        ),
        query("orphanDependents", "boolean", "Deprecated: use propagationPolicy."),
        query(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection is performed: Orphan, Background or Foreground.",
        ),
    ]
}

struct Op<'a> {
    id: String,
    description: String,
    action: &'a str,
    /// `(group, version, kind)` of the operation's object.
    gvk: (&'a str, &'a str, &'a str),
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
    tag: String,
}

impl Op<'_> {
    fn into_value(self) -> Value {
        let (group, version, kind) = self.gvk;
        let mut op = json!({
            "tags": [self.tag],
            "description": self.description,
            "operationId": self.id,
            "parameters": self.params,
            "responses": self.responses,
            "x-kubernetes-action": self.action,
            GVK_EXTENSION: { "group": group, "version": version, "kind": kind },
        });
        if let (Some(body), Value::Object(map)) = (self.body, &mut op) {
            map.insert("requestBody".into(), body);
        }
        op
    }
}

fn body(content: Value) -> Value {
    json!({ "content": content, "required": true })
}

/// The patch media types the server accepts, all with upstream's opaque Patch schema.
fn patch_body() -> Value {
    let patch = json!({ "schema": schema_ref(PATCH) });
    body(json!({
        "application/apply-patch+yaml": patch.clone(),
        "application/json-patch+json": patch.clone(),
        "application/merge-patch+json": patch.clone(),
        "application/strategic-merge-patch+json": patch,
    }))
}

/// `apps` -> `Apps`, `networking.k8s.io` -> `Networking`, `` -> `Core`: operation ids and tags use
/// the group's first label, as upstream's do.
fn group_word(group: &str) -> String {
    match group.split('.').next() {
        Some(first) if !first.is_empty() => capitalized(first),
        _ => "Core".into(),
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn api_resources_path(group: &str, version: &str) -> Value {
    let id = format!("get{}{}APIResources", group_word(group), capitalized(version));
    json!({
        "get": {
            "tags": [tag(group, version)],
            "description": "get available resources",
            "operationId": id,
            "responses": responses(&[("200", "OK")], &schema_ref(RESOURCE_LIST)),
        },
    })
}

fn tag(group: &str, version: &str) -> String {
    format!("{}_{version}", group_word(group).to_lowercase())
}

/// The ids and wording of an item's (or a subresource's) read, replace and patch operations.
struct Names {
    read: String,
    replace: String,
    patch: String,
    /// What the operations act on, e.g. "status of the specified Deployment".
    what: String,
}

fn names(id: &dyn Fn(&str, &str) -> String, suffix: &str, what: String) -> Names {
    Names { read: id("read", suffix), replace: id("replace", suffix), patch: id("patch", suffix), what }
}

/// GET, PUT and PATCH of one object (an item, its status, or its scale). Every PUT and PATCH lists
/// fieldValidation: kubectl decides per GVK from whichever PATCH it meets first.
fn read_write_ops(map: &mut Map<String, Value>, n: &Names, gvk: (&str, &str, &str), obj: &Value, tag: &str) {
    let ok = responses(&[("200", "OK")], obj);
    let written = responses(&[("200", "OK"), ("201", "Created")], obj);
    let params = vec![dry_run(), field_manager(), field_validation()];
    let read = Op {
        id: n.read.clone(),
        description: format!("read {}", n.what),
        action: "get",
        gvk,
        params: vec![],
        body: None,
        responses: ok,
        tag: tag.to_string(),
    };
    let replace = Op {
        id: n.replace.clone(),
        description: format!("replace {}", n.what),
        action: "put",
        gvk,
        params: params.clone(),
        body: Some(body(content(obj.clone()))),
        responses: written.clone(),
        tag: tag.to_string(),
    };
    let mut patch_params = params;
    patch_params.push(query("force", "boolean", "Force an apply request to take conflicting fields."));
    let patch = Op {
        id: n.patch.clone(),
        description: format!("partially update {}", n.what),
        action: "patch",
        gvk,
        params: patch_params,
        body: Some(patch_body()),
        responses: written,
        tag: tag.to_string(),
    };
    map.insert("get".into(), read.into_value());
    map.insert("put".into(), replace.into_value());
    map.insert("patch".into(), patch.into_value());
}

fn resource_paths(r: &ResourceDef, base: &str, paths: &mut Map<String, Value>) {
    let Some(def) = schema::definition_name(r.group, r.version, r.kind) else {
        return;
    };
    let list_def = schema::definition_name(r.group, r.version, &r.list_kind()).unwrap_or(def);
    let (gw, vw) = (group_word(r.group), capitalized(r.version));
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let id = |verb: &str, suffix: &str| format!("{verb}{gw}{vw}{scope}{}{suffix}", r.kind);
    let tag = tag(r.group, r.version);
    let gvk = (r.group, r.version, r.kind);
    let obj = schema_ref(def);
    let collection = if r.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{base}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let scope_params = |with_name: bool| {
        let mut out = Vec::new();
        if with_name {
            out.push(path_param("name", &format!("name of the {}", r.kind)));
        }
        if r.namespaced {
            out.push(path_param("namespace", "object name and auth scope, such as for teams and projects"));
        }
        out.push(pretty());
        Value::Array(out)
    };
    let op = |id: String, description: String, action, gvk, params, body, responses| {
        Op { id, description, action, gvk, params, body, responses, tag: tag.clone() }.into_value()
    };
    let list_responses = responses(&[("200", "OK")], &schema_ref(list_def));
    let list_what = format!("list or watch objects of kind {}", r.kind);

    // A review is only created: POST to the collection answers it.
    if r.is_create_only() {
        let mut coll = Map::new();
        coll.insert("parameters".into(), scope_params(false));
        let created = responses(&[("200", "OK"), ("201", "Created"), ("202", "Accepted")], &obj);
        let params = vec![dry_run(), field_manager(), field_validation()];
        let what = format!("create a {}", r.kind);
        let create = op(id("create", ""), what, "post", gvk, params, Some(body(content(obj.clone()))), created);
        coll.insert("post".into(), create);
        paths.insert(collection, Value::Object(coll));
        return;
    }

    // The collection: list, and for stored resources create and deletecollection.
    let mut coll = Map::new();
    coll.insert("parameters".into(), scope_params(false));
    let list =
        op(id("list", ""), list_what.clone(), "list", gvk, list_params(true), None, list_responses.clone());
    coll.insert("get".into(), list);
    if r.stored {
        let created = responses(&[("200", "OK"), ("201", "Created"), ("202", "Accepted")], &obj);
        let params = vec![dry_run(), field_manager(), field_validation()];
        let what = format!("create a {}", r.kind);
        let create = op(id("create", ""), what, "post", gvk, params, Some(body(content(obj.clone()))), created);
        coll.insert("post".into(), create);
        let mut params = delete_params();
        params.extend(list_params(false));
        let delete_body = Some(body(content(schema_ref(DELETE_OPTIONS))));
        let status = responses(&[("200", "OK")], &schema_ref(STATUS));
        let (id, what) =
            (format!("delete{gw}{vw}Collection{scope}{}", r.kind), format!("delete collection of {}", r.kind));
        coll.insert("delete".into(), op(id, what, "deletecollection", gvk, params, delete_body, status));
    }
    paths.insert(collection, Value::Object(coll));

    // A namespaced resource is also listed across all namespaces, where explain looks first.
    if r.namespaced {
        let mut all = Map::new();
        all.insert("parameters".into(), json!([pretty()]));
        let id = format!("list{gw}{vw}{}ForAllNamespaces", r.kind);
        all.insert("get".into(), op(id, list_what, "list", gvk, list_params(true), None, list_responses));
        paths.insert(format!("{base}/{}", r.plural), Value::Object(all));
    }

    // The item: read, and for stored resources replace, patch and delete.
    let mut it = Map::new();
    it.insert("parameters".into(), scope_params(true));
    if r.stored {
        read_write_ops(&mut it, &names(&id, "", format!("the specified {}", r.kind)), gvk, &obj, &tag);
        let status = responses(&[("200", "OK"), ("202", "Accepted")], &schema_ref(STATUS));
        let delete_body = Some(body(content(schema_ref(DELETE_OPTIONS))));
        let what = format!("delete a {}", r.kind);
        it.insert(
            "delete".into(),
            op(id("delete", ""), what, "delete", gvk, delete_params(), delete_body, status),
        );
    } else {
        let ok = responses(&[("200", "OK")], &obj);
        let what = format!("read the specified {}", r.kind);
        it.insert("get".into(), op(id("read", ""), what, "get", gvk, vec![], None, ok));
    }
    paths.insert(item.clone(), Value::Object(it));

    for sub in r.subresources {
        let mut p = Map::new();
        p.insert("parameters".into(), scope_params(true));
        match sub {
            Subresource::Status => {
                let n = names(&id, "Status", format!("status of the specified {}", r.kind));
                read_write_ops(&mut p, &n, gvk, &obj, &tag);
            }
            Subresource::Scale => {
                // The scale subresource speaks autoscaling/v1 Scale, and says so in its GVK.
                let Some(scale) = schema::definition_name("autoscaling", "v1", "Scale") else {
                    continue;
                };
                let n = names(&id, "Scale", format!("scale of the specified {}", r.kind));
                read_write_ops(&mut p, &n, ("autoscaling", "v1", "Scale"), &schema_ref(scale), &tag);
            }
            Subresource::Binding | Subresource::Eviction => {
                let (group, kind) =
                    if *sub == Subresource::Binding { ("", "Binding") } else { ("policy", "Eviction") };
                let Some(def) = schema::definition_name(group, "v1", kind) else {
                    continue;
                };
                let def = schema_ref(def);
                let params = vec![dry_run(), field_manager(), field_validation()];
                let created = responses(&[("200", "OK"), ("201", "Created"), ("202", "Accepted")], &def);
                let what = format!("create {} of a {}", kind.to_lowercase(), r.kind);
                let post_body = Some(body(content(def)));
                let post =
                    op(id("create", kind), what, "post", (group, "v1", kind), params, post_body, created);
                p.insert("post".into(), post);
            }
            Subresource::Finalize => {
                // Only replace: the namespace controller PUTs the namespace with its finalizers gone.
                let n = names(&id, "Finalize", format!("finalize the specified {}", r.kind));
                read_write_ops(&mut p, &n, gvk, &obj, &tag);
                p.remove("get");
                p.remove("patch");
            }
            Subresource::Approval => {
                let n = names(&id, "Approval", format!("approval of the specified {}", r.kind));
                read_write_ops(&mut p, &n, gvk, &obj, &tag);
            }
            // The token operation is not published (its TokenRequest schema is, for decoding);
            // kubectl create token needs no OpenAPI.
            Subresource::Token => continue,
            // Connect operations (streaming upgrades) are not published yet.
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => continue,
            Subresource::Log => {
                let text_plain = json!({ "text/plain": { "schema": { "type": "string" } } });
                let text = json!({
                    "200": { "description": "OK", "content": text_plain },
                    "401": { "description": "Unauthorized" },
                });
                let what = format!("read log of the specified {}", r.kind);
                p.insert("get".into(), op(id("read", "Log"), what, "get", gvk, log_params(), None, text));
            }
        }
        paths.insert(format!("{item}/{}", sub.name()), Value::Object(p));
    }
}

fn log_params() -> Vec<Value> {
    vec![
        query("container", "string", "The container for which to stream logs."),
        query("follow", "boolean", "Follow the log stream of the pod."),
        query("insecureSkipTLSVerifyBackend", "boolean", "Skip verifying the kubelet's serving certificate."),
        query("limitBytes", "integer", "The number of bytes to read from the server before ending the output."),
        query("previous", "boolean", "Return the previous terminated container's logs."),
        query("sinceSeconds", "integer", "Show logs newer than this many seconds."),
        query("stream", "string", "Which stream to return: All, Stdout or Stderr."),
        query("tailLines", "integer", "The number of lines from the end of the logs to show."),
        query("timestamps", "boolean", "Prefix every line with an RFC3339 timestamp."),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves a `$ref` within one document only, as kubectl does.
    fn deref<'a>(doc: &'a Value, mut s: &'a Value) -> &'a Value {
        loop {
            if let Some(r) = s.get("$ref").and_then(Value::as_str) {
                s = &doc["components"]["schemas"][r.trim_start_matches(REF_PREFIX)];
            } else if let Some([only]) = s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                s = only;
            } else {
                return s;
            }
        }
    }

    fn all_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r);
                }
                m.values().for_each(|v| all_refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| all_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn index_lists_every_group_version_with_a_stable_hash() {
        let index = v3_index("");
        let paths = index["paths"].as_object().unwrap();
        for (g, v) in resources::group_versions() {
            let url = paths[&gv_path(g, v)]["serverRelativeURL"].as_str().unwrap();
            assert_eq!(url, format!("/openapi/v3/{}?hash={}", gv_path(g, v), v3_hash(g, v).unwrap()));
        }
        assert_eq!(paths.len(), resources::group_versions().len());
        assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
        assert_eq!(v3_index(""), v3_index(""));
        assert_eq!(stable_hash(b"a"), stable_hash(b"a"));
        assert_ne!(stable_hash(b"a"), stable_hash(b"b"));
        assert!(v3_document("apps", "v2").is_none());
    }

    #[test]
    fn deployment_document_serves_explain() {
        let doc = v3_document("apps", "v1").unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        let gvk = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        assert!(deploy[GVK_EXTENSION].as_array().unwrap().contains(&gvk));
        assert!(schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(schemas.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Status"));
        assert!(schemas.contains_key("io.k8s.api.autoscaling.v1.Scale"));
        // spec.template.spec.containers, following refs within the document only.
        let mut s = deref(&doc, deploy);
        for key in ["spec", "template", "spec", "containers"] {
            s = deref(&doc, &s["properties"][key]);
        }
        assert_eq!(s["type"], "array");
        let container = deref(&doc, &s["items"]);
        assert!(container["properties"]["image"]["description"].as_str().unwrap().contains("image"));

        let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(item["patch"][GVK_EXTENSION], gvk);
        assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
        assert_eq!(doc["paths"]["/apis/apps/v1/deployments"]["get"][GVK_EXTENSION], gvk);
        let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(scale["put"][GVK_EXTENSION]["kind"], "Scale");
    }

    /// kubectl picks whichever PATCH operation of a GVK it meets first, so all must list it.
    #[test]
    fn every_write_lists_field_validation() {
        for (g, v) in resources::group_versions() {
            let doc = v3_document(g, v).unwrap();
            let mut patches = 0;
            for (path, item) in doc["paths"].as_object().unwrap() {
                for method in ["post", "put", "patch"] {
                    let Some(op) = item.get(method) else { continue };
                    patches += usize::from(method == "patch");
                    let has = op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query");
                    assert!(has, "{method} {path}");
                    assert!(op.get(GVK_EXTENSION).is_some() && op.get("x-kubernetes-action").is_some());
                }
            }
            let only_reviews = resources::RESOURCES
                .iter()
                .filter(|r| (r.group, r.version) == (g, v))
                .all(|r| r.is_create_only());
            assert!(patches > 0 || only_reviews, "{g}/{v}");
        }
    }

    #[test]
    fn every_ref_resolves_inside_its_document_and_every_kind_is_explainable() {
        for (g, v) in resources::group_versions() {
            let bytes = v3_document_bytes(g, v).unwrap();
            let doc: Value = serde_json::from_slice(bytes).unwrap();
            assert_eq!(doc["openapi"], "3.0.0");
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            let mut refs = Vec::new();
            all_refs(&doc, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let name = r.strip_prefix(REF_PREFIX).unwrap_or_else(|| panic!("{r}"));
                assert!(schemas.contains_key(name), "{g}/{v}: {r}");
            }
            // What explain does: the GVK from the resource's list path, then the schema holding it.
            for r in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
                // A namespaced review is created only in a namespace: no cluster-wide path.
                let list_path = if r.is_create_only() && r.namespaced {
                    format!("/{}/namespaces/{{namespace}}/{}", gv_path(g, v), r.plural)
                } else {
                    format!("/{}/{}", gv_path(g, v), r.plural)
                };
                let method = if r.is_create_only() { "post" } else { "get" };
                let gvk = &doc["paths"][&list_path][method][GVK_EXTENSION];
                assert_eq!(gvk["kind"], r.kind, "{list_path}");
                let found = schemas
                    .values()
                    .any(|s| s.get(GVK_EXTENSION).and_then(Value::as_array).is_some_and(|a| a.contains(gvk)));
                assert!(found, "{}", r.kind);
            }
        }
    }
}
