//! The built-in kinds of Kubernetes v1.33 beyond kplane's first 23 (issue 15, item 3), driven with
//! the real kubectl against `kplane apiserver`: `kubectl api-resources` lists them, a manifest with
//! one object of each kind applies, every object is read back from upstream's etcd key with the real
//! etcdctl, `kubectl get` prints upstream's columns, `-o yaml` shows upstream's defaults, the
//! `kubectl create job|cronjob|pdb|priorityclass` and `kubectl autoscale` generators work, bad input
//! gets upstream's 422 with nothing stored, and (item 5) a Service DELETE answers with the Service,
//! which the Python client's `delete_namespaced_service` parses.

mod common;

use std::process::Command;

use common::{free_port, stderr, stdout, Kplane};
use serde_json::Value;

/// One object of every kind added, as a user would write them.
const MANIFEST: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: busybox, command: [echo, "3.14"]}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: tick, image: busybox}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "postgres:16"}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {kubernetes.io/os: linux}
      containers: [{name: agent, image: "busybox:1.36"}]
---
apiVersion: apps/v1
kind: ControllerRevision
metadata: {name: db-1}
revision: 1
data: {spec: {}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: db}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: db}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: db}
  maxReplicas: 4
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: extra}
spec:
  cidrs: [127.97.0.0/16]
---
apiVersion: networking.k8s.io/v1
kind: IPAddress
metadata: {name: 127.97.0.10}
spec:
  parentRef: {group: "", resource: services, namespace: default, name: db}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv1}
spec:
  capacity: {storage: 5Gi}
  accessModes: [ReadWriteOnce, ReadOnlyMany]
  storageClassName: standard
  hostPath: {path: /data/pv1}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: quota}
spec:
  hard: {pods: "10", limits.memory: 2Gi}
---
apiVersion: v1
kind: LimitRange
metadata: {name: limits}
spec:
  limits:
  - type: Container
    default: {memory: 256Mi}
---
apiVersion: v1
kind: PodTemplate
metadata: {name: tmpl}
template:
  metadata: {labels: {app: t}}
  spec:
    containers: [{name: t, image: busybox}]
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: csi.example.com}
spec:
  attachRequired: false
  volumeLifecycleModes: [Persistent]
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata: {name: worker0}
spec:
  drivers: [{name: csi.example.com, nodeID: worker0}]
---
apiVersion: storage.k8s.io/v1
kind: CSIStorageCapacity
metadata: {name: cap}
storageClassName: standard
capacity: 10Gi
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: va}
spec:
  attacher: csi.example.com
  nodeName: worker0
  source: {persistentVolumeName: pv1}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
description: important
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata: {name: sandboxed}
handler: runsc
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: vwh}
webhooks:
- name: check.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {service: {namespace: default, name: hook}}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: mwh}
webhooks:
- name: mutate.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {url: "https://127.0.0.1:9443/mutate"}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: replicas}
spec:
  matchConstraints:
    resourceRules: [{apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}]
  validations: [{expression: "object.spec.replicas <= 5"}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: replicas}
spec:
  policyName: replicas
  validationActions: [Deny]
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: batch}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 10
    limitResponse:
      type: Queue
      queuing: {queues: 16, handSize: 4, queueLengthLimit: 50}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: batch}
spec:
  priorityLevelConfiguration: {name: batch}
  matchingPrecedence: 500
  distinguisherMethod: {type: ByUser}
  rules:
  - subjects: [{kind: Group, group: {name: "system:authenticated"}}]
    resourceRules: [{verbs: ["*"], apiGroups: ["*"], resources: ["*"], namespaces: ["*"]}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {namespace: kube-system, name: metrics-server}
---
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: alice}
spec:
  signerName: kubernetes.io/kube-apiserver-client
  usages: [client auth]
  request: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlJQ1ZqQ0NBVDRDQVFBd0VURVBNQTBHQTFVRUF3d0dZV3hwWTJVd2dnRWlNQTBHQ1NxR1NJYjNEUUVCQVFVQQpBNElCRHdBd2dnRUtBb0lCQVFEQTBKdHpHcEdTSzNoMzB5eUg2NUtsM1lQUVkxMFBvRnJhNUpqTUZ2ZHRKVmtUCi0tLS0tRU5EIENFUlRJRklDQVRFIFJFUVVFU1QtLS0tLQo=
