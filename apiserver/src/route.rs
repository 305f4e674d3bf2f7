//! Parsing a request path into what it names: a group-version, a resource, a namespace, a name and a
//! subresource. One parser for every resource, driven by the server's registry (built-ins plus CRDs), instead of a
//! route per resource.

use api_types::{Registry, ResourceDef};

use crate::error::{ApiError, ApiResult};

/// What a path under `/api` or `/apis` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/api/v1`, `/apis/apps/v1`: the resource list of a group-version.
    GroupVersion { group: String, version: String },
    /// A collection, an object, or an object's subresource.
    Resource(ResourcePath),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    pub res: &'static ResourceDef,
    /// Set for namespaced resources addressed inside a namespace (and for the `namespaces` objects
    /// themselves it stays None: their name is in `name`).
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses the segments after `/api/` (core) or `/apis/` (named groups), against the resources the
/// server serves now.
pub fn parse(registry: &Registry, core: bool, rest: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, tail) = if core {
        match segs.split_first() {
            Some((v, tail)) => ("", *v, tail),
            None => return Err(ApiError::no_route()),
        }
    } else {
        match segs.as_slice() {
            [g, v, tail @ ..] => (*g, *v, tail),
            _ => return Err(ApiError::no_route()),
        }
    };
    // A resource lookup finds only served group-versions, so the (costlier) list of every served
    // group-version is consulted only for a bare group-version path. Every request is routed
    // several times (authorization, metrics, audit, the handler).
    let lookup = |plural: &str| registry.lookup(group, version, plural).ok_or_else(ApiError::no_route);
    let path = |res, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Ok(Target::Resource(ResourcePath {
            res,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        }))
    };
    match tail {
        [] if registry.group_versions().contains(&(group, version)) => {
            Ok(Target::GroupVersion { group: group.to_string(), version: version.to_string() })
        }
        [] => Err(ApiError::no_route()),
        [plural] => path(lookup(plural)?, None, None, None),
        // `namespaces/<ns>/<plural>` is a namespaced collection unless `<plural>` is a subresource of
        // the namespace itself (status, finalize).
        ["namespaces", ns, plural] if registry.lookup(group, version, plural).is_some_and(|r| r.namespaced) => {
            path(lookup(plural)?, Some(ns), None, None)
        }
        [plural, name] => path(lookup(plural)?, None, Some(name), None),
        [plural, name, sub] => path(lookup(plural)?, None, Some(name), Some(sub)),
        ["namespaces", ns, plural, name] => {
            let res = lookup(plural)?;
            if !res.namespaced {
                return Err(ApiError::no_route());
            }
            path(res, Some(ns), Some(name), None)
        }
        ["namespaces", ns, plural, name, sub] => {
            let res = lookup(plural)?;
            if !res.namespaced {
                return Err(ApiError::no_route());
            }
            path(res, Some(ns), Some(name), Some(sub))
        }
        _ => Err(ApiError::no_route()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(core: bool, p: &str) -> ResourcePath {
        match parse(&Registry::new(), core, p).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_every_shape() {
        let r = rp(true, "v1/namespaces/default/pods/a/status");
        assert_eq!(
            (r.res.plural, r.namespace.as_deref(), r.name.as_deref(), r.subresource.as_deref()),
            ("pods", Some("default"), Some("a"), Some("status"))
        );
        let r = rp(true, "v1/namespaces/default");
        assert_eq!((r.res.plural, r.namespace, r.name.as_deref()), ("namespaces", None, Some("default")));
        let r = rp(true, "v1/namespaces/kube-system/services");
        assert_eq!((r.res.plural, r.namespace.as_deref(), r.name), ("services", Some("kube-system"), None));
        let r = rp(true, "v1/namespaces/x/status");
        assert_eq!(
            (r.res.plural, r.name.as_deref(), r.subresource.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let r = rp(false, "apps/v1/deployments");
        assert_eq!((r.res.plural, r.namespace), ("deployments", None));
        let r = rp(true, "v1/nodes/worker0");
        assert_eq!(r.name.as_deref(), Some("worker0"));
        assert_eq!(
            parse(&Registry::new(), false, "apps/v1").unwrap(),
            Target::GroupVersion { group: "apps".into(), version: "v1".into() }
        );
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for p in ["v2/pods", "v1/bogus", "v1/namespaces/a/nodes/x", "v1/a/b/c/d/e/f/g"] {
            assert_eq!(parse(&Registry::new(), true, p).unwrap_err().code, 404, "{p}");
        }
        assert_eq!(parse(&Registry::new(), false, "nope/v1/things").unwrap_err().code, 404);
        // Unserved group-versions, bare or with a plural that another version serves.
        for p in ["nope/v1", "apps/v2", "apps/v2/deployments", "apps/v1beta1/namespaces/a/deployments/x"] {
            assert_eq!(parse(&Registry::new(), false, p).unwrap_err().code, 404, "{p}");
        }
        assert_eq!(parse(&Registry::new(), true, "v2").unwrap_err().code, 404);
    }
}
