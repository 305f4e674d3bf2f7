//! A Table written row by row from objects' JSON as served, for lists: the same bytes
//! `goorder::to_vec(&table(..))` gives (a unit test compares them), without building the Table as
//! a `Value`. Each row's `object` is spliced from the object's own bytes (its whole JSON, or its
//! `metadata` text under a PartialObjectMetadata envelope — both already in Go order), and the
//! cells are computed from a decoded copy that leaves out `metadata.managedFields`, which no
//! printer reads and which is most of a pod's metadata.

use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{IncludeObject, Printer, TableOptions};
use crate::resources::ResourceDef;

/// An object as the printers need it: the stored JSON decoded without `metadata.managedFields`,
/// and the `metadata` text as it appears in `bytes`. None when `bytes` is not a JSON object (or its
/// `metadata` is not one): the caller then decodes it whole.
pub fn decode_for_row(bytes: &[u8]) -> Option<(Value, Option<&RawValue>)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (value, meta) = serde::Deserializer::deserialize_map(&mut de, TopVisitor).ok()?;
    de.end().ok()?;
    Some((value, meta))
}

/// The top level: every member decoded, `metadata` kept as raw text and decoded by `MetaVisitor`.
struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = (Value, Option<&'de RawValue>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        let mut raw_meta = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "metadata" {
                let raw: &'de RawValue = map.next_value()?;
                let mut de = serde_json::Deserializer::from_str(raw.get());
                let meta = serde::Deserializer::deserialize_map(&mut de, MetaVisitor)
                    .map_err(|_| serde::de::Error::custom("metadata is not an object"))?;
                // Go's decoder keeps the last of repeated keys, as `Map::insert` does.
                out.insert(key, meta);
                raw_meta = Some(raw);
            } else {
                let v: Value = map.next_value()?;
                out.insert(key, v);
            }
        }
        Ok((Value::Object(out), raw_meta))
    }
}

/// ObjectMeta without `managedFields`.
struct MetaVisitor;

impl<'de> Visitor<'de> for MetaVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object's metadata")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "managedFields" {
                map.next_value::<IgnoredAny>()?;
            } else {
                out.insert(key, map.next_value::<Value>()?);
            }
        }
        Ok(Value::Object(out))
    }
}

/// A list's Table, written row by row.
pub struct TableWriter {
    printer: Printer,
    opts: TableOptions,
    out: Vec<u8>,
    rows: usize,
    /// Whether the kind's objects are written in Go order (`goorder::knows`), so their metadata
    /// text is already ObjectMeta's order; else (sorted) it is reordered as the whole Table would.
    ordered_meta: bool,
}

impl TableWriter {
    /// The Table's envelope with `list_meta` as its metadata, ready for rows. None for custom
    /// resources (their Table comes from the CRD's columns: `table`).
    pub fn new(
        res: &ResourceDef,
        opts: &TableOptions,
        list_meta: Value,
        capacity: usize,
    ) -> Option<TableWriter> {
        if crate::crd::custom(res).is_some() {
            return None;
        }
        let mut head = super::table(res, &[], opts);
        head["metadata"] = list_meta;
        let mut out = Vec::with_capacity(capacity + 4096);
        let _ = serde_json::to_writer(&mut out, &crate::goorder::ordered(&head));
        // The envelope ends with its empty rows array: `"rows":[]}`; rows go before its `]`.
        if !out.ends_with(b"[]}") {
            return None;
        }
        out.truncate(out.len() - 2);
        let ordered_meta = crate::goorder::knows(&res.api_version(), res.kind);
        Some(TableWriter { printer: super::Printer::of(res), opts: opts.clone(), out, rows: 0, ordered_meta })
    }

    /// One row for an object given as its JSON as served (Go order, resourceVersion set).
    pub fn push_json(&mut self, object: &[u8]) {
        match decode_for_row(object) {
            Some((v, meta)) => self.push_parts(&v, object, meta.map(RawValue::get)),
            None => {
                // Not an object with an object metadata: decode it whole (printers read missing
                // fields as Go's zero values).
                let v: Value = serde_json::from_slice(object).unwrap_or(Value::Null);
                self.push_value(&v);
            }
        }
    }

