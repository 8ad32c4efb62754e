//! Authorization: what an authenticated caller may do on a route.
//!
//! The rules run in a fixed order, cheapest first — scopes, roles, the CEL
//! policy, then the external service — and the first that refuses decides.
//! Every refusal names the rule, for the security log.

pub(crate) mod external;
pub mod policy;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::auth::Identity;
use external::{Decision, ExternalAuthz, Question};
use policy::{Policy, RequestView};

/// Why a request was not allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// A required scope is missing (403 `insufficient_scope`).
    Scope,
    /// Another rule refused (403 `forbidden`).
    Rule(Rule),
    /// The external service could not answer: fail closed (503).
    Unavailable,
}

/// A route's authorization rules, compiled.
#[derive(Default)]
pub struct RouteAuthz {
    /// All of them must be granted.
    pub require_scopes: Vec<String>,
    /// Any one of them suffices.
    pub allow_roles: Vec<String>,
    pub policy: Option<Arc<Policy>>,
    pub external: Option<Arc<ExternalAuthz>>,
}

impl RouteAuthz {
    pub fn is_empty(&self) -> bool {
        self.require_scopes.is_empty()
            && self.allow_roles.is_empty()
            && self.policy.is_none()
            && self.external.is_none()
    }

    /// The rules in their one order: scopes, roles, the CEL policy, then
    /// the external service. Allowed requests get the headers the external
    /// service added for the upstream.
    pub async fn decide(
        &self,
        identity: Option<&Identity>,
        view: &RequestView<'_>,
        question: &Question<'_>,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Denial> {
        if self.missing_scope(identity).is_some() {
            return Err(Denial::Scope);
        }
        if !self.role_allowed(identity) {
            return Err(Denial::Rule(Rule::Role));
        }
        if let Some(policy) = &self.policy {
            match policy.allows(identity, view) {
                Ok(true) => {}
                Ok(false) => return Err(Denial::Rule(Rule::Policy)),
                Err(_) => return Err(Denial::Rule(Rule::PolicyError)),
            }
        }
        let Some(external) = &self.external else {
            return Ok(Vec::new());
        };
        match external.decide(question).await {
            Ok(decision) => match &*decision {
                Decision::Allow(headers) => Ok(headers.clone()),
                Decision::Deny => Err(Denial::Rule(Rule::External)),
            },
            Err(_) => Err(Denial::Unavailable),
        }
    }

    /// The first required scope the caller lacks; `None` when all are
    /// granted. No identity grants nothing.
    pub fn missing_scope(&self, identity: Option<&Identity>) -> Option<&str> {
        self.require_scopes
            .iter()
            .find(|s| !identity.is_some_and(|id| id.scopes.iter().any(|g| g == *s)))
            .map(String::as_str)
    }

    /// Whether the caller holds one of `allow_roles` (or the route names
    /// none).
    pub fn role_allowed(&self, identity: Option<&Identity>) -> bool {
        self.allow_roles.is_empty()
            || identity.is_some_and(|id| id.roles.iter().any(|r| self.allow_roles.contains(r)))
    }
}

/// Which rule refused a request: the security log's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Cidr,
    Scope,
    Role,
    Policy,
    /// The policy could not be evaluated (a missing claim or header): it
    /// denies, fail closed.
    PolicyError,
    External,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Cidr => "cidr",
            Rule::Scope => "scope",
            Rule::Role => "role",
            Rule::Policy => "policy",
            Rule::PolicyError => "policy_error",
            Rule::External => "external",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;

    fn id(scopes: &[&str], roles: &[&str]) -> Identity {
        Identity {
            method: AuthMethod::ApiKey,
            provider: "keys".into(),
            subject: "acme".into(),
            consumer: None,
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            claims: Default::default(),
            forwarded: Default::default(),
        }
    }

    #[test]
    fn scopes_all_roles_any() {
        let rules = RouteAuthz {
            require_scopes: vec!["a".into(), "b".into()],
            allow_roles: vec!["admin".into(), "partner".into()],
            ..Default::default()
        };
        assert_eq!(rules.missing_scope(Some(&id(&["a"], &[]))), Some("b"));
        assert_eq!(rules.missing_scope(Some(&id(&["b", "a"], &[]))), None);
        assert_eq!(rules.missing_scope(None), Some("a"));
        assert!(rules.role_allowed(Some(&id(&[], &["partner"]))));
        assert!(!rules.role_allowed(Some(&id(&[], &["user"]))));
        assert!(!rules.role_allowed(None));
        assert!(RouteAuthz::default().role_allowed(None));
    }
}
