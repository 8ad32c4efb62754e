//! The route table: compiled once from configuration, then shared read-only
//! by every request.
//!
//! Lookups cost O(depth of the request path) hash probes whatever the number
//! of routes, because the table is keyed by exact path and by prefix and the
//! lookup walks the request path's own segment boundaries. The table holds
//! route ids (indexes into the configuration) rather than routes so it stays
//! small and the caller keeps ownership of everything else about a route.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::core::ids::{ListenerId, RouteId};
use crate::core::matching::{ListenerSet, MethodSet, PathMatch};

/// One route as the table needs it, already validated by the configuration.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Index of the route in the configuration; also breaks ties between
    /// routes of equal precedence (lower id first).
    pub id: RouteId,
    /// Lower-case host names without port; empty means any host.
    pub hosts: Vec<String>,
    /// Which request paths the route covers.
    pub path: PathMatch,
    /// Methods the route allows.
    pub methods: MethodSet,
    /// Listeners the route serves, as [`ListenerSet`] bits.
    pub listeners: ListenerSet,
    /// Header values the request must carry, each exactly once.
    pub match_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Outcome of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The id of the route that serves the request.
    Found(RouteId),
    /// Routes cover the path but none allows the method; the set is the union
    /// of their methods, for the `Allow` header.
    MethodNotAllowed(MethodSet),
    /// No route covers the path.
    NotFound,
}

/// Immutable route table; see the module documentation for its cost model.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Routes that name a host, by lower-case host.
    by_host: HashMap<String, Group>,
    /// Routes that accept any host; tried only when no route of the
    /// request's host covers the path.
    any_host: Group,
}

/// Routes sharing a host scope.
#[derive(Debug, Default)]
struct Group {
    exact: HashMap<String, Vec<Candidate>>,
    /// Keyed by prefix without trailing slash (except the root, `/`).
    prefix: HashMap<String, Vec<Candidate>>,
    /// Length of the longest prefix key: probing longer ancestors of the
    /// request path is pointless, and skipping them keeps a hostile path of
    /// thousands of segments from costing thousands of long hashes.
    longest_prefix: usize,
    /// Some route here has `match_headers`: only then can a later
    /// candidate beat the first plain one, so only then does a lookup look
    /// past it.
    conditional: bool,
}

/// Kept in ascending id order so config order decides ties.
#[derive(Debug, Clone)]
struct Candidate {
    id: RouteId,
    methods: MethodSet,
    listeners: ListenerSet,
    /// Empty for most routes; shared by every host the route names.
    match_headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl Candidate {
    /// Each header present exactly once with exactly the value: a request
    /// that repeats the header says two things and matches neither.
    fn headers_match(&self, headers: &HeaderMap) -> bool {
        self.match_headers.iter().all(|(name, want)| {
            let mut values = headers.get_all(name).iter();
            matches!((values.next(), values.next()), (Some(v), None) if v == want)
        })
    }
}

impl RouteTable {
    /// Compiles the routes; done once per configuration load so that every
    /// per-request decision is a handful of hash probes.
    #[must_use]
    pub fn new(routes: Vec<RouteSpec>) -> RouteTable {
        let mut table = RouteTable::default();
        for route in routes {
            let candidate = Candidate {
                id: route.id,
                methods: route.methods,
                listeners: route.listeners,
                match_headers: route.match_headers.into(),
            };
            if route.hosts.is_empty() {
                table.any_host.insert(&route.path, candidate.clone());
            }
            for host in &route.hosts {
                // Lower-cased again so a config mistake cannot make a route
                // unreachable.
                table
                    .by_host
                    .entry(host.to_ascii_lowercase())
                    .or_default()
                    .insert(&route.path, candidate.clone());
            }
        }
        table.any_host.finish();
        table.by_host.values_mut().for_each(Group::finish);
        table
    }

    /// Finds the route for a request.
    ///
    /// `host` is the raw `Host`/`:authority` value (port and case are
    /// ignored); `path` must already be normalized by
    /// [`normalize_path`](super::normalize::normalize_path).
    #[must_use]
    pub fn lookup(&self, host: Option<&str>, path: &str, method: &Method) -> Lookup {
        self.lookup_on(host, path, method, &HeaderMap::new(), None)
    }

