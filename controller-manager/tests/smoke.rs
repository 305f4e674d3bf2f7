use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

#[tokio::test]
async fn in_process_client_lists_namespaces() {
    let cluster = apiserver::testing::TestCluster::start().await;
    let api: Api<Namespace> = Api::all(cluster.client.clone());
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"kube-system".to_string()), "{names:?}");
    cluster.shutdown().await;
}
