//! Entry points of the fuzz targets in `fuzz/` (cargo-fuzz) over what the networking components
//! read from the network or from their command line. Each takes arbitrary bytes and must return,
//! never panic; the `fuzz_corpus` test replays every stored input in `fuzz/corpus/<target>/`
//! through the same functions.

/// A DNS packet as the cluster DNS server receives it (UDP and TCP): parsed, answered from a
/// small zone, and encoded.
pub fn dns(data: &[u8]) {
    crate::dns::fuzz_packet(data);
}

/// The bytes of one client connection to the ingress's HTTP listener: request lines, Host and
/// paths through the routing table, header rewriting (hop-by-hop, X-Forwarded-*), upgrades.
pub fn ingress(data: &[u8]) {
    crate::ingress::http::fuzz_connection(data);
}

/// A kubeconfig as a split-process component (`kplane dns|ingress|proxy|node --kubeconfig`) reads
/// it: kube-rs's parser, then the client configuration it resolves (current context, cluster URL,
/// namespace, inline CA and client certificates). `exec` and `auth-provider` users are dropped
/// first: resolving them runs commands, which a fuzzer must not choose.
pub fn kubeconfig(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(mut config) = kube::config::Kubeconfig::from_yaml(text) else { return };
    for auth in config.auth_infos.iter_mut().filter_map(|a| a.auth_info.as_mut()) {
        auth.exec = None;
        auth.auth_provider = None;
        // Files named in a fuzzed config are not read either.
        auth.client_certificate = None;
        auth.client_key = None;
        auth.token_file = None;
    }
    for cluster in config.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
        cluster.certificate_authority = None;
    }
    // What `kplane kubeconfig` looks up when no --server is given.
    let _server = config.clusters.iter().find_map(|c| c.cluster.as_ref().and_then(|c| c.server.clone()));
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt = RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"));
    let options = kube::config::KubeConfigOptions::default();
    if let Ok(resolved) = rt.block_on(kube::Config::from_custom_kubeconfig(config, &options)) {
        let _ = resolved.cluster_url.to_string();
    }
}

/// A fuzz entry point: arbitrary bytes in, never a panic.
pub type Entry = fn(&[u8]);

/// The networking targets, by name (the name of their `fuzz/corpus/` directory).
pub const TARGETS: &[(&str, Entry)] = &[("dns", dns), ("ingress", ingress), ("kubeconfig", kubeconfig)];
