//! Server-side apply through the router in-process over a real store: apply-create, updates that
//! remove what the manager no longer applies, conflicts (409 with upstream's message and causes)
//! and `force`, Update and Apply managers side by side, dry runs, subresources, and bad input
//! (each refused with upstream's code and nothing written).

mod common;

use axum::http::Method;
use common::{api, Api};
use serde_json::{json, Value};

const APPLY: &str = "application/apply-patch+yaml";
const CM: &str = "/api/v1/namespaces/default/configmaps/cfg";

async fn apply(api: &Api, uri: &str, body: &str) -> (u16, Value) {
    api.raw(Method::PATCH, uri, APPLY, body.as_bytes().to_vec()).await
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

#[tokio::test]
async fn apply_creates_then_updates_and_removes_dropped_fields() {
    let api = api().await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\n  labels: {app: a}\ndata:\n  a: \"1\"\n  b: \"2\"\n";
    let (code, out) = apply(&api, &format!("{CM}?fieldManager=me"), yaml).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    let e = entry(&out, "me", "Apply").expect("an Apply entry");
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert_eq!(
        e["fieldsV1"],
        json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
    assert!(api.stored("/registry/configmaps/default/cfg").await.is_some());

    // JSON is YAML too; b and the labels are no longer applied, so they go.
    let body =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "3"}});
    let (code, out) = apply(&api, &format!("{CM}?fieldManager=me"), &body.to_string()).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["data"], json!({"a": "3"}));
    assert!(out["metadata"].get("labels").is_none(), "{out}");
    assert_eq!(entry(&out, "me", "Apply").unwrap()["fieldsV1"], json!({"f:data": {"f:a": {}}}));

    // The same apply again writes nothing.
    let before = api.revision().await;
    let (code, _) = apply(&api, &format!("{CM}?fieldManager=me"), &body.to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(api.revision().await, before);
}

#[tokio::test]
async fn conflicts_with_an_update_manager_then_force() {
    let api = api().await;
    let (code, _) = api
        .raw(
            Method::POST,
            "/api/v1/namespaces/default/configmaps?fieldManager=editor",
            "application/json",
            json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "1"}}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(code, 201);
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: \"2\", b: \"1\"}\n";
    let before = api.revision().await;
    let (code, status) = apply(&api, &format!("{CM}?fieldManager=me"), yaml).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["message"], "Apply failed with 1 conflict: conflict with \"editor\" using v1: .data.a");
    assert_eq!(
        status["details"]["causes"],
        json!([{"reason": "FieldManagerConflict", "message": "conflict with \"editor\" using v1", "field": ".data.a"}])
    );
    assert_eq!(api.revision().await, before, "a conflict writes nothing");

    // force=true takes .data.a; .data.b has the same value: shared.
    let (code, out) = apply(&api, &format!("{CM}?fieldManager=me&force=true"), yaml).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["data"]["a"], "2");
    assert_eq!(entry(&out, "editor", "Update").unwrap()["fieldsV1"], json!({"f:data": {".": {}, "f:b": {}}}));
    assert_eq!(entry(&out, "me", "Apply").unwrap()["fieldsV1"], json!({"f:data": {"f:a": {}, "f:b": {}}}));
    assert_eq!(out["metadata"]["managedFields"][0]["manager"], "me", "Apply entries come first");

    // A merge patch by the editor takes .data.a back, as an Update.
    let (code, out) = api
        .raw(
            Method::PATCH,
            &format!("{CM}?fieldManager=editor"),
            "application/merge-patch+json",
            br#"{"data":{"a":"9"}}"#.to_vec(),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(entry(&out, "me", "Apply").unwrap()["fieldsV1"], json!({"f:data": {"f:b": {}}}));
    // force on a non-apply patch is refused.
    api.refused(
        Method::PATCH,
        &format!("{CM}?force=true"),
        "application/merge-patch+json",
        br#"{"data":{"a":"1"}}"#.to_vec(),
        422,
        "Invalid",
    )
    .await;
}

