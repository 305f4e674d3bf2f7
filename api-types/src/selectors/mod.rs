//! Label and field selectors, as upstream kube-apiserver parses, validates, prints and evaluates them
//! (k8s.io/apimachinery `pkg/labels`, `pkg/fields`, and `metav1.LabelSelectorAsSelector`).
//!
//! Error texts are upstream's (Kubernetes 1.33, the k8s-openapi feature this workspace pins) because
//! kubectl and client-go users read them verbatim inside 400 BadRequest Statuses, and tests in the
//! wild grep for them. Quirks are kept on purpose: the `<nil>` field path on a bad key in a selector
//! string, the double space in `'MyName',  or`, a rune printed as its code point.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

use crate::resources::ResourceDef;

mod errors;
mod field;
mod label;
mod names;
mod parse;
mod requirement;
#[cfg(test)]
mod tests;

pub use self::errors::*;
pub use self::field::*;
pub use self::label::*;
pub use self::names::*;
pub(crate) use self::parse::*;
pub use self::requirement::*;
