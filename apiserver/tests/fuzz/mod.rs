//! A deterministic fuzz pass over the request decoders: valid seed bodies, mutated by a seeded
//! xorshift generator (bit flips, truncation, type swaps, deep nesting, huge numbers, invalid
//! UTF-8), sent through the real router as JSON, YAML and protobuf creates, updates and patches
//! (JSON, merge, strategic), plus label and field selectors. Every answer must be a Status with a
//! 4xx code, or a 2xx whose stored object decodes as its k8s-openapi type. The api-types decoders
//! (selectors, patches, protobuf, typecheck) are fuzzed directly for panics too.
//!
//! Bounded: a few thousand cases, the same ones on every run (fixed seeds); a failure prints the
//! case so it can be replayed as a regression test.

use axum::http::Method;
use serde_json::{json, Value};

use crate::common::Api;

/// xorshift64*: small, fast, and enough to pick mutations reproducibly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A served kind: its collection URI, its `/registry` prefix and a valid object.
struct Seed {
    kind: &'static str,
    uri: &'static str,
    key: &'static str,
    body: Value,
}

fn seeds() -> Vec<Seed> {
    let containers = json!([{"name": "c", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}]);
    vec![
        Seed {
            kind: "ConfigMap",
            uri: "/api/v1/namespaces/default/configmaps",
            key: "/registry/configmaps/default/",
            body: json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "b"}},
                         "data": {"k": "v"}, "binaryData": {"b": "aGk="}}),
        },
        Seed {
            kind: "Pod",
            uri: "/api/v1/namespaces/default/pods",
            key: "/registry/pods/default/",
            body: json!({"apiVersion": "v1", "kind": "Pod",
                         "metadata": {"name": "x", "annotations": {"a": "b"}, "labels": {"app": "x"}},
                         "spec": {"containers": containers, "restartPolicy": "Always",
                                  "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]}}),
        },
        Seed {
            kind: "Deployment",
            uri: "/apis/apps/v1/namespaces/default/deployments",
            key: "/registry/deployments/default/",
            body: json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                         "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                                  "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                                  "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": containers}}}}),
        },
        Seed {
            kind: "Secret",
            uri: "/api/v1/namespaces/default/secrets",
            key: "/registry/secrets/default/",
            body: json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "type": "Opaque",
                         "data": {"k": "dmFsdWU="}, "stringData": {"s": "t"}}),
        },
        Seed {
            kind: "Lease",
            uri: "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            key: "/registry/leases/default/",
            body: json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "x"},
                         "spec": {"holderIdentity": "h", "leaseDurationSeconds": 15,
                                  "renewTime": "2030-01-01T00:00:00.000000Z"}}),
        },
        Seed {
            kind: "Service",
            uri: "/api/v1/namespaces/default/services",
            key: "/registry/services/specs/default/",
            body: json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
                         "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": "http"}]}}),
        },
        Seed {
            kind: "EndpointSlice",
            uri: "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            key: "/registry/endpointslices/default/",
            body: json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "x"},
                         "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                         "endpoints": [{"addresses": ["127.0.0.5"], "conditions": {"ready": true}}]}),
        },
        Seed {
            kind: "Node",
            uri: "/api/v1/nodes",
            key: "/registry/minions/",
            body: json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "x", "labels": {"a": "b"}},
                         "spec": {"podCIDR": "10.0.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
                         "status": {"capacity": {"cpu": "2", "pods": "110"}}}),
        },
    ]
}

/// Whether a stored value decodes as the kind's k8s-openapi type.
fn decodes_as(kind: &str, raw: &[u8]) -> Result<(), String> {
    use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coord, core::v1 as core};
    fn typed<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<(), String> {
        serde_json::from_slice::<T>(raw).map(|_| ()).map_err(|e| e.to_string())
    }
    match kind {
        "ConfigMap" => typed::<core::ConfigMap>(raw),
        "Pod" => typed::<core::Pod>(raw),
        "Deployment" => typed::<apps::Deployment>(raw),
        "Secret" => typed::<core::Secret>(raw),
        "Lease" => typed::<coord::Lease>(raw),
        "Service" => typed::<core::Service>(raw),
        "EndpointSlice" => typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(raw),
        "Node" => typed::<core::Node>(raw),
        other => Err(format!("no typed decoder for {other}")),
    }
}

