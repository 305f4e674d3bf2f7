use serde_json::{json, Value};

use super::*;

fn err(group: &str, kind: &str, mut obj: Value) -> String {
    match check_kind(group, "v1", kind, &mut obj, Dialect::Json) {
        Err(e) => e.0,
        Ok(_) => panic!("{kind} accepted: {obj}"),
    }
}

fn deployment(spec: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": spec})
}

#[test]
fn wrong_types_get_gos_messages_at_every_depth() {
    let pod = json!({"metadata": {"name": "p", "annotations": {"x": 5}}});
    assert_eq!(
        err("", "Pod", pod),
        "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations of type string"
    );
    assert_eq!(
        err("apps", "Deployment", deployment(json!({"replicas": "3"}))),
        "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
    );
    assert_eq!(
        err("apps", "Deployment", deployment(json!({"template": {"spec": {"containers": {"name": "c"}}}}))),
        "json: cannot unmarshal object into Go struct field PodSpec.spec.template.spec.containers of type []v1.Container"
    );
    let ports =
        json!({"template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 1.5}]}]}}});
    assert_eq!(
        err("apps", "Deployment", deployment(ports)),
        "json: cannot unmarshal number 1.5 into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32"
    );
    assert_eq!(
        err("apps", "Deployment", deployment(json!({"replicas": 3_000_000_000u64}))),
        "json: cannot unmarshal number 3000000000 into Go struct field DeploymentSpec.spec.replicas of type int32"
    );
    assert_eq!(
        err("", "Pod", json!({"spec": []})),
        "json: cannot unmarshal array into Go struct field Pod.spec of type v1.PodSpec"
    );
    assert_eq!(
        err("", "ConfigMap", json!({"data": {"a": true}})),
        "json: cannot unmarshal bool into Go struct field ConfigMap.data of type string"
    );
    assert_eq!(err("", "Secret", json!({"data": {"a": "not base64!"}})), "illegal base64 data at input byte 3");
    let surge = json!({"strategy": {"rollingUpdate": {"maxSurge": true}}});
    assert_eq!(
        err("apps", "Deployment", deployment(surge)),
        "json: cannot unmarshal bool into Go value of type int32"
    );
    assert_eq!(
        err("", "Pod", json!({"metadata": {"creationTimestamp": "yesterday"}})),
        "parsing time \"yesterday\" as \"2006-01-02T15:04:05Z07:00\": cannot parse \"yesterday\" as \"2006\""
    );
    assert_eq!(
        err("", "Pod", json!({"metadata": {"creationTimestamp": "2024-13-01T00:00:00Z"}})),
        "parsing time \"2024-13-01T00:00:00Z\": month out of range"
    );
    assert_eq!(
        err("authentication.k8s.io", "TokenRequest", json!({"spec": {"expirationSeconds": "x"}})),
        "json: cannot unmarshal string into Go struct field TokenRequestSpec.spec.expirationSeconds of type int64"
    );
    let limits = json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "1kk"}}}]});
    assert_eq!(err("", "Pod", json!({"spec": limits})), "unable to parse quantity's suffix");
    let limits = json!({"containers": [{"name": "c", "resources": {"limits": {"cpu": "abc"}}}]});
    assert_eq!(
        err("", "Pod", json!({"spec": limits})),
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    );
}

#[test]
fn unknown_fields_are_pruned_and_nulls_become_what_go_reemits() {
    let mut d = deployment(json!({
        "replicas": 2,
        "bogus": {"deep": 1},
        "paused": null,
        "template": {
            "metadata": {"labels": {"app": "x", "gone": null}},
            "spec": {"containers": [{"name": "c", "image": "i", "extra": 1,
                "resources": {"limits": {"memory": 5, "cpu": 0.5}}}]}
        }
    }));
    let unknown = check_kind("apps", "v1", "Deployment", &mut d, Dialect::Json).unwrap();
    assert_eq!(unknown, vec!["spec.bogus", "spec.template.spec.containers[0].extra"]);
    assert_eq!(
        d["spec"],
        json!({
            "replicas": 2,
            "selector": {},
            "template": {
                "metadata": {"labels": {"app": "x", "gone": ""}},
                "spec": {"containers": [{"name": "c", "image": "i",
                    "resources": {"limits": {"memory": "5", "cpu": "0.5"}}}]}
            }
        })
    );
    // What is left decodes as the typed object.
    serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(d).unwrap();
}

