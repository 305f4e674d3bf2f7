//! Content-Type parsing, JSON merge patch, JSON patch and the error → Status mapping.

use serde_json::{json, Value};

use super::test_schema;
use super::*;

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"deployment.kubernetes.io/revision": "1"}
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.24"}]}
            }
        }
    })
}

fn apply_ok(patch_type: PatchType, original: &Value, patch: &str) -> Value {
    match apply(patch_type, original, patch.as_bytes(), &test_schema::deployment()) {
        Ok(v) => v,
        Err(e) => panic!("patch {patch} failed: {e:?}"),
    }
}

fn apply_err(patch_type: PatchType, original: &Value, patch: &str) -> PatchError {
    match apply(patch_type, original, patch.as_bytes(), &test_schema::deployment()) {
        Ok(v) => panic!("patch {patch} unexpectedly applied: {v}"),
        Err(e) => e,
    }
}

#[test]
fn content_types_parse_with_and_without_parameters() {
    let cases = [
        ("application/json-patch+json", PatchType::Json),
        ("application/merge-patch+json", PatchType::Merge),
        ("application/strategic-merge-patch+json", PatchType::StrategicMerge),
        ("application/strategic-merge-patch+json; charset=utf-8", PatchType::StrategicMerge),
        ("application/apply-patch+yaml", PatchType::ApplyYaml),
    ];
    for (header, want) in cases {
        assert_eq!(PatchType::from_content_type(header), Ok(want), "{header}");
        assert_eq!(header.parse::<PatchType>(), Ok(want), "{header}");
    }
    assert_eq!(PatchType::StrategicMerge.media_type(), "application/strategic-merge-patch+json");
}

#[test]
fn unknown_content_type_is_415_with_upstream_message() {
    for header in
        ["application/json", "text/plain", "", "application/merge-patch+json2", ";application/json-patch+json"]
    {
        let err = PatchType::from_content_type(header).err();
        let Some(err @ PatchError::UnsupportedMediaType { .. }) = err else {
            panic!("{header:?} parsed: {err:?}");
        };
        let status = err.status();
        assert_eq!(status.code, 415);
        assert_eq!(status.reason, "UnsupportedMediaType");
        assert_eq!(
            status.message,
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, \
             application/apply-patch+yaml"
        );
    }
}

#[test]
fn unsupported_media_type_message_takes_any_list() {
    assert_eq!(
        unsupported_media_type_message(&[PatchType::JSON, PatchType::MERGE, PatchType::APPLY_YAML]),
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
}

#[test]
fn apply_patch_is_rejected_with_415() {
    let err = apply_err(PatchType::ApplyYaml, &deployment(), "apiVersion: apps/v1\nkind: Deployment\n");
    assert_eq!(err, PatchError::ApplyNotSupported);
    assert_eq!(err.status().code, 415);
    assert_eq!(err.status().reason, "UnsupportedMediaType");
}

#[test]
fn merge_patch_kubectl_label_and_unlabel() {
    // `kubectl label deploy web env=prod tier-`
    let out =
        apply_ok(PatchType::Merge, &deployment(), r#"{"metadata":{"labels":{"env":"prod","tier":null}}}"#);
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "env": "prod"}));
    // Everything else is untouched.
    assert_eq!(out["spec"], deployment()["spec"]);
    assert_eq!(out["metadata"]["annotations"], deployment()["metadata"]["annotations"]);
}

#[test]
fn merge_patch_kubectl_scale() {
    let out = apply_ok(PatchType::Merge, &deployment(), r#"{"spec":{"replicas":3}}"#);
    assert_eq!(out["spec"]["replicas"], json!(3));
    let mut want = deployment();
    want["spec"]["replicas"] = json!(3);
    assert_eq!(out, want);
}

#[test]
fn merge_patch_replaces_lists_and_deletes_with_null() {
    let out = apply_ok(
        PatchType::Merge,
        &deployment(),
        r#"{"metadata":{"annotations":null},"spec":{"template":{"spec":{"containers":[{"name":"app","image":"busybox"}]}}}}"#,
    );
    assert!(out["metadata"].get("annotations").is_none());
    // RFC 7386 has no merge keys: the whole list is replaced, the old container's fields are gone.
    assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "app", "image": "busybox"}]));
}