"#;

/// `(kubectl resource, etcd key)` of each object in [`MANIFEST`].
const KEYS: &[(&str, &str)] = &[
    ("job/pi", "/registry/jobs/default/pi"),
    ("cronjob/tick", "/registry/cronjobs/default/tick"),
    ("statefulset/db", "/registry/statefulsets/default/db"),
    ("daemonset/agent", "/registry/daemonsets/default/agent"),
    ("controllerrevision/db-1", "/registry/controllerrevisions/default/db-1"),
    ("pdb/db", "/registry/poddisruptionbudgets/default/db"),
    ("hpa/db", "/registry/horizontalpodautoscalers/default/db"),
    ("networkpolicy/deny-all", "/registry/networkpolicies/default/deny-all"),
    ("servicecidr/extra", "/registry/servicecidrs/extra"),
    ("ipaddress/127.97.0.10", "/registry/ipaddresses/127.97.0.10"),
    ("pv/pv1", "/registry/persistentvolumes/pv1"),
    ("pvc/claim", "/registry/persistentvolumeclaims/default/claim"),
    ("quota/quota", "/registry/resourcequotas/default/quota"),
    ("limits/limits", "/registry/limitranges/default/limits"),
    ("podtemplate/tmpl", "/registry/podtemplates/default/tmpl"),
    ("sc/standard", "/registry/storageclasses/standard"),
    ("csidriver/csi.example.com", "/registry/csidrivers/csi.example.com"),
    ("csinode/worker0", "/registry/csinodes/worker0"),
    ("csistoragecapacity/cap", "/registry/csistoragecapacities/default/cap"),
    ("volumeattachment/va", "/registry/volumeattachments/va"),
    ("pc/high", "/registry/priorityclasses/high"),
    ("runtimeclass/sandboxed", "/registry/runtimeclasses/sandboxed"),
    ("validatingwebhookconfiguration/vwh", "/registry/validatingwebhookconfigurations/vwh"),
    ("mutatingwebhookconfiguration/mwh", "/registry/mutatingwebhookconfigurations/mwh"),
    ("validatingadmissionpolicy/replicas", "/registry/validatingadmissionpolicies/replicas"),
    ("validatingadmissionpolicybinding/replicas", "/registry/validatingadmissionpolicybindings/replicas"),
    ("prioritylevelconfiguration/batch", "/registry/prioritylevelconfigurations/batch"),
    ("flowschema/batch", "/registry/flowschemas/batch"),
    (
        "apiservice/v1beta1.metrics.k8s.io",
        "/registry/apiregistration.k8s.io/apiservices/v1beta1.metrics.k8s.io",
    ),
    ("csr/alice", "/registry/certificatesigningrequests/alice"),
];

/// `kubectl.<version>`: on PATH, or in the Cloud SDK's folder where this machine keeps them.
fn versioned_kubectl(version: &str) -> String {
    let name = format!("kubectl.{version}");
    store::etcd_process::find_program(&name, &["/usr/lib/google-cloud-sdk/bin"])
        .unwrap_or_else(|| panic!("{name} is missing: the version-skew checks need it"))
        .to_string_lossy()
        .into_owned()
}

fn json_of(kp: &Kplane, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kp.kubectl_ok(&all)).unwrap()
}

/// The header line and first row of `kubectl get`, split on runs of spaces.
fn table(kp: &Kplane, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let out = kp.kubectl_ok(args);
    let mut lines = out.lines();
    let split = |l: &str| l.split("  ").map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
    (split(lines.next().unwrap_or("")), split(lines.next().unwrap_or("")))
}