#[tokio::test]
async fn bad_apply_input_is_refused_and_writes_nothing() {
    let api = api().await;
    let good = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: \"1\"}\n";
    let status = api.refused(Method::PATCH, CM, APPLY, good.into(), 422, "Invalid").await;
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let uri = format!("{CM}?fieldManager=me");
    let status = api.refused(Method::PATCH, &uri, APPLY, b"- a\n- b\n".to_vec(), 400, "BadRequest").await;
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("cannot unmarshal array into Go value of type map[string]interface {}"),
        "{status}"
    );
    api.refused(Method::PATCH, &uri, APPLY, b"a: [b\n".to_vec(), 400, "BadRequest").await;
    let status = api
        .refused(Method::PATCH, &uri, APPLY, good.replace("v1", "apps/v1").into_bytes(), 400, "BadRequest")
        .await;
    assert_eq!(
        status["message"],
        "Incorrect version specified in apply patch. Specified patch version: apps/v1, expected: v1"
    );
    let status = api
        .refused(
            Method::PATCH,
            &uri,
            APPLY,
            good.replace("ConfigMap", "Secret").into_bytes(),
            400,
            "BadRequest",
        )
        .await;
    assert!(
        status["message"].as_str().unwrap().contains("does not match the expected kind (ConfigMap)"),
        "{status}"
    );
    let status = api
        .refused(
            Method::PATCH,
            &uri,
            APPLY,
            good.replace("name: cfg", "name: other").into_bytes(),
            400,
            "BadRequest",
        )
        .await;
    assert_eq!(status["message"], "the name of the object (other) does not match the name on the URL (cfg)");
    // A wrong type is the decoder's 400.
    api.refused(
        Method::PATCH,
        &uri,
        APPLY,
        b"apiVersion: v1\nkind: ConfigMap\ndata: [1]\n".to_vec(),
        400,
        "BadRequest",
    )
    .await;
    // managedFields may not be applied.
    api.refused(
        Method::PATCH,
        &uri,
        APPLY,
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {managedFields: [{manager: x}]}\n".to_vec(),
        400,
        "BadRequest",
    )
    .await;
    // A list-map item without its key.
    let dep = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{image: nginx}]\n";
    let status = api
        .refused(
            Method::PATCH,
            "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=me",
            APPLY,
            dep.into(),
            500,
            "InternalError",
        )
        .await;
    assert!(status["message"].as_str().unwrap().contains("omits key field \"name\""), "{status}");
    // Validation runs on the created object: a Deployment without a selector is 422.
    api.refused(
        Method::PATCH,
        "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=me",
        APPLY,
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n".to_vec(),
        422,
        "Invalid",
    )
    .await;
    // A dry run answers the object and writes nothing.
    let before = api.revision().await;
    let (code, out) = apply(&api, &format!("{uri}&dryRun=All"), good).await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["data"]["a"], "1");
    assert_eq!(api.revision().await, before);
    assert!(api.stored("/registry/configmaps/default/cfg").await.is_none());
}

const DEP: &str = "/apis/apps/v1/namespaces/default/deployments/web";

fn deployment(replicas: u32, containers: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: {containers}\n"
    )
}

#[tokio::test]
async fn containers_merge_by_name_and_subresources_apply() {
    let api = api().await;
    let (code, out) = apply(
        &api,
        &format!("{DEP}?fieldManager=me"),
        &deployment(1, "[{name: a, image: nginx, ports: [{containerPort: 80}]}]"),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    let fields = &entry(&out, "me", "Apply").unwrap()["fieldsV1"];
    let a = &fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"a\"}"];
    assert_eq!(
        a["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"],
        json!({".": {}, "f:containerPort": {}})
    );
    assert_eq!(fields["f:spec"]["f:selector"], json!({}), "LabelSelector is atomic");

    // Another manager applies a second container: both stay, each owned by its manager.
    let (code, out) = apply(
        &api,
        &format!("{DEP}?fieldManager=sidecar"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: side, image: busybox}]\n",
    )
    .await;
    assert_eq!(code, 200, "{out}");
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "side"]);
    // Defaults the server added stay (terminationMessagePath is owned by no one).
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );

    // The scale subresource takes an applied Scale, as an Apply: `me` owns spec.replicas, so
    // without force it conflicts (upstream's message, no subresource named for `me`), with force
    // the scaler takes the field.
    let scale = "apiVersion: autoscaling/v1\nkind: Scale\nmetadata: {name: web}\nspec: {replicas: 4}\n";
    let (code, status) = apply(&api, &format!("{DEP}/scale?fieldManager=scaler"), scale).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["message"], "Apply failed with 1 conflict: conflict with \"me\": .spec.replicas");
    let (code, out) = apply(&api, &format!("{DEP}/scale?fieldManager=scaler&force=true"), scale).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["spec"]["replicas"], 4);
    // Now `me` re-applying replicas: 1 conflicts with the scaler (an Apply entry: no "using <version>").
    let (code, status) = apply(
        &api,
        &format!("{DEP}?fieldManager=me"),
        &deployment(1, "[{name: a, image: nginx, ports: [{containerPort: 80}]}]"),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["message"],
        "Apply failed with 1 conflict: conflict with \"scaler\" with subresource \"scale\": .spec.replicas"
    );

    // Status is applied through its subresource, as its own manager entry.
    let (code, out) = apply(
        &api,
        &format!("{DEP}/status?fieldManager=ctrl"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nstatus: {observedGeneration: 7}\n",
    )
    .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["status"]["observedGeneration"], 7);
    let e = entry(&out, "ctrl", "Apply").unwrap();
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {"f:observedGeneration": {}}}));
}
