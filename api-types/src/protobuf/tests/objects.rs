//! Realistic objects, each as the kubectl command in its test's name would send it.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::roundtrip;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// ObjectMeta as gogo writes it: every non-pointer field present, zero or not, and a zero
/// creationTimestamp as the empty message metav1.Time marshals it to.
fn object_meta(name: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: s(""),
        namespace: s(""),
        self_link: s(""),
        uid: s(""),
        resource_version: s(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        labels: map(labels),
        ..Default::default()
    }
}

fn int(i: i32) -> Option<IntOrString> {
    Some(IntOrString { r#type: Some(0), int_val: Some(i), str_val: s("") })
}

fn named(name: &str) -> Option<IntOrString> {
    Some(IntOrString { r#type: Some(1), int_val: Some(0), str_val: s(name) })
}

fn quantity(q: &str) -> Quantity {
    Quantity { string: s(q) }
}

/// A container as kubectl's generators fill one: zero strings and bools included.
fn container(name: &str, image: &str) -> core::Container {
    core::Container {
        name: s(name),
        image: s(image),
        working_dir: s(""),
        resources: Some(core::ResourceRequirements::default()),
        termination_message_path: s(""),
        termination_message_policy: s(""),
        image_pull_policy: s(""),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        ..Default::default()
    }
}

fn container_port(name: &str, port: i32) -> core::ContainerPort {
    core::ContainerPort {
        name: s(name),
        host_port: Some(0),
        container_port: Some(port),
        protocol: s(""),
        host_ip: s(""),
    }
}

fn pod_spec(containers: Vec<core::Container>) -> core::PodSpec {
    core::PodSpec {
        containers,
        restart_policy: s(""),
        dns_policy: s(""),
        service_account_name: s(""),
        node_name: s(""),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        scheduler_name: s(""),
        ..Default::default()
    }
}

#[test]
fn create_deployment_nginx_image_replicas_port() {
    // kubectl create deployment nginx --image=nginx --replicas=2 --port=80
    let labels = [("app", "nginx")];
    let mut c = container("nginx", "nginx");
    c.ports = vec![container_port("", 80)];
    let deployment = apps::Deployment {
        metadata: Some(object_meta("nginx", &labels)),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector { match_labels: map(&labels), match_expressions: vec![] }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(object_meta("", &labels)),
                spec: Some(pod_spec(vec![c])),
            }),
            strategy: Some(apps::DeploymentStrategy { r#type: s(""), rolling_update: None }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            updated_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            unavailable_replicas: Some(0),
            ..Default::default()
        }),
    };
    let got = roundtrip(&deployment, "apps", "v1", "Deployment");
    let want = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"app": "nginx"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]},
            },
        },
    });
    assert_eq!(got, want);
}

#[test]
fn pointer_zeros_survive() {
    // kubectl scale --replicas=0 style objects, and explicit zero pointers elsewhere.
    let deployment = apps::Deployment {
        metadata: Some(object_meta("idle", &[])),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            revision_history_limit: Some(0),
            min_ready_seconds: Some(0),
            strategy: Some(apps::DeploymentStrategy {
                r#type: s("RollingUpdate"),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_unavailable: int(0),
                    max_surge: named("25%"),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let got = roundtrip(&deployment, "apps", "v1", "Deployment");
    let spec = json!({
        "replicas": 0,
        "revisionHistoryLimit": 0,
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
    });
    assert_eq!(got["spec"], spec);

    let sa = core::ServiceAccount {
        metadata: Some(object_meta("bot", &[])),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let got = roundtrip(&sa, "", "v1", "ServiceAccount");
    let want = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"},
                      "automountServiceAccountToken": false});
    assert_eq!(got, want);
}

#[test]
fn create_serviceaccount() {
    // kubectl create serviceaccount bot
    let sa = core::ServiceAccount { metadata: Some(object_meta("bot", &[])), ..Default::default() };
    let want = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}});
    assert_eq!(roundtrip(&sa, "", "v1", "ServiceAccount"), want);
}

#[test]
fn create_configmap_with_data_and_binary_data() {
    // kubectl create configmap cfg --from-literal=mode=prod --from-literal=empty= --from-file=blob
    let mut meta = object_meta("cfg", &[]);
    meta.namespace = s("default");
    let cm = core::ConfigMap {
        metadata: Some(meta),
        data: map(&[("mode", "prod"), ("empty", "")]),
        binary_data: [("blob".to_string(), vec![0xff, 0x00, 0x01])].into_iter().collect(),
        immutable: None,
    };
    let want = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "default"},
        // Map values keep their zeros: an empty value is still a key.
        "data": {"mode": "prod", "empty": ""},
        "binaryData": {"blob": "/wAB"},
    });
    assert_eq!(roundtrip(&cm, "", "v1", "ConfigMap"), want);
}

