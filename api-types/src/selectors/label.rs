//! Label selectors.

use super::*;

// ---------------------------------------------------------------------------------------------------
// Label selector
// ---------------------------------------------------------------------------------------------------

/// A label selector: the AND of its requirements, kept sorted by key (stable) as upstream does, so
/// `Display` is canonical. `Default` is the empty selector, which matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    // Upstream's `labels.Nothing()`: what a nil `*metav1.LabelSelector` converts to.
    nothing: bool,
}

impl LabelSelector {
    /// The selector that matches every label set (an empty `labelSelector`).
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches nothing (upstream `labels.Nothing()`; prints as "").
    pub fn nothing() -> Self {
        LabelSelector { requirements: Vec::new(), nothing: true }
    }

    /// Parse a `labelSelector` query string (upstream `labels.Parse`).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let requirements = Parser::new(s).parse()?;
        Ok(Self::from_requirements(requirements))
    }

    /// The AND of `requirements`, sorted by key.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements, nothing: false }
    }

    /// `key=value` for every entry, unvalidated, as upstream `SelectorFromSet` (used for the plain
    /// map selectors of Services and ReplicationControllers). An empty set matches everything.
    pub fn from_set(set: &BTreeMap<String, String>) -> Self {
        let requirements = set
            .iter()
            .map(|(k, v)| Requirement { key: k.clone(), operator: Operator::Equals, values: vec![v.clone()] })
            .collect();
        LabelSelector { requirements, nothing: false }
    }

    /// Upstream `metav1.LabelSelectorAsSelector` on a non-nil selector: matchLabels become `=`,
    /// matchExpressions In/NotIn/Exists/DoesNotExist; an empty selector matches everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(k.clone(), Operator::Equals, vec![v.clone()])?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(SelectorError::InvalidOperator(other.to_string())),
            };
            requirements.push(Requirement::new(expr.key.clone(), op, expr.values.clone().unwrap_or_default())?);
        }
        Ok(Self::from_requirements(requirements))
    }

    /// Like `from_k8s`, but an absent selector matches nothing, as upstream converts a nil pointer
    /// (what workload controllers rely on so that a selector-less object adopts no pods).
    pub fn from_k8s_opt(selector: Option<&metav1::LabelSelector>) -> Result<Self, SelectorError> {
        match selector {
            Some(s) => Self::from_k8s(s),
            None => Ok(Self::nothing()),
        }
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the selector does not restrict anything (matches every label set).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for `nothing()`.
    pub fn matches_nothing(&self) -> bool {
        self.nothing
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// The one value `key` must have, when the first requirement on `key` is `=`, `==` or a one-value
    /// `in` (upstream `RequiresExactMatch`; lets a caller narrow a list before matching).
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream's canonical string: requirements joined by `,` in key order; "" for everything and
    /// for nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&metav1::LabelSelector> for LabelSelector {
    type Error = SelectorError;

    fn try_from(selector: &metav1::LabelSelector) -> Result<Self, Self::Error> {
        Self::from_k8s(selector)
    }
}

/// An object's `metadata.labels` (non-string values, which a valid object never has, are skipped).
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}