#[test]
fn merge_patch_creates_missing_objects_without_nulls() {
    let out = apply_ok(
        PatchType::Merge,
        &deployment(),
        r#"{"spec":{"paused":true,"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(out["spec"]["paused"], json!(true));
}

#[test]
fn merge_patch_rfc7386_examples() {
    let target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"});
    let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": null}, "tags": ["example"]});
    assert_eq!(
        merge_patch(target, patch),
        json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
    );
    assert_eq!(merge_patch(json!({"a": "b"}), json!({"a": {"b": "c", "d": null}})), json!({"a": {"b": "c"}}));
    assert_eq!(merge_patch(json!({"a": "b"}), json!(["c"])), json!(["c"]));
}

#[test]
fn malformed_merge_patch_is_400_invalid_json_patch() {
    for body in ["{", "null", "not json"] {
        let err = apply_err(PatchType::Merge, &deployment(), body);
        assert_eq!(err, PatchError::MalformedPatch("Invalid JSON Patch".to_string()), "{body}");
        assert_eq!(err.status().code, 400);
        assert_eq!(err.status().reason, "BadRequest");
        assert_eq!(err.status().message, "Invalid JSON Patch");
    }
}

#[test]
fn json_patch_add_remove_replace_test() {
    let patch = r#"[
        {"op":"test","path":"/spec/replicas","value":1},
        {"op":"replace","path":"/spec/replicas","value":5},
        {"op":"add","path":"/metadata/labels/env","value":"prod"},
        {"op":"remove","path":"/metadata/labels/tier"},
        {"op":"add","path":"/metadata/annotations/example.com~1owner","value":"team-a"},
        {"op":"add","path":"/spec/template/spec/containers/-","value":{"name":"sidecar","image":"busybox"}},
        {"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.25"}
    ]"#;
    let out = apply_ok(PatchType::Json, &deployment(), patch);
    assert_eq!(out["spec"]["replicas"], json!(5));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "env": "prod"}));
    assert_eq!(out["metadata"]["annotations"]["example.com/owner"], json!("team-a"));
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "nginx", "image": "nginx:1.25"}, {"name": "sidecar", "image": "busybox"}])
    );
}

#[test]
fn json_patch_move_copy_and_array_insert() {
    let original = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"args": ["x", "z"]}});
    let patch = r#"[
        {"op":"add","path":"/spec/args/1","value":"y"},
        {"op":"copy","from":"/metadata/labels","path":"/metadata/annotations"},
        {"op":"move","from":"/metadata/labels/a","path":"/metadata/labels/b"}
    ]"#;
    let out = apply(PatchType::Json, &original, patch.as_bytes(), &NoSchema);
    assert_eq!(
        out,
        Ok(
            json!({"metadata": {"labels": {"b": "1"}, "annotations": {"a": "1"}}, "spec": {"args": ["x", "y", "z"]}})
        )
    );
}

#[test]
fn json_patch_test_numbers_compare_by_value_and_null_matches_absent() {
    let out = apply_ok(
        PatchType::Json,
        &deployment(),
        r#"[{"op":"test","path":"/spec/replicas","value":1.0},{"op":"test","path":"/metadata/labels/missing","value":null}]"#,
    );
    assert_eq!(out, deployment());
}

#[test]
fn json_patch_failing_test_is_422_and_nothing_applies() {
    let original = deployment();
    let err = apply_err(
        PatchType::Json,
        &original,
        r#"[{"op":"replace","path":"/spec/replicas","value":9},{"op":"test","path":"/spec/replicas","value":1}]"#,
    );
    assert_eq!(
        err,
        PatchError::JsonPatchFailed("testing value /spec/replicas failed: test failed".to_string())
    );
    let status = err.status();
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(status.message, "the server rejected our request due to an error in our request");
    assert_eq!(original["spec"]["replicas"], json!(1));
}