#[test]
fn absent_fields_go_always_emits_get_their_zero_value() {
    let mut pod = json!({"spec": {"containers": [{"image": "i", "ports": [{"name": "p"}]}]}});
    check_kind("", "v1", "Pod", &mut pod, Dialect::Json).unwrap();
    assert_eq!(pod["spec"]["containers"][0]["name"], "");
    assert_eq!(pod["spec"]["containers"][0]["ports"][0]["containerPort"], 0);
    serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod).unwrap();
}

#[test]
fn raw_kept_values_and_kinds_without_schema_are_left_alone() {
    let mut pod = json!({"metadata": {"managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"x": 5}}}]}});
    let before = pod.clone();
    assert!(check_kind("", "v1", "Pod", &mut pod, Dialect::Json).unwrap().is_empty());
    assert_eq!(pod, before);
    let mut any = json!({"x": [1, {"y": null}]});
    assert!(check_kind("", "v1", "NoSuchKind", &mut any, Dialect::Json).unwrap().is_empty());
}

#[test]
fn times_are_reemitted_in_utc() {
    assert_eq!(normalize_time("2024-01-01T10:00:00.5+02:00", false).unwrap(), "2024-01-01T08:00:00Z");
    assert_eq!(normalize_time("2024-03-01T00:30:00+01:00", false).unwrap(), "2024-02-29T23:30:00Z");
    assert_eq!(normalize_time("2024-01-01T10:00:00.25Z", true).unwrap(), "2024-01-01T10:00:00.250000Z");
    assert_eq!(normalize_time("2024-01-01T10:00:00Z", true).unwrap(), "2024-01-01T10:00:00.000000Z");
    assert!(normalize_time("2023-02-29T00:00:00Z", false).unwrap_err().contains("day out of range"));
    assert!(normalize_time("2024-01-01 10:00:00Z", false).unwrap_err().contains("as \"T\""));
    assert!(normalize_time("2024-01-01T10:00:00Zjunk", false).unwrap_err().contains("extra text"));
    // A MicroTime field (Lease renewTime) keeps its microseconds.
    let mut lease = json!({"spec": {"renewTime": "2024-01-01T10:00:00.123456Z"}});
    check_kind("coordination.k8s.io", "v1", "Lease", &mut lease, Dialect::Json).unwrap();
    assert_eq!(lease["spec"]["renewTime"], "2024-01-01T10:00:00.123456Z");
}

#[test]
fn quantities_parse_as_upstreams() {
    for ok in ["1", "100m", "1.5Gi", "+1e3", "-2E-3", "0.5", "1Ki", ".5"] {
        assert_eq!(parse_quantity(ok), Ok(()), "{ok}");
    }
    for bad in ["", "Gi", "1..2", "1 Gi", "1.2.3", "1Qi"] {
        assert!(parse_quantity(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_unstructured_converter_words_errors_its_own_way() {
    let mut d = deployment(json!({"replicas": "3"}));
    let e = check_kind("apps", "v1", "Deployment", &mut d, Dialect::Unstructured).unwrap_err();
    assert_eq!(e.0, "cannot convert string to int32");
    let mut d = deployment(json!({"template": "x"}));
    let e = check_kind("apps", "v1", "Deployment", &mut d, Dialect::Unstructured).unwrap_err();
    assert_eq!(e.0, "cannot restore struct from: string");
    assert_eq!(
        go_format(&json!({"spec": {"replicas": "3", "b": [1, null]}})),
        "map[spec:map[b:[1 <nil>] replicas:3]]"
    );
}
