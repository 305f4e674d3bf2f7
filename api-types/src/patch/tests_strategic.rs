//! Strategic merge patch, with payloads shaped like the ones kubectl sends.

use serde_json::{json, Value};

use super::test_schema;
use super::*;

fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "default",
            "labels": {"app": "web"},
            "finalizers": ["example.com/cleanup", "example.com/audit"],
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u-1", "controller": true}
            ]
        },
        "spec": {
            "containers": [
                {
                    "name": "nginx",
                    "image": "nginx:1.24",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}],
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "resources": {"limits": {"cpu": "500m"}}
                },
                {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "3600"]}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "web-cfg"}}],
            "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "PodScheduled", "status": "True"}
            ]
        }
    })
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.24", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                        {"name": "sidecar", "image": "busybox:1.36"}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            }
        }
    })
}

fn smp(original: &Value, patch: Value) -> Result<Value, PatchError> {
    let schema = match original["kind"].as_str() {
        Some("Deployment") => test_schema::deployment(),
        _ => test_schema::pod(),
    };
    apply(PatchType::StrategicMerge, original, patch.to_string().as_bytes(), &schema)
}

fn smp_ok(original: &Value, patch: Value) -> Value {
    match smp(original, patch.clone()) {
        Ok(v) => v,
        Err(e) => panic!("patch {patch} failed: {e:?}"),
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect()
}

#[test]
fn kubectl_set_image_keeps_other_container_fields() {
    let original = deployment();
    let out = smp_ok(
        &original,
        json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}}}}),
    );
    let mut want = original.clone();
    want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.25");
    assert_eq!(out, want);
}

#[test]
fn kubectl_scale_and_label() {
    let out =
        smp_ok(&deployment(), json!({"metadata":{"labels":{"env":"prod","app":null}},"spec":{"replicas":3}}));
    assert_eq!(out["spec"]["replicas"], json!(3));
    assert_eq!(out["metadata"]["labels"], json!({"env": "prod"}));
    assert_eq!(out["spec"]["template"], deployment()["spec"]["template"]);
}

#[test]
fn kubectl_apply_three_way_patch() {
    // What `kubectl apply` sends after the manifest switched to Recreate, bumped nginx, added a
    // metrics container ahead of it, dropped the sidecar and moved the volume to a ConfigMap.
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null},
            "template": {"spec": {
                "$setElementOrder/containers": [{"name": "metrics"}, {"name": "nginx"}],
                "containers": [
                    {"image": "prom/statsd-exporter:v0.26", "name": "metrics"},
                    {"image": "nginx:1.25", "name": "nginx"},
                    {"$patch": "delete", "name": "sidecar"}
                ],
                "$setElementOrder/volumes": [{"name": "data"}],
                "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "web-cfg"}, "emptyDir": null, "name": "data"}]
            }}
        }
    });
    let out = smp_ok(&deployment(), patch);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([
            {"name": "metrics", "image": "prom/statsd-exporter:v0.26"},
            {"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}]}
        ])
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "web-cfg"}}])
    );
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        json!("{}\n")
    );
    assert_eq!(out["spec"]["replicas"], json!(2));
    // No directive leaks into the stored object.
    assert!(!out.to_string().contains('$'), "{out}");
}

#[test]
fn set_element_order_reorders_and_keeps_server_only_elements() {
    // The patch's items follow $setElementOrder; server-only ones keep their place relative to
    // the items that followed them on the server.
    let original = json!({"kind": "Pod", "spec": {"containers": [
        {"name": "a", "image": "a"}, {"name": "sidecar", "image": "s"}, {"name": "b", "image": "b"}
    ]}});
    let out = smp_ok(
        &original,
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "b", "image": "b2"}]
        }}),
    );
    // `sidecar` was before `b` on the server, so it stays ahead of it.
    assert_eq!(names(&out["spec"]["containers"]), ["sidecar", "b", "a"]);
    assert_eq!(out["spec"]["containers"][1]["image"], json!("b2"));
}

