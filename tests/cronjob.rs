//! The CronJob controller with the real kubectl. The Job controller is left out
//! (`--controllers=*,-job,-ttl-after-finished`): these tests look only at the Jobs the CronJob
//! controller creates and deletes, and finish Jobs themselves by writing their status.
//!
//! Only `cronjobs_fire_on_schedule_with_their_concurrency_policies` waits for minute boundaries
//! (two of them); the other tests need none.

mod common;

use common::{eventually, free_port, stderr, Kplane};
use serde_json::{json, Value};

fn start(dir: &std::path::Path) -> Kplane {
    Kplane::start_with(dir, free_port(), &["--controllers=*,-job,-ttl-after-finished"])
}

fn apply(kp: &Kplane, yaml: &str) {
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn get(kp: &Kplane, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", "json"]);
    serde_json::from_str(&kp.kubectl_ok(&args)).unwrap()
}

/// The Jobs whose controller is CronJob `cj`, by name.
fn jobs_of(kp: &Kplane, cj: &str) -> Vec<Value> {
    let list = get(kp, &["jobs"]);
    let mut v: Vec<Value> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["metadata"]["ownerReferences"].as_array().is_some_and(|refs| {
                refs.iter().any(|r| r["kind"] == "CronJob" && r["name"] == cj && r["controller"] == true)
            })
        })
        .cloned()
        .collect();
    v.sort_by_key(|j| j["metadata"]["name"].as_str().unwrap_or_default().to_string());
    v
}

fn names(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|j| j["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

/// Reasons of the events about object `name`.
fn event_reasons(kp: &Kplane, name: &str) -> Vec<String> {
    let sel = format!("involvedObject.name={name}");
    let list = get(kp, &["events", "--field-selector", &sel]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Finishes Job `name` as the Job controller would: `Complete` or `Failed`, with its start time.
fn finish(kp: &Kplane, name: &str, cond: &str, start: &str) {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut status = json!({"startTime": start, "conditions": [
        {"type": cond, "status": "True", "lastProbeTime": now, "lastTransitionTime": now}]});
    if cond == "Complete" {
        status["completionTime"] = json!(now);
        status["succeeded"] = json!(1);
    } else {
        status["failed"] = json!(1);
    }
    let patch = json!({ "status": status }).to_string();
    kp.kubectl_ok(&["patch", "job", name, "--subresource=status", "--type=merge", "-p", &patch]);
}

fn minutes_of(job_name: &str) -> i64 {
    job_name.rsplit('-').next().unwrap().parse().unwrap()
}

fn cronjob_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: {name}}}\nspec:\n  schedule: '* * * * *'\n{extra_spec}  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n          - {{name: c, image: busybox, command: [sh, -c, 'echo hi']}}\n"
    )
}

