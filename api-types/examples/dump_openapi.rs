//! Writes the OpenAPI v3 index and documents, plus legacy discovery lists, under a directory, so
//! they can be served by any static server and checked with a real kubectl (`kubectl explain`,
//! and that `kubectl create` sends `fieldValidation=Strict`).
//!
//! `cargo run -p api-types --example dump_openapi /tmp/oa`

use api_types::openapi::{gv_path, v3_document_bytes, v3_index};
use serde_json::{json, Value};

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/openapi".into());
    std::fs::create_dir_all(format!("{dir}/openapi/v3"))?;
    std::fs::write(format!("{dir}/openapi/v3/index.json"), v3_index("").to_string())?;
    for (g, v) in api_types::resources::group_versions() {
        let path = format!("{dir}/openapi/v3/{}", gv_path(g, v));
        std::fs::create_dir_all(&path)?;
        std::fs::write(format!("{path}/doc.json"), v3_document_bytes(g, v).unwrap_or_default())?;
        let resources: Vec<Value> = api_types::RESOURCES
            .iter()
            .filter(|r| r.group == g && r.version == v)
            .map(|r| {
                json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                       "kind": r.kind, "verbs": r.verbs(), "shortNames": r.short_names})
            })
            .collect();
        let gv = if g.is_empty() { v.to_string() } else { format!("{g}/{v}") };
        let list =
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources});
        let disc = format!("{dir}/disc/{}", gv_path(g, v));
        std::fs::create_dir_all(&disc)?;
        std::fs::write(format!("{disc}/list.json"), list.to_string())?;
    }
    Ok(())
}
