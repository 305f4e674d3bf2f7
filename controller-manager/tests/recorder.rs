//! The event recorder against a real API server: a first event is created, repeats become its
//! series, and a series whose event is gone starts a new event.
use apiserver::testing::TestCluster;
use controller_manager::recorder::Recorder;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::events::{Event, EventType, Reporter};

fn started(container: &str) -> Event {
    Event {
        type_: EventType::Normal,
        reason: "Started".into(),
        note: Some(format!("Started container {container}")),
        action: "Started".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn repeats_become_a_series_and_a_deleted_event_is_created_again() {
    let cluster = TestCluster::start().await;
    let client = cluster.client.clone();
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "kubelet".into(), instance: Some("n1".into()) });
    let pod = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some("default".into()),
        name: Some("web".into()),
        uid: Some("uid-web".into()),
        ..Default::default()
    };
    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    for _ in 0..3 {
        recorder.publish(&started("web"), &pod).await.unwrap();
    }
    recorder.publish(&started("sidecar"), &pod).await.unwrap();
    let mut list = events.list(&ListParams::default()).await.unwrap().items;
    list.sort_by_key(|e| e.note.clone());
    assert_eq!(list.len(), 2, "one event per distinct note: {list:?}");
    let (sidecar, web) = (&list[0], &list[1]);
    assert_eq!(sidecar.note.as_deref(), Some("Started container sidecar"));
    assert!(sidecar.series.is_none());
    assert_eq!(web.series.as_ref().map(|s| s.count), Some(3), "{web:?}");
    assert_eq!(web.reporting_controller.as_deref(), Some("kubelet"));
    assert_eq!(web.reporting_instance.as_deref(), Some("n1"));
    assert_eq!(web.regarding.as_ref().and_then(|r| r.name.as_deref()), Some("web"));
    assert!(web.metadata.name.as_deref().unwrap().starts_with("web."));

    // The event expires (deleted here); the next occurrence creates a new one.
    events.delete(web.metadata.name.as_deref().unwrap(), &DeleteParams::default()).await.unwrap();
    recorder.publish(&started("web"), &pod).await.unwrap();
    let list = events.list(&ListParams::default()).await.unwrap().items;
    let web: Vec<_> = list.iter().filter(|e| e.note.as_deref() == Some("Started container web")).collect();
    assert_eq!(web.len(), 1);
    assert!(web[0].series.is_none(), "a new event, not a series: {:?}", web[0]);
    cluster.shutdown().await;
}