#[test]
fn every_added_kind_is_served_stored_at_upstreams_key_and_printed() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let etcd = kp.endpoint();

    // Discovery: kubectl api-resources lists each with its short names and group-version.
    let resources = kp.kubectl_ok(&["api-resources", "--no-headers"]);
    for want in [
        "jobs batch/v1 true Job",
        "cronjobs cj batch/v1 true CronJob",
        "statefulsets sts apps/v1 true StatefulSet",
        "daemonsets ds apps/v1 true DaemonSet",
        "controllerrevisions apps/v1 true ControllerRevision",
        "poddisruptionbudgets pdb policy/v1 true PodDisruptionBudget",
        "horizontalpodautoscalers hpa autoscaling/v2 true HorizontalPodAutoscaler",
        "networkpolicies netpol networking.k8s.io/v1 true NetworkPolicy",
        "persistentvolumes pv v1 false PersistentVolume",
        "persistentvolumeclaims pvc v1 true PersistentVolumeClaim",
        "resourcequotas quota v1 true ResourceQuota",
        "limitranges limits v1 true LimitRange",
        "podtemplates v1 true PodTemplate",
        "storageclasses sc storage.k8s.io/v1 false StorageClass",
        "priorityclasses pc scheduling.k8s.io/v1 false PriorityClass",
        "runtimeclasses node.k8s.io/v1 false RuntimeClass",
        "certificatesigningrequests csr certificates.k8s.io/v1 false CertificateSigningRequest",
        "flowschemas flowcontrol.apiserver.k8s.io/v1 false FlowSchema",
        "apiservices apiregistration.k8s.io/v1 false APIService",
        "validatingadmissionpolicies admissionregistration.k8s.io/v1 false ValidatingAdmissionPolicy",
    ] {
        let found = resources.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == want);
        assert!(found, "`kubectl api-resources` lacks `{want}`:\n{resources}");
    }
    // The `all` category takes in the workloads, as upstream's does.
    let out = kp.kubectl_ok(&["api-resources", "--categories=all", "-o", "name"]);
    for r in [
        "jobs.batch",
        "cronjobs.batch",
        "statefulsets.apps",
        "daemonsets.apps",
        "horizontalpodautoscalers.autoscaling",
    ] {
        assert!(out.lines().any(|l| l == r), "{r} not in category all:\n{out}");
    }

    // One of each, applied as users do.
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], MANIFEST);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for (what, key) in KEYS {
        let stored = kp.etcd_get(&etcd, key).unwrap_or_else(|| panic!("{what}: nothing at {key}"));
        let name = what.split_once('/').unwrap().1;
        assert_eq!(stored["metadata"]["name"], name, "{key}: {stored}");
        let served = json_of(&kp, &["get", what]);
        assert_eq!(served["metadata"]["uid"], stored["metadata"]["uid"], "{what}");
    }

    // Upstream's columns.
    let (head, row) = table(&kp, &["get", "jobs"]);
    assert_eq!(head, ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    assert_eq!(row[..3], ["pi", "Running", "0/1"]);
    let (head, row) = table(&kp, &["get", "cronjobs"]);
    assert_eq!(head, ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"]);
    assert_eq!(row[..6], ["tick", "*/5 * * * *", "<none>", "False", "0", "<none>"]);
    let (head, row) = table(&kp, &["get", "sts"]);
    assert_eq!(head, ["NAME", "READY", "AGE"]);
    assert_eq!(row[..2], ["db", "0/1"]);
    let (head, row) = table(&kp, &["get", "ds"]);
    assert_eq!(
        head,
        ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"]
    );
    assert_eq!(row[6], "kubernetes.io/os=linux");
    let (head, row) = table(&kp, &["get", "pdb"]);
    assert_eq!(head, ["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"]);
    assert_eq!(row[..4], ["db", "N/A", "1", "0"]);
    let (head, row) = table(&kp, &["get", "hpa"]);
    assert_eq!(head, ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]);
    assert_eq!(row[..6], ["db", "StatefulSet/db", "cpu: <unknown>/80%", "1", "4", "0"]);
    let (head, row) = table(&kp, &["get", "pv"]);
    assert_eq!(
        head,
        [
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE"
        ]
    );
    assert_eq!(row[..5], ["pv1", "5Gi", "RWO,ROX", "Retain", "Pending"]);
    let (head, row) = table(&kp, &["get", "pvc"]);
    assert_eq!(
        head,
        [
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE"
        ]
    );
    assert_eq!(row[..2], ["claim", "Pending"]);
    let (head, row) = table(&kp, &["get", "sc"]);
    assert_eq!(
        head,
        ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"]
    );
    assert_eq!(
        row[..5],
        ["standard (default)", "kubernetes.io/no-provisioner", "Delete", "Immediate", "false"]
    );
    let (head, row) = table(&kp, &["get", "pc", "high"]);
    assert_eq!(head, ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]);
    assert_eq!(row[..3], ["high", "1000", "false"]);
    assert_eq!(row[4], "PreemptLowerPriority");
    let (head, row) = table(&kp, &["get", "csr"]);
    assert_eq!(head, ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]);
    assert_eq!(row[0], "alice");
    assert_eq!(row.last().unwrap(), "Pending");
    let (head, _) = table(&kp, &["get", "networkpolicy"]);
    assert_eq!(head, ["NAME", "POD-SELECTOR", "AGE"]);
    let (head, row) = table(&kp, &["get", "validatingwebhookconfiguration"]);
    assert_eq!(head, ["NAME", "WEBHOOKS", "AGE"]);
    assert_eq!(row[..2], ["vwh", "1"]);
    let (head, row) = table(&kp, &["get", "prioritylevelconfiguration", "batch"]);
    assert_eq!(
        head,
        ["NAME", "TYPE", "NOMINALCONCURRENCYSHARES", "QUEUES", "HANDSIZE", "QUEUELENGTHLIMIT", "AGE"]
    );
    assert_eq!(row[..6], ["batch", "Limited", "10", "16", "4", "50"]);
    let (head, row) = table(&kp, &["get", "apiservice"]);
    assert_eq!(head, ["NAME", "SERVICE", "AVAILABLE", "AGE"]);
    assert_eq!(row[..3], ["v1beta1.metrics.k8s.io", "kube-system/metrics-server", "Unknown"]);

    // Upstream's defaults, as `-o yaml` shows them.
    let job = json_of(&kp, &["get", "job", "pi"]);
    let spec = &job["spec"];
    for (field, want) in [
        ("parallelism", Value::from(1)),
        ("completions", 1.into()),
        ("backoffLimit", 6.into()),
        ("completionMode", "NonIndexed".into()),
        ("suspend", false.into()),
        ("manualSelector", false.into()),
        ("podReplacementPolicy", "TerminatingOrFailed".into()),
    ] {
        assert_eq!(spec[field], want, "job spec.{field}: {spec}");
    }
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid);
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid),
        ("controller-uid", uid),
        ("batch.kubernetes.io/job-name", "pi"),
        ("job-name", "pi"),
    ] {
        assert_eq!(spec["template"]["metadata"]["labels"][k], v, "{k}");
        assert_eq!(job["metadata"]["labels"][k], v, "{k}");
    }
    assert_eq!(spec["template"]["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(job["metadata"]["generation"], 1);
    let cj = json_of(&kp, &["get", "cj", "tick"]);
    assert_eq!(
        [
            &cj["spec"]["concurrencyPolicy"],
            &cj["spec"]["suspend"],
            &cj["spec"]["successfulJobsHistoryLimit"],
            &cj["spec"]["failedJobsHistoryLimit"]
        ],
        [&Value::from("Allow"), &false.into(), &3.into(), &1.into()]
    );
    let sts = json_of(&kp, &["get", "sts", "db"]);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
    assert_eq!(sts["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"], "Retain");
    assert_eq!(sts["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
    let ds = json_of(&kp, &["get", "ds", "agent"]);
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"], 0);
    let pvc = json_of(&kp, &["get", "pvc", "claim"]);
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    let vwh = json_of(&kp, &["get", "validatingwebhookconfiguration", "vwh"]);
    assert_eq!(vwh["webhooks"][0]["timeoutSeconds"], 10);
    assert_eq!(vwh["webhooks"][0]["failurePolicy"], "Fail");
    assert_eq!(vwh["webhooks"][0]["clientConfig"]["service"]["port"], 443);

    // Status subresources exist where upstream has them; scale on StatefulSets.
    let out = kp.kubectl_ok(&["scale", "sts", "db", "--replicas=3"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(kp.etcd_get(&etcd, "/registry/statefulsets/default/db").unwrap()["spec"]["replicas"], 3);
    // Field selector upstream allows on Jobs.
    let out = kp.kubectl_ok(&["get", "jobs", "--field-selector", "status.successful=0", "-o", "name"]);
    assert_eq!(out.trim(), "job.batch/pi");

    // Deleting them all leaves nothing under their keys.
    let out = kp.kubectl_stdin(&["delete", "-f", "-"], MANIFEST);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for (_, key) in KEYS {
        assert!(kp.etcd_get(&etcd, key).is_none(), "{key} still stored");
    }
}

#[test]
fn kubectl_generators_create_jobs_cronjobs_pdbs_priorityclasses_and_hpas() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let etcd = kp.endpoint();

    assert_eq!(kp.kubectl_ok(&["create", "job", "x", "--image=busybox"]).trim(), "job.batch/x created");
    let job = kp.etcd_get(&etcd, "/registry/jobs/default/x").unwrap();
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["image"], "busybox");
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(job["spec"]["backoffLimit"], 6);

    let out =
        kp.kubectl_ok(&["create", "cronjob", "c", "--image=busybox", "--schedule=*/1 * * * *", "--", "date"]);
    assert_eq!(out.trim(), "cronjob.batch/c created");
    let cj = kp.etcd_get(&etcd, "/registry/cronjobs/default/c").unwrap();
    assert_eq!(cj["spec"]["schedule"], "*/1 * * * *");
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["date"])
    );
    // A Job from a CronJob, as `kubectl create job --from` does it.
    assert_eq!(
        kp.kubectl_ok(&["create", "job", "manual", "--from=cronjob/c"]).trim(),
        "job.batch/manual created"
    );
    let manual = kp.etcd_get(&etcd, "/registry/jobs/default/manual").unwrap();
    assert_eq!(manual["metadata"]["ownerReferences"][0]["kind"], "CronJob");

    let out = kp.kubectl_ok(&["create", "pdb", "p", "--selector=app=web", "--min-available=1"]);
    assert_eq!(out.trim(), "poddisruptionbudget.policy/p created");
    assert_eq!(
        kp.etcd_get(&etcd, "/registry/poddisruptionbudgets/default/p").unwrap()["spec"]["minAvailable"],
        1
    );

    let out = kp.kubectl_ok(&["create", "priorityclass", "hi", "--value=1000", "--description=high"]);
    assert_eq!(out.trim(), "priorityclass.scheduling.k8s.io/hi created");
    let pc = kp.etcd_get(&etcd, "/registry/priorityclasses/hi").unwrap();
    assert_eq!(
        (&pc["value"], &pc["preemptionPolicy"]),
        (&Value::from(1000), &Value::from("PreemptLowerPriority"))
    );

    kp.kubectl_ok(&["create", "deployment", "web", "--image=nginx"]);
    let out = kp.kubectl_ok(&["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=70"]);
    assert!(out.contains("horizontalpodautoscaler.autoscaling/web autoscaled"), "{out}");
    let hpa = kp.etcd_get(&etcd, "/registry/horizontalpodautoscalers/default/web").unwrap();
    assert_eq!((&hpa["spec"]["minReplicas"], &hpa["spec"]["maxReplicas"]), (&Value::from(2), &Value::from(5)));
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "web");

    // Older kubectls send the same requests.
    for version in ["1.27", "1.33"] {
        let program = versioned_kubectl(version);
        let name = format!("j{}", version.replace('.', ""));
        let out = kp.kubectl_program(&program, &["create", "job", &name, "--image=busybox"]);
        assert!(out.status.success(), "{program}: {}", stderr(&out));
        assert!(kp.etcd_get(&etcd, &format!("/registry/jobs/default/{name}")).is_some(), "{program}");
    }
}

