//! Resource quantities for the scheduler and the kubelet: `api_types::quantity` (exact, rounded up
//! as upstream's `MilliValue`/`Value`), and its forms over k8s-openapi's `Quantity`.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

pub use api_types::quantity::{milli, value};

/// `milli` of a k8s-openapi quantity, 0 when unparsable.
pub fn milli_of(q: &Quantity) -> i64 {
    milli(&q.0).unwrap_or(0)
}

/// `value` of a k8s-openapi quantity, 0 when unparsable.
pub fn value_of(q: &Quantity) -> i64 {
    value(&q.0).unwrap_or(0)
}
