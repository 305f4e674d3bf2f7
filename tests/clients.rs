//! Real clients other than kubectl: the official Python `kubernetes` client and kube-rs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{etcdctl, free_port, stderr, stdout, Kplane};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

#[test]
fn python_kubernetes_client_creates_pages_watches_patches_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = Command::new("python3").arg(script).arg(&kp.kubeconfig).output().expect(
        "python3 could not run: install Python 3 and `pip install kubernetes` (this test must not be skipped)",
    );
    assert!(out.status.success(), "python client test failed:\n{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("python client: ok"));
}

async fn client(kp: &Kplane) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&kp.kubeconfig).unwrap();
    let cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    c.data = Some([("a".to_string(), "1".to_string())].into());
    c
}

/// Next watcher event that is not a bookmark-like init marker we don't care about.
async fn next(
    stream: &mut (impl futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>> + Unpin),
) -> watcher::Event<ConfigMap> {
    tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("watcher event in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_watcher_sees_changes_and_relists_after_410() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny watch cache, so a resumed watch falls out of its window onto the compacted store.
    let kp = Kplane::start_with(dir.path(), free_port(), &["--default-watch-cache-size", "3"]);
    let client = client(&kp).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("seen", &[("w", "yes")])).await.unwrap();

    // Short server-side timeouts make the watcher reconnect, which is where a 410 shows up.
    let cfg = watcher::Config::default().labels("w=yes").timeout(1);
    let mut stream = Box::pin(watcher(api.clone(), cfg));
    assert!(matches!(next(&mut stream).await, watcher::Event::Init));
    assert!(
        matches!(next(&mut stream).await, watcher::Event::InitApply(c) if c.metadata.name.as_deref() == Some("seen"))
    );
    assert!(matches!(next(&mut stream).await, watcher::Event::InitDone));

    api.patch("seen", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"a": "2"}})))
        .await
        .unwrap();
    match next(&mut stream).await {
        watcher::Event::Apply(c) => assert_eq!(c.data.unwrap()["a"], "2"),
        other => panic!("expected the update, got {other:?}"),
    }
    api.create(&PostParams::default(), &cm("also", &[("w", "yes")])).await.unwrap();
    assert!(
        matches!(next(&mut stream).await, watcher::Event::Apply(c) if c.metadata.name.as_deref() == Some("also"))
    );
    api.delete("also", &DeleteParams::default()).await.unwrap();
    assert!(
        matches!(next(&mut stream).await, watcher::Event::Delete(c) if c.metadata.name.as_deref() == Some("also"))
    );

    // Writes the watcher does not select move the store on; compacting past the watcher's last
    // revision makes its next watch fail with 410, and it must re-list.
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("other-{i}"), &[("w", "no")])).await.unwrap();
    }
    let rev = {
        let out = etcdctl(&kp.endpoint(), &["get", "/registry/none", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    };
    let out = etcdctl(&kp.endpoint(), &["compaction", &rev.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The watcher reports the 410 as an error item, then starts over with a fresh list.
    let mut saw_410 = false;
    let relisted = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Some(Ok(watcher::Event::Init)) => return,
                Some(Ok(_)) => {}
                Some(Err(watcher::Error::WatchError(s))) if s.code == 410 => saw_410 = true,
                other => panic!("unexpected watcher item {other:?}"),
            }
        }
    })
    .await;
    assert!(relisted.is_ok(), "the watcher did not re-list after its resource version was compacted");
    assert!(saw_410, "the watch did not end with 410 Expired");
    assert!(
        matches!(next(&mut stream).await, watcher::Event::InitApply(c) if c.metadata.name.as_deref() == Some("seen"))
    );
}
