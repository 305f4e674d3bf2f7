//! A real `etcd` process on loopback ports in a temporary directory: what the tests and `kplane bench
//! store` measure and test against; and [`EtcdCluster`], several such members forming one etcd
//! cluster (the HA tests and `kplane bench faults`). Neither is used by the running control plane.

use std::fs::File;
use std::io::{self, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a test against real etcd cannot run. Tests must fail with it, never skip.
pub const ETCD_MISSING: &str =
    "etcd binary not found on PATH: install etcd-server (tests against real etcd must not be skipped)";

/// How long a started etcd may take to answer its health check.
const ETCD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// A real `etcd` child process on loopback ports with its data in a temp dir, killed on drop.
pub struct EtcdProcess {
    binary: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    /// `--name`, and the `--initial-cluster` list of every member's name and peer URL.
    name: String,
    initial_cluster: String,
}

/// Two free loopback ports (both held until both are known, so they differ).
fn two_ports() -> io::Result<(u16, u16)> {
    let client = TcpListener::bind("127.0.0.1:0")?;
    let peer = TcpListener::bind("127.0.0.1:0")?;
    Ok((client.local_addr()?.port(), peer.local_addr()?.port()))
}

impl EtcdProcess {
    /// Starts etcd from PATH on two free loopback ports and waits until it is healthy. Fails with
    /// [`ETCD_MISSING`] when there is no etcd binary.
    pub async fn start() -> io::Result<EtcdProcess> {
        let binary =
            find_program("etcd", &[]).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, ETCD_MISSING))?;
        let dir = tempfile::Builder::new().prefix("kplane-etcd-").tempdir()?;
        let (client_port, peer_port) = two_ports()?;
        let initial_cluster = format!("default=http://127.0.0.1:{peer_port}");
        let mut etcd = EtcdProcess {
            binary,
            child: None,
            dir,
            client_port,
            peer_port,
            name: "default".into(),
            initial_cluster,
        };
        etcd.spawn()?;
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    /// The client URL, e.g. `http://127.0.0.1:23790`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// etcd's combined stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Kills etcd with SIGKILL (no graceful shutdown) and waits for it to exit.
    pub fn kill9(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            // std's `Child::kill` sends SIGKILL on Unix.
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts etcd again on the same ports and data dir (after [`kill9`](Self::kill9)) and waits until
    /// it is healthy.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill9()?;
        self.spawn()?;
        self.wait_ready().await
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options().create(true).append(true).open(self.log_path())?;
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-token=kplane-test")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls etcd's `/health` (served on the client port next to gRPC) until it reports healthy, which
    /// also means it has a leader and serves requests.
    async fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + ETCD_START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "etcd exited during startup ({status}); log:\n{}",
                        self.log_tail()
                    )));
                }
            }
            if self.healthy().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("etcd not healthy after {ETCD_START_TIMEOUT:?}; log:\n{}", self.log_tail()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn healthy(&self) -> bool {
        let probe = async {
            let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port)).await.ok()?;
            conn.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .await
                .ok()?;
            let mut body = Vec::new();
            conn.read_to_end(&mut body).await.ok()?;
            Some(String::from_utf8_lossy(&body).contains("\"health\":\"true\""))
        };
        matches!(tokio::time::timeout(Duration::from_secs(2), probe).await, Ok(Some(true)))
    }

    /// The pid of the running etcd, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (it was not killed and has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(4000);
        // Back up to a char boundary so slicing cannot panic on multi-byte text.
        let start = (0..=start).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text[start..].to_string()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

/// A cluster of real etcd members on loopback ports, each with its own temp dir, started together
/// with a static `--initial-cluster`. Each member can be killed with SIGKILL and restarted on its
/// data. All members are killed on drop.
pub struct EtcdCluster {
    members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Starts `size` members (`m0`, `m1`, ...) and waits until every one is healthy, which means
    /// the cluster has elected a leader. Fails with [`ETCD_MISSING`] when there is no etcd binary.
    pub async fn start(size: usize) -> io::Result<EtcdCluster> {
        let binary =
            find_program("etcd", &[]).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, ETCD_MISSING))?;
        let mut ports = Vec::with_capacity(size);
        // All listeners held at once, so no two members get the same port.
        let mut held = Vec::new();
        for _ in 0..size {
            let client = TcpListener::bind("127.0.0.1:0")?;
            let peer = TcpListener::bind("127.0.0.1:0")?;
            ports.push((client.local_addr()?.port(), peer.local_addr()?.port()));
            held.push((client, peer));
        }
        drop(held);
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(size);
        for (i, (client_port, peer_port)) in ports.into_iter().enumerate() {
            let dir = tempfile::Builder::new().prefix(&format!("kplane-etcd-m{i}-")).tempdir()?;
            members.push(EtcdProcess {
                binary: binary.clone(),
                child: None,
                dir,
                client_port,
                peer_port,
                name: format!("m{i}"),
                initial_cluster: initial_cluster.clone(),
            });
        }
        // Every member must run before any can be healthy: health needs a quorum and a leader.
        for m in &mut members {
            m.spawn()?;
        }
        for m in &mut members {
            m.wait_ready().await?;
        }
        Ok(EtcdCluster { members })
    }

    /// The members' client URLs, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::endpoint).collect()
    }

    /// The member at `index`.
    pub fn member(&mut self, index: usize) -> &mut EtcdProcess {
        &mut self.members[index]
    }

    /// Kills member `index` with SIGKILL.
    pub fn kill9(&mut self, index: usize) -> io::Result<()> {
        self.members[index].kill9()
    }

    /// Starts member `index` again on its data dir and waits until it is healthy (rejoined, with a
    /// leader).
    pub async fn restart(&mut self, index: usize) -> io::Result<()> {
        self.members[index].restart().await
    }

    /// The index of the member that is the raft leader now, asked of the running members' status
    /// (etcd's Maintenance/Status). None while there is no leader.
    pub async fn leader(&mut self) -> Option<usize> {
        let mut ids = Vec::new();
        let mut leader = None;
        for m in self.members.iter_mut() {
            if !m.is_running() {
                ids.push(None);
                continue;
            }
            let status = async {
                let mut client = etcd_client::Client::connect([m.endpoint()], None).await.ok()?;
                client.status().await.ok()
            };
            let status = tokio::time::timeout(Duration::from_secs(2), status).await.ok().flatten();
            ids.push(status.as_ref().and_then(|s| s.header().map(|h| h.member_id())));
            if let Some(s) = status {
                if s.leader() != 0 {
                    leader = Some(s.leader());
                }
            }
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }
}

/// The program `name` in one of `$PATH`'s folders, else in one of `also` (folders a distribution
/// keeps off a user's PATH, such as Debian's /usr/sbin). Shared by the benchmarks and tests that
/// start other programs (etcd, nginx, versioned kubectls).
pub fn find_program(name: &str, also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(also.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
