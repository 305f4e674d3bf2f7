//! Warning Events on the objects a component cannot serve, so `kubectl describe` shows why.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

#[derive(Clone)]
pub(crate) struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, controller: &str) -> Self {
        let reporter = Reporter { controller: controller.into(), instance: None };
        Events { recorder: Recorder::new(client, reporter) }
    }

    /// Publishes a Warning in the background: reporting must never hold up the data path, and a
    /// failure to report is only logged.
    pub fn warn(&self, regarding: ObjectReference, reason: &str, action: &str, note: String) {
        let recorder = self.recorder.clone();
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &regarding).await {
                tracing::warn!(error = %e, "cannot record event");
            }
        });
    }
}