const ODD_VALUES: &[&str] = &[
    "5",
    "-1",
    "1.5",
    "1e400",
    "-0",
    "18446744073709551616",
    "9223372036854775807",
    "2147483648",
    "\"\"",
    "\"x\"",
    "true",
    "null",
    "[]",
    "{}",
    "[1,\"a\",null]",
    "{\"x\":{\"y\":[]}}",
    "\"2024-01-01T00:00:00Z\"",
    "\"1Gi\"",
    "\"25%\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
];

fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => Value::String("y".repeat(rng.below(20_000))),
        1 => nested(rng.below(300), rng.chance(50)),
        _ => {
            let text = *rng.pick(ODD_VALUES);
            serde_json::from_str(text).unwrap_or(Value::Null)
        }
    }
}

fn nested(depth: usize, arrays: bool) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        // Built by hand: `json!` would serialise `v` again at every level.
        v = if arrays {
            Value::Array(vec![v])
        } else {
            Value::Object([("n".to_string(), v)].into_iter().collect())
        };
    }
    v
}

/// Every path to a node of `v`, as JSON pointer segments.
fn paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(k.clone());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                prefix.push(i.to_string());
                paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get_mut(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// One structural mutation: a type swap, a deletion, an unknown field, or deep nesting.
fn mutate_value(rng: &mut Rng, v: &mut Value) {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    let path = rng.pick(&all).clone();
    match rng.below(4) {
        0 => {
            if let Some(n) = node(v, &path) {
                *n = odd_value(rng);
            }
        }
        1 => {
            if let Some((last, parent)) = path.split_last() {
                match node(v, parent) {
                    Some(Value::Object(m)) => {
                        m.remove(last);
                    }
                    Some(Value::Array(items)) if !items.is_empty() => {
                        items.remove(rng.below(items.len()));
                    }
                    _ => {}
                }
            }
        }
        2 => {
            if let Some(Value::Object(m)) = node(v, &path) {
                m.insert(format!("fuzz{}", rng.below(5)), odd_value(rng));
            }
        }
        _ => {
            if let Some(n) = node(v, &path) {
                *n = nested(rng.below(200), rng.chance(50));
            }
        }
    }
}

/// Bytes that break JSON or UTF-8: invalid UTF-8 starts, a lone surrogate, structure, NUL.
const JUNK: &[&[u8]] = &[&[0xff, 0xfe], &[0xc3], &[0xed, 0xa0, 0x80], b"\\", b"\"", b"{", b"]", &[0]];

/// One byte-level mutation: bit flips, truncation, inserted bytes (often invalid UTF-8), a repeat.
fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    if b.is_empty() {
        b.push(rng.next() as u8);
        return;
    }
    match rng.below(4) {
        0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(b.len())),
        2 => {
            let i = rng.below(b.len());
            let junk = *rng.pick(JUNK);
            b.splice(i..i, junk.iter().copied());
        }
        _ => {
            let i = rng.below(b.len());
            let j = (i + rng.below(64)).min(b.len());
            let chunk = b[i..j].to_vec();
            b.splice(j..j, chunk);
        }
    }
}

fn to_yaml(v: &Value) -> Vec<u8> {
    serde_yaml_ng::to_string(v).map(String::into_bytes).unwrap_or_default()
}

/// A ConfigMap `{metadata: {name: "x"}, data: {k: v}}` in protobuf, encoded by hand.
pub const CONFIGMAP_PROTO: &[u8] =
    &[0x0a, 0x03, 0x0a, 0x01, b'x', 0x12, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v'];

/// A protobuf body as client-go writes it: the magic, then `Unknown { typeMeta: {apiVersion,
/// kind}, raw }`.
pub fn protobuf_envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut b = api_types::protobuf::MAGIC.to_vec();
    let type_meta = [&[0x0a, 2][..], b"v1", &[0x12, kind.len() as u8][..], kind.as_bytes()].concat();
    b.extend([0x0a, type_meta.len() as u8]);
    b.extend(type_meta);
    b.extend([0x12, raw.len() as u8]);
    b.extend(raw);
    b
}

