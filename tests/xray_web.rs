//! The X-ray page of `kplane up` in a real headless Chromium (Debian's `chromium`), driven over
//! the DevTools protocol on a pipe: the seed's scenario (deployment, NodePort service, RC default
//! backend, foobar.com ingress) shows up, a scale-up streams in, clicking an object shows its
//! stored JSON with its etcd key and revision, a route click answers, and a synthetic 1,000-pod
//! topology renders folded and fast. Screenshots go to `target/xray-artifacts/`. A missing
//! chromium fails the test; it is never skipped.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{eventually, free_port, Kplane};
use serde_json::{json, Value};

/// A headless Chromium controlled over `--remote-debugging-pipe` (DevTools protocol messages,
/// NUL-terminated JSON, on its fds 3 and 4, which `sh` wires to our pipes). Killed on drop.
struct Browser {
    child: Child,
    input: ChildStdin,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null"#)
            .arg("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1400,1100",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh");
        let input = child.stdin.take().unwrap();
        let mut output = child.stdout.take().unwrap();
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 65536];
            while let Ok(n) = output.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser { child, input, messages, next_id: 0, session: String::new(), _profile: profile };
        let targets = b.call(None, "Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("no page target in {targets}"))["targetId"]
            .clone();
        let attached = b.call(None, "Target.attachToTarget", json!({"targetId": page, "flatten": true}));
        b.session = attached["sessionId"].as_str().expect("sessionId").to_string();
        b
    }

