//! Table-level tests: every resource's columns and cells on realistic objects, the Table envelope,
//! and the includeObject / noHeaders variants. Pod STATUS logic is tested in `pods.rs`.

use super::*;
use crate::resources::{lookup, RESOURCES};
use serde_json::json;

const NOW: &str = "2024-05-01T12:00:00Z";

fn opts() -> TableOptions {
    TableOptions::new(NOW.parse().unwrap())
}

fn res(group: &str, plural: &str) -> &'static ResourceDef {
    lookup(group, "v1", plural).unwrap()
}

fn cells(group: &str, plural: &str, obj: Value) -> Vec<Value> {
    let t = table(res(group, plural), &[obj], &opts());
    t["rows"][0]["cells"].as_array().unwrap().clone()
}

/// `(name, priority)` of each column.
fn headers(group: &str, plural: &str) -> Vec<(String, i64)> {
    let t = table(res(group, plural), &[], &opts());
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["priority"].as_i64().unwrap()))
        .collect()
}

fn names(cols: &[(&str, i64)]) -> Vec<(String, i64)> {
    cols.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default", "uid": "u-1", "resourceVersion": "42",
           "creationTimestamp": "2024-05-01T11:00:00Z", "labels": {"app": name}})
}

#[test]
fn envelope_and_column_definitions() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta("web"), "spec": {"containers": [{"name": "c"}]}});
    let t = table(res("", "pods"), &[pod], &opts());
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"], json!({}));
    let name_col = &t["columnDefinitions"][0];
    assert_eq!(name_col["name"], "Name");
    assert_eq!(name_col["type"], "string");
    assert_eq!(name_col["format"], "name");
    assert_eq!(name_col["priority"], 0);
    assert!(name_col["description"].as_str().unwrap().starts_with("Name must be unique within a namespace."));
    // Every key is present on every column, as upstream serializes them without omitempty.
    let restarts = &t["columnDefinitions"][3];
    assert_eq!(
        restarts,
        &json!({"name": "Restarts", "type": "string", "format": "",
        "description": "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        "priority": 0})
    );
    let row = &t["rows"][0];
    assert_eq!(row["cells"].as_array().unwrap().len(), t["columnDefinitions"].as_array().unwrap().len());
    assert!(row.get("conditions").is_none(), "only finished pods carry conditions");
    // An empty list still has an (empty) rows array.
    assert_eq!(table(res("", "pods"), &[], &opts())["rows"], json!([]));
}

#[test]
fn include_object_variants() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg"), "data": {"a": "1"}});
    let mut o = opts();
    let t = table(res("", "configmaps"), std::slice::from_ref(&cm), &o);
    assert_eq!(
        t["rows"][0]["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta("cfg")})
    );
    o.include_object = IncludeObject::Object;
    assert_eq!(table(res("", "configmaps"), std::slice::from_ref(&cm), &o)["rows"][0]["object"], cm);
    o.include_object = IncludeObject::None;
    let none = table(res("", "configmaps"), std::slice::from_ref(&cm), &o);
    assert_eq!(none["rows"][0]["object"], Value::Null);
    // Metadata of an object without any still yields a well-formed PartialObjectMetadata.
    let t = table(res("", "configmaps"), &[json!({"data": {}})], &opts());
    assert_eq!(t["rows"][0]["object"]["metadata"], json!({}));

    assert_eq!(IncludeObject::from_query(""), Some(IncludeObject::Metadata));
    assert_eq!(IncludeObject::from_query("Metadata"), Some(IncludeObject::Metadata));
    assert_eq!(IncludeObject::from_query("None"), Some(IncludeObject::None));
    assert_eq!(IncludeObject::from_query("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::from_query("object"), None);
    assert_eq!(IncludeObject::Object.as_str(), "Object");
}

#[test]
fn no_headers_drops_column_definitions() {
    let mut o = opts();
    o.no_headers = true;
    let t = table(res("", "namespaces"), &[json!({"metadata": meta("kube-system")})], &o);
    assert_eq!(t["columnDefinitions"], Value::Null);
    assert_eq!(t["rows"][0]["cells"], json!(["kube-system", "Active", "60m"]));
}

#[test]
fn services() {
    assert_eq!(
        headers("", "services"),
        names(&[
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1)
        ])
    );
    let node_port = json!({"metadata": meta("web"), "spec": {
        "type": "NodePort", "clusterIP": "10.96.12.7", "clusterIPs": ["10.96.12.7"], "selector": {"app": "web", "tier": "fe"},
        "ports": [{"port": 8080, "targetPort": 80, "nodePort": 30299, "protocol": "TCP"}, {"port": 53, "protocol": "UDP", "nodePort": 31000}]}});
    assert_eq!(
        cells("", "services", node_port),
        vec![
            json!("web"),
            json!("NodePort"),
            json!("10.96.12.7"),
            json!("<none>"),
            json!("8080:30299/TCP,53:31000/UDP"),
            json!("60m"),
            json!("app=web,tier=fe")
        ]
    );

    let cluster_ip = json!({"metadata": meta("api"), "spec": {"clusterIPs": ["10.96.0.1"], "externalIPs": ["1.2.3.4", "5.6.7.8"],
        "ports": [{"port": 80}, {"port": 443, "protocol": "TCP"}]}});
    let c = cells("", "services", cluster_ip);
    assert_eq!(c[1], json!("ClusterIP"), "an empty type defaults to ClusterIP");
    assert_eq!(c[3], json!("1.2.3.4,5.6.7.8"));
    assert_eq!(c[4], json!("80/TCP,443/TCP"));
    assert_eq!(c[6], json!("<none>"));

    let headless = json!({"metadata": meta("db"), "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}});
    let c = cells("", "services", headless);
    assert_eq!((c[2].clone(), c[4].clone()), (json!("None"), json!("<none>")));

    let lb = |status: Value, external: Value| {
        json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.3.3"], "externalIPs": external,
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}, "status": {"loadBalancer": status}})
    };
    assert_eq!(cells("", "services", lb(json!({}), json!(null)))[3], json!("<pending>"));
    let assigned =
        json!({"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}, {"ip": "198.51.100.2"}]});
    assert_eq!(
        cells("", "services", lb(assigned.clone(), json!(null)))[3],
        json!("198.51.100.2,203.0.113.9,lb.example.com")
    );
    assert_eq!(
        cells("", "services", lb(assigned, json!(["9.9.9.9"])))[3],
        json!("198.51.100.2,203.0.113.9,lb.example.com,9.9.9.9")
    );

    let ext =
        json!({"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
    let c = cells("", "services", ext);
    assert_eq!((c[2].clone(), c[3].clone()), (json!("<none>"), json!("db.example.com")));
    assert_eq!(cells("", "services", json!({"spec": {"type": "Weird"}}))[3], json!("<unknown>"));
}

#[test]
fn endpoints() {
    assert_eq!(headers("", "endpoints"), names(&[("Name", 0), ("Endpoints", 0), ("Age", 0)]));
    let addrs = |ips: &[&str]| ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>();
    let many = json!({"metadata": meta("web"), "subsets": [{"addresses": addrs(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]),
        "ports": [{"port": 8080, "protocol": "TCP"}]}]});
    assert_eq!(cells("", "endpoints", many)[1], json!("10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 2 more..."));
    // Two ports over two addresses: four endpoints, address-major within each port.
    let two_ports = json!({"metadata": meta("dns"), "subsets": [{"addresses": addrs(&["10.0.0.1", "10.0.0.2"]),
        "ports": [{"name": "dns", "port": 53}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}]});
    assert_eq!(cells("", "endpoints", two_ports)[1], json!("10.0.0.1:53,10.0.0.2:53,10.0.0.1:53 + 1 more..."));
    let exact = json!({"subsets": [{"addresses": addrs(&["fd00::1", "10.0.0.2"]), "ports": [{"port": 80}]}, {"addresses": addrs(&["10.0.0.9"])}]});
    assert_eq!(cells("", "endpoints", exact)[1], json!("[fd00::1]:80,10.0.0.2:80,10.0.0.9"));
    assert_eq!(cells("", "endpoints", json!({"metadata": meta("x")}))[1], json!("<none>"));
    assert_eq!(cells("", "endpoints", json!({"subsets": []}))[1], json!("<none>"));
}

#[test]
fn endpoint_slices() {
    assert_eq!(
        headers("discovery.k8s.io", "endpointslices"),
        names(&[("Name", 0), ("AddressType", 0), ("Ports", 0), ("Endpoints", 0), ("Age", 0)])
    );
    let eps: Vec<Value> = (1..=5).map(|i| json!({"addresses": [format!("10.0.1.{i}")]})).collect();
    let slice = json!({"metadata": meta("web-abc"), "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}, {"name": "named"}, {}, {"port": 9}],
        "endpoints": eps});
    assert_eq!(
        cells("discovery.k8s.io", "endpointslices", slice),
        vec![
            json!("web-abc"),
            json!("IPv4"),
            json!("80,443,named + 2 more..."),
            json!("10.0.1.1,10.0.1.2,10.0.1.3 + 2 more..."),
            json!("60m")
        ]
    );
    let empty = json!({"metadata": meta("e"), "addressType": "IPv6", "ports": [{}]});
    assert_eq!(cells("discovery.k8s.io", "endpointslices", empty)[2..4], [json!("*"), json!("<unset>")]);
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
        {"name": "nginx", "image": "nginx:1.25"}, {"name": "sidecar", "image": "busybox"}]}})
}

#[test]
fn deployments() {
    assert_eq!(
        headers("apps", "deployments"),
        names(&[
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ])
    );
    let d = json!({"metadata": meta("web"), "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    assert_eq!(
        cells("apps", "deployments", d),
        vec![
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("60m"),
            json!("nginx,sidecar"),
            json!("nginx:1.25,busybox"),
            json!("app=web")
        ]
    );
    // Absent replicas default to 1 and absent status counts are 0; an empty selector prints "".
    let bare = json!({"metadata": meta("new"), "spec": {"selector": {}}});
    assert_eq!(cells("apps", "deployments", bare)[1..4], [json!("0/1"), json!(0), json!(0)]);
    let bad = json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}});
    assert_eq!(cells("apps", "deployments", bad)[7], json!("<invalid>"));
}

