//! Container logs: per pod, per container, a bounded ring of timestamped lines plus a broadcast for
//! followers. The kubelet's `/containerLogs` endpoint reads them; the pod's listeners and the
//! simulated container lifecycle write them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use tokio::sync::broadcast;

/// Lines kept per container.
pub const RING_LINES: usize = 1000;

#[derive(Clone, Debug)]
pub struct Line {
    pub seq: u64,
    pub time: Timestamp,
    pub text: String,
}

/// Lines buffered per follower before it lags.
const FOLLOW_BUFFER: usize = 256;

/// One container's log.
#[derive(Debug)]
pub struct ContainerLog {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<Line>,
    next_seq: u64,
    /// The followers' broadcast, only while someone follows: its buffer is allocated whole, and
    /// most containers are never followed.
    tx: Option<broadcast::Sender<Line>>,
}

impl ContainerLog {
    pub(crate) fn new() -> ContainerLog {
        ContainerLog { ring: Mutex::new(Ring::default()) }
    }

    pub fn push(&self, text: impl Into<String>) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let line = Line { seq: ring.next_seq, time: Timestamp::now(), text: text.into() };
        ring.next_seq += 1;
        if ring.lines.len() == RING_LINES {
            ring.lines.pop_front();
        }
        // Sent under the lock, so a follower's snapshot and its subscription never miss a line.
        if let Some(tx) = &ring.tx {
            if tx.send(line.clone()).is_err() {
                // Every follower left: free the buffer until the next one comes.
                ring.tx = None;
            }
        }
        ring.lines.push_back(line);
    }

    /// The lines kept, and a subscription to every later line.
    pub fn snapshot_and_subscribe(&self) -> (Vec<Line>, broadcast::Receiver<Line>) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match &ring.tx {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(FOLLOW_BUFFER);
                ring.tx = Some(tx);
                rx
            }
        };
        (ring.lines.iter().cloned().collect(), rx)
    }
}

/// One pod's containers, as the kubelet knows them.
#[derive(Debug)]
pub struct PodLogs {
    pub uid: String,
    /// Every container name in the spec (init containers included).
    pub names: Vec<String>,
    /// The containers that have started.
    pub started: Mutex<HashMap<String, Arc<ContainerLog>>>,
    /// The log of each restarted container's previous instance (`kubectl logs --previous`).
    pub previous: Mutex<HashMap<String, Arc<ContainerLog>>>,
}

impl PodLogs {
    /// The container's log, created (as started) on first use.
    pub fn start(&self, container: &str) -> Arc<ContainerLog> {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        started.entry(container.to_string()).or_insert_with(|| Arc::new(ContainerLog::new())).clone()
    }

    pub fn get(&self, container: &str) -> Option<Arc<ContainerLog>> {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).get(container).cloned()
    }

    /// A container restarts: its current log becomes its previous one, and a new one starts.
    pub fn restart(&self, container: &str) -> Arc<ContainerLog> {
        let fresh = Arc::new(ContainerLog::new());
        let old =
            self.started.lock().unwrap_or_else(|e| e.into_inner()).insert(container.to_string(), fresh.clone());
        if let Some(old) = old {
            self.previous.lock().unwrap_or_else(|e| e.into_inner()).insert(container.to_string(), old);
        }
        fresh
    }

    /// The previous instance's log, if the container was restarted.
    pub fn previous(&self, container: &str) -> Option<Arc<ContainerLog>> {
        self.previous.lock().unwrap_or_else(|e| e.into_inner()).get(container).cloned()
    }
}

/// Every pod's logs on one node, by "namespace/name".
#[derive(Debug, Default)]
pub struct LogStore {
    pods: Mutex<HashMap<String, Arc<PodLogs>>>,
}

impl LogStore {
    /// Registers a pod (replacing an older pod of the same name).
    pub fn add(&self, key: &str, uid: &str, names: Vec<String>) -> Arc<PodLogs> {
        let logs = Arc::new(PodLogs {
            uid: uid.to_string(),
            names,
            started: Mutex::new(HashMap::new()),
            previous: Mutex::new(HashMap::new()),
        });
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        match pods.get(key) {
            Some(existing) if existing.uid == uid => existing.clone(),
            _ => {
                pods.insert(key.to_string(), logs.clone());
                logs
            }
        }
    }

    /// Drops a pod's logs (only if they are still this uid's); followers' streams end.
    pub fn remove(&self, key: &str, uid: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if pods.get(key).is_some_and(|p| p.uid == uid) {
            pods.remove(key);
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<PodLogs>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_ordered() {
        let log = ContainerLog::new();
        for i in 0..(RING_LINES + 5) {
            log.push(format!("line {i}"));
        }
        let (lines, _) = log.snapshot_and_subscribe();
        assert_eq!(lines.len(), RING_LINES);
        assert_eq!(lines[0].text, "line 5");
        assert_eq!(lines.last().unwrap().text, format!("line {}", RING_LINES + 4));
    }

    #[test]
    fn followers_get_every_later_line_and_the_buffer_goes_with_them() {
        let log = ContainerLog::new();
        log.push("before");
        let (lines, mut a) = log.snapshot_and_subscribe();
        assert_eq!(lines.len(), 1);
        let (_, mut b) = log.snapshot_and_subscribe();
        log.push("after");
        assert_eq!(a.try_recv().unwrap().text, "after");
        assert_eq!(b.try_recv().unwrap().text, "after");
        drop((a, b));
        log.push("nobody follows");
        assert!(log.ring.lock().unwrap().tx.is_none(), "no broadcast buffer kept without followers");
        let (lines, mut c) = log.snapshot_and_subscribe();
        assert_eq!(lines.len(), 3);
        log.push("again");
        assert_eq!(c.try_recv().unwrap().text, "again");
    }
}
