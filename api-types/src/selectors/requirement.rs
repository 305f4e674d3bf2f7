//! Label selector requirements.

use super::*;

// ---------------------------------------------------------------------------------------------------
// Label selector requirements
// ---------------------------------------------------------------------------------------------------

/// A label selector operator (upstream `selection.Operator`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl Operator {
    /// Upstream's name of the operator (`selection.Operator` string).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One `key op values` term of a label selector. Built only through validation (`Requirement::new`,
/// parsing, conversion) or from a label set, so its invariants hold: In/NotIn have values,
/// (Not)Equals/Gt/Lt have exactly one, Exists/DoesNotExist none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub(crate) key: String,
    pub(crate) operator: Operator,
    pub(crate) values: Vec<String>,
}

/// Upstream `NewRequirement`'s checks, in its order (key, operator arity, Gt/Lt integers, values).
pub(crate) fn requirement_errors(key: &str, op: Operator, values: &[String]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let key_errs = label_key_errors(key);
    if !key_errs.is_empty() {
        errs.push(FieldError {
            field: "key".into(),
            bad_value: BadValue::Str(key.into()),
            detail: key_errs.join("; "),
        });
    }
    let arity = |detail: &str| FieldError {
        field: "values".into(),
        bad_value: BadValue::List(values.to_vec()),
        detail: detail.into(),
    };
    match op {
        Operator::In | Operator::NotIn => {
            if values.is_empty() {
                errs.push(arity("for 'in', 'notin' operators, values set can't be empty"));
            }
        }
        Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
            if values.len() != 1 {
                errs.push(arity("exact-match compatibility requires one single value"));
            }
        }
        Operator::Exists | Operator::DoesNotExist => {
            if !values.is_empty() {
                errs.push(arity("values set must be empty for exists and does not exist"));
            }
        }
        Operator::GreaterThan | Operator::LessThan => {
            if values.len() != 1 {
                errs.push(arity("for 'Gt', 'Lt' operators, exactly one value is required"));
            }
            for (i, v) in values.iter().enumerate() {
                if v.parse::<i64>().is_err() {
                    errs.push(FieldError {
                        field: format!("values[{i}]"),
                        bad_value: BadValue::Str(v.clone()),
                        detail: "for 'Gt', 'Lt' operators, the value must be an integer".into(),
                    });
                }
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let value_errs = label_value_errors(v);
        if !value_errs.is_empty() {
            errs.push(FieldError {
                field: format!("values[{i}][{key}]"),
                bad_value: BadValue::Str(v.clone()),
                detail: value_errs.join("; "),
            });
        }
    }
    errs
}

impl Requirement {
    /// Upstream `NewRequirement`: validates the key, the number of values for the operator, Gt/Lt
    /// integers, and each value.
    pub fn new(key: impl Into<String>, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        let key = key.into();
        let errs = requirement_errors(&key, operator, &values);
        if errs.is_empty() {
            Ok(Requirement { key, operator, values })
        } else {
            Err(SelectorError::InvalidRequirement(FieldErrors(errs)))
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values in the order given (parsing yields them sorted and deduplicated, as upstream).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement. NotIn/!= match when the key is absent; Gt/Lt
    /// need the key present with an integer value.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let has = |v: &String| self.values.contains(v);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => labels.get(&self.key).is_some_and(has),
            Operator::NotIn | Operator::NotEquals => !labels.get(&self.key).is_some_and(has),
            Operator::Exists => labels.contains_key(&self.key),
            Operator::DoesNotExist => !labels.contains_key(&self.key),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(actual)) = labels.get(&self.key).map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [bound] = self.values.as_slice() else {
                    return false;
                };
                let Ok(bound) = bound.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Upstream's `Requirement.String`: `!k`, `k`, `k=v`, `k==v`, `k!=v`, `k>v`, `k<v`,
    /// `k in (a,b)`, `k notin (a,b)`, with set values sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}
