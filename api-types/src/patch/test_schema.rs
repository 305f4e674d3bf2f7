//! A hand-written [`PatchSchema`] for the Pod and Deployment fields the tests patch, with the
//! `x-kubernetes-patch-*` metadata upstream's OpenAPI carries for them.

use super::PatchSchema;

pub(super) struct Node {
    strategy: Option<&'static str>,
    merge_key: Option<&'static str>,
    fields: &'static [(&'static str, &'static Node)],
    items: Option<&'static Node>,
}

const fn node(
    strategy: Option<&'static str>,
    merge_key: Option<&'static str>,
    fields: &'static [(&'static str, &'static Node)],
    items: Option<&'static Node>,
) -> Node {
    Node { strategy, merge_key, fields, items }
}

static LEAF: Node = node(None, None, &[], None);

static CONTAINER: Node = node(None, None, &[("ports", &PORTS), ("env", &ENV)], None);
static PORTS: Node = node(Some("merge"), Some("containerPort"), &[], Some(&LEAF));
static ENV: Node = node(Some("merge"), Some("name"), &[], Some(&LEAF));
static CONTAINERS: Node = node(Some("merge"), Some("name"), &[], Some(&CONTAINER));
static VOLUMES: Node = node(Some("merge,retainKeys"), Some("name"), &[], Some(&LEAF));
// Tolerations have no patch strategy upstream: the list is replaced atomically.
static TOLERATIONS: Node = node(None, None, &[], Some(&LEAF));
static POD_SPEC: Node = node(
    None,
    None,
    &[
        ("containers", &CONTAINERS),
        ("initContainers", &CONTAINERS),
        ("volumes", &VOLUMES),
        ("tolerations", &TOLERATIONS),
    ],
    None,
);

static FINALIZERS: Node = node(Some("merge"), None, &[], Some(&LEAF));
static OWNER_REFERENCES: Node = node(Some("merge"), Some("uid"), &[], Some(&LEAF));
static METADATA: Node =
    node(None, None, &[("finalizers", &FINALIZERS), ("ownerReferences", &OWNER_REFERENCES)], None);

static CONDITIONS: Node = node(Some("merge"), Some("type"), &[], Some(&LEAF));
static STATUS: Node = node(None, None, &[("conditions", &CONDITIONS)], None);

static POD: Node = node(None, None, &[("metadata", &METADATA), ("spec", &POD_SPEC), ("status", &STATUS)], None);

static TEMPLATE: Node = node(None, None, &[("metadata", &METADATA), ("spec", &POD_SPEC)], None);
static DEPLOYMENT_STRATEGY: Node = node(Some("retainKeys"), None, &[], None);
static DEPLOYMENT_SPEC: Node =
    node(None, None, &[("template", &TEMPLATE), ("strategy", &DEPLOYMENT_STRATEGY)], None);
static DEPLOYMENT: Node =
    node(None, None, &[("metadata", &METADATA), ("spec", &DEPLOYMENT_SPEC), ("status", &STATUS)], None);

pub(super) struct Schema(&'static Node);

pub(super) fn pod() -> Schema {
    Schema(&POD)
}

pub(super) fn deployment() -> Schema {
    Schema(&DEPLOYMENT)
}

impl PatchSchema for Schema {
    fn field(&self, name: &str) -> Option<Box<dyn PatchSchema + '_>> {
        let (_, node) = self.0.fields.iter().find(|(n, _)| *n == name)?;
        Some(Box::new(Schema(node)))
    }
    fn items(&self) -> Option<Box<dyn PatchSchema + '_>> {
        self.0.items.map(|n| Box::new(Schema(n)) as Box<dyn PatchSchema>)
    }
    fn strategy(&self) -> Option<&str> {
        self.0.strategy
    }
    fn merge_key(&self) -> Option<&str> {
        self.0.merge_key
    }
}