#[test]
fn replica_sets_and_replication_controllers() {
    let wide_cols = [
        ("Name", 0),
        ("Desired", 0),
        ("Current", 0),
        ("Ready", 0),
        ("Age", 0),
        ("Containers", 1),
        ("Images", 1),
        ("Selector", 1),
    ];
    assert_eq!(headers("apps", "replicasets"), names(&wide_cols));
    assert_eq!(headers("", "replicationcontrollers"), names(&wide_cols));
    let t = table(res("apps", "replicasets"), &[], &opts());
    assert_eq!(t["columnDefinitions"][1]["type"], "integer");

    let rs = json!({"metadata": meta("web-5d9c"), "spec": {"replicas": 3,
        "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d9c"}}, "template": template()},
        "status": {"replicas": 3, "readyReplicas": 1}});
    assert_eq!(
        cells("apps", "replicasets", rs),
        vec![
            json!("web-5d9c"),
            json!(3),
            json!(3),
            json!(1),
            json!("60m"),
            json!("nginx,sidecar"),
            json!("nginx:1.25,busybox"),
            json!("app=web,pod-template-hash=5d9c")
        ]
    );
    assert_eq!(cells("apps", "replicasets", json!({"spec": {}}))[7], json!("<none>"));

    let rc = json!({"metadata": meta("legacy"), "spec": {"replicas": 2, "selector": {"app": "legacy"}, "template": template()},
        "status": {"replicas": 2, "readyReplicas": 2}});
    assert_eq!(
        cells("", "replicationcontrollers", rc),
        vec![
            json!("legacy"),
            json!(2),
            json!(2),
            json!(2),
            json!("60m"),
            json!("nginx,sidecar"),
            json!("nginx:1.25,busybox"),
            json!("app=legacy")
        ]
    );
    // Defaulting: replicas 1, selector from the template's labels.
    let defaulted = json!({"metadata": meta("d"), "spec": {"template": template()}});
    let c = cells("", "replicationcontrollers", defaulted);
    assert_eq!((c[1].clone(), c[7].clone()), (json!(1), json!("app=web")));
}

