//! Endpoints and EndpointSlice controllers.
mod common;

use std::collections::BTreeSet;

use common::*;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

async fn pod(
    client: &Client,
    name: &str,
    app: &str,
    port_name: &str,
    port: i32,
    extra: serde_json::Value,
) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "nginx", "ports": [{"name": port_name, "containerPort": port}]}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    apply(client, "default", json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": spec})).await
}

async fn service(client: &Client, v: serde_json::Value) -> Service {
    apply(client, "default", v).await
}

fn svc(name: &str, app: &str, target: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name, "labels": {"team": "x"}},
           "spec": {"selector": {"app": app}, "ports": [{"name": "web", "port": 80, "targetPort": target}]}})
}

async fn endpoints(client: &Client, name: &str) -> Option<Endpoints> {
    Api::<Endpoints>::namespaced(client.clone(), "default").get_opt(name).await.unwrap()
}

fn ips(addrs: Option<&Vec<k8s_openapi::api::core::v1::EndpointAddress>>) -> BTreeSet<String> {
    addrs.map(|a| a.iter().map(|x| x.ip.clone()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn endpoints_ready_not_ready_named_ports_and_no_churn() {
    let env = Env::start().await;
    let c = &env.client;
    pod(c, "a", "web", "http", 8080, json!({})).await;
    pod(c, "b", "web", "http", 9090, json!({})).await;
    pod(c, "noip", "web", "http", 8080, json!({})).await;
    let ip_a = make_ready(c, "default", "a").await;
    set_status(c, "default", "b", "127.244.9.9", false).await;
    service(c, svc("web", "web", json!("http"))).await;
    let ep = eventually(10, "endpoints with a ready and a not-ready pod", || async {
        let ep = endpoints(c, "web").await?;
        let subsets = ep.subsets.clone()?;
        let ready: BTreeSet<String> = subsets.iter().flat_map(|s| ips(s.addresses.as_ref())).collect();
        let not_ready: BTreeSet<String> =
            subsets.iter().flat_map(|s| ips(s.not_ready_addresses.as_ref())).collect();
        (ready == BTreeSet::from([ip_a.clone()]) && not_ready == BTreeSet::from(["127.244.9.9".to_string()]))
            .then_some(ep)
    })
    .await;
    // Named target port resolved per pod: two subsets, 8080 for a and 9090 for b.
    let subsets = ep.subsets.clone().unwrap();
    assert_eq!(subsets.len(), 2, "{subsets:?}");
    for s in &subsets {
        let port = s.ports.as_ref().unwrap()[0].clone();
        assert_eq!(port.name.as_deref(), Some("web"));
        if let Some(addrs) = &s.addresses {
            assert_eq!(port.port, 8080);
            let a = &addrs[0];
            let r = a.target_ref.as_ref().unwrap();
            assert_eq!((r.kind.as_deref(), r.name.as_deref()), (Some("Pod"), Some("a")));
            assert!(r.uid.is_some());
        } else {
            assert_eq!(port.port, 9090);
        }
    }
    assert_eq!(ep.labels().get("team").map(String::as_str), Some("x"));

    // Unrelated pod changes: no write.
    let rv = ep.resource_version();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pods.patch("a", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"annotations": {"x": "y"}}})))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(
        endpoints(c, "web").await.unwrap().resource_version(),
        rv,
        "endpoints rewritten without a change"
    );

    // b becomes ready; a is deleted.
    make_ready(c, "default", "b").await;
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    eventually(10, "only b, ready", || async {
        let ep = endpoints(c, "web").await?;
        let subsets = ep.subsets.clone()?;
        (subsets.len() == 1
            && subsets[0].not_ready_addresses.is_none()
            && subsets[0].addresses.as_ref()?.len() == 1)
            .then_some(())
    })
    .await;

    // Service deleted → endpoints deleted.
    Api::<Service>::namespaced(c.clone(), "default").delete("web", &DeleteParams::default()).await.unwrap();
    eventually(10, "endpoints deleted with their service", || async {
        endpoints(c, "web").await.is_none().then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn selectorless_services_and_default_kubernetes_are_left_alone() {
    let env = Env::start().await;
    let c = &env.client;
    service(c, json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}})).await;
    let manual: Endpoints = apply(
        c,
        "default",
        json!({"metadata": {"name": "manual"}, "subsets": [{"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 80}]}]}),
    )
    .await;
    let kube_rv = endpoints(c, "kubernetes").await.map(|e| e.resource_version());
    // A selector service in the same namespace proves the controller is running.
    pod(c, "p", "x", "http", 80, json!({})).await;
    make_ready(c, "default", "p").await;
    service(c, svc("probe", "x", json!(80))).await;
    eventually(10, "probe endpoints", || async {
        endpoints(c, "probe").await?.subsets?.first()?.addresses.as_ref().map(|_| ())
    })
    .await;
    assert_eq!(endpoints(c, "manual").await.unwrap().resource_version(), manual.resource_version());
    assert_eq!(endpoints(c, "kubernetes").await.map(|e| e.resource_version()), kube_rv);
    env.shutdown().await;
}

#[tokio::test]
async fn headless_hostnames_publish_not_ready_and_terminating_pods() {
    let env = Env::start().await;
    let c = &env.client;
    pod(c, "h0", "db", "pg", 5432, json!({"hostname": "h0", "subdomain": "db"})).await;
    pod(c, "h1", "db", "pg", 5432, json!({})).await;
    make_ready(c, "default", "h0").await;
    set_status(c, "default", "h1", "127.244.8.8", false).await;
    service(
        c,
        json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "publishNotReadyAddresses": true,
               "selector": {"app": "db"}, "ports": [{"name": "pg", "port": 5432, "targetPort": "pg"}]}}),
    )
    .await;
    let ep = eventually(10, "both pods in addresses (publishNotReadyAddresses)", || async {
        let ep = endpoints(c, "db").await?;
        (ep.subsets.as_ref()?.first()?.addresses.as_ref()?.len() == 2).then_some(ep)
    })
    .await;
    assert_eq!(ep.labels().get("service.kubernetes.io/headless").map(String::as_str), Some(""));
    let addrs = ep.subsets.unwrap()[0].addresses.clone().unwrap();
    let h0 = addrs.iter().find(|a| a.target_ref.as_ref().unwrap().name.as_deref() == Some("h0")).unwrap();
    assert_eq!(h0.hostname.as_deref(), Some("h0"));
    // A terminating (bound, gracefully deleted) pod leaves the endpoints.
    bind(c, "default", "h0", "node-1").await;
    Api::<Pod>::namespaced(c.clone(), "default").delete("h0", &DeleteParams::default()).await.unwrap();
    eventually(10, "terminating pod removed", || async {
        let ep = endpoints(c, "db").await?;
        (ep.subsets.as_ref()?.first()?.addresses.as_ref()?.len() == 1).then_some(())
    })
    .await;
    env.shutdown().await;
}

