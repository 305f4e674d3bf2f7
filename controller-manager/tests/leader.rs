//! Leader election: two controller-managers, one leads; the other takes over.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use controller_manager::Config;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;

fn elected(identity: &str) -> Config {
    Config {
        leader_elect: true,
        identity: Some(identity.into()),
        leader_elect_lease_duration: Duration::from_secs(2),
        leader_elect_renew_deadline: Duration::from_millis(1500),
        leader_elect_retry_period: Duration::from_millis(200),
        ..Config::default()
    }
}

async fn holder(client: &Client) -> Option<(String, i32)> {
    let l = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get_opt("kube-controller-manager")
        .await
        .unwrap()?;
    let s = l.spec?;
    Some((s.holder_identity.filter(|h| !h.is_empty())?, s.lease_transitions.unwrap_or(0)))
}

fn rs(replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "le"},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "le"}},
                    "template": {"metadata": {"labels": {"app": "le"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

#[tokio::test]
async fn one_leader_runs_the_controllers_and_the_standby_takes_over() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    env.add_cm(elected("cm-a"));
    env.add_cm(elected("cm-b"));
    let (first, transitions) = eventually(10, "a leader", || holder(&c)).await;
    assert!(first == "cm-a" || first == "cm-b");
    // Exactly one set of controllers: 5 replicas make exactly 5 pods, and stay 5.
    let _: ReplicaSet = apply(&c, "default", rs(5)).await;
    eventually(10, "5 pods", || async { (pods(&c, "default", "app=le").await.len() == 5).then_some(()) }).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pods(&c, "default", "app=le").await.len(), 5);
    }
    // The leader stops cleanly (releases); the standby leads and its controllers act.
    let idx = if first == "cm-a" { 0 } else { 1 };
    env.stop_cm(idx).await.unwrap();
    let (second, t2) =
        eventually(10, "the standby leads", || async { holder(&c).await.filter(|(h, _)| *h != first) }).await;
    assert!(t2 > transitions, "leaseTransitions bumped on takeover");
    Api::<ReplicaSet>::namespaced(c.clone(), "default")
        .patch("le", &PatchParams::default(), &Patch::Merge(&json!({"spec": {"replicas": 7}})))
        .await
        .unwrap();
    eventually(10, &format!("{second} scales to 7"), || async {
        (pods(&c, "default", "app=le").await.len() == 7).then_some(())
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_within_the_lease_duration() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    env.add_cm(elected("cm-a"));
    eventually(10, "cm-a leads", || async { holder(&c).await.filter(|(h, _)| h == "cm-a") }).await;
    env.add_cm(elected("cm-b"));
    // No release: the task is aborted, as if the process died.
    env.abort_cm(0);
    let killed = std::time::Instant::now();
    eventually(10, "cm-b takes over after the lease expires", || async {
        holder(&c).await.filter(|(h, _)| h == "cm-b")
    })
    .await;
    // The lease (2 s) counts from cm-a's last renewal, before the kill; 0.5 s for scheduling.
    let took = killed.elapsed();
    assert!(took <= Duration::from_millis(2_500), "took {took:?} (lease 2 s)");
    // A stop requested within ms of a term's start can hang `Running::stop` (seen on main's code
    // too, ~1 run in 6; not the election's): let the term's controllers start first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.shutdown().await;
}

/// The Lease's renewTime as written, None until there is one.
async fn renew_time(client: &Client) -> Option<String> {
    let l = Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get_opt("kube-controller-manager")
        .await
        .ok()??;
    Some(l.spec?.renew_time?.0.to_string())
}

/// A standby watches the Lease, so it sees each renewal as it happens, and tries to acquire the
/// moment the record it observed expires: a leader killed right after a renewal is replaced a
/// lease duration later, not up to two (jittered) retry periods after that as with polling alone
/// (1 s retry here: polling would be late by 1.2 s on average, each round). Nor earlier: the
/// standby waits a whole lease duration from the renewal it saw.
#[tokio::test]
async fn a_killed_leader_is_replaced_one_lease_duration_after_its_last_renewal() {
    let lease = Duration::from_secs(3);
    let cfg = |identity: &str| Config {
        leader_elect: true,
        identity: Some(identity.into()),
        leader_elect_lease_duration: lease,
        leader_elect_renew_deadline: Duration::from_secs(2),
        leader_elect_retry_period: Duration::from_secs(1),
        ..Config::default()
    };
    let mut env = Env::bare().await;
    let c = env.client.clone();
    env.add_cm(cfg("cm-0"));
    eventually(10, "cm-0 leads", || async { holder(&c).await.filter(|(h, _)| h == "cm-0") }).await;
    for round in 1..=3 {
        let (leader, next) = (format!("cm-{}", round - 1), format!("cm-{round}"));
        env.add_cm(cfg(&next));
        // Let the standby read the record and stand by.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        // Kill the leader right after it renewed: the moment the renewTime changes.
        let before = renew_time(&c).await.expect("a renewTime");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while renew_time(&c).await.as_ref() == Some(&before) {
            assert!(std::time::Instant::now() < deadline, "{leader} stopped renewing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        env.abort_cm(0);
        let killed = std::time::Instant::now();
        loop {
            if holder(&c).await.is_some_and(|(h, _)| h == next) {
                break;
            }
            assert!(killed.elapsed() < Duration::from_secs(10), "round {round}: {next} never took over");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = killed.elapsed();
        assert!(
            took <= lease + Duration::from_millis(500),
            "round {round}: {next} took over {took:?} after the kill (lease {lease:?})"
        );
        assert!(
            took >= lease - Duration::from_millis(300),
            "round {round}: {next} took over {took:?} after the kill, before the lease {lease:?} expired"
        );
    }
    // As above: let the last term's controllers start before stopping them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.shutdown().await;
}

/// The `LeaderElection` events on the controller-manager's Lease, as `<identity> <what>` notes.
async fn leader_events(client: &Client) -> Vec<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "kube-system");
    let list = events.list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("LeaderElection"))
        .filter(|e| e.involved_object.name.as_deref() == Some("kube-controller-manager"))
        .filter_map(|e| e.message)
        .collect()
}

fn rs_named(name: &str, replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

#[tokio::test]
async fn a_taken_lease_stops_the_controllers_and_they_lead_again_once_it_expires() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    env.add_cm(elected("cm-a"));
    let (_, t0) =
        eventually(10, "cm-a leads", || async { holder(&c).await.filter(|(h, _)| h == "cm-a") }).await;
    let _: ReplicaSet = apply(&c, "default", rs_named("before", 1)).await;
    eventually(10, "the leader's controllers act", || async {
        (pods(&c, "default", "app=before").await.len() == 1).then_some(())
    })
    .await;
    // Another holder takes the lease (as a partitioned leader would find it) and never renews it.
    let renew = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    Api::<Lease>::namespaced(c.clone(), "kube-system")
        .patch(
            "kube-controller-manager",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"holderIdentity": "intruder", "renewTime": renew, "leaseDurationSeconds": 3}}),
            ),
        )
        .await
        .unwrap();
    eventually(10, "cm-a steps down", || async {
        leader_events(&c).await.iter().any(|n| n == "cm-a stopped leading").then_some(())
    })
    .await;
    // Not the leader: its controllers are gone, a new ReplicaSet gets no pods; the API serves on.
    let _: ReplicaSet = apply(&c, "default", rs_named("while-standby", 2)).await;
    let mut checked = 0;
    while holder(&c).await.is_some_and(|(h, _)| h == "intruder") && checked < 10 {
        assert!(pods(&c, "default", "app=while-standby").await.is_empty(), "a standby's controller acted");
        tokio::time::sleep(Duration::from_millis(100)).await;
        checked += 1;
    }
    assert!(checked >= 5, "the intruder's lease was taken back too soon to check the standby");
    // The intruder never renews: cm-a, campaigning all along, takes the lease back and leads anew.
    let (_, t1) =
        eventually(15, "cm-a leads again", || async { holder(&c).await.filter(|(h, _)| h == "cm-a") }).await;
    assert!(t1 > t0, "taking the lease back is a transition: {t0} -> {t1}");
    eventually(10, "the new term's controllers act", || async {
        (pods(&c, "default", "app=while-standby").await.len() == 2).then_some(())
    })
    .await;
    // Fresh caches, one set of controllers: nothing created twice.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pods(&c, "default", "app=before").await.len(), 1);
        assert_eq!(pods(&c, "default", "app=while-standby").await.len(), 2);
    }
    // Shutdown still stops it cleanly (Ok) and releases the lease.
    env.shutdown_keep_cluster().await;
    eventually(10, "the lease released", || async { holder(&c).await.is_none().then_some(()) }).await;
}

