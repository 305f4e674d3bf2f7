//! The benchmark runs end to end (briefly) and measures all three paths.

use std::time::Duration;

use apiserver::testing::TestCluster;
use networking::bench::{run, BenchOptions, NginxReference};

/// Each test cluster gives the bench Service the same first free ClusterIP, and each run's proxy
/// binds it: the runs must not overlap.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_direct_proxy_and_ingress() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start().await;
    let opts = BenchOptions {
        backend: "127.244.250.1:8000".parse().unwrap(),
        ingress_http: "127.0.82.1:8080".parse().unwrap(),
        ingress_https: "127.0.82.1:8443".parse().unwrap(),
        concurrency: 4,
        duration: Duration::from_millis(300),
        load: networking::bench::Load::Builtin,
        nginx: None,
    };
    let report = run(cluster.client.clone(), opts).await.expect("benchmark runs");
    println!("{report}");
    for fig in [report.direct, report.proxy, report.ingress] {
        assert!(fig.requests > 10, "{report}");
        assert_eq!(fig.errors, 0, "{report}");
    }
    cluster.shutdown().await;
}

/// The same through `wrk`, the load generator the issue names (a separate process), with nginx
/// measured as the reference proxy. CI installs both; without them this fails rather than skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_wrk_reads_its_report() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = TestCluster::start().await;
    let opts = BenchOptions {
        backend: "127.244.250.2:8000".parse().unwrap(),
        ingress_http: "127.0.83.1:8080".parse().unwrap(),
        ingress_https: "127.0.83.1:8443".parse().unwrap(),
        concurrency: 4,
        duration: Duration::from_secs(1),
        load: networking::bench::Load::Wrk { program: "wrk".into(), threads: 1 },
        nginx: Some(NginxReference {
            program: "/usr/sbin/nginx".into(),
            listen: "127.0.83.2:8080".parse().unwrap(),
        }),
    };
    let report = run(cluster.client.clone(), opts).await.expect("benchmark runs (is wrk installed?)");
    println!("{report}");
    assert!(report.to_string().contains("load from wrk"), "{report}");
    assert!(report.to_string().contains("nginx (ref)"), "{report}");
    // nginx stopped with its workers: its address is free again.
    std::net::TcpListener::bind("127.0.83.2:8080").expect("nginx's workers still hold their address");
    let nginx = report.nginx.expect("nginx was measured");
    for fig in [report.direct, report.proxy, report.ingress, nginx] {
        assert!(fig.requests > 10, "{report}");
        assert_eq!(fig.errors, 0, "{report}");
        assert!(fig.p99_ms >= fig.p50_ms, "{report}");
    }
    cluster.shutdown().await;
}
