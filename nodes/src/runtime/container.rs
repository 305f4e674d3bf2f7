//! A container's sandbox built from its pod, as the kubelet builds a real one: `/etc/resolv.conf`
//! (dnsPolicy/dnsConfig), `/etc/hosts`, `/etc/hostname`, the ServiceAccount token directory, the
//! volumes (configMap, secret, downwardAPI, emptyDir, projected) and the environment (`env`,
//! `envFrom`, `valueFrom`, the Service variables). Everything is read through the API.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::net::NetPolicy;
use super::vfs::{Fs, SharedTree, Tree};
use super::Sandbox;

/// What the node knows about the cluster's network.
#[derive(Debug, Clone)]
pub struct ClusterNet {
    pub domain: String,
    /// The kube-dns ClusterIP (None: looked up from `kube-system/kube-dns`).
    pub dns_ip: Option<Ipv4Addr>,
    pub dns_port: u16,
    /// Ranges a container may connect to.
    pub allowed: Vec<(Ipv4Addr, u8)>,
}

pub const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why a container cannot be created (upstream's `CreateContainerConfigError` message).
pub type ConfigError = String;

fn tree() -> SharedTree {
    Arc::new(Mutex::new(Tree::new()))
}

/// The pod-level volumes, shared by its containers.
#[derive(Default)]
pub struct PodVolumes {
    trees: HashMap<String, SharedTree>,
    /// The ServiceAccount token directory, when the kubelet could get a token.
    sa: Option<SharedTree>,
}

async fn config_map(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(name).await.ok().flatten()
}

async fn secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await.ok().flatten()
}

fn cm_items(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> =
        cm.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
    for (k, v) in cm.binary_data.clone().unwrap_or_default() {
        m.insert(k, v.0);
    }
    m
}

fn secret_items(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut m: BTreeMap<String, Vec<u8>> =
        s.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
    for (k, v) in s.string_data.clone().unwrap_or_default() {
        m.insert(k, v.into_bytes());
    }
    m
}

/// Puts `items` (or all keys) into `t`.
fn put_items(
    t: &mut Tree,
    all: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    what: &str,
) -> Result<(), ConfigError> {
    match items {
        Some(items) => {
            for it in items {
                let v = all.get(&it.key).ok_or_else(|| {
                    format!("configmap references non-existent config key: {}", it.key)
                        .replace("configmap", what)
                })?;
                t.put(&it.path, v.clone());
            }
        }
        None => {
            for (k, v) in all {
                t.put(&k, v);
            }
        }
    }
    Ok(())
}

fn field_ref(pod: &Pod, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let st = pod.status.as_ref();
    let spec = pod.spec.as_ref();
    let lookup = |map: Option<&BTreeMap<String, String>>, p: &str, prefix: &str| -> Option<String> {
        let key = p.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "metadata.uid" => m.uid.clone(),
        "metadata.labels" => Some(m.labels.iter().flatten().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect()),
        "metadata.annotations" => {
            Some(m.annotations.iter().flatten().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect())
        }
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => st.and_then(|s| s.pod_ip.clone()),
        "status.podIPs" => st
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(",")),
        "status.hostIP" => st.and_then(|s| s.host_ip.clone()),
        "status.hostIPs" => st
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(",")),
        p => lookup(m.labels.as_ref(), p, "metadata.labels['")
            .or_else(|| lookup(m.annotations.as_ref(), p, "metadata.annotations['")),
    }
}

fn resource_field(c: Option<&Container>, resource: &str) -> String {
    let res = c.and_then(|c| c.resources.as_ref());
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let q = match kind {
        "requests" => res.and_then(|r| r.requests.as_ref()).and_then(|m| m.get(name)),
        _ => res.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(name)),
    };
    match (q, name) {
        (Some(q), "cpu") => ((crate::quantity::milli_of(q) + 999) / 1000).max(1).to_string(),
        (Some(q), _) => crate::quantity::value_of(q).to_string(),
        (None, "cpu") => "4".into(),
        (None, _) => "0".into(),
    }
}

