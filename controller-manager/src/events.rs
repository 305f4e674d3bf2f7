//! Event recording for every controller through [`Recorder`], off the reconcile path:
//! controllers push onto a bounded queue and one owned task publishes. Events are best effort, as
//! upstream's broadcaster: a full queue drops the event (with a log line) rather than slowing a sync.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Client, Resource};
use tokio::sync::mpsc;

use crate::recorder::Recorder;
use crate::Stop;

struct Pending {
    controller: &'static str,
    regarding: ObjectReference,
    event: Event,
}

#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Pending>,
}

pub struct EventPublisher {
    client: Client,
    instance: String,
    rx: mpsc::Receiver<Pending>,
}

pub fn channel(client: Client, instance: String) -> (EventSink, EventPublisher) {
    let (tx, rx) = mpsc::channel(16 * 1024);
    (EventSink { tx }, EventPublisher { client, instance, rx })
}

impl EventSink {
    pub fn normal<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        reason: &str,
        note: String,
    ) {
        self.push(controller, obj, EventType::Normal, reason, note);
    }

    /// A Normal event that also names a related object (e.g. the pod a ReplicaSet created), which
    /// keeps one event per related object instead of folding them into one series.
    pub fn normal_related<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        reason: &str,
        note: String,
        related: ObjectReference,
    ) {
        self.push_full(controller, obj, EventType::Normal, reason, note, Some(related));
    }

    pub fn warning<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        reason: &str,
        note: String,
    ) {
        self.push(controller, obj, EventType::Warning, reason, note);
    }

    fn push<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.push_full(controller, obj, type_, reason, note, None);
    }

    fn push_full<K: Resource<DynamicType = ()>>(
        &self,
        controller: &'static str,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
        secondary: Option<ObjectReference>,
    ) {
        let regarding = obj.object_ref(&());
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary,
        };
        if self.tx.try_send(Pending { controller, regarding, event }).is_err() {
            tracing::warn!(controller, reason, "event queue full or closed; event dropped");
        }
    }
}

impl EventPublisher {
    pub async fn run(mut self, stop: Stop) {
        let mut recorders: HashMap<&'static str, Recorder> = HashMap::new();
        loop {
            let p = tokio::select! {
                _ = stop.clone().wait() => return,
                p = self.rx.recv() => p,
            };
            let Some(p) = p else { return };
            let recorder = recorders.entry(p.controller).or_insert_with(|| {
                Recorder::new(
                    self.client.clone(),
                    Reporter { controller: p.controller.to_string(), instance: Some(self.instance.clone()) },
                )
            });
            if let Err(e) = recorder.publish(&p.event, &p.regarding).await {
                tracing::debug!(error = %e, reason = %p.event.reason, "publishing an event failed");
            }
        }
    }
}