#[test]
fn nodes() {
    assert_eq!(
        headers("", "nodes"),
        names(&[
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1)
        ])
    );
    let node = json!({"metadata": {"name": "cp0", "creationTimestamp": "2024-04-20T12:00:00Z",
            "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/etcd": "true", "kubernetes.io/role": "master", "node-role.kubernetes.io/": ""}},
        "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "cp0"}, {"type": "InternalIP", "address": "192.168.1.10"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)", "kernelVersion": "6.1.0-18-amd64",
                "containerRuntimeVersion": "containerd://1.7.13"}}});
    assert_eq!(
        cells("", "nodes", node),
        vec![
            json!("cp0"),
            json!("Ready"),
            json!("control-plane,etcd,master"),
            json!("11d"),
            json!("v1.33.1"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12 (bookworm)"),
            json!("6.1.0-18-amd64"),
            json!("containerd://1.7.13")
        ]
    );
    let sick = json!({"metadata": {"name": "w1", "labels": {"kubernetes.io/hostname": "w1"}}, "spec": {"unschedulable": true},
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}], "addresses": [{"type": "ExternalIP", "address": "203.0.113.5"}]}});
    assert_eq!(
        cells("", "nodes", sick),
        vec![
            json!("w1"),
            json!("NotReady,SchedulingDisabled"),
            json!("<none>"),
            json!("<unknown>"),
            json!(""),
            json!("<none>"),
            json!("203.0.113.5"),
            json!("<unknown>"),
            json!("<unknown>"),
            json!("<unknown>")
        ]
    );
    assert_eq!(cells("", "nodes", json!({"metadata": {"name": "new"}}))[1], json!("Unknown"));
}