/// A protobuf body to fuzz with: a valid ConfigMap for ConfigMaps, random bytes in the envelope
/// otherwise; then, half the time, mutated.
fn protobuf_body(rng: &mut Rng, kind: &str) -> Vec<u8> {
    let raw: Vec<u8> = match kind {
        "ConfigMap" => CONFIGMAP_PROTO.to_vec(),
        _ => (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
    };
    let mut b = protobuf_envelope(kind, &raw);
    if rng.chance(50) {
        mutate_bytes(rng, &mut b);
    }
    b
}

/// Strategic merge patch errors upstream does not classify (`does not contain declared merge key`,
/// `list element types are not identical`) reach the client as a 500 with no reason
/// (`interpretStrategicMergePatchError`'s default case); kplane's patch module answers alike.
fn upstream_answers_500(ct: &str, body: &Value) -> bool {
    ct == "application/strategic-merge-patch+json" && body["reason"] == ""
}

/// Checks one answer: a Status with a 4xx code, or a 2xx whose stored object decodes as its type.
async fn check_answer(a: &Api, case: &str, seed: &Seed, ct: &str, code: u16, body: &Value) {
    if code == 500 && upstream_answers_500(ct, body) {
        return;
    }
    assert!(code < 500, "{case}: {code} {body}");
    if (400..500).contains(&code) {
        assert_eq!(body["kind"], "Status", "{case}: {body}");
        assert_eq!(body["code"], code, "{case}: {body}");
        return;
    }
    assert!((200..300).contains(&code), "{case}: {code} {body}");
    let Some(name) = body.pointer("/metadata/name").and_then(Value::as_str) else { return };
    let key = format!("{}{name}", seed.key);
    if let Ok(kv) = store::Store::get(&a.store, &key).await {
        if let Err(e) = decodes_as(seed.kind, &kv.value) {
            panic!(
                "{case}: stored {key} does not decode as {}: {e}\n{}",
                seed.kind,
                String::from_utf8_lossy(&kv.value)
            );
        }
    }
}

/// The router pass: creates, updates, status updates and patches of mutated bodies.
pub async fn router_pass(a: &Api, seed_value: u64, cases: usize) {
    let mut rng = Rng::new(seed_value);
    let seeds = seeds();
    for s in &seeds {
        let mut base = s.body.clone();
        base["metadata"]["name"] = json!("base");
        let (code, body) = a.call(Method::POST, s.uri, base).await;
        assert_eq!(code, 201, "seed {}: {body}", s.kind);
    }
    for i in 0..cases {
        let s = rng.pick(&seeds);
        let mut v = s.body.clone();
        v["metadata"]["name"] = json!(format!("f{i}"));
        for _ in 0..=rng.below(3) {
            mutate_value(&mut rng, &mut v);
        }
        let (method, uri, ct, body) = match rng.below(10) {
            // PUT over the existing object (no resourceVersion: unconditional).
            0 | 1 => {
                if v.get("metadata").is_some_and(Value::is_object) {
                    v["metadata"]["name"] = json!("base");
                }
                let sub = if rng.chance(30) && matches!(s.kind, "Pod" | "Deployment") { "/status" } else { "" };
                (Method::PUT, format!("{}/base{sub}", s.uri), "application/json", v.to_string().into_bytes())
            }
            2 | 3 => {
                let (ct, patch) = match rng.below(3) {
                    0 => ("application/merge-patch+json", v.to_string().into_bytes()),
                    1 => ("application/strategic-merge-patch+json", v.to_string().into_bytes()),
                    _ => {
                        let mut all = Vec::new();
                        paths(&s.body, &mut Vec::new(), &mut all);
                        let path = rng.pick(&all).iter().map(|p| format!("/{p}")).collect::<String>();
                        let op = rng.pick(&["add", "replace", "remove", "test", "move", "copy", "bogus"]);
                        let ops = json!([{"op": op, "path": path, "from": "/metadata/labels", "value": odd_value(&mut rng)}]);
                        ("application/json-patch+json", ops.to_string().into_bytes())
                    }
                };
                (Method::PATCH, format!("{}/base", s.uri), ct, patch)
            }
            4 => (Method::POST, s.uri.to_string(), "application/yaml", to_yaml(&v)),
            5 => (
                Method::POST,
                s.uri.to_string(),
                api_types::protobuf::CONTENT_TYPE,
                protobuf_body(&mut rng, s.kind),
            ),
            _ => (Method::POST, s.uri.to_string(), "application/json", v.to_string().into_bytes()),
        };
        let mut body = body;
        if rng.chance(30) {
            mutate_bytes(&mut rng, &mut body);
        }
        let validation = rng.pick(&["", "?fieldValidation=Strict", "?fieldValidation=Ignore"]);
        let uri = format!("{uri}{validation}");
        let case = format!(
            "case {i}: {method} {uri} ({ct}) {}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        );
        let (code, answer) = a.raw(method, &uri, ct, body).await;
        check_answer(a, &case, s, ct, code, &answer).await;
    }
}

const LABEL_SELECTORS: &[&str] =
    &["a=b", "a!=b,c", "!a", "a in (b,c)", "a notin (b)", "a.b/c-d=e_f", "a>1", "a==b", "x in ()"];
const FIELD_SELECTORS: &[&str] = &["metadata.name=x", "metadata.namespace!=y", "spec.nodeName=", "a=b,c==d"];

fn mutate_text(rng: &mut Rng, s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    for _ in 0..=rng.below(3) {
        mutate_bytes(rng, &mut b);
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|c| if c.is_ascii_alphanumeric() { (c as char).to_string() } else { format!("%{c:02X}") })
        .collect()
}

/// Lists with mutated label and field selectors: 200 or a 4xx Status.
pub async fn selector_pass(a: &Api, seed_value: u64, cases: usize) {
    let mut rng = Rng::new(seed_value);
    for i in 0..cases {
        let (param, valid) = if rng.chance(50) {
            ("labelSelector", *rng.pick(LABEL_SELECTORS))
        } else {
            ("fieldSelector", *rng.pick(FIELD_SELECTORS))
        };
        let s = mutate_text(&mut rng, valid);
        let uri = format!("/api/v1/namespaces/default/pods?{param}={}", url_encode(&s));
        let (code, body) = a.raw(Method::GET, &uri, "application/json", Vec::new()).await;
        assert!(
            code == 200 || ((400..500).contains(&code) && body["kind"] == "Status"),
            "case {i}: {uri}: {code} {body}"
        );
    }
}

/// The api-types decoders called directly: no input may panic.
pub fn direct_pass(seed_value: u64, cases: usize) {
    let mut rng = Rng::new(seed_value);
    let seeds = seeds();
    for _ in 0..cases {
        let s = rng.pick(&seeds);
        let mut doc = s.body.clone();
        mutate_value(&mut rng, &mut doc);
        let mut patch = s.body.clone();
        mutate_value(&mut rng, &mut patch);
        let mut bytes = patch.to_string().into_bytes();
        if rng.chance(50) {
            mutate_bytes(&mut rng, &mut bytes);
        }
        let (group, version) = match s.body["apiVersion"].as_str().unwrap_or("v1").split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), "v1".to_string()),
        };
        let pt = *rng.pick(&[
            api_types::patch::PatchType::Json,
            api_types::patch::PatchType::Merge,
            api_types::patch::PatchType::StrategicMerge,
        ]);
        if let Some(schema) = api_types::patchmeta::patch_schema(&group, &version, s.kind) {
            let _ = api_types::patch::apply(pt, &doc, &bytes, &schema);
        }
        let _ = api_types::typecheck::check_kind(
            &group,
            &version,
            s.kind,
            &mut doc,
            api_types::typecheck::Dialect::Json,
        );
        let _ = api_types::protobuf::decode_to_json(&protobuf_body(&mut rng, s.kind), &group, &version, s.kind);
        let valid = *rng.pick(LABEL_SELECTORS);
        let _ = api_types::LabelSelector::parse(&mutate_text(&mut rng, valid));
        let valid = *rng.pick(FIELD_SELECTORS);
        let _ = api_types::FieldSelector::parse(&mutate_text(&mut rng, valid));
        let _ = api_types::fieldcheck::strict_findings(&group, &version, s.kind, &bytes);
    }
}
