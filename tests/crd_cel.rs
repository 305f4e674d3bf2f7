//! `x-kubernetes-validations` CEL rules of CRDs against `kplane apiserver`, driven by the real
//! kubectl, with what is stored read back with the real etcdctl.

mod common;

use common::{free_port, stderr, stdout, Kplane};

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.cel.example.com
spec:
  group: cel.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas must not exceed maxReplicas"
            - rule: "self.replicas >= oldSelf.replicas"
              message: "replicas may not be decreased"
            - rule: "!has(self.mode) || self.mode != 'Off' || self.replicas == 0"
              messageExpression: "'mode Off needs 0 replicas, not ' + string(self.replicas)"
              fieldPath: .mode
              reason: FieldValueForbidden
            properties:
              replicas: {type: integer}
              maxReplicas: {type: integer}
              mode: {type: string, maxLength: 10}
              name:
                type: string
                maxLength: 63
                x-kubernetes-validations:
                - rule: "self.matches('^[a-z]+$') && self.size() >= 2"
              tags:
                type: array
                maxItems: 300
                items: {type: integer}
                x-kubernetes-validations:
                - rule: "self.all(x, self.all(y, x == y || x != y))"
                  message: "pairwise"
"#;

const KEY: &str = "/registry/cel.example.com/widgets/default/";

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: cel.example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec: {spec}\n")
}

fn start() -> (tempfile::TempDir, Kplane) {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], CRD);
    assert!(out.status.success(), "{}", stderr(&out));
    kp.kubectl_ok(&["wait", "--for=condition=Established", "crd/widgets.cel.example.com", "--timeout=20s"]);
    (dir, kp)
}

fn refused(kp: &Kplane, args: &[&str], input: &str) -> String {
    let out = kp.kubectl_stdin(args, input);
    assert!(!out.status.success(), "accepted: {}", stdout(&out));
    stderr(&out)
}