#[test]
fn namespaces_configmaps_secrets_serviceaccounts_leases() {
    assert_eq!(headers("", "namespaces"), names(&[("Name", 0), ("Status", 0), ("Age", 0)]));
    let ns = json!({"metadata": meta("dev"), "status": {"phase": "Terminating"}});
    assert_eq!(cells("", "namespaces", ns), vec![json!("dev"), json!("Terminating"), json!("60m")]);

    assert_eq!(headers("", "configmaps"), names(&[("Name", 0), ("Data", 0), ("Age", 0)]));
    let cm = json!({"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(cells("", "configmaps", cm), vec![json!("cfg"), json!(3), json!("60m")]);

    assert_eq!(headers("", "secrets"), names(&[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)]));
    let tls =
        json!({"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(
        cells("", "secrets", tls),
        vec![json!("tls"), json!("kubernetes.io/tls"), json!(2), json!("60m")]
    );
    assert_eq!(cells("", "secrets", json!({"metadata": meta("o")}))[1..3], [json!("Opaque"), json!(0)]);

    assert_eq!(headers("", "serviceaccounts"), names(&[("Name", 0), ("Secrets", 0), ("Age", 0)]));
    let sa = json!({"metadata": meta("default"), "secrets": [{"name": "tok"}]});
    assert_eq!(cells("", "serviceaccounts", sa), vec![json!("default"), json!(1), json!("60m")]);

    assert_eq!(headers("coordination.k8s.io", "leases"), names(&[("Name", 0), ("Holder", 0), ("Age", 0)]));
    let lease = json!({"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "cp0_1234", "leaseDurationSeconds": 15}});
    assert_eq!(
        cells("coordination.k8s.io", "leases", lease),
        vec![json!("kube-scheduler"), json!("cp0_1234"), json!("60m")]
    );
    assert_eq!(cells("coordination.k8s.io", "leases", json!({"spec": {}}))[1], json!(""));
}

#[test]
fn ingresses_and_ingress_classes() {
    assert_eq!(
        headers("networking.k8s.io", "ingresses"),
        names(&[("Name", 0), ("Class", 0), ("Hosts", 0), ("Address", 0), ("Ports", 0), ("Age", 0)])
    );
    let ing = json!({"metadata": meta("web"), "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}], "tls": [{"hosts": ["a.example.com"]}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.49.2"}]}}});
    assert_eq!(
        cells("networking.k8s.io", "ingresses", ing),
        vec![
            json!("web"),
            json!("nginx"),
            json!("a.example.com,b.example.com"),
            json!("192.168.49.2"),
            json!("80, 443"),
            json!("60m")
        ]
    );
    let bare = json!({"metadata": meta("catchall"), "spec": {"defaultBackend": {}, "rules": [{"http": {}}]}});
    assert_eq!(
        cells("networking.k8s.io", "ingresses", bare)[1..5],
        [json!("<none>"), json!("*"), json!(""), json!("80")]
    );
    let rules: Vec<Value> = ["a", "", "b", "c", "d"].iter().map(|h| json!({"host": h})).collect();
    let many = json!({"spec": {"rules": rules}});
    // Upstream counts "more" over all rules, host-less ones included.
    assert_eq!(cells("networking.k8s.io", "ingresses", many)[2], json!("a,b,c + 2 more..."));

    assert_eq!(
        headers("networking.k8s.io", "ingressclasses"),
        names(&[("Name", 0), ("Controller", 0), ("Parameters", 0), ("Age", 0)])
    );
    let ic = json!({"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
        "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
    assert_eq!(
        cells("networking.k8s.io", "ingressclasses", ic),
        vec![
            json!("nginx"),
            json!("k8s.io/ingress-nginx"),
            json!("IngressParameters.k8s.example.com/external-lb"),
            json!("60m")
        ]
    );
    let core_params = json!({"spec": {"controller": "c", "parameters": {"kind": "ConfigMap", "name": "p"}}});
    assert_eq!(cells("networking.k8s.io", "ingressclasses", core_params)[2], json!("ConfigMap/p"));
    assert_eq!(cells("networking.k8s.io", "ingressclasses", json!({"spec": {}}))[2], json!("<none>"));
}

#[test]
fn core_events() {
    assert_eq!(
        headers("", "events"),
        names(&[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ])
    );
    let t = table(res("", "events"), &[], &opts());
    assert_eq!(t["columnDefinitions"][9]["format"], "name");
    let ev = json!({"metadata": {"name": "web-0.17c1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{nginx}"},
        "reason": "BackOff", "message": "Back-off restarting failed container\n", "type": "Warning",
        "source": {"component": "kubelet", "host": "worker0"}, "count": 12,
        "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z"});
    assert_eq!(
        cells("", "events", ev),
        vec![
            json!("2m"),
            json!("Warning"),
            json!("BackOff"),
            json!("pod/web-0"),
            json!("spec.containers{nginx}"),
            json!("kubelet, worker0"),
            json!("Back-off restarting failed container"),
            json!("120m"),
            json!(12),
            json!("web-0.17c1")
        ]
    );
    // New-style event written through the core API: eventTime, series, reporting fields, no count.
    let series = json!({"metadata": {"name": "e2"}, "involvedObject": {"kind": "Node", "name": "w1"}, "type": "Normal", "reason": "Starting",
        "eventTime": "2024-05-01T11:00:00.000000Z", "firstTimestamp": null, "lastTimestamp": null,
        "series": {"count": 4, "lastObservedTime": "2024-05-01T11:59:50.123456Z"},
        "reportingComponent": "kubelet", "reportingInstance": "w1", "source": {}});
    let c = cells("", "events", series);
    assert_eq!(
        (c[0].clone(), c[3].clone(), c[5].clone(), c[7].clone(), c[8].clone()),
        (json!("9s"), json!("node/w1"), json!("kubelet, w1"), json!("60m"), json!(4))
    );
    // Singletons without a count show 1; a kind without a name shows the kind alone.
    let single = json!({"involvedObject": {"kind": "ClusterRole"}, "eventTime": "2024-05-01T11:59:00Z", "source": {"component": "c"}});
    let c = cells("", "events", single);
    assert_eq!(
        (c[0].clone(), c[3].clone(), c[5].clone(), c[8].clone()),
        (json!("60s"), json!("clusterrole"), json!("c"), json!(1))
    );
    // No timestamps at all.
    assert_eq!(cells("", "events", json!({}))[0], json!("<unknown>"));
}

#[test]
fn events_k8s_io_events_map_onto_the_same_printer() {
    assert_eq!(headers("events.k8s.io", "events"), headers("", "events"));
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "web.1"},
        "regarding": {"kind": "Deployment", "name": "web", "fieldPath": ""}, "note": "Scaled up replica set web-5d9c to 3",
        "reason": "ScalingReplicaSet", "type": "Normal", "reportingController": "deployment-controller", "reportingInstance": "",
        "eventTime": null, "deprecatedSource": {"component": "deployment-controller"},
        "deprecatedFirstTimestamp": "2024-05-01T11:00:00Z", "deprecatedLastTimestamp": "2024-05-01T11:30:00Z", "deprecatedCount": 2});
    assert_eq!(
        cells("events.k8s.io", "events", ev),
        vec![
            json!("30m"),
            json!("Normal"),
            json!("ScalingReplicaSet"),
            json!("deployment/web"),
            json!(""),
            json!("deployment-controller"),
            json!("Scaled up replica set web-5d9c to 3"),
            json!("60m"),
            json!(2),
            json!("web.1")
        ]
    );
    let modern = json!({"metadata": {"name": "n"}, "regarding": {"kind": "Pod", "name": "p"}, "note": "x", "type": "Normal",
        "reason": "Scheduled", "eventTime": "2024-05-01T11:59:58.000001Z", "reportingController": "default-scheduler",
        "reportingInstance": "default-scheduler-cp0"});
    let c = cells("events.k8s.io", "events", modern);
    assert_eq!(
        (c[0].clone(), c[5].clone(), c[8].clone()),
        (json!("1s"), json!("default-scheduler, default-scheduler-cp0"), json!(1))
    );
}