#[test]
fn bad_jobs_get_upstreams_invalid_causes_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let etcd = kp.endpoint();

    let no_containers = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: bad}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: []\n";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], no_containers);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("The Job \"bad\" is invalid: spec.template.spec.containers: Required value"),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/jobs/default/bad").is_none(), "nothing stored");

    // The raw Status: 422, reason Invalid, a cause per fault.
    let always = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"bad2"},"spec":{"parallelism":-1,"template":{"spec":{"containers":[{"name":"c","image":"busybox"}]}}}}"#;
    let file = dir.path().join("bad2.json");
    std::fs::write(&file, always).unwrap();
    let out = kp.kubectl(&[
        "create",
        "--raw",
        "/apis/batch/v1/namespaces/default/jobs",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("spec.parallelism: Invalid value: -1: must be greater than or equal to 0"), "{err}");
    assert!(
        err.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""),
        "{err}"
    );
    assert!(kp.etcd_get(&etcd, "/registry/jobs/default/bad2").is_none(), "nothing stored");

    // The pod template of a running Job is immutable; the stored Job is unchanged.
    kp.kubectl_ok(&["create", "job", "ok", "--image=busybox"]);
    let before = kp.etcd_get(&etcd, "/registry/jobs/default/ok").unwrap();
    let out = kp.kubectl(&["set", "image", "job/ok", "ok=nginx"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("spec.template: Invalid value"), "{}", stderr(&out));
    assert!(stderr(&out).contains("field is immutable"), "{}", stderr(&out));
    assert_eq!(kp.etcd_get(&etcd, "/registry/jobs/default/ok").unwrap(), before);

    // A CronJob with an unparseable schedule.
    let out = kp.kubectl(&["create", "cronjob", "cj", "--image=busybox", "--schedule=never"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out)
            .contains("spec.schedule: Invalid value: \"never\": expected exactly 5 fields, found 1: never"),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/cronjobs/default/cj").is_none());
}

#[test]
fn service_delete_returns_the_service_and_a_new_service_has_an_empty_load_balancer_status() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);

    kp.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = json_of(&kp, &["get", "svc", "web"]);
    assert_eq!(svc["status"], serde_json::json!({"loadBalancer": {}}), "{svc}");

    // The Python client decodes a Service DELETE's answer as a V1Service, as upstream sends one.
    let script = r#"