/// Builds the pod's volumes. A missing ConfigMap/Secret that is not optional fails (the kubelet
/// reports it and retries).
pub async fn pod_volumes(client: &Client, pod: &Pod) -> Result<PodVolumes, ConfigError> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = PodVolumes::default();
    for v in spec.volumes.iter().flatten() {
        let mut tr = Tree::new();
        {
            if let Some(cm) = &v.config_map {
                match config_map(client, &ns, &cm.name).await {
                    Some(obj) => put_items(&mut tr, cm_items(&obj), cm.items.as_ref(), "configmap")?,
                    None if cm.optional == Some(true) => {}
                    None => return Err(format!("configmap \"{}\" not found", cm.name)),
                }
            } else if let Some(s) = &v.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                match secret(client, &ns, &name).await {
                    Some(obj) => put_items(&mut tr, secret_items(&obj), s.items.as_ref(), "secret")?,
                    None if s.optional == Some(true) => {}
                    None => return Err(format!("secret \"{name}\" not found")),
                }
            } else if let Some(d) = &v.downward_api {
                for it in d.items.iter().flatten() {
                    let val = match (&it.field_ref, &it.resource_field_ref) {
                        (Some(f), _) => field_ref(pod, &f.field_path).unwrap_or_default(),
                        (None, Some(r)) => {
                            let c = spec.containers.iter().find(|c| Some(&c.name) == r.container_name.as_ref());
                            resource_field(c, &r.resource)
                        }
                        _ => String::new(),
                    };
                    tr.put(&it.path, val.into_bytes());
                }
            } else if let Some(p) = &v.projected {
                for src in p.sources.iter().flatten() {
                    if let Some(cm) = &src.config_map {
                        if let Some(obj) = config_map(client, &ns, &cm.name).await {
                            put_items(&mut tr, cm_items(&obj), cm.items.as_ref(), "configmap")?;
                        } else if cm.optional != Some(true) {
                            return Err(format!("configmap \"{}\" not found", cm.name));
                        }
                    }
                    if let Some(s) = &src.secret {
                        if let Some(obj) = secret(client, &ns, &s.name).await {
                            put_items(&mut tr, secret_items(&obj), s.items.as_ref(), "secret")?;
                        } else if s.optional != Some(true) {
                            return Err(format!("secret \"{}\" not found", s.name));
                        }
                    }
                    if let Some(d) = &src.downward_api {
                        for it in d.items.iter().flatten() {
                            let val = it
                                .field_ref
                                .as_ref()
                                .and_then(|f| field_ref(pod, &f.field_path))
                                .unwrap_or_default();
                            tr.put(&it.path, val.into_bytes());
                        }
                    }
                    if let Some(t) = &src.service_account_token {
                        if let Some(tok) = token(client, pod, t.audience.clone(), t.expiration_seconds).await {
                            tr.put(&t.path, tok.into_bytes());
                        }
                    }
                }
            }
            // emptyDir (and anything else, e.g. hostPath, which never reaches the host): empty.
        }
        out.trees.insert(v.name.clone(), Arc::new(Mutex::new(tr)));
    }
    let automount = spec.automount_service_account_token.unwrap_or(true);
    let mounted = spec
        .containers
        .iter()
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .any(|m| m.mount_path.trim_end_matches('/') == SA_DIR);
    if automount && !mounted {
        let sa = spec.service_account_name.clone().unwrap_or_else(|| "default".into());
        let sa_ok = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .get_opt(&sa)
            .await
            .ok()
            .flatten()
            .is_none_or(|s| s.automount_service_account_token != Some(false));
        if sa_ok {
            if let Some(tok) = token(client, pod, None, Some(3607)).await {
                let mut tr = Tree::new();
                tr.put("token", tok.into_bytes());
                tr.put("namespace", ns.clone().into_bytes());
                let ca = config_map(client, &ns, "kube-root-ca.crt")
                    .await
                    .and_then(|c| c.data?.get("ca.crt").cloned());
                if let Some(ca) = ca {
                    tr.put("ca.crt", ca.into_bytes());
                }
                out.sa = Some(Arc::new(Mutex::new(tr)));
            }
        }
    }
    Ok(out)
}