    /// [`Self::lookup`] among the routes bound to `listener` (`None`: every
    /// route); routes of other listeners are invisible, 405s included.
    /// `headers` decide between routes with `match_headers`.
    #[must_use]
    pub fn lookup_on(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        listener: Option<ListenerId>,
    ) -> Lookup {
        if let Some(group) = host.and_then(|host| self.host_group(host)) {
            match group.lookup(path, method, headers, listener) {
                Lookup::NotFound => {}
                // Even a 405 stays within the host: its routes claimed the
                // path, and a generic route must not widen what they allow.
                decided => return decided,
            }
        }
        self.any_host.lookup(path, method, headers, listener)
    }

    fn host_group(&self, authority: &str) -> Option<&Group> {
        if self.by_host.is_empty() {
            return None;
        }
        let host = host_of(authority);
        // Clients almost always send lower case; only allocate when not.
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        self.by_host.get(host.as_ref())
    }
}

impl Group {
    fn insert(&mut self, path: &PathMatch, candidate: Candidate) {
        self.conditional |= !candidate.match_headers.is_empty();
        let (map, key) = match path {
            PathMatch::Exact(exact) => (&mut self.exact, exact.as_str()),
            PathMatch::Prefix(prefix) => {
                let key = prefix_key(prefix);
                self.longest_prefix = self.longest_prefix.max(key.len());
                (&mut self.prefix, key)
            }
        };
        map.entry(key.to_owned()).or_default().push(candidate);
    }

    /// Puts candidates in precedence order once, so lookups never sort.
    fn finish(&mut self) {
        for candidates in self.exact.values_mut().chain(self.prefix.values_mut()) {
            candidates.sort_by_key(|candidate| candidate.id);
            // A host listed twice in one route must not duplicate the route.
            candidates.dedup_by_key(|candidate| candidate.id);
        }
    }

    /// The first route in precedence order that allows the method, except
    /// that one whose `match_headers` all match beats one without them;
    /// a route whose headers do not match does not cover the request.
    fn lookup(
        &self,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        listener: Option<ListenerId>,
    ) -> Lookup {
        let exact = self.exact.get(path);
        let prefixes = prefix_keys_of(path)
            .filter(|key| key.len() <= self.longest_prefix)
            .filter_map(|key| self.prefix.get(key));
        let mut path_allows: Option<MethodSet> = None;
        let mut plain = None;
        let serves = |c: &&Candidate| listener.is_none_or(|l| c.listeners.contains(l));
        for candidate in exact.into_iter().chain(prefixes).flatten().filter(serves) {
            let conditional = !candidate.match_headers.is_empty();
            if conditional && !candidate.headers_match(headers) {
                continue;
            }
            if candidate.methods.contains(method) {
                if conditional || !self.conditional {
                    return Lookup::Found(candidate.id);
                }
                plain = plain.or(Some(candidate.id));
                continue;
            }
            path_allows = Some(path_allows.map_or(candidate.methods, |allowed| {
                allowed.union(candidate.methods)
            }));
        }
        match (plain, path_allows) {
            (Some(id), _) => Lookup::Found(id),
            (None, Some(allowed)) => Lookup::MethodNotAllowed(allowed),
            (None, None) => Lookup::NotFound,
        }
    }
}

/// `/api/` must behave like `/api`, because lookups only ever probe keys
/// without a trailing slash; the root stays `/`.
fn prefix_key(prefix: &str) -> &str {
    match prefix.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

/// Every prefix key that covers `path`, longest first: the path itself, each
/// ancestor at a segment boundary, then the root.
fn prefix_keys_of(path: &str) -> impl Iterator<Item = &str> {
    let whole = Some(path).filter(|path| !path.ends_with('/'));
    // A '/' at index 0 would give "" and at index 1 (only in "//") the root,
    // which comes last anyway.
    let ancestors = path
        .rmatch_indices('/')
        .filter(|&(index, _)| index > 1)
        .filter_map(|(index, _)| path.get(..index));
    whole
        .into_iter()
        .chain(ancestors)
        .chain(std::iter::once("/"))
}

/// Strips the port from a `Host`/`:authority` value, keeping IPv6 literals
/// in their brackets so their colons are not mistaken for a port separator.
#[must_use]
pub fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority
            .split_once(':')
            .map_or(authority, |(host, _port)| host)
    }
}

#[cfg(test)]
mod tests;