    /// One DevTools call; its result (panics on an error answer or after 30 s).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        if let Err(e) = self.input.write_all(&bytes) {
            panic!(
                "chromium could not run ({e}): install Debian's chromium (apt-get install chromium); \
                 this test must not be skipped"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let reply = self.messages.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no answer from chromium to {method}: is Debian's chromium installed \
                     (apt-get install chromium)? This test must not be skipped"
                )
            });
            if reply["id"] == id {
                if let Some(err) = reply.get("error") {
                    panic!("{method}: {err}");
                }
                return reply["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page; its value (null while the page is not there yet).
    fn eval(&mut self, js: &str) -> Value {
        let session = self.session.clone();
        let r = self.call(Some(&session), "Runtime.evaluate", json!({"expression": js, "returnByValue": true}));
        r["result"]["value"].clone()
    }

    fn text(&mut self, selector: &str) -> String {
        let js = format!("(document.querySelector({selector:?}) || {{}}).innerText || ''");
        self.eval(&js).as_str().unwrap_or_default().to_string()
    }

    /// Waits until the element's text contains every one of `wanted`.
    fn wait_text(&mut self, selector: &str, wanted: &[&str], what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = self.text(selector);
            if wanted.iter().all(|w| text.contains(w)) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what}: {wanted:?} not all in {selector}: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, name: &str) -> PathBuf {
        let session = self.session.clone();
        let shot = self.call(Some(&session), "Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let dir = artifacts();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/xray-artifacts/`.
fn artifacts() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(|t| t.join("xray-artifacts")).unwrap_or_else(|| tmp.join("xray-artifacts"))
}

/// GET on the X-ray server (plain HTTP/1.1 over loopback): status and body.
fn get(base: &str, path: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn pod_names(kp: &Kplane, selector: &str) -> Vec<String> {
    let out = kp.kubectl_ok(&["get", "pods", "-l", selector, "-o", "jsonpath={.items[*].metadata.name}"]);
    out.split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_seeds_topology_streams_into_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let kp = Kplane::start_with(dir.path(), free_port(), &[]);
    let xray = kp.xray.clone().unwrap_or_else(|| panic!("no X-ray line in {:?}", kp.stdout_lines));
    assert!(xray.starts_with("http://127.0.0.1:") && xray.ends_with("/xray"), "{xray}");

    // The seed's scenario.
    kp.seed_nginx();
    kp.seed_default_backend();
    assert!(kp.kubectl_stdin(&["create", "-f", "-"], common::SEED_INGRESS).status.success());
    let nginx = pod_names(&kp, "app=nginx");
    assert_eq!(nginx.len(), 2);
    let backend = pod_names(&kp, "app=default-http-backend");
    assert_eq!(backend.len(), 1);

    // The server's view first: every object summarised, both nginx pods behind nginx-svc.
    eventually(30, "the X-ray topology to hold the seed's objects", || {
        let (code, body) = get(&xray, "/xray/api/topology");
        assert_eq!(code, 200, "{body}");
        let ready = nginx.iter().chain(&backend).all(|p| body.contains(&format!("\"pod\":\"{p}\"")));
        (ready && body.contains("my-nginx-ingress") && body.contains("\"ready\":true")).then_some(())
    });
    // The raw value of an object comes from the store, under its key; never a secret.
    let (code, body) = get(&xray, "/xray/api/object?kind=services&namespace=default&name=nginx-svc");
    assert_eq!(code, 200, "{body}");
    let stored: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stored["key"], "/registry/services/specs/default/nginx-svc");
    let (code, body) = get(&xray, "/xray/api/object?kind=secrets&namespace=kube-system&name=x");
    assert_eq!(code, 400, "{body}");

    let mut browser = Browser::open(&xray);
    let mut want: Vec<&str> =
        vec!["nginx-svc", "default/my-nginx-ingress", "foobar.com/", "default-http-backend"];
    want.extend(nginx.iter().map(String::as_str));
    want.extend(backend.iter().map(String::as_str));
    want.extend(["worker0", "worker1", "worker2"]);
    let page = browser.wait_text("main", &want, "the seed's objects in the page");
    assert!(page.contains("NodePort"), "{page}");
    browser.wait_text("#status", &["live"], "the event stream connected");

    // Show nginx-svc's EndpointSlice in the side panel; it is re-read when the slice changes.
    let slice = browser.eval(r#"(() => { const a = [...document.querySelectorAll('a.obj[data-kind="endpointslices"]')].find(a => a.dataset.name.startsWith('nginx-svc-')); if (a) a.click(); return a ? a.dataset.name : null; })()"#);
    let slice = slice.as_str().unwrap_or_else(|| panic!("no nginx-svc slice link")).to_string();
    browser.wait_text(
        "#detail",
        &[&format!("/registry/endpointslices/default/{slice}")],
        "the slice's stored JSON",
    );

    // A change streams in: a third replica appears without a reload.
    kp.kubectl_ok(&["scale", "deployment", "nginx", "--replicas=3"]);
    let third = eventually(60, "a third nginx pod", || {
        let pods = pod_names(&kp, "app=nginx");
        (pods.len() == 3).then(|| pods.into_iter().find(|p| !nginx.contains(p)).unwrap())
    });
    browser.wait_text("#services", &[third.as_str()], "the scaled-up pod streamed into the page");
    browser.wait_text("#detail", &[third.as_str()], "the open slice re-read with the new endpoint");
    browser.wait_text("#counts", &["3 nodes"], "the header counts");

    // Click an object: its stored JSON, etcd key and revision.
    let clicked = browser.eval(r#"(() => { const a = document.querySelector('a.obj[data-kind="services"][data-name="nginx-svc"]'); if (a) a.click(); return !!a; })()"#);
    assert_eq!(clicked, Value::Bool(true));
    let rev = stored["mod_revision"].to_string();
    let detail = browser.wait_text(
        "#detail",
        &["/registry/services/specs/default/nginx-svc", "mod_revision", &rev, "\"kind\": \"Service\""],
        "the clicked service's stored JSON",
    );
    assert!(detail.contains("\"nodePort\""), "{detail}");
    browser.screenshot("xray-seed.png");

    // Click a pod in the slice, then a route: each answers in the side panel.
    let pod = &nginx[0];
    browser.eval(&format!(r#"document.querySelector('a.obj[data-kind="pods"][data-name="{pod}"]').click()"#));
    browser.wait_text("#detail", &[&format!("/registry/pods/default/{pod}"), "\"podIP\""], "the clicked pod");
    let routed = browser.eval(r#"(() => { const a = [...document.querySelectorAll('a.route')].find(a => a.textContent.includes('foobar.com')); if (a) a.click(); return !!a; })()"#);
    assert_eq!(routed, Value::Bool(true));
    browser.wait_text("#detail", &["Route foobar.com/"], "the route panel");
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser.text("#detail").contains("tracing and probing") {
        assert!(Instant::now() < deadline, "the route never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The panel holds the real trace and probe: the rule, the service, the pods, who answered.
    let traced = browser.text("#detail");
    for want in
        ["rule: foobar.com / (Prefix)", "nginx-svc", "/registry/pods/default/", "probe:", "answered by pod"]
    {
        assert!(traced.contains(want), "{want} missing from the route panel: {traced}");
    }
    browser.screenshot("xray-route.png");

    // The namespace filter narrows the topology (nodes stay).
    browser.eval("(() => { const s = document.getElementById('ns'); s.value = 'kube-system'; s.dispatchEvent(new Event('change')); })()");
    let services = browser.wait_text("#services", &["kube-system/kube-dns"], "the kube-system filter");
    assert!(!services.contains("nginx-svc"), "{services}");
    browser.wait_text("#nodes", &["worker0"], "nodes under a namespace filter");
    browser.eval("(() => { const s = document.getElementById('ns'); s.value = ''; s.dispatchEvent(new Event('change')); })()");
    browser.wait_text("#services", &["nginx-svc"], "all namespaces again");

    // 1,000 pods behind one service on three nodes: the page folds them and renders quickly.
    let report = browser.eval(
        r#"(() => {
        const objects = [...state.objects.values()].filter(o => o.kind !== 'pods' && o.kind !== 'endpointslices');
        const svc = { id: 'services/big/web', kind: 'services', namespace: 'big', name: 'web', type: 'ClusterIP',
          clusterIP: '127.96.9.9', selector: { app: 'web' }, ports: [{ name: null, port: 80, protocol: 'TCP', targetPort: '8080' }] };
        objects.push(svc);
        for (let s = 0; s < 10; s++) {
          const endpoints = [];
          for (let i = 0; i < 100; i++) {
            const n = s * 100 + i, name = 'web-' + n;
            const node = 'worker' + (n % 3);
            objects.push({ id: 'pods/big/' + name, kind: 'pods', namespace: 'big', name, ip: '127.244.' + (n >> 8) + '.' + (n & 255),
              node, phase: 'Running', ready: n % 7 !== 0 });
            endpoints.push({ ip: '127.244.' + (n >> 8) + '.' + (n & 255), ready: n % 7 !== 0, pod: name, node });
          }
          objects.push({ id: 'endpointslices/big/web-' + s, kind: 'endpointslices', namespace: 'big', name: 'web-' + s,
            service: 'web', addressType: 'IPv4', ports: [{ name: '', port: 8080, protocol: 'TCP' }], endpoints });
        }
        const t0 = performance.now();
        applySnapshot({ seq: 1e9, objects });
        render();
        const ms = performance.now() - t0;
        return { ms, rows: document.querySelectorAll('table.pods tr').length, pips: document.querySelectorAll('#services .pip').length,
                 nodes: document.querySelectorAll('*').length,
                 counts: document.getElementById('counts').textContent };
    })()"#,
    );
    eprintln!("1,000 pods: {report}");
    assert!(report["counts"].as_str().unwrap_or_default().contains("1000 pods"), "{report}");
    assert!(report["rows"].as_u64().unwrap() <= 20, "big slices fold into one line of dots: {report}");
    assert_eq!(report["pips"].as_u64().unwrap(), 1000, "a dot per endpoint: {report}");
    assert!(report["nodes"].as_u64().unwrap() < 5000, "a small DOM: {report}");
    assert!(report["ms"].as_f64().unwrap() < 2000.0, "rendering 1,000 pods took too long: {report}");
    browser.eval("window.scrollTo(0, 0)");
    browser.screenshot("xray-1000-pods.png");
    let _ = browser.call(None, "Browser.close", json!({}));

    // The page's server refuses other host names (DNS rebinding) and other sites' API calls.
    let addr = xray.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(s, "GET /xray HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
}

#[test]
fn xray_address_must_be_loopback_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kplane"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--xray-address", "0.0.0.0:6444"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let kp = Kplane::start_with(dir.path(), free_port(), &["--no-xray", "--nodes", "0", "--no-networking"]);
    assert!(kp.xray.is_none(), "{:?}", kp.stdout_lines);
}