/// A token for the pod's ServiceAccount, bound to the pod (TokenRequest API).
async fn token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Option<String> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into());
    let req: TokenRequest = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audience.map(|a| vec![a]).unwrap_or_default(),
                 "expirationSeconds": expiration.unwrap_or(3607),
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "uid": pod.uid()}}
    }))
    .ok()?;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    match api.create_subresource::<TokenRequest, TokenRequest>("token", &sa, &PostParams::default(), &req).await
    {
        Ok(t) => t.status.map(|s| s.token),
        Err(e) => {
            tracing::debug!(pod = %pod.name_any(), error = %e, "no service account token");
            None
        }
    }
}

/// Upstream's Service environment variables for one Service.
fn service_env(svc: &Service, out: &mut Vec<(String, String)>) {
    let Some(spec) = &svc.spec else { return };
    let Some(ip) = spec.cluster_ip.clone().filter(|ip| !ip.is_empty() && ip != "None") else { return };
    let name = svc.name_any().to_uppercase().replace('-', "_");
    let ports = spec.ports.clone().unwrap_or_default();
    let Some(first) = ports.first() else { return };
    out.push((format!("{name}_SERVICE_HOST"), ip.clone()));
    out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
    for p in &ports {
        if let Some(pn) = &p.name {
            out.push((
                format!("{name}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                p.port.to_string(),
            ));
        }
    }
    let proto =
        |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
    out.push((format!("{name}_PORT"), format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port)));
    for p in &ports {
        let pr = proto(p);
        let base = format!("{name}_PORT_{}_{pr}", p.port);
        out.push((base.clone(), format!("{}://{ip}:{}", pr.to_lowercase(), p.port)));
        out.push((format!("{base}_PROTO"), pr.to_lowercase()));
        out.push((format!("{base}_PORT"), p.port.to_string()));
        out.push((format!("{base}_ADDR"), ip.clone()));
    }
}

