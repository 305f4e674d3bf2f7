//! The simulated container runtime: a sandboxed, busybox-like shell that runs a container's
//! command with nothing pulled and no host process.
//!
//! - `parse.rs`: the shell grammar (a POSIX-sh subset) to an AST.
//! - `shell.rs`: the interpreter (variables, pipes, `&&`/`||`, loops, redirections, `$(…)`).
//! - `applets.rs`: the programs (`echo`, `cat`, `ls`, `sleep`, `test`, `grep`, `tar`, …).
//! - `net.rs`: `curl`, `wget`, `nslookup`: DNS through the cluster DNS with the pod's search path,
//!   connections only to cluster addresses, from the pod's IP.
//! - `vfs.rs`: the container's in-memory filesystem and its volume mounts.
//! - `io.rs`: streams and pipes.
//! - `container.rs`: a container's sandbox built from the pod spec (env, files, volumes).
//!
//! Invariant: nothing here starts a host program or opens a host file; sockets are opened only to
//! addresses [`net::NetPolicy`] admits.

pub mod applets;
pub mod container;
pub mod io;
pub mod net;
pub mod parse;
pub mod registry;
pub mod shell;
pub mod tar;
pub mod vfs;

use std::future::Future;
use std::sync::Mutex;

use tokio::task::JoinSet;

pub use shell::{Io, Shell};

/// What a container's processes share: its filesystem, hostname and network.
pub struct Sandbox {
    pub fs: vfs::Fs,
    pub hostname: String,
    pub net: net::NetPolicy,
    /// Background jobs (`cmd &`), killed with the container.
    jobs: Mutex<JoinSet<()>>,
}

impl Sandbox {
    pub fn new(fs: vfs::Fs, hostname: String, net: net::NetPolicy) -> Sandbox {
        Sandbox { fs, hostname, net, jobs: Mutex::new(JoinSet::new()) }
    }

