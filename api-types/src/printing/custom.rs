//! Custom resources' tables: `Name`, then the version's `additionalPrinterColumns` (or `Age` when
//! it has none), as upstream's CRD table convertor builds them.

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::descriptions::{OBJECT_META_CREATION_TIMESTAMP, OBJECT_META_NAME};
use super::duration::since;
use super::json::name;
use super::{row_object, TableOptions};
use crate::crd::{CustomResource, PrinterColumn};

fn columns(cr: &CustomResource) -> Vec<PrinterColumn> {
    if cr.spec.columns.is_empty() {
        return vec![PrinterColumn {
            name: "Age".into(),
            ty: "date".into(),
            format: String::new(),
            description: OBJECT_META_CREATION_TIMESTAMP.into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }];
    }
    cr.spec.columns.clone()
}

/// One cell as upstream's `cellForJSONValue` (string columns printed as JSONPath prints them).
fn cell(col: &PrinterColumn, v: Option<&Value>, now: Timestamp) -> Value {
    let Some(v) = v else { return Value::Null };
    match col.ty.as_str() {
        "integer" => v.as_i64().map(Value::from).unwrap_or(Value::Null),
        "number" => v.as_f64().map(Value::from).or_else(|| v.as_i64().map(Value::from)).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => match v.as_str() {
            Some(s) => match s.parse::<Timestamp>() {
                Ok(ts) => Value::from(since(Some(ts), now)),
                Err(_) => Value::from("<invalid>"),
            },
            None => Value::Null,
        },
        _ => match v {
            Value::String(s) => Value::from(s.clone()),
            Value::Null => Value::Null,
            other => Value::from(other.to_string()),
        },
    }
}

pub(crate) fn table(cr: &CustomResource, objects: &[Value], opts: &TableOptions) -> Value {
    let cols = columns(cr);
    let column_definitions = if opts.no_headers {
        Value::Null
    } else {
        let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
                                   "description": OBJECT_META_NAME, "priority": 0})];
        for c in &cols {
            defs.push(json!({"name": c.name, "type": c.ty, "format": c.format,
                             "description": c.description, "priority": c.priority}));
        }
        Value::Array(defs)
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![Value::from(name(obj))];
            for c in &cols {
                cells.push(cell(c, crate::crd::printing::first(&c.json_path, obj), opts.now));
            }
            json!({"cells": cells, "object": row_object(obj, opts.include_object)})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}
