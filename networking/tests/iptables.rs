//! The service proxy in iptables mode, as root, against an in-process API server with TCP
//! backends as pods: the kernel's NAT carries the ClusterIP traffic (no userspace listener), rules
//! follow a scale to zero (REJECT) and back, and nothing of kplane's is left after a stop or after
//! a killed proxy is replaced; a start is refused while another live kplane owns the chains, and
//! a dead owner's chains are removed. Only loopback addresses are programmed: VIP 127.96.7.20,
//! pods 127.244.70.x. A guard removes kplane's chains even when an assertion fails; the tests of
//! this file take turns (the chains are the machine's).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use kube::api::{Api, DeleteParams};
use networking::proxy::iptables::{cleanup, preflight, run_iptables_proxy};
use networking::proxy::ProxyConfig;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// The tests of this file share the machine's chains: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Removes kplane's chains on drop (a failing test included).
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(cleanup())
        })
        .join();
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        resync: Duration::from_millis(500),
        // The bootstrap services every test cluster has.
        exclude: vec![sa("127.96.0.1", 443), sa("127.96.0.10", 53)],
        ..ProxyConfig::default()
    }
}

fn save(table: &str) -> String {
    let out = std::process::Command::new("iptables-save").args(["-t", table]).output().expect("iptables-save");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// kplane's lines in both tables: its chains, rules in them, and jumps into them.
fn kplane_lines() -> Vec<String> {
    let mut all = save("nat");
    all.push_str(&save("filter"));
    all.lines()
        .filter(|l| l.contains("KUBE-") || l.contains("KPLANE") || l.contains("kplane"))
        .map(str::to_string)
        .collect()
}

async fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test]
async fn cluster_ip_through_kernel_nat_follows_scaling_and_cleans_up() {
    let _serial = SERIAL.lock().await;
    preflight().await.expect("these tests run as root with iptables installed");
    let _guard = Cleanup;
    cleanup().await.unwrap();
    assert!(kplane_lines().is_empty(), "{:?}", kplane_lines());
    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let _a = id_backend(sa("127.244.70.1", 9000), "a").await;
    let _b = id_backend(sa("127.244.70.2", 9000), "b").await;
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"clusterIP": "127.96.7.20", "ports": [{"name": "http", "port": 8080, "targetPort": 9000}]}}),
    )
    .await;
    let both = [ep("127.244.70.1"), ep("127.244.70.2")];
    set_slice(c, "default", "web", &both, &[("http", 9000, "TCP")]).await;
    create_service(
        c,
        "default",
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sticky"},
               "spec": {"clusterIP": "127.96.7.21", "sessionAffinity": "ClientIP",
                        "ports": [{"name": "http", "port": 8080, "targetPort": 9000}]}}),
    )
    .await;
    set_slice(c, "default", "sticky", &both, &[("http", 9000, "TCP")]).await;
    let client = c.clone();
    let proxy = spawn_component(move |sd| run_iptables_proxy(client, config(), Duration::from_millis(100), sd));

    // Served by the kernel: both pods answer, in random order.
    let vip = sa("127.96.7.20", 8080);
    eventually(Duration::from_secs(5), "the first answer through the DNAT", || read_id(vip)).await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        seen.extend(read_id(vip).await);
    }
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]), "random balancing reaches both pods");
    // ClientIP affinity: every connection from this client reaches the pod of its first.
    let sticky = sa("127.96.7.21", 8080);
    let first = eventually(Duration::from_secs(5), "the sticky service", || read_id(sticky)).await;
    for _ in 0..20 {
        assert_eq!(read_id(sticky).await.as_deref(), Some(first.as_str()), "ClientIP affinity");
    }
    // The marker rule names this process as the owner.
    let owner = format!(
        "-A KPLANE-PROXY -m comment --comment \"kplane service proxy, pid {}\" -j RETURN",
        std::process::id()
    );
    assert!(save("nat").contains(&owner), "{}", save("nat"));
    // No userspace listener holds the VIP: we can bind it ourselves.
    drop(TcpListener::bind(vip).await.expect("the VIP:port is free: no userspace listener"));
    let nat = save("nat");
    for want in [
        "-A OUTPUT -d 127.0.0.0/8 -m comment --comment \"kplane service portals\" -j KUBE-SERVICES",
        "-A PREROUTING -d 127.0.0.0/8 -m comment --comment \"kplane service portals\" -j KUBE-SERVICES",
        "--comment \"default/web:http cluster IP\"",
        "-m statistic --mode random --probability 0.5",
        "-j DNAT --to-destination 127.244.70.1:9000",
        "-j DNAT --to-destination 127.244.70.2:9000",
        ":KUBE-MARK-MASQ",
        ":KUBE-NODEPORTS",
    ] {
        assert!(nat.contains(want), "{want} missing from\n{nat}");
    }

    // Scaled to zero: REJECT (connection refused at once), no DNAT left.
    set_slice(c, "default", "web", &[], &[("http", 9000, "TCP")]).await;
    // (Each table commits on its own: wait for the filter table's REJECT.)
    eventually(Duration::from_secs(5), "the REJECT rule", || async {
        save("filter").contains("\"default/web:http has no endpoints\"").then_some(())
    })
    .await;
    assert!(refused(vip).await, "the VIP refuses at once");
    let web_dnat = |l: &&str| l.contains("\"default/web:http\"") && l.contains("-j DNAT");
    assert!(!save("nat").lines().any(|l| web_dnat(&l)), "{}", save("nat"));
    // And back.
    set_slice(c, "default", "web", &both[..1], &[("http", 9000, "TCP")]).await;
    let id = eventually(Duration::from_secs(5), "served again", || read_id(vip)).await;
    assert_eq!(id, "a");
    eventually(Duration::from_secs(5), "the REJECT rule gone", || async {
        (!save("filter").contains("has no endpoints")).then_some(())
    })
    .await;

    // A stop removes everything of kplane's, and nothing else.
    let others_before: Vec<String> = save("nat")
        .lines()
        .filter(|l| l.starts_with("-A") && !l.contains("KUBE-") && !l.contains("kplane"))
        .map(str::to_string)
        .collect();
    proxy.stop().await;
    assert!(kplane_lines().is_empty(), "left after stop: {:?}", kplane_lines());
    let others_after: Vec<String> =
        save("nat").lines().filter(|l| l.starts_with("-A")).map(str::to_string).collect();
    assert_eq!(others_before, others_after, "rules kplane did not create are untouched");

    // A killed proxy (no cleanup) leaves its chains; the next one removes the stale ones and
    // programs the current state.
    let client = c.clone();
    let killed =
        tokio::spawn(run_iptables_proxy(client, config(), Duration::from_millis(100), std::future::pending()));
    eventually(Duration::from_secs(5), "served by the first proxy", || read_id(vip)).await;
    killed.abort();
    let _ = killed.await;
    let stale: Vec<String> = kplane_lines().into_iter().filter(|l| l.starts_with(":KUBE-SVC-")).collect();
    assert_eq!(stale.len(), 2, "web's and sticky's: {:?}", kplane_lines());
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.clone(), "default");
    services.delete("web", &DeleteParams::default()).await.unwrap();
    services.delete("sticky", &DeleteParams::default()).await.unwrap();
    let client = c.clone();
    let proxy = spawn_component(move |sd| run_iptables_proxy(client, config(), Duration::from_millis(100), sd));
    eventually(Duration::from_secs(5), "the stale service chains removed", || async {
        let nat = save("nat");
        (nat.contains(":KUBE-SERVICES") && !stale.iter().any(|c| nat.contains(c.as_str()))).then_some(())
    })
    .await;
    assert!(refused(vip).await || read_id(vip).await.is_none(), "the deleted service is not served");
    proxy.stop().await;
    assert!(kplane_lines().is_empty(), "left after the restart's stop: {:?}", kplane_lines());
    cluster.shutdown().await;
}