import sys
from kubernetes import client, config
config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
svc = v1.delete_namespaced_service("web", "default")
assert isinstance(svc, client.V1Service), type(svc)
assert svc.kind == "Service" and svc.metadata.name == "web", svc
cm = v1.create_namespaced_config_map("default", {"metadata": {"name": "c"}})
st = v1.delete_namespaced_config_map("c", "default")
assert st["status"] == "Success", st
print("deleted", svc.kind, svc.metadata.name, "then", st["kind"])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&kp.kubeconfig)
        .output()
        .expect("python3 with the kubernetes client must be installed; this test must not be skipped");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).trim(), "deleted Service web then Status");
    assert!(kp.etcd_get(&kp.endpoint(), "/registry/services/specs/default/web").is_none());
}

#[test]
fn limit_ranges_default_and_bound_pods_and_quotas_refuse_what_exceeds_them() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_cmd("apiserver", dir.path(), free_port(), &[]);
    let etcd = kp.endpoint();

    // LimitRanger: defaults filled in and annotated; a limit above the max is refused.
    let lr = "apiVersion: v1\nkind: LimitRange\nmetadata: {name: mem}\nspec:\n  limits:\n  - type: Container\n    default: {memory: 256Mi}\n    max: {memory: 1Gi}\n";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], lr);
    assert!(out.status.success(), "{}", stderr(&out));
    kp.kubectl_ok(&["run", "small", "--image=nginx"]);
    let pod = kp.etcd_get(&etcd, "/registry/pods/default/small").unwrap();
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["memory"], "256Mi", "{resources}");
    assert_eq!(resources["requests"]["memory"], "256Mi", "{resources}");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: memory request for container small; memory limit for container small"
    );
    assert_eq!(pod["status"]["qosClass"], "Burstable");
    let big = "apiVersion: v1\nkind: Pod\nmetadata: {name: big}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    resources: {limits: {memory: 2Gi}}\n";
    let out = kp.kubectl_stdin(&["create", "-f", "-"], big);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"big\" is forbidden: maximum memory usage per Container is 1Gi, but limit is 2Gi"
        ),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/pods/default/big").is_none(), "nothing stored");

    // ResourceQuota: object counts.
    kp.kubectl_ok(&["create", "namespace", "q"]);
    kp.kubectl_ok(&["create", "quota", "q", "-n", "q", "--hard=pods=2,services=1,count/jobs.batch=1"]);
    kp.kubectl_ok(&["run", "p1", "-n", "q", "--image=nginx"]);
    kp.kubectl_ok(&["run", "p2", "-n", "q", "--image=nginx"]);
    let out = kp.kubectl(&["run", "p3", "-n", "q", "--image=nginx"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        ),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/pods/q/p3").is_none());
    kp.kubectl_ok(&["create", "service", "clusterip", "a", "-n", "q", "--tcp=80"]);
    let out = kp.kubectl(&["create", "service", "clusterip", "b", "-n", "q", "--tcp=80"]);
    assert!(
        stderr(&out)
            .contains("exceeded quota: q, requested: services=1, used: services=1, limited: services=1"),
        "{}",
        stderr(&out)
    );
    kp.kubectl_ok(&["create", "job", "j1", "-n", "q", "--image=busybox"]);
    let out = kp.kubectl(&["create", "job", "j2", "-n", "q", "--image=busybox"]);
    assert!(
        stderr(&out).contains(
            "exceeded quota: q, requested: count/jobs.batch=1, used: count/jobs.batch=1, limited: count/jobs.batch=1"
        ),
        "{}",
        stderr(&out)
    );
    // Deleting a pod frees its place.
    kp.kubectl_ok(&["delete", "pod", "p1", "-n", "q", "--grace-period=0", "--force"]);
    kp.kubectl_ok(&["run", "p3", "-n", "q", "--image=nginx"]);

    // Compute quotas: each container must state what the quota limits, and sums are bounded.
    kp.kubectl_ok(&["create", "namespace", "c"]);
    kp.kubectl_ok(&["create", "quota", "cq", "-n", "c", "--hard=requests.cpu=1"]);
    let out = kp.kubectl(&["run", "nocpu", "-n", "c", "--image=nginx"]);
    assert!(
        stderr(&out)
            .contains("pods \"nocpu\" is forbidden: failed quota: cq: must specify requests.cpu for: nocpu"),
        "{}",
        stderr(&out)
    );
    let pod = |name: &str, cpu: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: c}}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    resources: {{requests: {{cpu: {cpu}}}}}\n")
    };
    let out = kp.kubectl_stdin(&["create", "-f", "-"], &pod("half", "600m"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kp.kubectl_stdin(&["create", "-f", "-"], &pod("more", "500m"));
    assert!(
        stderr(&out).contains(
            "exceeded quota: cq, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"
        ),
        "{}",
        stderr(&out)
    );
    assert!(kp.etcd_get(&etcd, "/registry/pods/c/more").is_none());
}
