//! What a route matches on: a path, a set of methods, a set of listeners.

use http::Method;

use super::ids::ListenerId;

/// How a route's path is compared with the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// The request path must be exactly this string.
    Exact(String),
    /// The request path must be this path or lie below it, at a segment
    /// boundary (`/api` covers `/api/x` but not `/apiary`).
    Prefix(String),
}

impl PathMatch {
    /// The path as a template (`/orders`, `/orders/*`): a span's
    /// `http.route` and the dashboard's route column. Built once per
    /// snapshot, not per request.
    pub fn template(&self) -> String {
        match self {
            PathMatch::Exact(p) => p.clone(),
            PathMatch::Prefix(p) if p.ends_with('/') => format!("{p}*"),
            PathMatch::Prefix(p) => format!("{p}/*"),
        }
    }
}

/// Bit set of HTTP methods a route allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodSet(u16);

/// Methods a route can name, in the order `Allow` lists them; a method's
/// position is its bit.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

/// Bit for methods outside [`STANDARD_METHODS`]: no method list can name
/// them, so only a route that allows any method lets them through.
const EXTENSION_BIT: u16 = 1 << STANDARD_METHODS.len();

impl MethodSet {
    /// Every method, including extension methods such as `PROPFIND`.
    pub const ANY: MethodSet = MethodSet(EXTENSION_BIT | (EXTENSION_BIT - 1));

    /// HEAD alone; configuration adds it wherever GET is allowed.
    pub const HEAD: MethodSet = MethodSet(1 << 1);

    /// Parses one method name from configuration.
    ///
    /// Case-sensitive because HTTP method names are; `get` would never match
    /// a request, so it is refused rather than silently dead.
    pub fn parse(name: &str) -> Option<MethodSet> {
        standard_bit(name).map(MethodSet)
    }

    /// Combines two sets, e.g. the method list of one route.
    #[must_use]
    pub fn union(self, other: MethodSet) -> MethodSet {
        MethodSet(self.0 | other.0)
    }

    /// Whether a request with this method may use the route.
    #[must_use]
    pub fn contains(self, method: &Method) -> bool {
        let bit = standard_bit(method.as_str()).unwrap_or(EXTENSION_BIT);
        self.0 & bit != 0
    }

    /// Value for the `Allow` header of a 405 response.
    #[must_use]
    pub fn allow_header(self) -> String {
        let mut header = String::new();
        for (index, name) in STANDARD_METHODS.iter().enumerate() {
            if self.0 & (1 << index) != 0 {
                if !header.is_empty() {
                    header.push_str(", ");
                }
                header.push_str(name);
            }
        }
        header
    }
}

fn standard_bit(name: &str) -> Option<u16> {
    STANDARD_METHODS
        .iter()
        .position(|&standard| standard == name)
        .map(|index| 1 << index)
}

/// Bit set of listener indexes a route is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerSet(u64);

impl ListenerSet {
    /// The most listeners a configuration may have: one bit each.
    pub const MAX: usize = 64;
    /// A route without `listeners`.
    pub const ALL: ListenerSet = ListenerSet(u64::MAX);

    /// The listeners of these indexes (each below [`Self::MAX`]); empty
    /// means all.
    #[must_use]
    pub fn of(indexes: &[ListenerId]) -> ListenerSet {
        if indexes.is_empty() {
            return ListenerSet::ALL;
        }
        ListenerSet(
            indexes
                .iter()
                .map(|i| i.index())
                .filter(|i| *i < Self::MAX)
                .fold(0, |bits, i| bits | (1 << i)),
        )
    }

    #[must_use]
    pub fn contains(self, listener: ListenerId) -> bool {
        let i = listener.index();
        i < Self::MAX && self.0 & (1 << i) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_template_names_what_the_route_covers() {
        assert_eq!(PathMatch::Exact("/orders".into()).template(), "/orders");
        assert_eq!(PathMatch::Prefix("/orders".into()).template(), "/orders/*");
        assert_eq!(PathMatch::Prefix("/ws/".into()).template(), "/ws/*");
    }

    fn methods(names: &[&str]) -> MethodSet {
        names
            .iter()
            .map(|name| MethodSet::parse(name).unwrap())
            .reduce(MethodSet::union)
            .unwrap()
    }

    #[test]
    fn method_set() {
        assert_eq!(MethodSet::parse("get"), None);
        assert_eq!(MethodSet::parse("PROPFIND"), None);
        assert_eq!(MethodSet::parse(""), None);
        let set = methods(&["POST", "GET", "HEAD"]);
        assert_eq!(set.allow_header(), "GET, HEAD, POST");
        assert!(set.contains(&Method::GET));
        assert!(!set.contains(&Method::PUT));
        let propfind = Method::from_bytes(b"PROPFIND").unwrap();
        assert!(!set.contains(&propfind));
        assert!(MethodSet::ANY.contains(&propfind));
        assert!(MethodSet::ANY.contains(&Method::CONNECT));
        assert_eq!(
            MethodSet::ANY.allow_header(),
            "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT"
        );
        let all_nine = STANDARD_METHODS.map(|name| MethodSet::parse(name).unwrap());
        let all_nine = all_nine.into_iter().reduce(MethodSet::union).unwrap();
        assert_eq!(all_nine.allow_header(), MethodSet::ANY.allow_header());
        assert!(!all_nine.contains(&propfind));
    }
}