#[test]
fn json_patch_missing_paths_are_422() {
    let cases = [
        r#"[{"op":"remove","path":"/metadata/labels/nope"}]"#,
        r#"[{"op":"replace","path":"/spec/paused","value":true}]"#,
        r#"[{"op":"add","path":"/spec/missing/child","value":1}]"#,
        r#"[{"op":"add","path":"/spec/template/spec/containers/5","value":{}}]"#,
        r#"[{"op":"remove","path":"/spec/template/spec/containers/01"}]"#,
        r#"[{"op":"copy","from":"/nope","path":"/x"}]"#,
        r#"[{"op":"move","from":"/spec","path":"/spec/inner"}]"#,
        r#"[{"op":"add","path":"spec","value":1}]"#,
    ];
    for patch in cases {
        let err = apply_err(PatchType::Json, &deployment(), patch);
        assert!(matches!(err, PatchError::JsonPatchFailed(_)), "{patch}: {err:?}");
        assert_eq!(err.status().code, 422, "{patch}");
    }
}

#[test]
fn json_patch_unknown_or_incomplete_ops_fail_on_apply_like_upstream() {
    // evanphx/json-patch decodes operations as maps, so these are apply errors (422), not 400s.
    let err = apply_err(PatchType::Json, &deployment(), r#"[{"op":"frobnicate","path":"/spec"}]"#);
    assert_eq!(err, PatchError::JsonPatchFailed("Unexpected kind: frobnicate".to_string()));
    let err = apply_err(PatchType::Json, &deployment(), r#"[{"op":"add","value":1}]"#);
    assert_eq!(err, PatchError::JsonPatchFailed("operation missing path field".to_string()));
}

#[test]
fn malformed_json_patch_is_400() {
    for body in ["{", r#"{"op":"add","path":"/a","value":1}"#, r#"["add"]"#] {
        let err = apply_err(PatchType::Json, &deployment(), body);
        assert!(matches!(err, PatchError::MalformedPatch(_)), "{body}: {err:?}");
        assert_eq!(err.status().code, 400);
        assert_eq!(err.status().reason, "BadRequest");
    }
}

#[test]
fn json_patch_operation_cap_is_413() {
    let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
        .map(|_| json!({"op": "test", "path": "/kind", "value": "Deployment"}))
        .collect();
    let body = Value::Array(ops).to_string();
    let err = apply_err(PatchType::Json, &deployment(), &body);
    assert_eq!(err, PatchError::TooManyOperations(MAX_JSON_PATCH_OPERATIONS + 1));
    let status = err.status();
    assert_eq!(status.code, 413);
    assert_eq!(status.reason, "RequestEntityTooLarge");
    assert_eq!(
        status.message,
        "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
    );
}

#[test]
fn json_patch_root_replace() {
    let out =
        apply(PatchType::Json, &json!({"a": 1}), br#"[{"op":"replace","path":"","value":{"b":2}}]"#, &NoSchema);
    assert_eq!(out, Ok(json!({"b": 2})));
}

#[test]
fn error_status_mapping_for_strategic_variants() {
    let bad = PatchError::StrategicBadRequest("invalid patch format of retainKeys".to_string()).status();
    assert_eq!(
        (bad.code, bad.reason, bad.message.as_str()),
        (400, "BadRequest", "invalid patch format of retainKeys")
    );
    let invalid = PatchError::StrategicInvalid("lists of lists are not supported".to_string()).status();
    assert_eq!((invalid.code, invalid.reason), (422, "Invalid"));
    assert_eq!(invalid.message, "the server rejected our request due to an error in our request");
    let internal = PatchError::StrategicInternal("boom".to_string()).status();
    assert_eq!((internal.code, internal.reason, internal.message.as_str()), (500, "", "boom"));
}