#[test]
fn cronjobs_fire_on_schedule_with_their_concurrency_policies() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());
    // All five are created within one minute, so they share their first schedule time.
    while jiff::Timestamp::now().as_second() % 60 > 45 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    kp.kubectl_ok(&[
        "create",
        "cronjob",
        "x",
        "--image=busybox",
        "--schedule=* * * * *",
        "--",
        "sh",
        "-c",
        "echo hi",
    ]);
    apply(&kp, &cronjob_yaml("forbid", "  concurrencyPolicy: Forbid\n"));
    apply(&kp, &cronjob_yaml("replace", "  concurrencyPolicy: Replace\n"));
    apply(&kp, &cronjob_yaml("tokyo", "  timeZone: Asia/Tokyo\n"));
    apply(&kp, &cronjob_yaml("paused", "  suspend: true\n"));

    // First minute boundary: each running CronJob creates its Job.
    let first = eventually(75, "x's first Job", || jobs_of(&kp, "x").into_iter().next());
    let name = first["metadata"]["name"].as_str().unwrap().to_string();
    let minutes = minutes_of(&name);
    let scheduled = jiff::Timestamp::from_second(minutes * 60).unwrap();
    assert_eq!(
        first["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    let owner = &first["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("CronJob"), Some("x")));
    assert_eq!(
        (owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(first["spec"]["template"]["spec"]["containers"][0]["command"], json!(["sh", "-c", "echo hi"]));
    let x = eventually(10, "x's status", || {
        let x = get(&kp, &["cronjob", "x"]);
        (x["status"]["active"][0]["name"] == name.as_str()).then_some(x)
    });
    assert_eq!(x["status"]["active"][0]["kind"], "Job");
    assert_eq!(x["status"]["lastScheduleTime"], scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    eventually(10, "SuccessfulCreate event", || {
        event_reasons(&kp, "x").contains(&"SuccessfulCreate".to_string()).then_some(())
    });
    // The same minute, in Tokyo's zone.
    let tokyo = eventually(10, "tokyo's Job", || jobs_of(&kp, "tokyo").into_iter().next());
    assert_eq!(tokyo["metadata"]["name"], format!("tokyo-{minutes}"));
    let local = scheduled.to_zoned(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap());
    assert_eq!(
        tokyo["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        local.strftime("%Y-%m-%dT%H:%M:%S+09:00").to_string()
    );
    let forbid_first = eventually(10, "forbid's Job", || jobs_of(&kp, "forbid").into_iter().next());
    let replace_first = eventually(10, "replace's Job", || jobs_of(&kp, "replace").into_iter().next());

    // kubectl create job --from: kubectl's Job, owned by the CronJob, never made active by it.
    kp.kubectl_ok(&["create", "job", "y", "--from=cronjob/x"]);
    let y = get(&kp, &["job", "y"]);
    assert_eq!(y["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");
    assert_eq!(y["metadata"]["ownerReferences"][0]["name"], "x");

    // The controller finishes x's first Job: it leaves active, lastSuccessfulTime is set.
    finish(&kp, &name, "Complete", &scheduled.to_string());
    let x = eventually(15, "x saw its Job complete", || {
        let x = get(&kp, &["cronjob", "x"]);
        x["status"]["lastSuccessfulTime"].is_string().then_some(x)
    });
    assert!(x["status"]["active"].as_array().is_none_or(|a| a.is_empty()), "{x}");
    let reasons = event_reasons(&kp, "x");
    assert!(reasons.contains(&"SawCompletedJob".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"UnexpectedJob".to_string()), "y is reported: {reasons:?}");

    // Second minute boundary: x (Allow) starts another, Forbid does not, Replace swaps its Job.
    let second = eventually(75, "x's second Job", || {
        jobs_of(&kp, "x")
            .into_iter()
            .find(|j| j["metadata"]["name"].as_str().is_some_and(|n| n != name && n != "y"))
    });
    let m2 = minutes_of(second["metadata"]["name"].as_str().unwrap());
    assert!(m2 > minutes);
    let replace_second = format!("replace-{m2}");
    eventually(15, "replace's Job replaced", || {
        let n = names(&jobs_of(&kp, "replace"));
        (n == [replace_second.clone()]).then_some(())
    });
    let r = get(&kp, &["cronjob", "replace"]);
    assert_eq!(r["status"]["active"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["status"]["active"][0]["name"], replace_second.as_str());
    assert_ne!(replace_first["metadata"]["name"], replace_second.as_str());
    eventually(10, "JobAlreadyActive", || {
        event_reasons(&kp, "forbid").contains(&"JobAlreadyActive".to_string()).then_some(())
    });
    assert_eq!(names(&jobs_of(&kp, "forbid")), names(&[forbid_first]), "Forbid started nothing new");
    assert!(event_reasons(&kp, "replace").contains(&"SuccessfulDelete".to_string()));
    // Suspended: never fired. y, unfinished, is still there and not in x's active list.
    assert!(jobs_of(&kp, "paused").is_empty());
    let x = get(&kp, &["cronjob", "x"]);
    let active: Vec<&str> =
        x["status"]["active"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(!active.contains(&"y"), "{active:?}");
    assert!(names(&jobs_of(&kp, "x")).contains(&"y".to_string()));
}

#[test]
fn history_limits_missed_schedules_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    let kp = start(dir.path());

    // History: finished Jobs beyond the limits go, oldest start first.
    apply(
        &kp,
        &cronjob_yaml(
            "hist",
            "  suspend: true\n  successfulJobsHistoryLimit: 1\n  failedJobsHistoryLimit: 1\n",
        ),
    );
    for (i, (job, cond)) in
        [("h1", "Complete"), ("h2", "Complete"), ("h3", "Complete"), ("f1", "Failed"), ("f2", "Failed")]
            .iter()
            .enumerate()
    {
        kp.kubectl_ok(&["create", "job", job, "--from=cronjob/hist"]);
        finish(&kp, job, cond, &format!("2026-01-01T00:0{i}:00Z"));
    }
    eventually(20, "history trimmed", || {
        let left = names(&jobs_of(&kp, "hist"));
        (left == ["f2", "h3"]).then_some(())
    });
    assert!(event_reasons(&kp, "hist").contains(&"SuccessfulDelete".to_string()));

    // Missed schedules: lastScheduleTime three hours back (180 missed) → one Job, for the most
    // recent minute, and a TooManyMissedTimes warning.
    apply(&kp, &cronjob_yaml("late", "  suspend: true\n"));
    let long_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3))
        .strftime("%Y-%m-%dT%H:%M:00Z")
        .to_string();
    let patch = json!({"status": {"lastScheduleTime": long_ago}}).to_string();
    kp.kubectl_ok(&["patch", "cronjob", "late", "--subresource=status", "--type=merge", "-p", &patch]);
    let before = jiff::Timestamp::now().as_second() / 60;
    kp.kubectl_ok(&["patch", "cronjob", "late", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    let late = eventually(15, "late's Job", || jobs_of(&kp, "late").into_iter().next());
    let after = jiff::Timestamp::now().as_second() / 60;
    let m = minutes_of(late["metadata"]["name"].as_str().unwrap());
    assert!((before..=after).contains(&m), "{m} not in {before}..={after}");
    eventually(10, "TooManyMissedTimes", || {
        event_reasons(&kp, "late").contains(&"TooManyMissedTimes".to_string()).then_some(())
    });
    assert_eq!(jobs_of(&kp, "late").len(), 1, "only the most recent missed time runs");

    // The API refuses what upstream's validation refuses (422, upstream's messages).
    let out = kp.kubectl(&["create", "cronjob", "bad", "--image=busybox", "--schedule=61 * * * *"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("end of range (61) above maximum (59): 61"), "{}", stderr(&out));
    let out = kp.kubectl(&["create", "cronjob", "bad", "--image=busybox", "--schedule=TZ=UTC * * * * *"]);
    assert!(
        stderr(&out).contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"),
        "{}",
        stderr(&out)
    );
    let out = kp.kubectl_stdin(&["apply", "-f", "-"], &cronjob_yaml("bad", "  timeZone: Mars/Olympus_Mons\n"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown time zone Mars/Olympus_Mons"), "{}", stderr(&out));
    assert!(stderr(&out).contains("is invalid"), "{}", stderr(&out));
    let out = kp.kubectl(&["get", "cronjob", "bad"]);
    assert!(!out.status.success(), "nothing was written");
}
