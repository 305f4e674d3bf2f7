//! `kill -9` of the process holding the embedded store while writes are in flight: every write it
//! acknowledged is there after a restart, with the revision it was acknowledged at.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, Kplane};
use etcd_client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut kp = Kplane::start(dir.path(), port);
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();

    let mut writers = Vec::new();
    for task in 0..8 {
        let (ep, acked) = (kp.endpoint(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut client = Client::connect([ep], None).await.unwrap();
            for i in 0.. {
                let key = format!("/registry/crash/{task}/{i:06}");
                match client.put(key.as_str(), i.to_string(), None).await {
                    Ok(resp) => {
                        let rev = resp.header().unwrap().revision();
                        acked.lock().unwrap().push((key, rev));
                    }
                    // The server died: every later write fails too.
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill in the middle of the stream of writes, once a good number are acknowledged.
    for _ in 0..600 {
        if acked.lock().unwrap().len() >= 2000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    kp.kill9();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(30), w).await.expect("writers stop after the kill").unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "too few writes before the kill to prove anything: {}", acked.len());

    let kp = Kplane::start(dir.path(), port);
    let mut client = Client::connect([kp.endpoint()], None).await.unwrap();
    for (key, rev) in &acked {
        let got = client.get(key.as_str(), None).await.unwrap();
        let kv = got.kvs().first().unwrap_or_else(|| panic!("acknowledged write {key} at {rev} is lost"));
        assert_eq!(kv.mod_revision(), *rev, "{key} has another revision than acknowledged");
    }
    let max = acked.iter().map(|(_, r)| *r).max().unwrap();
    let now = client.get("/registry/none", None).await.unwrap().header().unwrap().revision();
    assert!(now >= max, "revision went back from {max} to {now}");
}