/// Expands `$(VAR)` references to earlier variables (`$$(VAR)` escapes), as the kubelet does.
pub fn expand_refs(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
        } else if b[i] == b'$' && b.get(i + 1) == Some(&b'(') {
            match s[i + 2..].find(')') {
                Some(end) => {
                    let name = &s[i + 2..i + 2 + end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                }
                None => {
                    out.push_str(&s[i..]);
                    break;
                }
            }
        } else {
            let ch = s[i..].chars().next().unwrap_or('?');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The container's environment, in the kubelet's order and precedence: defaults, Service
/// variables, `envFrom`, then `env`.
/// `services`: the kubelet's Service informer (None: not listed yet, so the API is asked).
pub async fn environment(
    client: &Client,
    services: Option<&kube::runtime::reflector::Store<Service>>,
    pod: &Pod,
    c: &Container,
    hostname: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.namespace().unwrap_or_default();
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.insert("HOSTNAME".into(), hostname.into());
    env.insert("HOME".into(), "/root".into());
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let mut svc_env = Vec::new();
    if links {
        match services {
            Some(store) => {
                for s in store.state_filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str())) {
                    service_env(&s, &mut svc_env);
                }
            }
            None => {
                if let Ok(list) =
                    Api::<Service>::namespaced(client.clone(), &ns).list(&Default::default()).await
                {
                    list.items.iter().for_each(|s| service_env(s, &mut svc_env));
                }
            }
        }
    }
    if ns != "default" || !links {
        let kubernetes = match services {
            Some(store) => store.get(&kube::runtime::reflector::ObjectRef::new("kubernetes").within("default")),
            None => Api::<Service>::namespaced(client.clone(), "default")
                .get_opt("kubernetes")
                .await
                .ok()
                .flatten()
                .map(std::sync::Arc::new),
        };
        if let Some(k) = kubernetes {
            service_env(&k, &mut svc_env);
        }
    }
    env.extend(svc_env);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match config_map(client, &ns, &r.name).await {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        env.insert(format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secret(client, &ns, &r.name).await {
                Some(s) => {
                    for (k, v) in secret_items(&s) {
                        env.insert(format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(expand_refs(v, &env))
        } else if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                field_ref(pod, &f.field_path)
            } else if let Some(r) = &vf.resource_field_ref {
                Some(resource_field(Some(c), &r.resource))
            } else if let Some(k) = &vf.config_map_key_ref {
                match config_map(client, &ns, &k.name).await {
                    Some(cm) => match cm.data.and_then(|d| d.get(&k.key).cloned()) {
                        Some(v) => Some(v),
                        None if k.optional == Some(true) => None,
                        None => {
                            return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", k.key, k.name))
                        }
                    },
                    None if k.optional == Some(true) => None,
                    None => return Err(format!("configmap \"{}\" not found", k.name)),
                }
            } else if let Some(k) = &vf.secret_key_ref {
                match secret(client, &ns, &k.name).await {
                    Some(s) => match secret_items(&s).get(&k.key) {
                        Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                        None if k.optional == Some(true) => None,
                        None => return Err(format!("couldn't find key {} in Secret {ns}/{}", k.key, k.name)),
                    },
                    None if k.optional == Some(true) => None,
                    None => return Err(format!("secret \"{}\" not found", k.name)),
                }
            } else {
                None
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            env.insert(e.name.clone(), v);
        }
    }
    Ok(env.into_iter().collect())
}

/// `/etc/resolv.conf` as the kubelet writes it for the pod's dnsPolicy and dnsConfig.
pub fn resolv_conf(pod: &Pod, net: &ClusterNet, dns_ip: Option<Ipv4Addr>) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.namespace().unwrap_or_default();
    let policy = spec.dns_policy.clone().unwrap_or_else(|| "ClusterFirst".into());
    let host_net = spec.host_network.unwrap_or(false);
    let cluster = match policy.as_str() {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_net,
        _ => false,
    };
    let (mut servers, mut search, mut options): (Vec<String>, Vec<String>, Vec<String>) =
        (Vec::new(), Vec::new(), Vec::new());
    if cluster {
        servers.extend(dns_ip.map(|i| i.to_string()));
        let d = &net.domain;
        search = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        options.push("ndots:5".into());
    }
    if let Some(cfg) = &spec.dns_config {
        servers.extend(cfg.nameservers.iter().flatten().cloned());
        search.extend(cfg.searches.iter().flatten().cloned());
        for o in cfg.options.iter().flatten() {
            let Some(name) = &o.name else { continue };
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    servers.dedup();
    servers.truncate(3);
    let mut seen = std::collections::HashSet::new();
    search.retain(|s| seen.insert(s.clone()));
    search.truncate(32);
    let mut s = String::new();
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    for n in servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

/// The pod's hostname (`spec.hostname`, else its name cut to 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let name = pod.spec.as_ref().and_then(|s| s.hostname.clone()).unwrap_or_else(|| pod.name_any());
    name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
}

/// The kubelet's managed `/etc/hosts`.
pub fn hosts(pod: &Pod, ip: Ipv4Addr, domain: &str) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    match pod.spec.as_ref().and_then(|s| s.subdomain.clone()) {
        Some(sub) => s.push_str(&format!(
            "{ip}\t{host}.{sub}.{}.svc.{domain}\t{host}\n",
            pod.namespace().unwrap_or_default()
        )),
        None => s.push_str(&format!("{ip}\t{host}\n")),
    }
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.clone()).unwrap_or_default();
    if !aliases.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            s.push_str(&format!("{}\t{}\n", a.ip, a.hostnames.unwrap_or_default().join("\t")));
        }
    }
    s
}

