//! The Job and TTL-after-finished controllers, driven with the real kubectl on `kplane up`:
//! completions at a parallelism (never more active pods than allowed), `kubectl wait` for the
//! Complete condition, `kubectl create job` + `kubectl logs job/x`, an Indexed Job's index env var
//! and completedIndexes, a TTL deleting a finished Job and its pods; and the failure side: a
//! backoffLimit reached with the exit codes in the pods' statuses, a podFailurePolicy FailJob rule,
//! activeDeadlineSeconds, and suspend/resume.

mod common;

use common::{eventually, free_port, Kplane};
use serde_json::Value;

fn apply(kp: &Kplane, yaml: &str) {
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", common::stderr(&out));
}

fn job(kp: &Kplane, name: &str) -> Value {
    serde_json::from_str(&kp.kubectl_ok(&["get", "job", name, "-o", "json"])).unwrap()
}

fn job_pods(kp: &Kplane, name: &str) -> Vec<Value> {
    let out =
        kp.kubectl_ok(&["get", "pods", "-l", &format!("batch.kubernetes.io/job-name={name}"), "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The true condition of that type, if any.
fn condition(j: &Value, type_: &str) -> Option<Value> {
    j["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_ && c["status"] == "True").cloned()
}

/// Seconds of an RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` timestamp, counted from the start of its month
/// (enough to order and subtract the timestamps of one test run); absent → far future.
fn secs(t: &Value) -> i64 {
    let Some(s) = t.as_str() else { return i64::MAX };
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    ((n(8..10) * 24 + n(11..13)) * 60 + n(14..16)) * 60 + n(17..19)
}

fn job_yaml(name: &str, extra_spec: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n{extra_spec}  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox\n        command: [sh, -c, {command:?}]\n"
    )
}

#[test]
fn jobs_complete_at_their_parallelism_with_indexes_logs_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    apply(&kp, &job_yaml("six", "  completions: 6\n  parallelism: 3\n", "sleep 1; echo done"));
    apply(
        &kp,
        &job_yaml(
            "idx",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n",
            "echo index=$JOB_COMPLETION_INDEX host=$HOSTNAME",
        ),
    );
    kp.kubectl_ok(&["create", "job", "hello", "--image=busybox", "--", "sh", "-c", "echo hi"]);

    // Never more than 3 active, as the Job reports it while it runs.
    let mut max_active = 0;
    let done = eventually(90, "six Complete", || {
        let j = job(&kp, "six");
        max_active = max_active.max(j["status"]["active"].as_i64().unwrap_or(0));
        condition(&j, "Complete").map(|_| j)
    });
    assert!(max_active <= 3, "{max_active} active at once");
    let out = kp.kubectl_ok(&["wait", "--for=condition=complete", "job/six", "--timeout=30s"]);
    assert!(out.contains("condition met"), "{out}");
    assert_eq!(done["status"]["succeeded"], 6, "{done}");
    assert!(done["status"]["failed"].is_null(), "{done}");
    assert!(done["status"]["completionTime"].is_string() && done["status"]["startTime"].is_string());
    let c = condition(&done, "Complete").unwrap();
    assert_eq!(c["reason"], "CompletionsReached");
    let s = condition(&done, "SuccessCriteriaMet").unwrap();
    assert_eq!(s["message"], "Reached expected number of succeeded pods");
    // Six pods, each Succeeded, labelled and owned by the Job, with the tracking finalizer gone.
    let pods = job_pods(&kp, "six");
    assert_eq!(pods.len(), 6, "{pods:?}");
    let uid = done["metadata"]["uid"].as_str().unwrap();
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Succeeded");
        let l = &p["metadata"]["labels"];
        assert_eq!((l["job-name"].as_str(), l["controller-uid"].as_str()), (Some("six"), Some(uid)));
        assert_eq!(
            (l["batch.kubernetes.io/controller-uid"].as_str(), l["app"].as_str()),
            (Some(uid), Some("six"))
        );
        let o = &p["metadata"]["ownerReferences"][0];
        assert_eq!((o["kind"].as_str(), o["controller"].as_bool()), (Some("Job"), Some(true)));
        assert!(p["metadata"]["finalizers"].is_null(), "{p}");
    }
    // Never more than 3 alive at once, from the pods themselves: [created, finished) intervals.
    let intervals: Vec<(i64, i64)> = pods
        .iter()
        .map(|p| {
            let fin = &p["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"];
            (secs(&p["metadata"]["creationTimestamp"]), secs(fin))
        })
        .collect();
    for (start, _) in &intervals {
        let alive = intervals.iter().filter(|(s, f)| s <= start && start < f).count();
        assert!(alive <= 3, "{alive} pods alive at {start}: {intervals:?}");
    }
    let row = kp.kubectl_ok(&["get", "job", "six", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("Complete", "6/6"), "{row}");
    assert!(cols[3].ends_with('s'), "DURATION {row}");
    let events = kp.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=six"]);
    assert!(events.contains("SuccessfulCreate") && events.contains("Completed"), "{events}");

    // Indexed: each index once, its env var and hostname, completedIndexes as an interval.
    let j = eventually(60, "idx Complete", || {
        let j = job(&kp, "idx");
        condition(&j, "Complete").map(|_| j)
    });
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{j}");
    let pods = job_pods(&kp, "idx");
    let mut seen: Vec<String> = Vec::new();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap();
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap();
        assert_eq!(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"].as_str(), Some(ix));
        assert!(name.starts_with(&format!("idx-{ix}-")), "{name}");
        let logs = kp.kubectl_ok(&["logs", name]);
        assert_eq!(logs.trim(), format!("index={ix} host=idx-{ix}"), "{name}");
        seen.push(ix.to_string());
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    // kubectl create job, then kubectl logs job/x.
    kp.kubectl_ok(&["wait", "--for=condition=complete", "job/hello", "--timeout=60s"]);
    assert_eq!(kp.kubectl_ok(&["logs", "job/hello"]), "hi\n");

    // ttlSecondsAfterFinished: the finished Job and its pods are deleted.
    apply(&kp, &job_yaml("short", "  ttlSecondsAfterFinished: 2\n", "echo bye"));
    let j = eventually(60, "short Complete", || {
        let j = job(&kp, "short");
        condition(&j, "Complete").map(|_| j)
    });
    assert_eq!(j["spec"]["ttlSecondsAfterFinished"], 2);
    eventually(60, "short and its pods deleted", || {
        let out = kp.kubectl(&["get", "job", "short"]);
        (!out.status.success() && job_pods(&kp, "short").is_empty()).then_some(())
    });
    // A Job without a TTL stays.
    job(&kp, "six");
}

#[test]
fn jobs_fail_by_backoff_limit_failure_policy_and_deadline_and_suspend() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start(dir.path(), free_port());
    apply(&kp, &job_yaml("fails", "  backoffLimit: 1\n", "echo oops; exit 3"));
    apply(
        &kp,
        &job_yaml(
            "policy",
            "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {operator: In, values: [42]}\n",
            "exit 42",
        ),
    );
    apply(&kp, &job_yaml("slow", "  activeDeadlineSeconds: 3\n", "sleep 60"));
    apply(&kp, &job_yaml("held", "  suspend: true\n  completions: 2\n", "sleep 1"));
    apply(&kp, &job_yaml("paused", "  parallelism: 2\n  completions: 4\n", "sleep 60"));

    // podFailurePolicy FailJob on exit code 42: Failed at the first failure, no retry.
    let j = eventually(60, "policy Failed", || {
        let j = job(&kp, "policy");
        condition(&j, "Failed").map(|_| j)
    });
    let c = condition(&j, "Failed").unwrap();
    assert_eq!(c["reason"], "PodFailurePolicy", "{j}");
    let m = c["message"].as_str().unwrap();
    assert!(m.contains("failed with exit code 42 matching FailJob rule at index 0"), "{m}");
    assert_eq!(condition(&j, "FailureTarget").unwrap()["reason"], "PodFailurePolicy");
    assert_eq!(j["status"]["failed"], 1);
    assert_eq!(job_pods(&kp, "policy").len(), 1);

    // activeDeadlineSeconds: Failed/DeadlineExceeded, its running pod deleted.
    let j = eventually(60, "slow Failed", || {
        let j = job(&kp, "slow");
        condition(&j, "Failed").map(|_| j)
    });
    let c = condition(&j, "Failed").unwrap();
    assert_eq!(c["reason"], "DeadlineExceeded");
    assert_eq!(c["message"], "Job was active longer than specified deadline");
    eventually(60, "slow's pod gone", || job_pods(&kp, "slow").is_empty().then_some(()));
    assert!(j["status"]["active"].is_null(), "{j}");

    // Suspend: a suspended Job starts nothing; resumed, it runs to completion.
    let j = job(&kp, "held");
    let c = condition(&j, "Suspended").unwrap_or_else(|| panic!("{j}"));
    assert_eq!((c["reason"].as_str(), c["message"].as_str()), (Some("JobSuspended"), Some("Job suspended")));
    assert!(j["status"]["startTime"].is_null(), "{j}");
    assert!(job_pods(&kp, "held").is_empty());
    let row = kp.kubectl_ok(&["get", "job", "held", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(1), Some("Suspended"), "{row}");
    kp.kubectl_ok(&["patch", "job", "held", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    kp.kubectl_ok(&["wait", "--for=condition=complete", "job/held", "--timeout=60s"]);
    let j = job(&kp, "held");
    let resumed =
        j["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Suspended").unwrap();
    assert_eq!((resumed["status"].as_str(), resumed["reason"].as_str()), (Some("False"), Some("JobResumed")));
    assert!(j["status"]["startTime"].is_string());

    // Suspending a running Job deletes its active pods (not counted as failures).
    eventually(60, "paused has 2 active", || (job(&kp, "paused")["status"]["active"] == 2).then_some(()));
    kp.kubectl_ok(&["patch", "job", "paused", "--type=merge", "-p", r#"{"spec":{"suspend":true}}"#]);
    let j = eventually(60, "paused suspended with no pods", || {
        let j = job(&kp, "paused");
        (condition(&j, "Suspended").is_some()
            && job_pods(&kp, "paused").is_empty()
            && j["status"]["active"].is_null())
        .then_some(j)
    });
    assert!(j["status"]["failed"].is_null(), "{j}");
    kp.kubectl_ok(&["patch", "job", "paused", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    eventually(60, "paused active again", || (job(&kp, "paused")["status"]["active"] == 2).then_some(()));

    // backoffLimit 1: the first failure, 10 s of back-off, the second failure, then Failed.
    let j = eventually(90, "fails Failed", || {
        let j = job(&kp, "fails");
        condition(&j, "Failed").map(|_| j)
    });
    let c = condition(&j, "Failed").unwrap();
    assert_eq!(c["reason"], "BackoffLimitExceeded");
    assert_eq!(c["message"], "Job has reached the specified backoff limit");
    assert_eq!(j["status"]["failed"], 2, "{j}");
    let pods = job_pods(&kp, "fails");
    assert_eq!(pods.len(), 2);
    let mut created: Vec<i64> = Vec::new();
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3, "{p}");
        created.push(secs(&p["metadata"]["creationTimestamp"]));
    }
    created.sort();
    assert!(created[1] - created[0] >= 9, "the replacement came after the back-off: {created:?}");
    let events = kp.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=fails"]);
    assert!(events.contains("BackoffLimitExceeded"), "{events}");
    let row = kp.kubectl_ok(&["get", "job", "fails", "--no-headers"]);
    assert_eq!(row.split_whitespace().take(3).collect::<Vec<_>>(), ["fails", "Failed", "0/1"], "{row}");
}
