use serde_json::json;

use super::schema::{apply_defaults, prune, structural_errors, validate};
use super::*;

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {"group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"cronSpec": {"type": "string", "pattern": "^\\S+ \\S+$"},
                                   "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                                   "mode": {"type": "string", "enum": ["a", "b"]}},
                    "required": ["cronSpec"]}}}}}]}
    })
}

#[test]
fn a_valid_crd_passes_and_serves_its_version_once_established() {
    assert_eq!(validate_crd(&crd()), vec![]);
    let mut c = crd();
    assert!(served(&c).is_empty(), "not established yet");
    c["status"] = status_for(&c, None, None, "2024-01-01T00:00:00Z");
    let s = served(&c);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].def.etcd_prefix, "/registry/stable.example.com/crontabs");
    assert_eq!(s[0].def.key(Some("default"), "a"), "/registry/stable.example.com/crontabs/default/a");
    // Interned: the same definition is the same entry.
    assert!(std::ptr::eq(served(&c)[0], s[0]));
    assert!(custom(&s[0].def).is_some());
    assert!(custom(crate::resources::lookup("", "v1", "pods").unwrap()).is_none());
}

#[test]
fn bad_crds_get_upstreams_messages() {
    let mut c = crd();
    c["metadata"]["name"] = json!("wrong.stable.example.com");
    c["spec"]["versions"][0]["storage"] = json!(false);
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["x"] = json!({});
    let errs = validate_crd(&c);
    let text: Vec<String> = errs.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
    assert!(text.contains(&"metadata.name: Invalid value: \"wrong.stable.example.com\": must be spec.names.plural+\".\"+spec.group".to_string()), "{text:?}");
    assert!(
        text.iter().any(|t| t.starts_with("spec.versions: Invalid value")
            && t.ends_with("must have exactly one version marked as storage version")),
        "{text:?}"
    );
    assert!(text.contains(&"spec.validation.openAPIV3Schema.properties[spec].properties[x].type: Required value: must not be empty for specified object fields".to_string()), "{text:?}");
}

#[test]
fn custom_resources_are_pruned_defaulted_and_validated() {
    let schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    assert!(structural_errors(&schema, "s").is_empty());
    let mut obj = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "a", "bogus": 1}, "spec": {"cronSpec": "* *", "extra": true}, "top": 1});
    let dropped = prune(&schema, &mut obj);
    assert_eq!(dropped, vec!["metadata.bogus", "spec.extra", "top"]);
    apply_defaults(&schema, &mut obj);
    assert_eq!(obj["spec"]["replicas"], 1);
    assert!(validate(&schema, &obj).is_empty());
    let bad = json!({"spec": {"replicas": "x", "mode": "c", "cronSpec": "nope"}});
    let text: Vec<String> =
        validate(&schema, &bad).iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
    assert_eq!(text, vec![
        "spec.cronSpec: Invalid value: \"nope\": spec.cronSpec in body should match '^\\S+ \\S+$'".to_string(),
        "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_string(),
        "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"".to_string(),
    ]);
    let text: Vec<String> = validate(&schema, &json!({"spec": {"replicas": 11}}))
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert_eq!(
        text,
        vec![
            "spec.cronSpec: Required value".to_string(),
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"
                .to_string(),
        ]
    );
}