/// A container's sandbox: the base image's few files, the kubelet's files, its volume mounts.
pub fn sandbox(
    pod: &Pod,
    c: &Container,
    vols: &PodVolumes,
    net: &ClusterNet,
    dns_ip: Option<Ipv4Addr>,
    ip: Ipv4Addr,
) -> Sandbox {
    let root = tree();
    let host = hostname(pod);
    {
        let mut t = root.lock().unwrap_or_else(|e| e.into_inner());
        for d in [
            "bin",
            "dev",
            "home",
            "proc",
            "root",
            "sys",
            "tmp",
            "usr/bin",
            "usr/local/bin",
            "var/run",
            "var/log",
        ] {
            t.mkdir_all(d);
        }
        t.put("etc/resolv.conf", resolv_conf(pod, net, dns_ip).into_bytes());
        t.put("etc/hosts", hosts(pod, ip, &net.domain).into_bytes());
        t.put("etc/hostname", format!("{host}\n").into_bytes());
        t.put(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n".to_vec(),
        );
        t.put("etc/group", b"root:x:0:\nnobody:x:65534:\n".to_vec());
        t.put(
            "etc/os-release",
            b"NAME=\"kplane sandbox\"\nID=kplane\nPRETTY_NAME=\"kplane simulated container\"\n".to_vec(),
        );
    }
    let mut fs = Fs::new(root);
    if let Some(sa) = &vols.sa {
        fs.mount(SA_DIR, sa.clone(), true);
    }
    for m in c.volume_mounts.iter().flatten() {
        let Some(t) = vols.trees.get(&m.name) else { continue };
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            // A file mounted with subPath: a copy of that file at the mount path (files are small).
            if let Ok(d) = Fs::new(t.clone()).read(&format!("/{sub}")) {
                let parent = m.mount_path.rsplit_once('/').map(|(p, _)| p).unwrap_or("/");
                let _ = fs.mkdir(if parent.is_empty() { "/" } else { parent }, true);
                let _ = fs.write(&m.mount_path, &d, false);
                continue;
            }
        }
        let t = t.clone();
        fs.mount(&m.mount_path, t, m.read_only.unwrap_or(false) || is_read_only_kind(pod, &m.name));
    }
    let policy = NetPolicy { pod_ip: ip, allowed: net.allowed.clone(), dns_port: net.dns_port };
    Sandbox::new(fs, host, policy)
}

/// configMap, secret, downwardAPI and projected volumes are read-only, as upstream's are.
fn is_read_only_kind(pod: &Pod, name: &str) -> bool {
    pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()).any(|v| {
        v.name == name
            && (v.config_map.is_some()
                || v.secret.is_some()
                || v.downward_api.is_some()
                || v.projected.is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn resolv_conf_follows_dns_policy() {
        let net = ClusterNet { domain: "cluster.local".into(), dns_ip: None, dns_port: 53, allowed: vec![] };
        let ip = Some(Ipv4Addr::new(127, 96, 0, 10));
        let p = pod(json!({"metadata": {"name": "c", "namespace": "default"}, "spec": {"containers": []}}));
        assert_eq!(
            resolv_conf(&p, &net, ip),
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.96.0.10\noptions ndots:5\n"
        );
        let p = pod(
            json!({"metadata": {"name": "c", "namespace": "team"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["127.96.0.11"], "searches": ["x.y"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        assert_eq!(resolv_conf(&p, &net, ip), "search x.y\nnameserver 127.96.0.11\noptions ndots:2 edns0\n");
        let p = pod(json!({"metadata": {"name": "c", "namespace": "team"}, "spec": {"containers": [],
            "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]}}}));
        assert!(resolv_conf(&p, &net, ip).ends_with("options ndots:1\n"));
    }

    #[test]
    fn env_refs_and_service_variables() {
        let mut env = BTreeMap::new();
        env.insert("A".to_string(), "1".to_string());
        assert_eq!(expand_refs("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "nginx-svc"},
            "spec": {"clusterIP": "127.96.1.2", "ports": [{"name": "http", "port": 8080}]}}))
        .unwrap();
        let mut out = Vec::new();
        service_env(&svc, &mut out);
        let m: BTreeMap<_, _> = out.into_iter().collect();
        assert_eq!(m["NGINX_SVC_SERVICE_HOST"], "127.96.1.2");
        assert_eq!(m["NGINX_SVC_SERVICE_PORT"], "8080");
        assert_eq!(m["NGINX_SVC_SERVICE_PORT_HTTP"], "8080");
        assert_eq!(m["NGINX_SVC_PORT"], "tcp://127.96.1.2:8080");
        assert_eq!(m["NGINX_SVC_PORT_8080_TCP_ADDR"], "127.96.1.2");
    }

    #[test]
    fn hosts_file() {
        let p = pod(
            json!({"metadata": {"name": "web-0", "namespace": "default"}, "spec": {"containers": [], "hostname": "web-0", "subdomain": "web"}}),
        );
        let h = hosts(&p, Ipv4Addr::new(127, 244, 0, 9), "cluster.local");
        assert!(h.contains("127.244.0.9\tweb-0.web.default.svc.cluster.local\tweb-0\n"), "{h}");
    }
}
