//! Ids of configured things: places in the compiled snapshot's lists, typed
//! so that one kind can never be used for another.

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(usize);

        impl $name {
            pub const fn new(index: usize) -> Self {
                $name(index)
            }

            pub const fn index(self) -> usize {
                self.0
            }
        }
    };
}

id!(
    /// A route: its place in `[[routes]]`, which also breaks ties between
    /// routes of equal precedence.
    RouteId
);
id!(
    /// An `[auth.NAME]` provider, by its place among the providers.
    ProviderId
);
id!(
    /// An `[upstreams.NAME]` pool, by its place among the upstreams.
    UpstreamId
);
id!(
    /// A `[[listeners]]` entry, by its place in the file.
    ListenerId
);