#[test]
fn version_priority_is_kubernetes_order() {
    let mut v = vec!["v1alpha1", "foo", "v2", "v1beta1", "v1", "v1beta2"];
    v.sort_by(version_priority);
    assert_eq!(v, vec!["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
}

#[test]
fn printer_paths() {
    let obj = json!({"spec": {"a": [1, 2]}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    assert_eq!(printing::first(".spec.a[1]", &obj), Some(&json!(2)));
    assert_eq!(printing::first(".status.conditions[?(@.type==\"Ready\")].status", &obj), Some(&json!("True")));
    assert!(printing::parse_path("spec").is_err());
}

#[test]
fn a_name_in_use_is_not_accepted_and_nothing_is_served() {
    let mut first = crd();
    first["status"] = status_for(&first, None, None, "t");
    let mut second = crd();
    second["metadata"]["name"] = json!("crontabz.stable.example.com");
    second["spec"]["names"]["plural"] = json!("crontabz");
    let conflict = name_conflict(&second, &[first.clone()]);
    assert_eq!(conflict.as_deref(), Some("\"CronTab\" is already in use"));
    second["status"] = status_for(&second, None, conflict, "t");
    let conds = second["status"]["conditions"].as_array().unwrap();
    assert_eq!(
        (conds[0]["type"].as_str(), conds[0]["status"].as_str()),
        (Some("NamesAccepted"), Some("False"))
    );
    assert_eq!((conds[1]["type"].as_str(), conds[1]["status"].as_str()), (Some("Established"), Some("False")));
    assert!(served(&second).is_empty());
    // The same CRD is no conflict with itself.
    assert!(name_conflict(&first, &[first.clone()]).is_none());
}

#[test]
fn extensions_preserve_int_or_string_and_embedded_resources() {
    let schema = json!({"type": "object", "properties": {
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                 "properties": {"n": {"type": "integer"}}},
        "port": {"x-kubernetes-int-or-string": true},
        "tmpl": {"type": "object", "x-kubernetes-embedded-resource": true,
                 "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}}},
    }});
    assert!(structural_errors(&schema, "s").is_empty(), "{:?}", structural_errors(&schema, "s"));
    let mut obj = json!({"free": {"n": 1, "anything": {"deep": true}}, "port": "http",
        "tmpl": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "junk": 1}, "spec": {"a": "b", "z": 1}}});
    let dropped = prune(&schema, &mut obj);
    assert_eq!(dropped, vec!["tmpl.metadata.junk", "tmpl.spec.z"]);
    assert_eq!(obj["free"]["anything"], json!({"deep": true}));
    assert!(validate(&schema, &obj).is_empty());
    let bad = json!({"free": {"n": "one"}, "port": true, "tmpl": {"spec": {}}});
    let text: Vec<String> =
        validate(&schema, &bad).iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
    assert_eq!(
        text,
        vec![
            "free.n: Invalid value: \"string\": free.n in body must be of type integer: \"string\"".to_string(),
            "port: Invalid value: \"boolean\": port in body must be of type integer,string: \"boolean\""
                .to_string(),
            "tmpl.apiVersion: Required value: must not be empty".to_string(),
            "tmpl.kind: Required value: must not be empty".to_string(),
        ]
    );
}

#[test]
fn lengths_items_and_defaults_inside_defaults() {
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 3},
        "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
        "opts": {"type": "object", "default": {}, "properties": {"level": {"type": "integer", "default": 3}}},
    }});
    let mut obj = json!({});
    apply_defaults(&schema, &mut obj);
    assert_eq!(obj, json!({"opts": {"level": 3}}));
    let text: Vec<String> = validate(&schema, &json!({"name": "abcd", "tags": ["a", "b", "c"]}))
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert_eq!(
        text,
        vec![
            "name: Too long: may not be more than 3 bytes".to_string(),
            "tags: Too many: 3: must have at most 2 items".to_string(),
        ]
    );
    let text: Vec<String> = validate(&schema, &json!({"name": "a", "tags": [1]}))
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    assert_eq!(
        text,
        vec![
            "name: Invalid value: \"a\": name in body should be at least 2 chars long".to_string(),
            "tags[0]: Invalid value: \"integer\": tags[0] in body must be of type string: \"integer\""
                .to_string(),
        ]
    );
    // A default that breaks its own schema is refused at CRD time.
    let bad = json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 2, "default": 5}}});
    let errs = structural_errors(&bad, "s");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].field, "s.properties[n].default");
}

#[test]
fn selectable_fields_are_validated_and_become_field_selectors() {
    let mut c = crd();
    let fields = |paths: &[&str]| json!(paths.iter().map(|p| json!({"jsonPath": p})).collect::<Vec<_>>());
    c["spec"]["versions"][0]["selectableFields"] = fields(&[".spec.cronSpec", ".spec.replicas"]);
    assert_eq!(validate_crd(&c), vec![]);
    c["status"] = status_for(&c, None, None, "2024-01-01T00:00:00Z");
    let s = served(&c);
    assert_eq!(s[0].def.field_selectors, ["spec.cronSpec", "spec.replicas"]);

    let mut bad = crd();
    bad["spec"]["versions"][0]["selectableFields"] =
        fields(&[".spec.nope", "spec.cronSpec", ".spec", ".metadata.name", ".spec.mode", ".spec.mode", ""]);
    let messages: Vec<String> =
        validate_crd(&bad).iter().map(|v| format!("{}: {}", v.field, v.message)).collect();
    let at = "spec.versions[0].selectableFields";
    assert_eq!(
        messages,
        [
            format!("{at}[0].jsonPath: Invalid value: \".spec.nope\": is an invalid path: does not refer to a valid field"),
            format!("{at}[1].jsonPath: Invalid value: \"spec.cronSpec\": is an invalid path: expected [ or . but got: spec"),
            format!("{at}[2].jsonPath: Invalid value: \".spec\": must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed."),
            format!("{at}[3].jsonPath: Invalid value: \".metadata.name\": is an invalid path: does not refer to a valid field"),
            format!("{at}[5].jsonPath: Duplicate value: \".spec.mode\""),
            format!("{at}[6].jsonPath: Required value"),
        ]
    );
    let many: Vec<&str> = vec![".spec.mode"; 9];
    bad["spec"]["versions"][0]["selectableFields"] = fields(&many);
    let first = validate_crd(&bad).into_iter().next().unwrap();
    assert_eq!(
        format!("{}: {}", first.field, first.message),
        format!("{at}: Too many: 9: must have at most 8 items")
    );
}
