//! The API server's router in-process over a real embedded store, shared by the test binaries.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use serde_json::Value;
use store::embedded::{EmbeddedConfig, EmbeddedStore};
use store::Store;
use tower::ServiceExt;

pub struct Api {
    pub st: apiserver::AppState,
    pub store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

pub async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.unwrap();
    let st = apiserver::AppState::new(Arc::new(store.clone()), apiserver::Config::default());
    apiserver::bootstrap(&st, "127.0.0.1:6443".parse().unwrap()).await.unwrap();
    Api { st, store, _dir: dir }
}

impl Api {
    pub async fn raw(&self, method: Method, uri: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
        let (code, _, body) = self.send(method, uri, ct, body).await;
        (code, body)
    }

    /// One request through the router: code, headers and the body as JSON (null if it is not).
    pub async fn send(&self, method: Method, uri: &str, ct: &str, body: Vec<u8>) -> (u16, HeaderMap, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap();
        let resp = apiserver::router(self.st.clone()).oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (code, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The stored value of a `/registry` key, if any.
    pub async fn stored(&self, key: &str) -> Option<Value> {
        match self.store.get(key).await {
            Ok(kv) => Some(serde_json::from_slice(&kv.value).unwrap()),
            Err(store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{key}: {e}"),
        }
    }

    pub async fn call(&self, method: Method, uri: &str, body: Value) -> (u16, Value) {
        let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
        self.raw(method, uri, "application/json", bytes).await
    }

    pub async fn revision(&self) -> i64 {
        self.store.current_revision().await.unwrap()
    }

    /// Sends a bad request and checks upstream's code and reason, that nothing was written, and that
    /// the server still serves.
    pub async fn refused(
        &self,
        method: Method,
        uri: &str,
        ct: &str,
        body: Vec<u8>,
        code: u16,
        reason: &str,
    ) -> Value {
        let before = self.revision().await;
        let (got, status) = self.raw(method, uri, ct, body).await;
        assert_eq!((got, status["reason"].as_str()), (code, Some(reason)), "{uri}: {status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["code"], code);
        assert_eq!(self.revision().await, before, "{uri}: a refused request wrote to the store");
        let (ok, _) = self.call(Method::GET, "/api/v1/namespaces/default", Value::Null).await;
        assert_eq!(ok, 200, "server stopped serving");
        status
    }
}