    /// One row for a decoded object.
    pub fn push_value(&mut self, obj: &Value) {
        self.begin_row(obj);
        match self.opts.include_object {
            IncludeObject::None => self.out.extend_from_slice(b"null"),
            IncludeObject::Object => self.out.extend_from_slice(&crate::goorder::to_vec(obj)),
            IncludeObject::Metadata => match obj.get("metadata").filter(|m| m.is_object()) {
                Some(m) => {
                    let pom = serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m});
                    self.out.extend_from_slice(&crate::goorder::to_vec(&pom));
                }
                None => self.write_metadata_envelope("{}"),
            },
        }
        self.out.push(b'}');
    }

    /// One row from its parts: `obj` as the printers read it (managedFields may be left out), the
    /// object's JSON as served (read only with includeObject=Object) and its metadata text (read
    /// only with includeObject=Metadata; None prints `{}`, as for an object without metadata).
    pub fn push_parts(&mut self, obj: &Value, object: &[u8], meta: Option<&str>) {
        self.begin_row(obj);
        match self.opts.include_object {
            IncludeObject::None => self.out.extend_from_slice(b"null"),
            IncludeObject::Object => self.out.extend_from_slice(object),
            IncludeObject::Metadata => self.write_metadata_envelope(meta.unwrap_or("{}")),
        }
        self.out.push(b'}');
    }

    fn write_metadata_envelope(&mut self, meta: &str) {
        if !self.ordered_meta && meta != "{}" {
            // Not in ObjectMeta's order as written: through the ordered encoder.
            if let Ok(m) = serde_json::from_str::<Value>(meta) {
                let pom = serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": m});
                self.out.extend_from_slice(&crate::goorder::to_vec(&pom));
                return;
            }
        }
        self.out
            .extend_from_slice(br#"{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#);
        self.out.extend_from_slice(meta.as_bytes());
        self.out.push(b'}');
    }

    /// `{"cells":[..],"conditions":[..],"object":` — the row up to its object.
    fn begin_row(&mut self, obj: &Value) {
        if self.rows > 0 {
            self.out.push(b',');
        }
        self.rows += 1;
        let row = self.printer.row(obj, self.opts.now);
        self.out.extend_from_slice(br#"{"cells":"#);
        let _ = serde_json::to_writer(&mut self.out, &row.cells);
        if !row.conditions.is_empty() {
            self.out.extend_from_slice(br#","conditions":"#);
            write_conditions(&mut self.out, &row.conditions);
        }
        self.out.extend_from_slice(br#","object":"#);
    }

    /// What each row's `object` carries.
    pub fn include_object(&self) -> IncludeObject {
        self.opts.include_object
    }

    /// The Table's JSON.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"]}");
        self.out
    }
}

/// TableRowConditions in Go order: type, status, reason, message, then any other keys sorted (as
/// `goorder` writes keys its shapes do not know).
fn write_conditions(out: &mut Vec<u8>, items: &[Value]) {
    const ORDER: [&str; 4] = ["type", "status", "reason", "message"];
    out.push(b'[');
    for (i, c) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Value::Object(m) = c else {
            let _ = serde_json::to_writer(&mut *out, c);
            continue;
        };
        out.push(b'{');
        let known = ORDER.iter().filter_map(|k| m.get_key_value(*k));
        let rest = m.iter().filter(|(k, _)| !ORDER.contains(&k.as_str()));
        for (j, (k, v)) in known.chain(rest).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, v);
        }
        out.push(b'}');
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default", "uid": format!("u-{name}"), "resourceVersion": "42",
               "creationTimestamp": "2024-05-01T11:00:00Z", "labels": {"app": "web", "pod-template-hash": "5d4"},
               "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4", "uid": "rs", "controller": true}],
               "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
                                  "time": "2024-05-01T11:00:01Z", "fieldsType": "FieldsV1",
                                  "fieldsV1": {"f:status": {"f:phase": {}}}, "subresource": "status"}]})
    }

    /// Pods in every phase and the states that change STATUS, READY and RESTARTS.
    fn pods() -> Vec<Value> {
        let pod = |name: &str, status: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta(name),
                   "spec": {"containers": [{"name": "c0", "image": "nginx", "ports": [{"containerPort": 80}]}],
                            "nodeName": "worker1", "readinessGates": [{"conditionType": "x/ready"}]},
                   "status": status})
        };
        let running = json!({"name": "c0", "ready": true, "restartCount": 2,
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:30:00Z"}},
            "state": {"running": {"startedAt": "2024-05-01T11:31:00Z"}}});
        let mut terminating =
            pod("terminating", json!({"phase": "Running", "containerStatuses": [running.clone()]}));
        terminating["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        let mut init = pod(
            "init",
            json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i0", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        init["spec"]["initContainers"] = json!([{"name": "i0", "image": "busybox"}]);
        let mut no_meta = pod("x", json!({"phase": "Running"}));
        no_meta["metadata"] = json!("not an object");
        vec![
            pod(
                "pending",
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}),
            ),
            pod(
                "creating",
                json!({"phase": "Pending", "containerStatuses": [
                {"name": "c0", "ready": false, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            ),
            pod(
                "running",
                json!({"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
                "nominatedNodeName": "worker2",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "x/ready", "status": "True"}],
                "containerStatuses": [running.clone()]}),
            ),
            pod(
                "succeeded",
                json!({"phase": "Succeeded", "containerStatuses": [
                {"name": "c0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
            ),
            pod("failed", json!({"phase": "Failed", "reason": "Evicted", "message": "low on memory"})),
            pod("unknown", json!({"phase": "Unknown", "reason": "NodeLost"})),
            terminating,
            init,
            no_meta,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"}}),
        ]
    }

    fn streamed(
        res: &ResourceDef,
        objs: &[Value],
        opts: &TableOptions,
        list_meta: &Value,
        as_json: bool,
    ) -> Vec<u8> {
        let mut w = TableWriter::new(res, opts, list_meta.clone(), 0).unwrap();
        for o in objs {
            if as_json {
                w.push_json(&crate::goorder::to_vec(o));
            } else {
                w.push_value(o);
            }
        }
        w.finish()
    }

    fn whole(res: &ResourceDef, objs: &[Value], opts: &TableOptions, list_meta: &Value) -> Vec<u8> {
        let mut t = super::super::table(res, objs, opts);
        t["metadata"] = list_meta.clone();
        crate::goorder::to_vec(&t)
    }

    #[test]
    fn streamed_tables_are_the_bytes_of_the_whole_table() {
        let now: k8s_openapi::jiff::Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        let list_meta = json!({"resourceVersion": "42", "continue": "abc", "remainingItemCount": 7});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cfg"), "data": {"a": "1"}});
        let cases =
            [(lookup("", "v1", "pods").unwrap(), pods()), (lookup("", "v1", "configmaps").unwrap(), vec![cm])];
        for (res, objs) in &cases {
            for include in [IncludeObject::Metadata, IncludeObject::Object, IncludeObject::None] {
                for no_headers in [false, true] {
                    let opts = TableOptions { now, include_object: include, no_headers };
                    let want = String::from_utf8(whole(res, objs, &opts, &list_meta)).unwrap();
                    if res.plural == "pods" {
                        assert!(want.contains(
                            r#""conditions":[{"type":"Completed","status":"True","reason":"Succeeded""#
                        ));
                    }
                    for as_json in [true, false] {
                        let got = String::from_utf8(streamed(res, objs, &opts, &list_meta, as_json)).unwrap();
                        assert_eq!(
                            got, want,
                            "{} {include:?} no_headers={no_headers} json={as_json}",
                            res.plural
                        );
                    }
                    // An empty list too.
                    let want = whole(res, &[], &opts, &list_meta);
                    assert_eq!(streamed(res, &[], &opts, &list_meta, true), want);
                }
            }
        }
    }

    #[test]
    fn every_resource_streams_the_bytes_of_its_whole_table() {
        let now: k8s_openapi::jiff::Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
        let list_meta = json!({"resourceVersion": "7"});
        for r in crate::resources::RESOURCES {
            let objs = [
                json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": meta("x"),
                       "spec": {"replicas": 2, "ports": [{"port": 80}], "selector": {"app": "web"}},
                       "status": {"replicas": 1, "conditions": [{"type": "Ready", "status": "True"}]}}),
                json!(null),
                json!("text"),
                json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": "x", "spec": [], "status": 7}),
                json!({"apiVersion": r.api_version(), "kind": r.kind,
                       "metadata": {"name": 5, "creationTimestamp": "not a time", "labels": [], "managedFields": 3},
                       "spec": {"containers": [{"name": 1}], "type": 3}, "status": {"conditions": [null]}}),
            ];
            // The server's objects always carry their kind, so their bytes are in Go order (a
            // kind-less object's metadata would be sorted, and stay so in its row).
            for include in [IncludeObject::Metadata, IncludeObject::Object, IncludeObject::None] {
                let opts = TableOptions { now, include_object: include, no_headers: false };
                let want = String::from_utf8(whole(r, &objs, &opts, &list_meta)).unwrap();
                let got = String::from_utf8(streamed(r, &objs, &opts, &list_meta, true)).unwrap();
                assert_eq!(got, want, "{} {include:?}", r.plural);
            }
        }
    }

    #[test]
    fn rows_are_computed_without_managed_fields() {
        let p = &pods()[2];
        let bytes = crate::goorder::to_vec(p);
        let (v, meta) = decode_for_row(&bytes).unwrap();
        assert!(v["metadata"].get("managedFields").is_none());
        assert_eq!(v["metadata"]["name"], "running");
        assert_eq!(v["status"], p["status"]);
        // The metadata text is the object's own, managedFields included.
        let meta: Value = serde_json::from_str(meta.unwrap().get()).unwrap();
        assert_eq!(meta, p["metadata"]);
        assert!(decode_for_row(b"[1]").is_none());
        assert!(decode_for_row(br#"{"metadata":1}"#).is_none());
        assert!(decode_for_row(br#"{"metadata":{}} x"#).is_none());
    }
}