#[test]
fn rules_pass_fail_and_transition_with_kubectl() {
    let (_dir, kp) = start();
    // Passing.
    let out =
        kp.kubectl_stdin(&["create", "-f", "-"], &widget("ok", "{replicas: 2, maxReplicas: 3, name: ab}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(kp.etcd_get(&kp.endpoint(), &format!("{KEY}ok")).is_some());

    // Failing, each with upstream's words, nothing stored.
    let err = refused(&kp, &["create", "-f", "-"], &widget("big", "{replicas: 5, maxReplicas: 3}"));
    assert!(
        err.contains(r#"The Widget "big" is invalid: spec: Invalid value: "object": replicas must not exceed maxReplicas"#),
        "{err}"
    );
    let err = refused(&kp, &["create", "-f", "-"], &widget("nm", "{replicas: 1, maxReplicas: 3, name: A1}"));
    assert!(
        err.contains(
            r#"spec.name: Invalid value: "string": failed rule: self.matches('^[a-z]+$') && self.size() >= 2"#
        ),
        "{err}"
    );
    let err =
        refused(&kp, &["create", "-f", "-"], &widget("w-off", "{replicas: 1, maxReplicas: 3, mode: \"Off\"}"));
    assert!(err.contains("spec.mode: Forbidden: mode Off needs 0 replicas, not 1"), "{err}");
    // Two failures at once: kubectl lists both.
    let err = refused(&kp, &["create", "-f", "-"], &widget("two", "{replicas: 5, maxReplicas: 3, name: X}"));
    assert!(
        err.contains("replicas must not exceed maxReplicas") && err.contains("failed rule: self.matches"),
        "{err}"
    );
    for n in ["big", "nm", "w-off", "two"] {
        assert!(kp.etcd_get(&kp.endpoint(), &format!("{KEY}{n}")).is_none(), "{n} stored");
    }

    // The transition rule: not run on create (no oldSelf), run on update.
    let out = kp.kubectl(&["patch", "widget", "ok", "--type=merge", "-p", r#"{"spec":{"replicas":1}}"#]);
    assert!(!out.status.success(), "decrease accepted");
    assert!(
        stderr(&out).contains(
            r#"The Widget "ok" is invalid: spec: Invalid value: "object": replicas may not be decreased"#
        ),
        "{}",
        stderr(&out)
    );
    let stored = kp.etcd_get(&kp.endpoint(), &format!("{KEY}ok")).unwrap();
    assert_eq!(stored["spec"]["replicas"], 2);
    kp.kubectl_ok(&["patch", "widget", "ok", "--type=merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    let out =
        kp.kubectl_stdin(&["apply", "-f", "-"], &widget("ok", "{replicas: 3, maxReplicas: 3, name: abc}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(kp.etcd_get(&kp.endpoint(), &format!("{KEY}ok")).unwrap()["spec"]["name"], "abc");
}

#[test]
fn bad_and_hostile_rules_are_refused_and_the_server_goes_on() {
    let (_dir, kp) = start();
    let bad = CRD
        .replace("name: widgets.cel.example.com", "name: gadgets.cel.example.com")
        .replace(
            "plural: widgets, singular: widget, kind: Widget",
            "plural: gadgets, singular: gadget, kind: Gadget",
        )
        .replace(r#"rule: "self.replicas <= self.maxReplicas""#, r#"rule: "self.replicas <=""#);
    let err = refused(&kp, &["create", "-f", "-"], &bad);
    assert!(err.contains(r#"The CustomResourceDefinition "gadgets.cel.example.com" is invalid: spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: "apiextensions.ValidationRule{Rule:\"self.replicas <=\""#), "{err}");
    assert!(err.contains("compilation failed: ERROR: <input>:1:17: Syntax error:"), "{err}");

    // Unbounded nested iteration, deep nesting, a 2000-term chain: refused at CRD time.
    for (rule, want) in [
        (
            "self.tags.all(x, self.tags.all(y, self.tags.all(z, x == y)))",
            "Forbidden: estimated rule cost exceeds budget by factor of",
        ),
        (&format!("{}true{}", "(".repeat(2000), ")".repeat(2000)), "compilation failed"),
        (&(vec!["1"; 2000].join(" + ") + " > 0"), "expression too complex"),
    ] {
        let crd = bad.replace(r#"rule: "self.replicas <=""#, &format!("rule: \"{rule}\""));
        let err = refused(&kp, &["create", "-f", "-"], &crd);
        assert!(err.contains(want), "{rule:.40}: {err}");
    }
    let keys =
        common::etcdctl(&kp.endpoint(), &["get", "--prefix", "--keys-only", "/registry/apiextensions.k8s.io/"]);
    assert!(!stdout(&keys).contains("gadgets"), "{}", stdout(&keys));

    // A rule the CRD's bounds allow but whose cost on this object is over the per-call limit:
    // not run, upstream's error; a small object runs it.
    let tags: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    let spec = format!("{{replicas: 1, maxReplicas: 3, tags: [{}]}}", tags.join(","));
    let err = refused(&kp, &["create", "-f", "-"], &widget("many", &spec));
    assert!(
        err.contains(
            "no further validation rules will be run due to call cost exceeds limit for rule: pairwise"
        ),
        "{err}"
    );
    let out = kp.kubectl_stdin(
        &["create", "-f", "-"],
        &widget("few", "{replicas: 1, maxReplicas: 3, tags: [1, 2, 3]}"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(kp.kubectl_ok(&["get", "--raw", "/readyz"]).trim(), "ok");
}

const LIB_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: endpoints.lib.example.com
spec:
  group: lib.example.com
  scope: Namespaced
  names: {plural: endpoints, singular: endpoint, kind: Endpoint}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "sets.contains(['http', 'grpc'], self.protocols)"
              message: "protocols must be http or grpc"
            - rule: "self.ports.isSorted() && self.ports.max() <= 65535 && self.ports.indexOf(22) == -1"
              message: "ports must be sorted, at most 65535 and not 22"
            - rule: "isURL(self.url) && url(self.url).getScheme() == 'https' && url(self.url).getHostname().endsWith('.example.com')"
              messageExpression: "'url must be https on example.com, not ' + self.url"
              fieldPath: .url
            - rule: "cidr(self.cidr).containsIP(ip(self.ip)) && !ip(self.ip).isLoopback()"
              message: "ip must be in cidr and not loopback"
              fieldPath: .ip
            - rule: "quantity(self.memory).isLessThan(quantity('1Gi')) && quantity(self.memory).sign() == 1"
              message: "memory must be positive and under 1Gi"
              reason: FieldValueForbidden
              fieldPath: .memory
            - rule: "self.name.lowerAscii() == self.name && self.name.findAll('[0-9]+').size() <= 1"
              message: "name must be lower case with at most one number"
            - rule: "self.__dash__tier in ['gold', 'silver'] && self.__namespace__ != 'kube-system'"
              message: "tier and namespace"
            - rule: "self.notAfter - self.notBefore <= duration(self.maxAge) && self.notAfter.getFullYear() < 2100"
              messageExpression: "'validity ' + string(self.notAfter - self.notBefore) + ' exceeds ' + self.maxAge"
            properties:
              ports: {type: array, maxItems: 16, items: {type: integer}}
              protocols: {type: array, maxItems: 4, items: {type: string, maxLength: 8}}
              url: {type: string, maxLength: 200}
              cidr: {type: string, maxLength: 50}
              ip: {type: string, maxLength: 50}
              memory: {type: string, maxLength: 20}
              name: {type: string, maxLength: 30}
              "-tier": {type: string, maxLength: 10}
              namespace: {type: string, maxLength: 63}
              notBefore: {type: string, format: date-time}
              notAfter: {type: string, format: date-time}
              maxAge: {type: string, maxLength: 20}
"#;

fn endpoint(name: &str, spec: &str) -> String {
    format!("apiVersion: lib.example.com/v1\nkind: Endpoint\nmetadata:\n  name: {name}\nspec: {spec}\n")
}

#[test]
fn kubernetes_cel_libraries_with_kubectl() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], LIB_CRD);
    assert!(out.status.success(), "{}", stderr(&out));
    kp.kubectl_ok(&["wait", "--for=condition=Established", "crd/endpoints.lib.example.com", "--timeout=20s"]);
    let good =
        "{protocols: [http], ports: [80, 443], url: \"https://api.example.com:8443/v1?x=1\", cidr: 10.0.0.0/8, ip: 10.1.2.3, \
                memory: 512Mi, name: web1, \"-tier\": gold, namespace: apps, notBefore: \"2026-01-01T00:00:00Z\", \
                notAfter: \"2026-01-31T00:00:00+01:00\", maxAge: 720h}";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], &endpoint("good", good));
    assert!(out.status.success(), "{}", stderr(&out));
    let key = "/registry/lib.example.com/endpoints/default/";
    assert!(kp.etcd_get(&kp.endpoint(), &format!("{key}good")).is_some());

    // Every rule fails: upstream's 422 Invalid with each cause, nothing stored.
    let bad = "{protocols: [http, ftp], ports: [443, 22], url: \"http://api.example.org/\", cidr: 10.0.0.0/8, ip: 11.1.2.3, \
               memory: 2Gi, name: Web1x2, \"-tier\": bronze, namespace: apps, notBefore: \"2026-01-01T00:00:00Z\", \
               notAfter: \"2026-03-01T12:00:00Z\", maxAge: 720h}";
    let err = refused(&kp, &["create", "-f", "-"], &endpoint("bad", bad));
    for want in [
        r#"The Endpoint "bad" is invalid: "#,
        r#"spec: Invalid value: "object": protocols must be http or grpc"#,
        r#"spec: Invalid value: "object": ports must be sorted, at most 65535 and not 22"#,
        r#"spec.url: Invalid value: "object": url must be https on example.com, not http://api.example.org/"#,
        r#"spec.ip: Invalid value: "object": ip must be in cidr and not loopback"#,
        r#"spec.memory: Forbidden: memory must be positive and under 1Gi"#,
        r#"spec: Invalid value: "object": name must be lower case with at most one number"#,
        r#"spec: Invalid value: "object": tier and namespace"#,
        r#"spec: Invalid value: "object": validity 5140800s exceeds 720h"#,
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    // Values the functions cannot parse: evaluation errors in upstream's words, no crash.
    let worse = "{protocols: [], ports: [], url: \"not a url\", cidr: 10.0.0.0/99, ip: 10.1.2.3, memory: lots, name: a, \
                 \"-tier\": gold, namespace: apps, notBefore: \"2026-01-01T00:00:00Z\", \
                 notAfter: \"2026-01-02T00:00:00Z\", maxAge: 1d}";
    let err = refused(&kp, &["create", "-f", "-"], &endpoint("worse", worse));
    for want in [
        "max called on empty list evaluating rule: ports must be sorted",
        // isURL guards url(): the rule is false, not an error.
        r#"spec.url: Invalid value: "object": url must be https on example.com, not not a url"#,
        "network address parse error during conversion from string: network address parse error during conversion \
         from string: netip.ParsePrefix(\"10.0.0.0/99\"): prefix length out of range evaluating rule: ip must be in \
         cidr and not loopback",
        "quantities must match the regular expression",
        r#"time: unknown unit "d" in duration "1d" evaluating rule: self.notAfter - self.notBefore"#,
    ] {
        assert!(err.contains(want), "{want}\n{err}");
    }
    for n in ["bad", "worse"] {
        assert!(kp.etcd_get(&kp.endpoint(), &format!("{key}{n}")).is_none(), "{n} stored");
    }
    assert_eq!(kp.kubectl_ok(&["get", "--raw", "/readyz"]).trim(), "ok");
}