/// The owner check: chains whose marker names a live kplane (here a copy of `sleep` named
/// `kplane`, so that its command name is) make the start fail naming its pid, and stay as they
/// were; once that process is killed (-9), the next start removes its chains and owns the rest.
#[tokio::test]
async fn a_live_owner_refuses_the_start_and_a_dead_owners_chains_are_removed() {
    let _serial = SERIAL.lock().await;
    preflight().await.expect("these tests run as root with iptables installed");
    let _guard = Cleanup;
    cleanup().await.unwrap();
    let dir = std::env::temp_dir().join(format!("kplane-owner-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("kplane");
    std::fs::copy("/bin/sleep", &fake).unwrap();
    let mut owner = std::process::Command::new(&fake).arg("120").spawn().unwrap();
    let pid = owner.id();
    // Its rules as its start and syncs left them: the marker rule with its pid, a service chain,
    // and (an older kplane's) filter jump taken by every packet, not only a connection's first.
    let stale = "KUBE-SVC-OWNEDBYANOTHER0";
    let old_jump = "-A OUTPUT -d 127.0.0.0/8 -m comment --comment \"kplane service portals\" -j KUBE-SERVICES";
    let input = format!(
        "*nat\n:KPLANE-PROXY - [0:0]\n:KUBE-SERVICES - [0:0]\n:{stale} - [0:0]\n\
         -A KPLANE-PROXY -m comment --comment \"kplane service proxy, pid {pid}\" -j RETURN\nCOMMIT\n\
         *filter\n:KUBE-SERVICES - [0:0]\n{old_jump}\nCOMMIT\n"
    );
    let mut restore = std::process::Command::new("iptables-restore")
        .args(["-w", "5", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut restore.stdin.take().unwrap(), input.as_bytes()).unwrap();
    assert!(restore.wait().unwrap().success());
    let before = kplane_lines();

    let cluster = TestCluster::start().await;
    let c = &cluster.client;
    let err = preflight().await.unwrap_err().to_string();
    assert!(err.contains(&format!("belongs to a running kplane (pid {pid}); stop it first")), "{err}");
    assert!(err.contains("--proxy-mode iptables") && err.contains("--proxy-mode userspace"), "{err}");
    let run = run_iptables_proxy(c.clone(), config(), Duration::from_millis(100), std::future::pending());
    let err = tokio::time::timeout(Duration::from_secs(10), run).await.expect("fails at once").unwrap_err();
    assert!(err.to_string().contains(&format!("(pid {pid})")), "{err}");
    assert_eq!(kplane_lines(), before, "the refused start touched nothing");

    owner.kill().unwrap();
    owner.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let client = c.clone();
    let proxy = spawn_component(move |sd| run_iptables_proxy(client, config(), Duration::from_millis(100), sd));
    let mine = format!("\"kplane service proxy, pid {}\"", std::process::id());
    eventually(Duration::from_secs(5), "the dead owner's chains replaced by ours", || async {
        let nat = save("nat");
        (nat.contains(&mine) && nat.contains(":KUBE-SERVICES") && !nat.contains(stale)).then_some(())
    })
    .await;
    assert!(!save("nat").contains(&format!("pid {pid}\"")), "{}", save("nat"));
    // The filter jump is upstream's: new connections only.
    eventually(Duration::from_secs(5), "the filter jump for new connections", || async {
        save("filter").contains("-A OUTPUT -d 127.0.0.0/8 -m conntrack --ctstate NEW -m comment --comment \"kplane service portals\" -j KUBE-SERVICES").then_some(())
    })
    .await;
    assert!(!save("filter").contains(old_jump), "the old jump is gone: {}", save("filter"));
    proxy.stop().await;
    assert!(kplane_lines().is_empty(), "left after stop: {:?}", kplane_lines());
    cluster.shutdown().await;
}
