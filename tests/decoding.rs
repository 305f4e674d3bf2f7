//! Typed decoding with the real kubectl against `kplane apiserver`: manifests of the wrong type get
//! upstream's errors and leave nothing in `/registry` (read with the real etcdctl), and
//! `kubectl create --raw` of a YAML file gets upstream's "unrecognized" answer.

mod common;

use common::{free_port, stderr, Kplane};

#[test]
fn kubectl_gets_upstreams_decode_errors_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let etcd = kp.endpoint();

    // kubectl decodes `create -f` manifests itself and refuses this one before sending it, so the
    // body goes to the server as it is, with --raw.
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "anno", "annotations": {"x": 5}},
                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}"#;
    let file = dir.path().join("anno.json");
    std::fs::write(&file, pod).unwrap();
    let out = kp.kubectl(&["create", "--raw", "/api/v1/namespaces/default/pods", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Error from server (BadRequest): Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal number into Go struct field ObjectMeta.metadata.annotations of type string"
        ),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/pods/default/anno").is_none(), "nothing stored");

    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: \"3\"\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers: [{name: c, image: nginx}]\n";
    let out = kp.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], deploy);
    assert!(
        stderr(&out).contains(
            "json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32"
        ),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/deployments/default/d").is_none(), "nothing stored");

    // Upstream's test-cmd: posting a pod to namespaces fails, --raw forcing the location.
    let valid_pod = dir.path().join("valid-pod.yaml");
    std::fs::write(&valid_pod, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: valid-pod\nspec:\n  containers:\n  - name: c\n    image: nginx\n").unwrap();
    let out = kp.kubectl(&["create", "--raw", "/api/v1/namespaces", "-f", valid_pod.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the object provided is unrecognized (must be of type Namespace): couldn't get version/kind; json parse error: invalid character 'a' looking for beginning of value"),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/namespaces/valid-pod").is_none());

    // An unknown field is dropped (with kubectl's warning) under the default validation.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\ndata: {a: b}\nbogus: 1\n";
    let out = kp.kubectl_stdin(&["create", "--validate=warn", "-f", "-"], cm);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown field \"bogus\""), "{}", stderr(&out));
    let stored = kp.etcd_get(&etcd, "/registry/configmaps/default/u").unwrap();
    assert!(stored.get("bogus").is_none(), "{stored}");
    assert_eq!(stored["data"]["a"], "b");
}
