//! `[protection]`: rules that hold for every route.

use super::authz::cidr_rules;
use super::diag::Diagnostics;
use super::model::Protection;
use super::reader::Table;

pub fn protection(d: &mut Diagnostics, root: &Table) -> Protection {
    let mut out = Protection::default();
    let Some(t) = root.table(d, "protection") else {
        return out;
    };
    out.cidrs = cidr_rules(d, &t);
    t.finish(d);
    out
}
