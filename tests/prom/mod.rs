//! Scrapes of `/metrics` parsed by the Python `prometheus_client` OpenMetrics parser (a real,
//! strict parser), and the few questions the tests ask of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out[fam.name] = [fam.type, [[s.name, s.labels, s.value] for s in fam.samples]]
print(json.dumps(out))
"#;

/// One sample: its name, labels and value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// A family: its type and samples.
pub type Family = (String, Vec<Sample>);

/// Families by name.
#[derive(Debug)]
pub struct Scrape(pub BTreeMap<String, Family>);

/// Parses an OpenMetrics document, failing the test if the parser refuses it.
pub fn parse(text: &str) -> Scrape {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the document: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    Scrape(serde_json::from_slice(&out.stdout).unwrap())
}

impl Scrape {
    pub fn typ(&self, family: &str) -> &str {
        &self.0.get(family).unwrap_or_else(|| panic!("no family {family} in {:?}", self.0.keys())).0
    }

    /// The value of the sample `sample` whose only label is `le` (if given).
    pub fn value(&self, family: &str, sample: &str, le: Option<&str>) -> f64 {
        self.typ(family);
        self.0[family]
            .1
            .iter()
            .find(|(n, l, _)| n == sample && l.get("le").map(String::as_str) == le)
            .unwrap_or_else(|| panic!("no sample {sample} (le {le:?}) in {family}"))
            .2
    }

    /// Sum of the samples named `sample` whose labels include `want` (0 while the family has no
    /// sample: the parser drops a family with none).
    pub fn sum(&self, family: &str, sample: &str, want: &[(&str, &str)]) -> f64 {
        let Some((_, samples)) = self.0.get(family) else { return 0.0 };
        samples
            .iter()
            .filter(|(n, l, _)| {
                n == sample && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// An unlabelled gauge.
    pub fn gauge(&self, name: &str) -> f64 {
        assert_eq!(self.typ(name), "gauge", "{name}");
        self.value(name, name, None)
    }

    /// An unlabelled counter (family name without `_total`).
    pub fn counter(&self, family: &str) -> f64 {
        assert_eq!(self.typ(family), "counter", "{family}");
        self.value(family, &format!("{family}_total"), None)
    }

    /// An unlabelled histogram's count.
    pub fn histogram_count(&self, family: &str) -> f64 {
        assert_eq!(self.typ(family), "histogram", "{family}");
        self.value(family, &format!("{family}_count"), None)
    }

    /// The `le` bounds (normalised: `0.001`, `+Inf`) of the histogram's first series matching `want`.
    pub fn buckets(&self, family: &str, want: &[(&str, &str)]) -> Vec<String> {
        assert_eq!(self.typ(family), "histogram", "{family}");
        let samples = &self.0[family].1;
        let first = samples
            .iter()
            .find(|(n, l, _)| {
                n.ends_with("_bucket") && want.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {family} series with {want:?}"));
        let mut series = first.1.clone();
        series.remove("le");
        samples
            .iter()
            .filter(|(n, l, _)| {
                let mut l = l.clone();
                l.remove("le");
                n.ends_with("_bucket") && l == series
            })
            .map(|(_, l, _)| {
                let le = &l["le"];
                if le == "+Inf" {
                    le.clone()
                } else {
                    format!("{}", le.parse::<f64>().unwrap())
                }
            })
            .collect()
    }
}