    /// Runs a background job (on the current runtime).
    pub fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished ones, so the set stays small.
        while jobs.try_join_next().is_some() {}
        if jobs.len() < 64 {
            jobs.spawn(job);
        }
    }

    /// Waits for every background job.
    pub async fn wait_background(&self) {
        loop {
            let pending = {
                let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                while jobs.try_join_next().is_some() {}
                jobs.len()
            };
            if pending == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Kills every background job (the container stopped).
    pub fn kill_all(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use super::io::{Buffer, Input};
    use super::*;

    fn sandbox() -> Arc<Sandbox> {
        let fs = vfs::Fs::default();
        fs.mkdir("/etc", false).unwrap();
        fs.mkdir("/tmp", false).unwrap();
        fs.write("/etc/hostname", b"box\n", false).unwrap();
        fs.write(
            "/etc/resolv.conf",
            b"nameserver 127.96.0.10\nsearch default.svc.cluster.local\noptions ndots:5\n",
            false,
        )
        .unwrap();
        let net = net::NetPolicy {
            pod_ip: Ipv4Addr::new(127, 244, 0, 5),
            allowed: vec![(Ipv4Addr::new(127, 96, 0, 0), 12), (Ipv4Addr::new(127, 244, 0, 0), 16)],
            dns_port: 53,
        };
        Arc::new(Sandbox::new(fs, "box".into(), net))
    }

    async fn run_in(sb: &Arc<Sandbox>, argv: &[&str], stdin: &[u8]) -> (i32, String, String) {
        let out = Arc::new(Buffer::default());
        let err = Arc::new(Buffer::default());
        let io = Io { stdin: Input::bytes(stdin.to_vec()), stdout: out.clone(), stderr: err.clone() };
        let mut sh = Shell::new(sb.clone(), &[("GREETING".into(), "hello world".into())]);
        let code = sh.run_argv(argv.iter().map(|s| s.to_string()).collect(), io).await;
        (code, String::from_utf8_lossy(&out.take()).into(), String::from_utf8_lossy(&err.take()).into())
    }

    async fn sh(script: &str) -> (i32, String, String) {
        run_in(&sandbox(), &["sh", "-c", script], b"").await
    }

    #[tokio::test]
    async fn the_seed_command_and_exit_codes() {
        assert_eq!(sh("echo hi; exit 3").await, (3, "hi\n".into(), String::new()));
        assert_eq!(sh("false || echo no && echo yes").await.1, "no\nyes\n");
        assert_eq!(sh("true && false; echo $?").await.1, "1\n");
        assert_eq!(sh("exit 300").await.0, 44);
        assert_eq!(sh("! false").await.0, 0);
    }

    #[tokio::test]
    async fn unknown_programs_are_not_found() {
        let (code, _, err) = sh("nosuch --flag").await;
        assert_eq!((code, err.as_str()), (127, "sh: nosuch: not found\n"));
        let (code, _, err) = run_in(&sandbox(), &["/usr/bin/python3", "-c", "1"], b"").await;
        assert_eq!((code, err.as_str()), (127, "sh: /usr/bin/python3: not found\n"));
        assert_eq!(run_in(&sandbox(), &["/bin/echo", "x"], b"").await.1, "x\n");
    }

    #[tokio::test]
    async fn variables_quoting_and_splitting() {
        assert_eq!(
            sh("echo \"$GREETING\" '$GREETING' ${GREETING}!").await.1,
            "hello world $GREETING hello world!\n"
        );
        assert_eq!(sh("X=1; Y=\"$X 2\"; echo $Y; echo ${Z:-def} ${X:+set}").await.1, "1 2\ndef set\n");
        assert_eq!(sh("for w in $GREETING; do echo [$w]; done").await.1, "[hello]\n[world]\n");
        assert_eq!(sh("for w in \"$GREETING\"; do echo [$w]; done").await.1, "[hello world]\n");
        assert_eq!(sh("echo $(echo a b) \"$(hostname)\" `echo c`").await.1, "a b box c\n");
        assert_eq!(sh("i=0; while [ $i -lt 3 ]; do i=$((i + 1)); done; echo $i").await.1, "3\n");
        assert_eq!(sh("A=x env | grep ^A=").await.1, "A=x\n");
        assert_eq!(sh("export B=2; env | grep ^B=").await.1, "B=2\n");
        assert_eq!(sh("set -e; false; echo not reached").await, (1, String::new(), String::new()));
        assert_eq!(sh("if [ -f /etc/hostname ]; then echo y; else echo n; fi").await.1, "y\n");
        assert_eq!(sh("printf '%s=%d\\n' a 1 b 2").await.1, "a=1\nb=2\n");
        assert_eq!(sh("echo $((7 / 0))").await.0, 2);
    }

    #[tokio::test]
    async fn pipes_redirections_and_files() {
        assert_eq!(sh("echo a; echo b; echo ab | grep a | wc -l").await.1, "a\nb\n1\n");
        assert_eq!(sh("printf 'x\\ny\\nz\\n' | head -n 2 | tail -n 1").await.1, "y\n");
        let sb = sandbox();
        assert_eq!(
            run_in(&sb, &["sh", "-c", "echo one > /tmp/f; echo two >> /tmp/f; cat /tmp/f"], b"").await.1,
            "one\ntwo\n"
        );
        assert_eq!(
            run_in(&sb, &["cat", "/tmp/f"], b"").await.1,
            "one\ntwo\n",
            "the filesystem outlives a process"
        );
        let (code, _, err) = run_in(&sb, &["sh", "-c", "cat /nope"], b"").await;
        assert_eq!((code, err.as_str()), (1, "cat: can't open '/nope': No such file or directory\n"));
        assert_eq!(
            run_in(&sb, &["sh", "-c", "ls /nope 2>&1"], b"").await.1,
            "ls: /nope: No such file or directory\n"
        );
        assert_eq!(run_in(&sb, &["sh", "-c", "ls /nope 2>/dev/null; echo $?"], b"").await.1, "1\n");
        assert_eq!(
            run_in(&sb, &["sh", "-c", "mkdir -p /a/b && touch /a/b/c && ls /a/b && rm -r /a && ls /a"], b"")
                .await
                .1,
            "c\n"
        );
        assert_eq!(run_in(&sb, &["cat"], b"from stdin").await.1, "from stdin");
        assert_eq!(run_in(&sb, &["sh", "-c", "read x y; echo $y $x"], b"1 2\n").await.1, "2 1\n");
        assert_eq!(sh("yes | head -n 2").await.1, "y\ny\n", "a closed pipe ends the writer");
    }

    #[tokio::test]
    async fn an_interactive_shell_reads_stdin_until_exit() {
        let (code, out, _) =
            run_in(&sandbox(), &["sh"], b"echo one\nif true; then\necho two\nfi\nexit 4\necho never\n").await;
        assert_eq!((code, out.as_str()), (4, "one\ntwo\n"));
        assert_eq!(run_in(&sandbox(), &["sh"], b"").await.0, 0, "no stdin: sh exits at once");
        let (code, _, err) = sh("echo 'oops").await;
        assert_eq!(code, 2);
        assert!(err.starts_with("sh: syntax error"), "{err}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sleep_is_a_timer() {
        // On a one-thread runtime, sleeping processes must not block each other.
        let started = tokio::time::Instant::now();
        let (a, b) = tokio::join!(sh("sleep 0.3; sleep 0.2; echo done"), sh("sleep 0.5; echo too"));
        assert_eq!((a.1.as_str(), b.1.as_str()), ("done\n", "too\n"));
        assert!(started.elapsed() >= std::time::Duration::from_millis(500));
        assert!(started.elapsed() < std::time::Duration::from_millis(900));
        assert_eq!(sh("sleep x").await.0, 1);
        assert_eq!(sh("timeout 0.2 sleep 10").await.0, 124);
    }

    #[tokio::test]
    async fn tar_round_trips_a_tree() {
        let sb = sandbox();
        run_in(&sb, &["sh", "-c", "mkdir -p /data/sub && echo hi > /data/a && echo there > /data/sub/b"], b"")
            .await;
        let out = Arc::new(Buffer::default());
        let io = Io { stdin: Input::empty(), stdout: out.clone(), stderr: Arc::new(io::Null) };
        let mut shell = Shell::new(sb.clone(), &[]);
        assert_eq!(shell.run_argv(vec!["tar".into(), "cf".into(), "-".into(), "/data".into()], io).await, 0);
        let archive = out.take();
        assert_eq!(archive.len() % 512, 0);
        let other = sandbox();
        other.fs.mkdir("/restore", false).unwrap();
        let (code, _, err) = run_in(&other, &["tar", "xmf", "-", "-C", "/restore"], &archive).await;
        assert_eq!((code, err.as_str()), (0, ""));
        assert_eq!(other.fs.read("/restore/data/sub/b").unwrap().as_slice(), b"there\n");
        assert_eq!(
            run_in(&other, &["tar", "tf", "-"], &archive).await.1,
            "data/\ndata/a\ndata/sub/\ndata/sub/b\n"
        );
        let (code, _, err) = run_in(&other, &["tar", "xf", "-"], b"garbage that is not a tar archive").await;
        assert_eq!((code, err.as_str()), (1, "tar: short read\n"));
        let mut bad = archive.clone();
        bad[10] ^= 1;
        assert_eq!(run_in(&other, &["tar", "xf", "-"], &bad).await.2, "tar: invalid tar header checksum\n");
    }

    #[tokio::test]
    async fn network_outside_the_cluster_is_refused() {
        let (code, _, err) = sh("curl -I 8.8.8.8:80").await;
        assert_eq!(code, 7);
        assert_eq!(err, "curl: (7) Failed to connect to 8.8.8.8 port 80: address not in the cluster\n");
        let (code, _, err) = sh("wget -qO- http://192.168.0.1/").await;
        assert_eq!(
            (code, err.as_str()),
            (1, "wget: can't connect to remote host (192.168.0.1): address not in the cluster\n")
        );
        let (code, _, err) = sh("curl https://127.96.0.1/").await;
        assert_eq!((code, err.as_str()), (1, "curl: (1) Protocol \"https\" not supported\n"));
    }

    #[tokio::test]
    async fn curl_reaches_a_cluster_address_from_the_pod_ip() {
        let listener = tokio::net::TcpListener::bind("127.244.0.77:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, peer) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"HTTP/1.1 200 OK\r\nServer: test\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
            (peer.ip(), req)
        });
        let (code, out, err) = sh(&format!("curl -I 127.244.0.77:{port}")).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "HTTP/1.1 200 OK\r\nServer: test\r\nContent-Length: 5\r\n\r\n");
        let (peer, req) = server.await.unwrap();
        assert_eq!(peer.to_string(), "127.244.0.5", "connects from the pod's IP");
        assert!(req.starts_with(&format!("HEAD / HTTP/1.1\r\nHost: 127.244.0.77:{port}\r\n")), "{req}");
        let (code, _, err) = sh(&format!("curl -s -S 127.244.0.77:{port}")).await;
        assert_eq!(code, 7, "{err}");
        assert!(err.contains("Couldn't connect to server"), "{err}");
    }
}
