//! Shared test helpers: a TestCluster with a running controller-manager, a fake kubelet, polling.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use apiserver::testing::TestCluster;
use controller_manager::Config;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running controller-manager: its stop signal and its task.
type RunningCm = (oneshot::Sender<()>, JoinHandle<Result<(), controller_manager::Error>>);

pub struct Env {
    pub cluster: TestCluster,
    pub client: Client,
    cms: Vec<RunningCm>,
}

/// A config for tests: no leader election unless asked, everything else upstream defaults.
pub fn test_config() -> Config {
    Config { leader_elect: false, ..Config::default() }
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(test_config()).await
    }

    pub async fn start_with(config: Config) -> Env {
        let mut env = Self::bare().await;
        env.add_cm(config);
        env
    }

    /// A cluster without a controller-manager.
    pub async fn bare() -> Env {
        // Pods get the API server's default NoExecute tolerations (DefaultTolerationSeconds); 1 s
        // here, as --default-unreachable-toleration-seconds=1 would set it, keeps eviction tests fast.
        let config = apiserver::Config {
            default_not_ready_toleration_seconds: 1,
            default_unreachable_toleration_seconds: 1,
            ..apiserver::Config::default()
        };
        let cluster = TestCluster::start_with(config).await;
        let client = cluster.client.clone();
        Env { cluster, client, cms: Vec::new() }
    }

    /// Starts one more controller-manager; returns its index.
    pub fn add_cm(&mut self, config: Config) -> usize {
        let client = self.client.clone();
        self.add_cm_with(client, config)
    }

    /// Starts a controller-manager that talks through `client` (e.g. one that injects faults).
    pub fn add_cm_with(&mut self, client: Client, config: Config) -> usize {
        let (tx, rx) = oneshot::channel::<()>();
        let h = tokio::spawn(controller_manager::run(client, config, async move {
            let _ = rx.await;
        }));
        self.cms.push((tx, h));
        self.cms.len() - 1
    }

    /// Stops controller-manager `i` cleanly and returns its result.
    pub async fn stop_cm(&mut self, i: usize) -> Result<(), controller_manager::Error> {
        let (tx, h) = self.cms.remove(i);
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(30), h).await.expect("controller-manager stops").expect("join")
    }

    /// Waits (up to `secs`) for controller-manager `i` to return on its own.
    pub async fn wait_cm_exit(&mut self, i: usize, secs: u64) -> Result<(), controller_manager::Error> {
        let (_tx, h) = self.cms.remove(i);
        tokio::time::timeout(Duration::from_secs(secs), h)
            .await
            .expect("controller-manager returns")
            .expect("join")
    }

    /// Aborts controller-manager `i` without a clean stop (a crash: no lease release).
    pub fn abort_cm(&mut self, i: usize) {
        let (_tx, h) = self.cms.remove(i);
        h.abort();
    }

    pub async fn shutdown(mut self) {
        self.shutdown_keep_cluster().await;
        self.cluster.shutdown().await;
    }

    /// Stops every controller-manager cleanly (each must return Ok); the cluster keeps serving.
    pub async fn shutdown_keep_cluster(&mut self) {
        while !self.cms.is_empty() {
            let r = self.stop_cm(0).await;
            assert!(r.is_ok(), "{r:?}");
        }
    }
}

/// Polls `f` every 50ms until it returns Some, or panics after `secs` with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(selector)).await.expect("list pods").items
}

pub async fn active_pods(client: &Client, ns: &str, selector: &str) -> Vec<Pod> {
    pods(client, ns, selector).await.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
}

static NEXT_IP: AtomicU32 = AtomicU32::new(1);

/// The fake kubelet: marks a pod Running and Ready with an IP from 127.244.x.y.
pub async fn make_ready(client: &Client, ns: &str, name: &str) -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let ip = format!("127.244.{}.{}", (n / 250) % 250, n % 250 + 2);
    set_status(client, ns, name, &ip, true).await;
    ip
}

