//! Tests of label and field selectors.
use super::*;
use serde_json::json;

const NAME_PART_ERR: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must \
    start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used \
    for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', \
    '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
    '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn parse(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn parse_err(s: &str) -> String {
    match LabelSelector::parse(s) {
        Ok(sel) => panic!("{s:?} parsed as {sel}"),
        Err(e) => e.to_string(),
    }
}

fn one(s: &str) -> (String, Operator, Vec<String>) {
    let sel = parse(s);
    assert_eq!(sel.requirements().len(), 1, "{s}");
    let r = &sel.requirements()[0];
    (r.key().to_string(), r.operator(), r.values().to_vec())
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parses_each_operator() {
    assert_eq!(one("a=b"), ("a".into(), Operator::Equals, strs(&["b"])));
    assert_eq!(one("a==b"), ("a".into(), Operator::DoubleEquals, strs(&["b"])));
    assert_eq!(one("a!=b"), ("a".into(), Operator::NotEquals, strs(&["b"])));
    assert_eq!(one("a in (c,b)"), ("a".into(), Operator::In, strs(&["b", "c"])));
    assert_eq!(one("a notin (b)"), ("a".into(), Operator::NotIn, strs(&["b"])));
    assert_eq!(one("a"), ("a".into(), Operator::Exists, vec![]));
    assert_eq!(one("!a"), ("a".into(), Operator::DoesNotExist, vec![]));
    assert_eq!(one("a>5"), ("a".into(), Operator::GreaterThan, strs(&["5"])));
    assert_eq!(one("a<5"), ("a".into(), Operator::LessThan, strs(&["5"])));
    assert_eq!(one("example.com/app=x"), ("example.com/app".into(), Operator::Equals, strs(&["x"])));
    // An empty value is allowed after any exact-match operator.
    assert_eq!(one("a="), ("a".into(), Operator::Equals, strs(&[""])));
    assert_eq!(one("a!="), ("a".into(), Operator::NotEquals, strs(&[""])));
}

#[test]
fn set_values_are_sorted_deduplicated_and_allow_empty_slots() {
    assert_eq!(one("x in (foo,,baz)").2, strs(&["", "baz", "foo"]));
    assert_eq!(one("x in (b,a,b)").2, strs(&["a", "b"]));
    assert_eq!(one("x notin ()").2, strs(&[""]));
    assert_eq!(one("x in (,a)").2, strs(&["", "a"]));
    assert_eq!(one("x in (a,)").2, strs(&["", "a"]));
    // `in`/`notin` are plain words among values, and as keys.
    assert_eq!(one("x in (in,notin)").2, strs(&["in", "notin"]));
    assert_eq!(one("x=notin").2, strs(&["notin"]));
    assert_eq!(one("in=a").0, "in");
}

#[test]
fn commas_inside_parentheses_do_not_split_requirements_and_whitespace_is_free() {
    let sel = parse("  tier  in  ( b , a ) ,\tapp = web ,\n!gone , x notin(y,z)");
    let got: Vec<(String, Operator)> =
        sel.requirements().iter().map(|r| (r.key().to_string(), r.operator())).collect();
    assert_eq!(
        got,
        vec![
            ("app".into(), Operator::Equals),
            ("gone".into(), Operator::DoesNotExist),
            ("tier".into(), Operator::In),
            ("x".into(), Operator::NotIn),
        ]
    );
    assert_eq!(sel.requirements()[2].values(), strs(&["a", "b"]).as_slice());
    // `!=` is one operator, not `!` then `=`; `>=` is `>` then a junk `=`.
    assert_eq!(one("a!=b").1, Operator::NotEquals);
    assert_eq!(parse_err("a>=1"), "unable to parse requirement: found '=', expected: identifier");
    assert!(parse("").is_empty());
    assert!(parse("   ").is_empty());
}

#[test]
fn syntax_errors_are_upstreams() {
    let cases = [
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b,", "unable to parse requirement: found '', expected: ',', or identifier"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a in (b))", "found ')', expected: ',' or 'end of string'"),
        ("a in b)", "unable to parse requirement: found 'b' expected: '('"),
        ("a in", "unable to parse requirement: found '' expected: '('"),
        ("a notin (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a=(", "unable to parse requirement: found '(', expected: identifier"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("a,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("=a", "found '=', expected: !, identifier, or 'end of string'"),
        ("(a)", "found '(', expected: !, identifier, or 'end of string'"),
    ];
    for (input, want) in cases {
        assert_eq!(parse_err(input), want, "{input:?}");
    }
}

#[test]
fn key_and_value_validation_errors_are_upstreams() {
    assert_eq!(
        parse_err("-bad=x"),
        format!("unable to parse requirement: <nil>: Invalid value: \"-bad\": {NAME_PART_ERR}")
    );
    assert_eq!(
        parse_err("app=-bad"),
        format!("unable to parse requirement: values[0][app]: Invalid value: \"-bad\": {VALUE_ERR}")
    );
    // Several bad values aggregate, in sorted value order.
    assert_eq!(
        parse_err("app in (-y,-x)"),
        format!(
            "unable to parse requirement: [values[0][app]: Invalid value: \"-x\": {VALUE_ERR}, \
             values[1][app]: Invalid value: \"-y\": {VALUE_ERR}]"
        )
    );
    assert_eq!(
        parse_err("/a"),
        format!("unable to parse requirement: <nil>: Invalid value: \"/a\": prefix part must be non-empty")
    );
    assert_eq!(
        parse_err("a/"),
        format!(
            "unable to parse requirement: <nil>: Invalid value: \"a/\": name part must be non-empty; \
             {NAME_PART_ERR}"
        )
    );
    assert!(parse_err("Example.com/a").contains(
        "\"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case \
         alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
         (e.g. 'example.com', regex used for validation is \
         '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ));
    assert!(parse_err("a/b/c").contains(
        "\"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must \
         start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex \
         used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS \
         subdomain prefix and '/' (e.g. 'example.com/MyName')"
    ));
    let long = "k".repeat(64);
    assert_eq!(
        parse_err(&long),
        format!("unable to parse requirement: <nil>: Invalid value: \"{long}\": name part must be no more than 63 characters")
    );
    assert!(parse(&"k".repeat(63)).matches(&labels(&[(&"k".repeat(63), "")])));
    assert_eq!(
        parse_err(&format!("a={long}")),
        format!("unable to parse requirement: values[0][a]: Invalid value: \"{long}\": must be no more than 63 characters")
    );
    // Non-ASCII is neither a special character nor valid: it fails validation, quoted as Go does.
    assert!(parse_err("a=é").contains("values[0][a]: Invalid value: \"é\": a valid label"));
    assert!(parse_err("a=x\"y").contains("Invalid value: \"x\\\"y\""));
}

#[test]
fn gt_lt_need_an_integer() {
    assert_eq!(
        parse_err("a>b"),
        "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value \
         must be an integer"
    );
    assert_eq!(
        parse_err("a<"),
        "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value \
         must be an integer"
    );
    assert!(parse_err("a>1.5").contains("the value must be an integer"));
    // A negative bound is an integer but not a valid label value, as upstream.
    assert_eq!(
        parse_err("a<-1"),
        format!("unable to parse requirement: values[0][a]: Invalid value: \"-1\": {VALUE_ERR}")
    );
    assert!(parse_err("a>99999999999999999999").contains("the value must be an integer"));
}

#[test]
fn matching() {
    let l = labels(&[("app", "web"), ("tier", "front"), ("n", "7"), ("word", "seven")]);
    let cases = [
        ("", true),
        ("app=web", true),
        ("app==web", true),
        ("app=db", false),
        ("app!=db", true),
        ("app!=web", false),
        ("missing!=x", true),
        ("missing=", false),
        ("app in (db,web)", true),
        ("app in (db)", false),
        ("missing in (x)", false),
        ("app notin (db)", true),
        ("app notin (web)", false),
        ("missing notin (x)", true),
        ("app", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("n>6", true),
        ("n>7", false),
        ("n<8", true),
        ("n<7", false),
        ("missing>1", false),
        ("word>1", false),
        ("word<1", false),
        ("app=web,tier=front", true),
        ("app=web,tier=back", false),
        ("app in (web),!missing,n>0,tier notin (back)", true),
    ];
    for (sel, want) in cases {
        assert_eq!(parse(sel).matches(&l), want, "{sel:?}");
    }
    assert!(!LabelSelector::nothing().matches(&l));
    assert!(!LabelSelector::nothing().matches(&BTreeMap::new()));
    assert!(LabelSelector::everything().matches(&BTreeMap::new()));
    assert!(parse("a in ()").matches(&labels(&[("a", "")])));
    assert!(!parse("a in ()").matches(&labels(&[("a", "x")])));
}

#[test]
fn nul_byte_behaves_as_upstreams_lexer() {
    // A NUL at a token start ends the selector; inside a token it ends just that token.
    assert_eq!(parse("a=b \0 garbage").to_string(), "a=b");
    assert_eq!(parse_err("a=b\0c"), "found 'c', expected: ',' or 'end of string'");
}

#[test]
fn canonical_display() {
    let cases = [
        ("tier in (b,a),app=nginx", "app=nginx,tier in (a,b)"),
        ("  b==1 , a!=2", "a!=2,b==1"),
        ("!z,y,x notin (q,p)", "x notin (p,q),y,!z"),
        ("n>5,m<3", "m<3,n>5"),
        ("a in (,b)", "a in (,b)"),
        ("a=", "a="),
        ("", ""),
    ];
    for (input, want) in cases {
        let sel = parse(input);
        assert_eq!(sel.to_string(), want, "{input:?}");
        // The canonical form parses back to the same selector.
        assert_eq!(parse(want), sel, "{want:?}");
    }
    // Same key twice: stable order keeps input order within the key.
    assert_eq!(parse("a!=2,b=1,a!=1").to_string(), "a!=2,a!=1,b=1");
    assert_eq!(LabelSelector::nothing().to_string(), "");
}

fn k8s(labels: &[(&str, &str)], exprs: &[(&str, &str, Option<&[&str]>)]) -> metav1::LabelSelector {
    metav1::LabelSelector {
        match_labels: if labels.is_empty() {
            None
        } else {
            Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        },
        match_expressions: if exprs.is_empty() {
            None
        } else {
            Some(
                exprs
                    .iter()
                    .map(|(k, op, vals)| metav1::LabelSelectorRequirement {
                        key: k.to_string(),
                        operator: op.to_string(),
                        values: vals.map(strs),
                    })
                    .collect(),
            )
        },
    }
}

#[test]
fn converts_metav1_label_selector() {
    let sel = LabelSelector::from_k8s(&k8s(
        &[("app", "web")],
        &[
            ("tier", "In", Some(&["front", "back"])),
            ("env", "NotIn", Some(&["prod"])),
            ("canary", "DoesNotExist", None),
            ("team", "Exists", Some(&[])),
        ],
    ))
    .unwrap();
    assert_eq!(sel.to_string(), "app=web,!canary,env notin (prod),team,tier in (back,front)");
    assert!(sel.matches(&labels(&[("app", "web"), ("tier", "front"), ("team", "x")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "front"), ("team", "x"), ("canary", "1")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "front"), ("team", "x"), ("env", "prod")])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "front")])));
    assert_eq!(sel.requires_exact_match("app"), Some("web"));
    assert_eq!(sel.requires_exact_match("tier"), None);
    // The string form of a converted selector parses to an equivalent selector.
    assert_eq!(parse(&sel.to_string()).to_string(), sel.to_string());

    let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap();
    assert!(empty.is_empty());
    assert!(empty.matches(&BTreeMap::new()));
    assert_eq!(empty.to_string(), "");
    assert!(LabelSelector::from_k8s_opt(None).unwrap().matches_nothing());
    let via_try: LabelSelector = (&k8s(&[("a", "b")], &[])).try_into().unwrap();
    assert_eq!(via_try.to_string(), "a=b");
}

#[test]
fn metav1_conversion_errors_are_upstreams() {
    let err = |sel: metav1::LabelSelector| LabelSelector::from_k8s(&sel).unwrap_err().to_string();
    assert_eq!(
        err(k8s(&[], &[("a", "Equals", Some(&["b"]))])),
        "\"Equals\" is not a valid label selector operator"
    );
    assert_eq!(
        err(k8s(&[], &[("a", "In", None)])),
        "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty"
    );
    assert_eq!(
        err(k8s(&[], &[("a", "Exists", Some(&["x", "y"]))])),
        "values: Invalid value: []string{\"x\", \"y\"}: values set must be empty for exists and does not exist"
    );
    assert_eq!(err(k8s(&[("-bad", "x")], &[])), format!("key: Invalid value: \"-bad\": {NAME_PART_ERR}"));
    assert_eq!(err(k8s(&[("a", "-bad")], &[])), format!("values[0][a]: Invalid value: \"-bad\": {VALUE_ERR}"));
    // Key and value errors together aggregate.
    assert_eq!(
        err(k8s(&[], &[("", "NotIn", Some(&["ok", "-v"]))])),
        format!(
            "[key: Invalid value: \"\": name part must be non-empty; {NAME_PART_ERR}, \
             values[1][]: Invalid value: \"-v\": {VALUE_ERR}]"
        )
    );
    match Requirement::new("a", Operator::GreaterThan, strs(&["1", "2"])) {
        Err(SelectorError::InvalidRequirement(FieldErrors(errs))) => {
            assert_eq!(errs.len(), 1);
            assert_eq!(errs[0].detail, "for 'Gt', 'Lt' operators, exactly one value is required");
        }
        other => panic!("{other:?}"),
    }
    assert!(Requirement::new("a", Operator::Equals, vec![]).is_err());
}

#[test]
fn from_set_matches_exactly() {
    let sel = LabelSelector::from_set(&labels(&[("b", "2"), ("a", "1")]));
    assert_eq!(sel.to_string(), "a=1,b=2");
    assert!(sel.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
    assert!(!sel.matches(&labels(&[("a", "1")])));
    assert!(LabelSelector::from_set(&BTreeMap::new()).matches(&BTreeMap::new()));
}

#[test]
fn labels_of_reads_metadata_labels() {
    let obj = json!({"metadata": {"name": "p", "labels": {"app": "web", "weird": 1}}});
    assert_eq!(labels_of(&obj), labels(&[("app", "web")]));
    assert!(labels_of(&json!({"metadata": {"name": "p"}})).is_empty());
    assert!(labels_of(&json!("not an object")).is_empty());
}

fn fparse(s: &str) -> FieldSelector {
    FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn fterms(s: &str) -> Vec<(String, FieldOperator, String)> {
    fparse(s).terms().iter().map(|t| (t.field.clone(), t.operator, t.value.clone())).collect()
}

#[test]
fn parses_field_selectors() {
    use FieldOperator::*;
    assert_eq!(fterms("metadata.name=a"), vec![("metadata.name".into(), Equals, "a".into())]);
    assert_eq!(fterms("metadata.name==a"), vec![("metadata.name".into(), Equals, "a".into())]);
    assert_eq!(fterms("status.phase!=Running"), vec![("status.phase".into(), NotEquals, "Running".into())]);
    assert_eq!(fterms("spec.nodeName="), vec![("spec.nodeName".into(), Equals, "".into())]);
    // Terms are sorted as raw text; empty terms are skipped.
    assert_eq!(
        fterms("b=2,,a!=1,"),
        vec![("a".into(), NotEquals, "1".into()), ("b".into(), Equals, "2".into())]
    );
    assert!(fparse("").is_empty());
    // The key is not trimmed or unescaped, as upstream.
    assert_eq!(fterms(" a =b")[0].0, " a ");
    assert_eq!(fparse("b=2,a==1,c!=x").to_string(), "a=1,b=2,c!=x");
}

#[test]
fn field_value_escapes() {
    assert_eq!(fterms(r"a=x\,y")[0].2, "x,y");
    assert_eq!(fterms(r"a=x\=y")[0].2, "x=y");
    assert_eq!(fterms(r"a=x\\y")[0].2, r"x\y");
    // An escaped comma does not split terms; `\\,` is an escaped backslash then a real comma.
    assert_eq!(fterms(r"a=1\,2,b=3").len(), 2);
    assert_eq!(fterms(r"a=1\\,b=3")[0].2, r"1\");
    let sel = fparse(r"a=x\,y\=z\\w");
    assert_eq!(sel.to_string(), r"a=x\,y\=z\\w");
    assert_eq!(fparse(&sel.to_string()), sel);
    assert_eq!(escape_field_value(r"a,b=c\"), r"a\,b\=c\\");
}

#[test]
fn field_selector_errors_are_upstreams() {
    let err = |s: &str| FieldSelector::parse(s).unwrap_err().to_string();
    assert_eq!(err("abc"), "invalid selector: 'abc'; can't understand 'abc'");
    assert_eq!(err("a=1,bogus"), "invalid selector: 'a=1,bogus'; can't understand 'bogus'");
    assert_eq!(err("a=x=y"), "invalid field selector: unescaped character in value: 61");
    assert_eq!(err("a==="), "invalid field selector: unescaped character in value: 61");
    assert_eq!(err(r"a=x\y"), r"invalid field selector: invalid escape sequence: \y");
    assert_eq!(err(r"a=x\"), r"invalid field selector: invalid escape sequence: \");
}

#[test]
fn validates_field_labels_per_resource() {
    let pods = crate::resources::lookup("", "v1", "pods").unwrap();
    let cms = crate::resources::lookup("", "v1", "configmaps").unwrap();
    let sel = fparse("spec.nodeName=n1,metadata.namespace=default");
    assert_eq!(sel.validate_for(pods), Ok(()));
    assert_eq!(sel.validate_for(cms).unwrap_err().to_string(), "field label not supported: spec.nodeName");
    assert_eq!(fparse("metadata.name=x").validate(&[]), Ok(()));
    assert_eq!(
        fparse("spec.foo=bar").validate(&["spec.nodeName"]),
        Err(SelectorError::FieldLabelNotSupported("spec.foo".into()))
    );
    // The first unsupported term in sorted order is reported.
    assert_eq!(fparse("z=1,y=2").validate(&[]).unwrap_err().to_string(), "field label not supported: y");
}

#[test]
fn field_matching() {
    let scheduled = json!({
        "metadata": {"name": "p1", "namespace": "default"},
        "spec": {"nodeName": "n1", "hostNetwork": true, "restartPolicy": "Always"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}]}
    });
    let pending = json!({"metadata": {"name": "p2", "namespace": "default"}, "spec": {}, "status": {}});
    let cases = [
        ("spec.nodeName=", false, true),
        ("spec.nodeName!=", true, false),
        ("spec.nodeName=n1", true, false),
        ("metadata.name=p1,metadata.namespace=default", true, false),
        ("metadata.namespace=default", true, true),
        ("status.phase!=Running", false, true),
        ("status.podIP=10.0.0.5", true, false),
        ("spec.hostNetwork=true", true, false),
        ("spec.hostNetwork=false", false, true),
        ("spec.restartPolicy==Always", true, false),
        ("", true, true),
    ];
    for (sel, want_scheduled, want_pending) in cases {
        let s = fparse(sel);
        assert_eq!(s.matches(&scheduled), want_scheduled, "{sel:?} scheduled");
        assert_eq!(s.matches(&pending), want_pending, "{sel:?} pending");
    }
    assert_eq!(fparse("spec.nodeName=n1,metadata.name=p1").requires_exact_match("spec.nodeName"), Some("n1"));
    assert_eq!(fparse("spec.nodeName!=n1").requires_exact_match("spec.nodeName"), None);

    // Cluster-scoped objects have no namespace: it reads as "".
    let node = json!({"metadata": {"name": "n1"}, "spec": {}});
    assert!(fparse("spec.unschedulable=false,metadata.namespace=").matches(&node));
    assert!(fparse("spec.unschedulable=true").matches(&json!({"spec": {"unschedulable": true}})));
    assert!(fparse("status.replicas=0").matches(&json!({"status": {}})));
    assert!(fparse("status.replicas=3").matches(&json!({"status": {"replicas": 3}})));
    assert!(fparse("status.successful=0").matches(&json!({"status": {}})));
    assert!(fparse("status.successful=2").matches(&json!({"status": {"succeeded": 2}})));
    assert!(!fparse("status.successful=2").matches(&json!({"status": {"successful": 2}})));
    assert!(fparse("type=kubernetes.io/tls").matches(&json!({"type": "kubernetes.io/tls"})));
}

#[test]
fn event_fields() {
    let core = json!({
        "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
        "reason": "Scheduled", "type": "Normal",
        "source": {"component": "default-scheduler"},
        "reportingComponent": "kplane-scheduler"
    });
    assert!(
        fparse("involvedObject.kind=Pod,involvedObject.name=p1,reason=Scheduled,type=Normal").matches(&core)
    );
    assert!(fparse("source=default-scheduler").matches(&core));
    assert!(fparse("reportingComponent=kplane-scheduler").matches(&core));
    // events.k8s.io/v1 names read a core/v1-shaped object, and the other way round.
    assert!(fparse("regarding.kind=Pod,reportingController=kplane-scheduler").matches(&core));
    let new = json!({"regarding": {"kind": "Node"}, "reportingController": "kubelet"});
    assert!(fparse("involvedObject.kind=Node,regarding.kind=Node").matches(&new));
    // With no source.component, `source` falls back to the reporting controller.
    assert!(fparse("source=kubelet").matches(&new));
    assert!(fparse("source=").matches(&json!({})));
}

#[test]
fn go_quote_matches_strconv_quote() {
    assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
    assert_eq!(go_quote("\t\n\u{1}\u{7f}é"), "\"\\t\\n\\x01\\x7fé\"");
}