#[test]
fn set_element_order_on_primitive_list() {
    let out = smp_ok(
        &pod(),
        json!({"metadata": {
            "$setElementOrder/finalizers": ["example.com/audit", "example.com/new", "example.com/cleanup"],
            "finalizers": ["example.com/new"]
        }}),
    );
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/audit", "example.com/new", "example.com/cleanup"])
    );
}

#[test]
fn set_element_order_that_contradicts_the_patch_fails() {
    let err = smp(
        &pod(),
        json!({"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [{"name": "sidecar", "image": "x"}]
        }}),
    )
    .err();
    assert!(
        matches!(err, Some(PatchError::StrategicInternal(ref m)) if m.contains("doesn't match")),
        "{err:?}"
    );
}

#[test]
fn new_list_elements_come_first_like_upstream() {
    // Upstream's mergeSortedSlice puts a patch element the server has not seen before the
    // server-only elements; matching elements stay where the server had them.
    let out = smp_ok(&pod(), json!({"spec": {"containers": [{"name": "logger", "image": "fluent-bit:3"}]}}));
    assert_eq!(names(&out["spec"]["containers"]), ["logger", "nginx", "sidecar"]);
    let out = smp_ok(
        &pod(),
        json!({"spec": {"containers": [
            {"name": "sidecar", "image": "busybox:1.37"}, {"name": "logger", "image": "fluent-bit:3"}
        ]}}),
    );
    assert_eq!(names(&out["spec"]["containers"]), ["nginx", "sidecar", "logger"]);
    assert_eq!(out["spec"]["containers"][1]["args"], json!(["sleep", "3600"]));
}

#[test]
fn nested_merge_lists_merge_by_their_own_keys() {
    let out = smp_ok(
        &pod(),
        json!({"spec": {"containers": [{
            "name": "nginx",
            "ports": [{"containerPort": 443, "name": "https"}],
            "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]
        }]}}),
    );
    let nginx = &out["spec"]["containers"][0];
    assert_eq!(
        nginx["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP", "name": "https"}])
    );
    assert_eq!(
        nginx["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}])
    );
    assert_eq!(nginx["resources"], json!({"limits": {"cpu": "500m"}}));
    assert_eq!(nginx["image"], json!("nginx:1.24"));
}