pub async fn set_status(client: &Client, ns: &str, name: &str, ip: &str, ready: bool) {
    try_set_status(client, ns, name, ip, ready).await.expect("patch pod status");
}

/// Like [`set_status`], but a pod deleted meanwhile is an error to return, not a panic.
pub async fn try_set_status(
    client: &Client,
    ns: &str,
    name: &str,
    ip: &str,
    ready: bool,
) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let now = jiff::Timestamp::now().to_string();
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now},
        ],
        "containerStatuses": [{"name": "c", "image": "img", "imageID": "", "ready": ready, "restartCount": 0,
                               "started": true, "state": {"running": {"startedAt": now}}}],
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ())
}

/// Marks every not-yet-ready active pod matching `selector` ready; returns how many.
pub async fn make_all_ready(client: &Client, ns: &str, selector: &str) -> usize {
    let mut n = 0;
    for p in active_pods(client, ns, selector).await {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            // The controller may delete the pod between the list and the patch: skip it then.
            let k = NEXT_IP.fetch_add(1, Ordering::Relaxed);
            let ip = format!("127.244.{}.{}", (k / 250) % 250, k % 250 + 2);
            match try_set_status(client, ns, &p.name_any(), &ip, true).await {
                Ok(()) => n += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => panic!("patch pod status: {e}"),
            }
        }
    }
    n
}

/// Binds a pod to a node through pods/binding, as the scheduler does.
pub async fn bind(client: &Client, ns: &str, pod: &str, node: &str) {
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{pod}/binding"))
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}))
            .unwrap(),
        )
        .unwrap();
    let _: serde_json::Value = client.request(req).await.expect("binding");
}

pub async fn create_ns(client: &Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&Default::default(), &ns).await.expect("create namespace");
}

pub async fn apply<K>(client: &Client, ns: &str, v: serde_json::Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let obj: K = serde_json::from_value(v).expect("object");
    api.create(&Default::default(), &obj).await.expect("create")
}

/// A client over the cluster's router that answers 500 to pod creates in `default` while `fail`
/// is set: the fault injection for create-failure tests.
pub fn pod_create_failing_client(env: &Env, fail: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Client {
    faulty_client(env, move |req| {
        let create =
            req.method() == http::Method::POST && req.uri().path() == "/api/v1/namespaces/default/pods";
        if create && fail.load(Ordering::SeqCst) {
            Fault::Status(500, "InternalError")
        } else {
            Fault::None
        }
    })
}

/// What [`faulty_client`] does with one request.
pub enum Fault {
    None,
    /// Hang (no answer, no error) until the fault clears; the request then goes through, unless
    /// dropped first: a store or network that stops answering.
    Hang,
    /// Answer this code and reason (a `metav1.Status`) without reaching the API server.
    Status(u16, &'static str),
}

/// A client over the cluster's router that applies `fault(request)` to each request.
pub fn faulty_client(
    env: &Env,
    fault: impl Fn(&http::Request<kube::client::Body>) -> Fault + Clone + Send + Sync + 'static,
) -> Client {
    use tower::ServiceExt;
    let router = apiserver::router(env.cluster.state.clone());
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let (router, fault) = (router.clone(), fault.clone());
        async move {
            loop {
                match fault(&req) {
                    Fault::None => break,
                    Fault::Hang => tokio::time::sleep(Duration::from_millis(20)).await,
                    Fault::Status(code, reason) => {
                        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                                          "reason": reason, "message": "injected fault"});
                        let resp = http::Response::builder()
                            .status(code)
                            .header("content-type", "application/json")
                            .body(axum::body::Body::from(body.to_string()))
                            .expect("response");
                        return Ok::<_, std::convert::Infallible>(resp);
                    }
                }
            }
            router.oneshot(req).await
        }
    });
    Client::new(svc, "default")
}
