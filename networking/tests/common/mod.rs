//! Helpers shared by the networking tests: an in-process cluster, objects written the way the
//! endpoint controllers would write them, tiny backends standing in for pods, and polling.
#![allow(dead_code)] // each test binary uses a different subset.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use apiserver::testing::TestCluster;

/// Polls `f` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn create_service(client: &Client, ns: &str, body: serde_json::Value) -> Service {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap()
}

pub async fn delete_service(client: &Client, ns: &str, name: &str) {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.delete(name, &DeleteParams::default()).await.unwrap();
}

/// One endpoint of a slice: address, ready, optional hostname.
pub struct Ep<'a> {
    pub ip: &'a str,
    pub ready: bool,
    pub hostname: Option<&'a str>,
}

pub fn ep(ip: &str) -> Ep<'_> {
    Ep { ip, ready: true, hostname: None }
}

pub fn not_ready(ip: &str) -> Ep<'_> {
    Ep { ip, ready: false, hostname: None }
}

/// Creates or replaces the EndpointSlice `<svc>-slice` for Service `svc`, as the EndpointSlice
/// controller would. `ports`: (name, port, protocol).
pub async fn set_slice(client: &Client, ns: &str, svc: &str, eps: &[Ep<'_>], ports: &[(&str, u16, &str)]) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let name = format!("{svc}-slice");
    let body = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": eps.iter().map(|e| {
            let mut v = json!({"addresses": [e.ip],
                "conditions": {"ready": e.ready, "serving": e.ready, "terminating": false}});
            if let Some(h) = e.hostname { v["hostname"] = json!(h); }
            v
        }).collect::<Vec<_>>(),
        "ports": ports.iter().map(|(n, p, proto)| {
            let mut v = json!({"port": p, "protocol": proto});
            if !n.is_empty() { v["name"] = json!(n); }
            v
        }).collect::<Vec<_>>(),
    });
    upsert(&api, &name, body).await;
}

/// Creates the object, or replaces it if it exists (no server-side apply needed).
pub async fn upsert<K>(api: &Api<K>, name: &str, mut body: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.get_opt(name).await.unwrap() {
        Some(old) => {
            body["metadata"]["resourceVersion"] = json!(old.meta().resource_version);
            api.replace(name, &PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();
        }
        None => {
            api.create(&PostParams::default(), &serde_json::from_value(body).unwrap()).await.unwrap();
        }
    }
}

/// Stops a component on drop-less demand and waits for it to return.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task).await.expect("component stops").unwrap();
    }
}

/// Spawns a `run_*` function with a shutdown future; panics if the component returns an error.
pub fn spawn_component<F, Fut, E>(f: F) -> Running
where
    F: FnOnce(futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
        let _ = rx.await;
    });
    let fut = f(shutdown);
    let task = tokio::spawn(async move { fut.await.expect("component ran without error") });
    Running { stop: Some(tx), task }
}

/// A TCP "pod": each connection gets `<id>\n`, then everything it sends is echoed back.
pub async fn id_backend(addr: SocketAddr, id: &str) -> JoinHandle<()> {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let id = id.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let id = id.clone();
            tokio::spawn(async move {
                let _ = s.write_all(format!("{id}\n").as_bytes()).await;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// Connects and reads the backend's id line. `None` if the connection is refused, reset or closed
/// before a line arrives (within 2 s).
pub async fn read_id(addr: SocketAddr) -> Option<String> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        loop {
            match s.read(&mut b).await {
                Ok(1) if b[0] == b'\n' => break,
                Ok(1) => line.push(b[0]),
                _ => return None,
            }
        }
        String::from_utf8(line).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::from((ip.parse::<Ipv4Addr>().unwrap(), port))
}