#[test]
fn create_secret_generic() {
    // kubectl create secret generic db --from-literal=password=s3cr3t
    let secret = core::Secret {
        metadata: Some(object_meta("db", &[])),
        data: [("password".to_string(), b"s3cr3t".to_vec())].into_iter().collect(),
        r#type: s("Opaque"),
        ..Default::default()
    };
    let want = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                      "data": {"password": "czNjcjN0"}, "type": "Opaque"});
    assert_eq!(roundtrip(&secret, "", "v1", "Secret"), want);

    let immutable = core::Secret { immutable: Some(false), ..secret };
    assert_eq!(roundtrip(&immutable, "", "v1", "Secret")["immutable"], json!(false));
}

#[test]
fn create_namespace() {
    // kubectl create namespace team-a
    let ns = core::Namespace {
        metadata: Some(object_meta("team-a", &[])),
        spec: Some(core::NamespaceSpec { finalizers: vec![] }),
        status: Some(core::NamespaceStatus { phase: s(""), conditions: vec![] }),
    };
    let want = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}});
    assert_eq!(roundtrip(&ns, "", "v1", "Namespace"), want);
}

#[test]
fn create_service_clusterip_with_numeric_and_named_target_ports() {
    // kubectl create service clusterip web --tcp=80:8080, plus a named target port.
    let port = |name: &str, port: i32, target: Option<IntOrString>| core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        port: Some(port),
        target_port: target,
        node_port: Some(0),
        ..Default::default()
    };
    let svc = core::Service {
        metadata: Some(object_meta("web", &[("app", "web")])),
        spec: Some(core::ServiceSpec {
            ports: vec![port("80-8080", 80, int(8080)), port("https", 443, named("https"))],
            selector: map(&[("app", "web")]),
            cluster_ip: s(""),
            r#type: s("ClusterIP"),
            session_affinity: s(""),
            load_balancer_ip: s(""),
            external_name: s(""),
            external_traffic_policy: s(""),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus { ingress: vec![] }),
            conditions: vec![],
        }),
    };
    let want = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "https", "protocol": "TCP", "port": 443, "targetPort": "https"},
            ],
            "selector": {"app": "web"},
            "type": "ClusterIP",
        },
    });
    assert_eq!(roundtrip(&svc, "", "v1", "Service"), want);
}

#[test]
fn pod_with_resources_env_probes_and_timestamps() {
    let mut meta = object_meta("web", &[("app", "web")]);
    meta.namespace = s("default");
    meta.creation_timestamp = Some(meta::Time { seconds: Some(1_704_164_645), nanos: Some(0) });
    meta.managed_fields = vec![meta::ManagedFieldsEntry {
        manager: s("kubectl"),
        operation: s("Update"),
        api_version: s("v1"),
        time: Some(meta::Time { seconds: Some(1_704_164_645), nanos: Some(0) }),
        fields_type: s("FieldsV1"),
        fields_v1: Some(meta::FieldsV1 { raw: Some(br#"{"f:metadata":{"f:labels":{}}}"#.to_vec()) }),
        subresource: s(""),
    }];
    let mut c = container("app", "nginx:1.27");
    c.ports = vec![container_port("http", 8080)];
    c.env = vec![
        core::EnvVar { name: s("MODE"), value: s("prod"), value_from: None },
        core::EnvVar {
            name: s("PASSWORD"),
            value: s(""),
            value_from: Some(core::EnvVarSource {
                secret_key_ref: Some(core::SecretKeySelector {
                    local_object_reference: Some(core::LocalObjectReference { name: s("db") }),
                    key: s("password"),
                    optional: None,
                }),
                ..Default::default()
            }),
        },
    ];
    c.resources = Some(core::ResourceRequirements {
        limits: [("cpu".to_string(), quantity("500m")), ("memory".to_string(), quantity("128Mi"))].into(),
        requests: [("cpu".to_string(), quantity("250m"))].into(),
        claims: vec![],
    });
    let probe = |handler: core::ProbeHandler| core::Probe {
        handler: Some(handler),
        initial_delay_seconds: Some(3),
        timeout_seconds: Some(1),
        period_seconds: Some(10),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        termination_grace_period_seconds: None,
    };
    c.liveness_probe = Some(probe(core::ProbeHandler {
        http_get: Some(core::HttpGetAction {
            path: s("/healthz"),
            port: named("http"),
            host: s(""),
            scheme: s("HTTP"),
            http_headers: vec![],
        }),
        ..Default::default()
    }));
    c.readiness_probe = Some(probe(core::ProbeHandler {
        tcp_socket: Some(core::TcpSocketAction { port: int(8080), host: s("") }),
        ..Default::default()
    }));
    c.security_context = Some(core::SecurityContext {
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        privileged: Some(false),
        ..Default::default()
    });
    let mut spec = pod_spec(vec![c]);
    spec.restart_policy = s("Always");
    spec.termination_grace_period_seconds = Some(0);
    spec.tolerations = vec![core::Toleration {
        key: s("node.kubernetes.io/not-ready"),
        operator: s("Exists"),
        value: s(""),
        effect: s("NoExecute"),
        toleration_seconds: Some(0),
    }];
    spec.volumes = vec![core::Volume {
        name: s("cfg"),
        volume_source: Some(core::VolumeSource {
            config_map: Some(core::ConfigMapVolumeSource {
                local_object_reference: Some(core::LocalObjectReference { name: s("cfg") }),
                items: vec![],
                default_mode: Some(420),
                optional: None,
            }),
            ..Default::default()
        }),
    }];
    let pod = core::Pod {
        metadata: Some(meta),
        spec: Some(spec),
        status: Some(core::PodStatus { phase: s(""), host_ip: s(""), pod_ip: s(""), ..Default::default() }),
    };
    let probe_json = |handler: serde_json::Value| {
        let mut p = json!({"initialDelaySeconds": 3, "timeoutSeconds": 1, "periodSeconds": 10,
                           "successThreshold": 1, "failureThreshold": 3});
        p.as_object_mut().unwrap().extend(handler.as_object().unwrap().clone());
        p
    };
    let want = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web"},
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "managedFields": [{
                "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "time": "2024-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {}}},
            }],
        },
        "spec": {
            "containers": [{
                "name": "app",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                ],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}},
                "livenessProbe": probe_json(json!({"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}})),
                "readinessProbe": probe_json(json!({"tcpSocket": {"port": 8080}})),
                "securityContext": {"runAsUser": 0, "runAsNonRoot": false, "privileged": false},
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": 0}],
            "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}}],
        },
    });
    assert_eq!(roundtrip(&pod, "", "v1", "Pod"), want);
}

