//! Conversion between `core/v1` Events and `events.k8s.io/v1` Events. Both APIs serve the same
//! stored objects (upstream stores one internal form); kplane stores the core/v1 form, so every
//! events.k8s.io read and write converts.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core/v1 field) for the fields that are renamed.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: &Value, from_v1: bool, api_version: &str) -> Value {
    let Some(map) = obj.as_object() else { return obj.clone() };
    let mut out = Map::new();
    for (k, v) in map {
        let renamed = RENAMED
            .iter()
            .find(|(v1, core)| if from_v1 { v1 == k } else { core == k })
            .map(|(v1, core)| if from_v1 { *core } else { *v1 });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// An events.k8s.io/v1 Event as the core/v1 Event that is stored.
pub fn to_core(v1: &Value) -> Value {
    rename(v1, true, "v1")
}

/// A stored core/v1 Event as served by events.k8s.io/v1.
pub fn from_core(core: &Value) -> Value {
    rename(core, false, "events.k8s.io/v1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_and_renames() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "reason": "Started",
            "source": {"component": "kubelet"}, "count": 3, "type": "Normal"});
        let v1 = from_core(&core);
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["regarding"]["name"], "p");
        assert_eq!(v1["note"], "hi");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["deprecatedSource"]["component"], "kubelet");
        assert_eq!(to_core(&v1), core);
    }
}