#[test]
fn patch_delete_removes_a_container() {
    let out = smp_ok(&pod(), json!({"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}}));
    assert_eq!(names(&out["spec"]["containers"]), ["nginx"]);
    assert_eq!(out["spec"]["containers"][0], pod()["spec"]["containers"][0]);
}

#[test]
fn patch_replace_on_a_list_and_on_a_map() {
    let out = smp_ok(
        &pod(),
        json!({"spec": {"containers": [{"name": "only", "image": "x"}, {"$patch": "replace"}]}}),
    );
    assert_eq!(out["spec"]["containers"], json!([{"name": "only", "image": "x"}]));

    let out = smp_ok(
        &pod(),
        json!({"spec": {"containers": [{"name": "nginx", "resources": {"$patch": "replace", "requests": {"cpu": "1"}}}]}}),
    );
    assert_eq!(out["spec"]["containers"][0]["resources"], json!({"requests": {"cpu": "1"}}));
}

#[test]
fn patch_delete_on_a_map_and_explicit_merge() {
    let out =
        smp_ok(&pod(), json!({"spec": {"containers": [{"name": "nginx", "resources": {"$patch": "delete"}}]}}));
    assert_eq!(out["spec"]["containers"][0]["resources"], json!({}));
    let out = smp_ok(&pod(), json!({"metadata": {"labels": {"$patch": "merge", "tier": "web"}}}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "tier": "web"}));
}

#[test]
fn delete_from_primitive_list_removes_finalizers() {
    // `kubectl patch --type=strategic` dropping a finalizer, as a controller would.
    let out =
        smp_ok(&pod(), json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/cleanup"]}}));
    assert_eq!(out["metadata"]["finalizers"], json!(["example.com/audit"]));
}

#[test]
fn primitive_merge_list_is_a_union() {
    let out = smp_ok(&pod(), json!({"metadata": {"finalizers": ["example.com/audit", "example.com/new"]}}));
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/cleanup", "example.com/audit", "example.com/new"])
    );
}

#[test]
fn owner_references_merge_by_uid_and_conditions_by_type() {
    let out = smp_ok(
        &pod(),
        json!({
            "metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u-2"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
        }),
    );
    let uids: Vec<_> =
        out["metadata"]["ownerReferences"].as_array().into_iter().flatten().map(|r| &r["uid"]).collect();
    assert_eq!(uids, [&json!("u-2"), &json!("u-1")]);
    assert_eq!(
        out["status"]["conditions"],
        json!([
            {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
            {"type": "PodScheduled", "status": "True"}
        ])
    );
    assert_eq!(out["status"]["phase"], json!("Running"));
}

#[test]
fn lists_without_merge_strategy_are_replaced() {
    let out = smp_ok(&pod(), json!({"spec": {"tolerations": [{"key": "c", "operator": "Exists"}]}}));
    assert_eq!(out["spec"]["tolerations"], json!([{"key": "c", "operator": "Exists"}]));
    // So is a list the schema does not know, like a plain merge patch would.
    let out = smp_ok(&pod(), json!({"spec": {"containers": [{"name": "sidecar", "args": ["sleep", "60"]}]}}));
    assert_eq!(out["spec"]["containers"][1]["args"], json!(["sleep", "60"]));
}

#[test]
fn null_deletes_fields_and_is_dropped_from_new_subtrees() {
    let out = smp_ok(
        &pod(),
        json!({
            "metadata": {"labels": null},
            "spec": {"containers": [{"name": "nginx", "resources": null}], "securityContext": {"runAsUser": 1000, "fsGroup": null}}
        }),
    );
    assert!(out["metadata"].get("labels").is_none());
    assert!(out["spec"]["containers"][0].get("resources").is_none());
    assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1000}));
}

#[test]
fn retain_keys_inside_a_merge_list_element() {
    let out = smp_ok(
        &pod(),
        json!({"spec": {"volumes": [
            {"$retainKeys": ["name", "secret"], "name": "cfg", "secret": {"secretName": "s"}}
        ]}}),
    );
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "data", "emptyDir": {}}, {"name": "cfg", "secret": {"secretName": "s"}}])
    );
}

#[test]
fn retain_keys_must_cover_the_patch() {
    let err = smp(
        &deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}),
    );
    assert_eq!(err, Err(PatchError::StrategicBadRequest("invalid patch format of retainKeys".to_string())));
    let err = smp(&deployment(), json!({"spec": {"strategy": {"$retainKeys": "type"}}}));
    assert_eq!(err.map_err(|e| e.status().code), Err(400));
}

#[test]
fn malformed_directives_are_400() {
    for patch in [
        json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["x"]}}),
        json!({"spec": {"$setElementOrder-containers": [{"name": "nginx"}]}}),
        json!({"spec": {"$setElementOrder/containers": {"name": "nginx"}}}),
    ] {
        let err = smp(&pod(), patch.clone()).err();
        assert!(matches!(err, Some(PatchError::StrategicBadRequest(_))), "{patch}: {err:?}");
    }
}

#[test]
fn missing_merge_key_and_unknown_directive_are_500() {
    let err = smp(&pod(), json!({"spec": {"containers": [{"image": "nginx:1.25"}]}})).err();
    let Some(PatchError::StrategicInternal(msg)) = &err else { panic!("{err:?}") };
    assert!(msg.contains("does not contain declared merge key: name"), "{msg}");
    assert_eq!(err.map(|e| e.status().code), Some(500));

    let err = smp(&pod(), json!({"metadata": {"labels": {"$patch": "frobnicate"}}})).err();
    assert!(
        matches!(err, Some(PatchError::StrategicInternal(ref m)) if m.starts_with("unknown patch type: frobnicate in map: ")),
        "{err:?}"
    );
}