#[test]
fn component_statuses() {
    assert_eq!(
        headers("", "componentstatuses"),
        names(&[("Name", 0), ("Status", 0), ("Message", 0), ("Error", 0)])
    );
    let etcd = json!({"metadata": {"name": "etcd-0"}, "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]});
    assert_eq!(
        cells("", "componentstatuses", etcd),
        vec![json!("etcd-0"), json!("Healthy"), json!("ok"), json!("")]
    );
    let bad = json!({"metadata": {"name": "scheduler"}, "conditions": [{"type": "Healthy", "status": "False", "error": "connection refused"}]});
    assert_eq!(
        cells("", "componentstatuses", bad)[1..],
        [json!("Unhealthy"), json!(""), json!("connection refused")]
    );
    assert_eq!(cells("", "componentstatuses", json!({}))[1], json!("Unknown"));
}

#[test]
fn other_resources_get_name_and_age() {
    let role = ResourceDef {
        group: "rbac.authorization.k8s.io",
        kind: "Role",
        plural: "roles",
        ..*res("", "configmaps")
    };
    let t = table(
        &role,
        &[json!({"metadata": {"name": "reader", "creationTimestamp": "2024-04-28T12:00:00Z"}})],
        &opts(),
    );
    let cols: Vec<&str> =
        t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols, ["Name", "Age"]);
    assert_eq!(t["rows"][0]["cells"], json!(["reader", "3d"]));
    assert_eq!(columns(&role).len(), 2);
}

#[test]
fn every_resource_prints_junk_without_panicking() {
    let junk = [
        json!(null),
        json!(42),
        json!("text"),
        json!([1, 2]),
        json!({}),
        json!({"metadata": "x", "spec": [], "status": 7, "data": "d", "subsets": {}, "conditions": 1}),
        json!({"metadata": {"name": 5, "creationTimestamp": "not a time", "labels": []},
               "spec": {"replicas": "3", "ports": [1, {"port": "80"}], "selector": 9, "rules": [null], "containers": [{"name": 1}],
                        "template": {"spec": {"containers": "x"}}, "type": 3, "clusterIPs": [7]},
               "status": {"containerStatuses": [null, {"state": {"terminated": 5, "waiting": []}}], "initContainerStatuses": [{}],
                          "conditions": [null], "loadBalancer": {"ingress": [1]}, "addresses": "x"},
               "involvedObject": 3, "regarding": [], "series": {"count": "many"}, "endpoints": [{"addresses": [1]}]}),
    ];
    for r in RESOURCES {
        for o in [IncludeObject::None, IncludeObject::Metadata, IncludeObject::Object] {
            let opts = TableOptions { include_object: o, ..opts() };
            let t = table(r, &junk, &opts);
            let width = columns(r).len();
            for row in t["rows"].as_array().unwrap() {
                assert_eq!(row["cells"].as_array().unwrap().len(), width, "{}", r.plural);
            }
        }
    }
}

fn cells_of(group: &str, version: &str, plural: &str, obj: Value) -> Vec<Value> {
    let r = lookup(group, version, plural).unwrap();
    table(r, &[obj], &opts())["rows"][0]["cells"].as_array().unwrap().clone()
}

#[test]
fn jobs_print_status_completions_and_duration_as_upstream() {
    let done = json!({"metadata": meta("pi"), "spec": {"completions": 3, "selector": {"matchLabels": {"a": "b"}},
        "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}},
        "status": {"succeeded": 3, "startTime": "2024-05-01T11:00:00Z", "completionTime": "2024-05-01T11:01:05Z",
                   "conditions": [{"type": "Complete", "status": "True"}]}});
    assert_eq!(
        cells_of("batch", "v1", "jobs", done),
        json!(["pi", "Complete", "3/3", "65s", "60m", "pi", "perl", "a=b"]).as_array().unwrap().clone()
    );
    let running = json!({"metadata": meta("r"), "spec": {"parallelism": 4},
        "status": {"startTime": "2024-05-01T11:58:00Z", "conditions": [{"type": "Complete", "status": "False"}]}});
    let c = cells_of("batch", "v1", "jobs", running);
    assert_eq!((&c[1], &c[2], &c[3]), (&json!("Running"), &json!("0/1 of 4"), &json!("2m")));
    let cj = json!({"metadata": meta("c"), "spec": {"schedule": "@hourly", "suspend": true, "timeZone": "Etc/UTC"},
        "status": {"active": [{"name": "c-1"}], "lastScheduleTime": "2024-05-01T11:59:00Z"}});
    let c = cells_of("batch", "v1", "cronjobs", cj);
    assert_eq!(c[..6], json!(["c", "@hourly", "Etc/UTC", "True", 1, "60s"]).as_array().unwrap()[..]);
}

#[test]
fn hpa_quota_pv_and_revision_cells() {
    let hpa = json!({"metadata": meta("h"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 9,
        "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
            {"type": "Pods", "pods": {"target": {"averageValue": "1k"}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 12}}}]}});
    let c = cells_of("autoscaling", "v2", "horizontalpodautoscalers", hpa);
    assert_eq!(c[2], "cpu: 12%/50%, memory: <unknown>/100Mi + 1 more...");
    assert_eq!((&c[3], &c[4], &c[5]), (&json!("<unset>"), &json!(9), &json!(2)));
    let rq = json!({"metadata": meta("q"), "status": {"hard": {"pods": "10", "limits.memory": "2Gi", "requests.cpu": "1"},
        "used": {"pods": "3"}}});
    let c = cells_of("", "v1", "resourcequotas", rq);
    assert_eq!((&c[2], &c[3]), (&json!("pods: 3/10, requests.cpu: 0/1"), &json!("limits.memory: 0/2Gi")));
    let pv = json!({"metadata": meta("pv"), "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
        "persistentVolumeReclaimPolicy": "Delete", "claimRef": {"namespace": "default", "name": "c"}, "storageClassName": "fast",
        "volumeMode": "Block"}, "status": {"phase": "Bound"}});
    let c = cells_of("", "v1", "persistentvolumes", pv);
    assert_eq!(
        c,
        json!(["pv", "5Gi", "RWO,RWX", "Delete", "Bound", "default/c", "fast", "<unset>", "", "60m", "Block"])
            .as_array()
            .unwrap()
            .clone()
    );
    let cr = json!({"metadata": {"name": "web-7d", "creationTimestamp": "2024-05-01T11:00:00Z",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
    assert_eq!(
        cells_of("apps", "v1", "controllerrevisions", cr),
        json!(["web-7d", "statefulset.apps/web", 2, "60m"]).as_array().unwrap().clone()
    );
}

#[test]
fn new_printers_tolerate_any_json() {
    for r in RESOURCES.iter().filter(|r| r.stored) {
        for odd in [json!({}), json!({"metadata": 5, "spec": [], "status": "x"}), json!(null)] {
            let t = table(r, &[odd], &opts());
            let cols = t["columnDefinitions"].as_array().unwrap().len();
            assert_eq!(t["rows"][0]["cells"].as_array().unwrap().len(), cols, "{}", r.kind);
        }
    }
}
