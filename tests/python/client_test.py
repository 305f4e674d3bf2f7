"""The official Python `kubernetes` client against kplane: create, list with paging, watch with
resume from a resource version, patch and delete. Run by tests/clients.rs with a kubeconfig path."""

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def main(kubeconfig: str) -> None:
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    ns = "default"

    names = [f"py-{i}" for i in range(5)]
    for name in names:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"suite": "py"}), data={"i": name}))

    # Paging: limit 2, follow continue tokens, every page at one resourceVersion.
    seen, token, rvs = [], None, set()
    while True:
        page = core.list_namespaced_config_map(ns, label_selector="suite=py", limit=2, _continue=token)
        seen += [cm.metadata.name for cm in page.items]
        rvs.add(page.metadata.resource_version)
        token = page.metadata._continue
        if not token:
            break
    assert seen == names, seen
    assert len(rvs) == 1, rvs

    # Watch from the list's resourceVersion: only later changes, in order.
    start = core.list_namespaced_config_map(ns, label_selector="suite=py").metadata.resource_version
    core.patch_namespaced_config_map("py-0", ns, {"data": {"i": "patched"}})
    core.delete_namespaced_config_map("py-1", ns)
    events = []
    w = watch.Watch()
    for ev in w.stream(core.list_namespaced_config_map, ns, label_selector="suite=py", resource_version=start, timeout_seconds=10):
        events.append((ev["type"], ev["object"].metadata.name))
        if len(events) == 2:
            w.stop()
    assert events == [("MODIFIED", "py-0"), ("DELETED", "py-1")], events
    assert core.read_namespaced_config_map("py-0", ns).data["i"] == "patched"

    # A typed Deployment round trip, with defaults applied by the server.
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(ns, dep)
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.metadata.generation == 1
    apps.patch_namespaced_deployment_scale("py-web", ns, {"spec": {"replicas": 4}})
    assert apps.read_namespaced_deployment("py-web", ns).spec.replicas == 4

    # Errors come back as ApiException with upstream's codes.
    try:
        core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-0")))
        raise AssertionError("duplicate create succeeded")
    except ApiException as e:
        assert e.status == 409, e.status
    try:
        core.read_namespaced_config_map("nope", ns)
        raise AssertionError("read of a missing object succeeded")
    except ApiException as e:
        assert e.status == 404, e.status

    apps.delete_namespaced_deployment("py-web", ns)
    for name in names:
        if name != "py-1":
            core.delete_namespaced_config_map(name, ns)
    assert core.list_namespaced_config_map(ns, label_selector="suite=py").items == []
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