#[test]
fn lists_of_lists_are_422() {
    let original = json!({"kind": "Pod", "metadata": {"finalizers": [["a"]]}});
    let err = smp(&original, json!({"metadata": {"finalizers": [["b"]]}}));
    assert_eq!(err, Err(PatchError::StrategicInvalid("lists of lists are not supported".to_string())));
}

#[test]
fn malformed_strategic_patch_is_400() {
    let err = apply(PatchType::StrategicMerge, &pod(), b"{\"spec\":", &test_schema::pod());
    assert!(matches!(err, Err(PatchError::MalformedPatch(_))), "{err:?}");
    let err = apply(PatchType::StrategicMerge, &pod(), b"[1]", &test_schema::pod());
    assert!(matches!(err, Err(PatchError::MalformedPatch(_))), "{err:?}");
    let err = apply(PatchType::StrategicMerge, &json!([1]), b"{}", &test_schema::pod());
    assert!(matches!(err, Err(PatchError::InvalidOriginal(_))), "{err:?}");
}

#[test]
fn no_schema_is_a_merge_patch_that_honours_directives() {
    let original = json!({"spec": {"items": [1, 2], "m": {"a": 1, "b": 2}}});
    let out = apply(
        PatchType::StrategicMerge,
        &original,
        br#"{"spec":{"items":[3],"m":{"a":null,"c":3}}}"#,
        &NoSchema,
    );
    assert_eq!(out, Ok(json!({"spec": {"items": [3], "m": {"b": 2, "c": 3}}})));
    let out =
        apply(PatchType::StrategicMerge, &original, br#"{"spec":{"m":{"$patch":"replace","z":1}}}"#, &NoSchema);
    assert_eq!(out, Ok(json!({"spec": {"items": [1, 2], "m": {"z": 1}}})));
}

#[test]
fn odd_shapes_fail_cleanly_instead_of_panicking() {
    let cases = [
        // Merge list elements that are not maps, or mix types.
        (json!({"spec": {"containers": ["nginx"]}}), "list element types are not identical"),
        (json!({"spec": {"containers": [{"name": "x"}, "y"]}}), "list element types are not identical"),
        // A deletion without the merge key.
        (json!({"spec": {"containers": [{"$patch": "delete"}]}}), "does not contain declared merge key"),
        // $setElementOrder entries without the merge key.
        (
            json!({"spec": {"$setElementOrder/containers": [{"image": "x"}], "containers": [{"name": "nginx"}]}}),
            "does not contain declared merge key",
        ),
        // $setElementOrder for a field that is not a list in the patch.
        (
            json!({"spec": {"$setElementOrder/containers": [{"name": "nginx"}], "containers": {"name": "nginx"}}}),
            "expected a []interface {}",
        ),
    ];
    for (patch, want) in cases {
        match smp(&pod(), patch.clone()) {
            Err(PatchError::StrategicInternal(msg)) => assert!(msg.contains(want), "{patch}: {msg}"),
            other => panic!("{patch}: {other:?}"),
        }
    }
    // Scalars and objects trading places simply take the patch value.
    let out = smp_ok(&pod(), json!({"spec": {"containers": "none", "tolerations": {"key": "a"}}}));
    assert_eq!(out["spec"]["containers"], json!("none"));
    assert_eq!(out["spec"]["tolerations"], json!({"key": "a"}));
    // A deletion list never replaces a value of another type.
    let out = smp_ok(&pod(), json!({"metadata": {"$deleteFromPrimitiveList/labels": ["app"]}}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
}