#[tokio::test]
async fn an_api_that_hangs_past_the_renew_deadline_costs_the_lease_and_it_leads_again_after() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    let stall = Arc::new(AtomicBool::new(false));
    let stalled = stall.clone();
    let client =
        faulty_client(&env, move |_| if stalled.load(Ordering::SeqCst) { Fault::Hang } else { Fault::None });
    env.add_cm_with(client, elected("cm-a"));
    let (_, t0) =
        eventually(10, "cm-a leads", || async { holder(&c).await.filter(|(h, _)| h == "cm-a") }).await;
    // Every request of cm-a hangs (no answer, no error) for longer than the 1.5 s renew deadline.
    stall.store(true, Ordering::SeqCst);
    let _: ReplicaSet = apply(&c, "default", rs_named("after-outage", 2)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pods(&c, "default", "app=after-outage").await.is_empty());
    stall.store(false, Ordering::SeqCst);
    // It stepped down on time, kept campaigning, and starts a new term once the API answers.
    let (_, t1) = eventually(15, "cm-a leads a new term", || async {
        holder(&c).await.filter(|(h, t)| h == "cm-a" && *t > t0)
    })
    .await;
    assert_eq!(t1, t0 + 1);
    eventually(10, "the ReplicaSet created during the outage is reconciled", || async {
        (pods(&c, "default", "app=after-outage").await.len() == 2).then_some(())
    })
    .await;
    let notes = leader_events(&c).await;
    assert!(notes.iter().any(|n| n == "cm-a became leader"), "{notes:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn a_conflicting_write_to_its_own_lease_does_not_make_the_leader_step_down() {
    let mut env = Env::bare().await;
    let c = env.client.clone();
    let conflict = Arc::new(AtomicBool::new(false));
    let on = conflict.clone();
    let client = faulty_client(&env, move |req| {
        let lease_put =
            req.method() == http::Method::PUT && req.uri().path().ends_with("/leases/kube-controller-manager");
        if lease_put && on.load(Ordering::SeqCst) {
            Fault::Status(409, "Conflict")
        } else {
            Fault::None
        }
    });
    env.add_cm_with(client, elected("cm-a"));
    let (_, t0) =
        eventually(10, "cm-a leads", || async { holder(&c).await.filter(|(h, _)| h == "cm-a") }).await;
    // Renewals conflict for less than the 1.5 s renew deadline: retried, not a lost lease.
    conflict.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    conflict.store(false, Ordering::SeqCst);
    let _: ReplicaSet = apply(&c, "default", rs_named("still-leading", 1)).await;
    eventually(10, "the same term's controllers act", || async {
        (pods(&c, "default", "app=still-leading").await.len() == 1).then_some(())
    })
    .await;
    assert_eq!(holder(&c).await, Some(("cm-a".to_string(), t0)), "no new term");
    let notes = leader_events(&c).await;
    assert!(!notes.iter().any(|n| n == "cm-a stopped leading"), "{notes:?}");
    env.shutdown().await;
}
