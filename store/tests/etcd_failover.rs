//! The etcd backend on a real 3-member etcd 3.4 cluster: with the member in use killed (SIGKILL),
//! then the leader, reads, writes and a watch carry on through the other members; the watch
//! delivers every revision once, in order.

use std::time::{Duration, Instant};

use futures::StreamExt;
use store::etcd::{EtcdConfig, EtcdStore};
use store::etcd_process::EtcdCluster;
use store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_a_watch_carry_on_when_members_die() {
    let mut etcd = EtcdCluster::start(3).await.expect("start a 3-member etcd cluster (etcd-server)");
    let store = EtcdStore::connect(EtcdConfig::new(etcd.endpoints())).await.unwrap();
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch_revisions("/registry/failover/", start + 1, false).await.unwrap();

    let mut acked = Vec::new();
    let mut i = 0;
    let write = |store: EtcdStore, i: usize| async move {
        let key = format!("/registry/failover/{i:05}");
        store.create(&key, b"v".to_vec(), 0).await.map(|kv| kv.mod_revision)
    };
    for round in 0..2 {
        for _ in 0..20 {
            acked.push(write(store.clone(), i).await.unwrap());
            i += 1;
        }
        let victim = if round == 0 { 0 } else { etcd.leader().await.expect("a leader") };
        etcd.kill9(victim).unwrap();
        let killed = Instant::now();
        let mut done = 0;
        while done < 20 {
            match write(store.clone(), i).await {
                Ok(rev) => {
                    acked.push(rev);
                    done += 1;
                }
                Err(e) => {
                    assert!(killed.elapsed() < Duration::from_secs(10), "writes still fail: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            i += 1;
        }
        etcd.restart(victim).await.unwrap();
    }
    // The watch delivers every acknowledged revision, once and in order.
    let mut seen = Vec::new();
    while seen.len() < acked.len() {
        let batch = tokio::time::timeout(Duration::from_secs(15), watch.next())
            .await
            .unwrap_or_else(|_| {
                panic!("the watch stalled after {} of {} revisions: {seen:?}", seen.len(), acked.len())
            })
            .expect("the watch goes on")
            .expect("no watch error");
        seen.extend(batch.iter().map(store::Event::revision));
    }
    for w in seen.windows(2) {
        assert!(w[1] > w[0], "revisions not increasing: {w:?}");
    }
    for rev in &acked {
        assert!(seen.contains(rev), "the watch missed revision {rev}");
    }
}