async fn slices(client: &Client, svc: &str) -> Vec<EndpointSlice> {
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn endpointslices_conditions_ports_owner_and_no_churn() {
    let env = Env::start().await;
    let c = &env.client;
    pod(c, "a", "web", "http", 8080, json!({})).await;
    pod(c, "b", "web", "http", 8080, json!({})).await;
    let ip_a = make_ready(c, "default", "a").await;
    set_status(c, "default", "b", "127.244.7.7", false).await;
    bind(c, "default", "a", "node-1").await;
    let s = service(c, svc("web", "web", json!("http"))).await;
    let sl = eventually(10, "one slice with two endpoints", || async {
        let v = slices(c, "web").await;
        (v.len() == 1 && v[0].endpoints.len() == 2).then(|| v[0].clone())
    })
    .await;
    assert_eq!(sl.address_type, "IPv4");
    assert!(sl.metadata.generate_name.as_deref() == Some("web-") && sl.name_any().starts_with("web-"));
    assert_eq!(
        sl.labels().get("endpointslice.kubernetes.io/managed-by").map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    let owner = &sl.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.clone()), ("Service", s.uid().unwrap()));
    let ports = sl.ports.clone().unwrap();
    assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("web"), Some(8080)));
    let a = sl.endpoints.iter().find(|e| e.addresses[0] == ip_a).unwrap();
    let cond = a.conditions.clone().unwrap();
    assert_eq!((cond.ready, cond.serving, cond.terminating), (Some(true), Some(true), Some(false)));
    assert_eq!(a.node_name.as_deref(), Some("node-1"));
    assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
    let b = sl.endpoints.iter().find(|e| e.addresses[0] == "127.244.7.7").unwrap();
    assert_eq!(b.conditions.clone().unwrap().ready, Some(false));

    // No change → no write.
    let rv = sl.resource_version();
    Api::<Pod>::namespaced(c.clone(), "default")
        .patch("b", &PatchParams::default(), &Patch::Merge(&json!({"metadata": {"annotations": {"x": "y"}}})))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(slices(c, "web").await[0].resource_version(), rv, "slice rewritten without a change");

    // Terminating pod: terminating=true, ready=false, serving=true.
    Api::<Pod>::namespaced(c.clone(), "default").delete("a", &DeleteParams::default()).await.unwrap();
    eventually(10, "terminating condition", || async {
        let v = slices(c, "web").await;
        let a = v.first()?.endpoints.iter().find(|e| e.addresses[0] == ip_a)?.conditions.clone()?;
        (a.terminating == Some(true) && a.ready == Some(false) && a.serving == Some(true)).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn endpointslices_respect_max_endpoints_per_slice() {
    let env = Env::start_with(controller_manager::Config { max_endpoints_per_slice: 2, ..test_config() }).await;
    let c = &env.client;
    for i in 0..5 {
        pod(c, &format!("p{i}"), "many", "http", 80, json!({})).await;
        make_ready(c, "default", &format!("p{i}")).await;
    }
    service(c, svc("many", "many", json!(80))).await;
    eventually(10, "5 endpoints in 3 slices of at most 2", || async {
        let v = slices(c, "many").await;
        let total: usize = v.iter().map(|s| s.endpoints.len()).sum();
        (v.len() == 3 && total == 5 && v.iter().all(|s| s.endpoints.len() <= 2)).then_some(())
    })
    .await;
    // Scale down to 1 pod: emptied slices are deleted.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    for i in 1..5 {
        pods.delete(&format!("p{i}"), &DeleteParams::default()).await.unwrap();
    }
    eventually(10, "one slice left", || async {
        let v = slices(c, "many").await;
        (v.len() == 1 && v[0].endpoints.len() == 1).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn leftover_endpoints_of_services_deleted_while_down_are_removed() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    let _: Endpoints = apply(
        &c,
        "default",
        json!({"metadata": {"name": "stale", "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"}}}),
    )
    .await;
    let _: Endpoints = apply(&c, "default", json!({"metadata": {"name": "handmade"}})).await;
    env.add_cm(test_config());
    eventually(10, "stale endpoints removed", || async {
        endpoints(&c, "stale").await.is_none().then_some(())
    })
    .await;
    assert!(endpoints(&c, "handmade").await.is_some(), "endpoints the controller never wrote stay");
    env.shutdown().await;
}

#[tokio::test]
async fn unresolvable_named_port_gives_empty_endpoints_not_a_crash() {
    let env = Env::start().await;
    let c = &env.client;
    pod(c, "p", "odd", "http", 8080, json!({})).await;
    make_ready(c, "default", "p").await;
    service(c, svc("odd", "odd", json!("nope"))).await;
    let ep = eventually(10, "endpoints exist", || async { endpoints(c, "odd").await }).await;
    assert!(ep.subsets.unwrap_or_default().is_empty());
    // The controller still serves other services.
    service(c, svc("fine", "odd", json!("http"))).await;
    eventually(10, "fine endpoints", || async {
        endpoints(c, "fine").await?.subsets?.first()?.addresses.as_ref().map(|_| ())
    })
    .await;
    env.shutdown().await;
}