#[test]
fn micro_times_endpoint_conditions_and_ingress_rules() {
    use k8s_pb::api::coordination::v1 as coordination;
    use k8s_pb::api::discovery::v1 as discovery;
    use k8s_pb::api::networking::v1 as networking;

    let lease = coordination::Lease {
        metadata: Some(object_meta("node-1", &[])),
        spec: Some(coordination::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime { seconds: Some(1_704_164_645), nanos: Some(123_456_789) }),
            ..Default::default()
        }),
    };
    let want = json!({"holderIdentity": "node-1", "leaseDurationSeconds": 40,
                      "renewTime": "2024-01-02T03:04:05.123456Z"});
    assert_eq!(roundtrip(&lease, "coordination.k8s.io", "v1", "Lease")["spec"], want);

    let slice = discovery::EndpointSlice {
        metadata: Some(object_meta("web-abc", &[])),
        address_type: s("IPv4"),
        endpoints: vec![discovery::Endpoint {
            addresses: vec!["10.0.0.1".into()],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(false),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: vec![discovery::EndpointPort {
            name: s("http"),
            port: Some(80),
            protocol: s("TCP"),
            app_protocol: None,
        }],
    };
    let got = roundtrip(&slice, "discovery.k8s.io", "v1", "EndpointSlice");
    assert_eq!(
        got["endpoints"],
        json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": false, "serving": true, "terminating": false}}])
    );
    assert_eq!(got["ports"], json!([{"name": "http", "port": 80, "protocol": "TCP"}]));

    let path = networking::HttpIngressPath {
        path: s("/"),
        path_type: s("Prefix"),
        backend: Some(networking::IngressBackend {
            service: Some(networking::IngressServiceBackend {
                name: s("web"),
                port: Some(networking::ServiceBackendPort { name: s(""), number: Some(80) }),
            }),
            resource: None,
        }),
    };
    let ingress = networking::Ingress {
        metadata: Some(object_meta("web", &[])),
        spec: Some(networking::IngressSpec {
            rules: vec![networking::IngressRule {
                host: s("example.com"),
                ingress_rule_value: Some(networking::IngressRuleValue {
                    http: Some(networking::HttpIngressRuleValue { paths: vec![path] }),
                }),
            }],
            ..Default::default()
        }),
        status: None,
    };
    let got = roundtrip(&ingress, "networking.k8s.io", "v1", "Ingress");
    let rule = json!({"host": "example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}});
    assert_eq!(got["spec"], json!({"rules": [rule]}));
}

#[test]
fn subresource_bodies_and_delete_options() {
    use k8s_pb::api::autoscaling::v1 as autoscaling;
    use k8s_pb::api::policy::v1 as policy;

    let scale = autoscaling::Scale {
        metadata: Some(object_meta("web", &[])),
        spec: Some(autoscaling::ScaleSpec { replicas: Some(3) }),
        status: Some(autoscaling::ScaleStatus { replicas: Some(0), selector: s("") }),
    };
    let want = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "web"},
                      "spec": {"replicas": 3}});
    assert_eq!(roundtrip(&scale, "autoscaling", "v1", "Scale"), want);

    let binding = core::Binding {
        metadata: Some(object_meta("web", &[])),
        target: Some(core::ObjectReference { kind: s("Node"), name: s("worker0"), ..Default::default() }),
    };
    let want = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"},
                      "target": {"kind": "Node", "name": "worker0"}});
    assert_eq!(roundtrip(&binding, "", "v1", "Binding"), want);

    let delete = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        preconditions: Some(meta::Preconditions { uid: s("1234"), resource_version: None }),
        ..Default::default()
    };
    let eviction =
        policy::Eviction { metadata: Some(object_meta("web", &[])), delete_options: Some(delete.clone()) };
    let options = json!({"gracePeriodSeconds": 0, "propagationPolicy": "Foreground", "dryRun": ["All"],
                         "preconditions": {"uid": "1234"}});
    let got = roundtrip(&eviction, "policy", "v1", "Eviction");
    assert_eq!(got["deleteOptions"], options);

    // DeleteOptions arrives as the client's group-version, or as meta.k8s.io/v1.
    let got = roundtrip(&delete, "apps", "v1", "DeleteOptions");
    assert_eq!(got["apiVersion"], "apps/v1");
    assert_eq!(got["gracePeriodSeconds"], 0);
    let body = super::body("meta.k8s.io/v1", "DeleteOptions", prost::Message::encode_to_vec(&delete));
    let got = super::decode_to_json(&body, "", "v1", "DeleteOptions").unwrap();
    assert_eq!(got["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(got["propagationPolicy"], "Foreground");
}

#[test]
fn certificate_approvals_and_reviews_with_extra() {
    use k8s_pb::api::authorization::v1 as authorization;
    use k8s_pb::api::certificates::v1 as certificates;

    // `kubectl certificate approve`: the CSR as read back, with an Approved condition appended.
    let extra = |k: &str, v: &[&str]| {
        let mut m = BTreeMap::new();
        m.insert(k.to_string(), certificates::ExtraValue { items: v.iter().map(|s| s.to_string()).collect() });
        m
    };
    let csr = certificates::CertificateSigningRequest {
        metadata: Some(object_meta("jane", &[])),
        spec: Some(certificates::CertificateSigningRequestSpec {
            request: Some(b"-----BEGIN CERTIFICATE REQUEST-----".to_vec()),
            signer_name: s("kubernetes.io/kube-apiserver-client"),
            usages: vec!["client auth".into()],
            username: s("kubernetes-admin"),
            extra: extra("scopes", &["a", "b"]),
            ..Default::default()
        }),
        status: Some(certificates::CertificateSigningRequestStatus {
            conditions: vec![certificates::CertificateSigningRequestCondition {
                r#type: s("Approved"),
                status: s("True"),
                reason: s("KubectlApprove"),
                message: s("This CSR was approved by kubectl certificate approve."),
                last_update_time: Some(meta::Time { seconds: Some(1_700_000_000), nanos: Some(0) }),
                ..Default::default()
            }],
            certificate: None,
        }),
    };
    let got = roundtrip(&csr, "certificates.k8s.io", "v1", "CertificateSigningRequest");
    assert_eq!(got["spec"]["extra"], json!({"scopes": ["a", "b"]}));
    assert_eq!(got["spec"]["signerName"], "kubernetes.io/kube-apiserver-client");
    assert_eq!(got["spec"]["request"], "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0=");
    assert_eq!(got["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(got["status"]["conditions"][0]["lastUpdateTime"], "2023-11-14T22:13:20Z");

    let mut review_extra = BTreeMap::new();
    review_extra.insert("team".to_string(), authorization::ExtraValue { items: vec![] });
    let sar = authorization::SubjectAccessReview {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authorization::SubjectAccessReviewSpec {
            user: s("alice"),
            extra: review_extra,
            non_resource_attributes: Some(authorization::NonResourceAttributes {
                path: s("/version"),
                verb: s("get"),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let got = roundtrip(&sar, "authorization.k8s.io", "v1", "SubjectAccessReview");
    assert_eq!(got["spec"]["extra"], json!({"team": []}));
    assert_eq!(got["spec"]["nonResourceAttributes"], json!({"path": "/version", "verb": "get"}));
}
