//! A real `etcd` process on loopback ports in a temporary directory: what the tests and `kplane bench
//! store` measure and test against. It is not used by the running control plane.

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
}

impl EtcdProcess {
    /// Starts etcd from PATH on two free loopback ports and waits until it is healthy. Fails with
    /// [`ETCD_MISSING`] when there is no etcd binary.
    pub async fn start() -> io::Result<EtcdProcess> {
        let binary =
            find_program("etcd", &[]).ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, ETCD_MISSING))?;
        let dir = tempfile::Builder::new().prefix("kplane-etcd-").tempdir()?;
        // Both listeners are held until both ports are known, so the two ports differ.
        let client = TcpListener::bind("127.0.0.1:0")?;
        let peer = TcpListener::bind("127.0.0.1:0")?;
        let client_port = client.local_addr()?.port();
        let peer_port = peer.local_addr()?.port();
        drop((client, peer));
        let mut etcd = EtcdProcess { binary, child: None, dir, client_port, peer_port };
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
            .arg("--name=default")
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
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
