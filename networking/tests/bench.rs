//! The benchmark runs end to end (briefly) and measures all three paths.

use std::time::Duration;

use apiserver::testing::TestCluster;
use networking::bench::{run, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_direct_proxy_and_ingress() {
    let cluster = TestCluster::start().await;
    let opts = BenchOptions {
        backend: "127.244.250.1:8000".parse().unwrap(),
        ingress_http: "127.0.82.1:8080".parse().unwrap(),
        ingress_https: "127.0.82.1:8443".parse().unwrap(),
        concurrency: 4,
        duration: Duration::from_millis(300),
    };
    let report = run(cluster.client.clone(), opts).await.expect("benchmark runs");
    println!("{report}");
    for fig in [report.direct, report.proxy, report.ingress] {
        assert!(fig.requests > 10, "{report}");
        assert_eq!(fig.errors, 0, "{report}");
    }
    cluster.shutdown().await;
}
