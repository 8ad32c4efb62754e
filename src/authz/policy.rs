//! CEL policies: a route's `policy` expression, compiled once at load and
//! evaluated per request against the caller's claims, identity and request.
//!
//! Evaluation fails closed: anything but `true` — `false`, another type, a
//! missing claim or header — denies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr};
use cel::{Context, Env, IdedExpr, Program, Value};

use crate::auth::Identity;

/// The variables a policy may name.
pub const VARIABLES: [&str; 3] = ["claims", "identity", "request"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The expression does not parse; `line`/`column` are within it.
    #[error("invalid CEL at {line}:{column}: {message}")]
    Syntax {
        line: isize,
        column: isize,
        message: String,
    },
    #[error("unknown variable `{0}` (a policy may use claims, identity and request)")]
    UnknownVariable(String),
}

/// A compiled policy. Only the variables it names are built per request.
pub struct Policy {
    source: String,
    program: Program,
    env: Arc<Env>,
    uses: Uses,
}

#[derive(Debug, Clone, Copy, Default)]
struct Uses {
    claims: bool,
    identity: bool,
    request: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Policy").field(&self.source).finish()
    }
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The request as a policy sees it. Borrowed: nothing is copied unless the
/// policy names `request`.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub query: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
}

impl Policy {
    pub fn compile(source: &str) -> Result<Policy, PolicyError> {
        let env = Arc::new(Env::stdlib());
        let program = env.compile(source).map_err(|errors| {
            let first = errors.errors.first();
            PolicyError::Syntax {
                line: first.map_or(1, |e| e.pos.0),
                column: first.map_or(1, |e| e.pos.1),
                message: first.map_or_else(|| "syntax error".to_string(), |e| e.msg.clone()),
            }
        })?;
        let mut free = Vec::new();
        free_variables(program.expression(), &mut Vec::new(), &mut free);
        let mut uses = Uses::default();
        for name in free {
            match name {
                "claims" => uses.claims = true,
                "identity" => uses.identity = true,
                "request" => uses.request = true,
                other => return Err(PolicyError::UnknownVariable(other.to_string())),
            }
        }
        Ok(Policy {
            source: source.to_string(),
            program,
            env,
            uses,
        })
    }

    /// Whether the policy allows the request: only a boolean `true` does.
    /// `Err` carries why evaluation failed, for the security log.
    pub fn allows(
        &self,
        identity: Option<&Identity>,
        request: &RequestView<'_>,
    ) -> Result<bool, String> {
        let mut context = Context::with_env(self.env.clone());
        if self.uses.claims {
            let claims = match identity {
                Some(id) => cel::to_value(&id.claims).map_err(|e| e.to_string())?,
                None => Value::Map(HashMap::<String, Value>::new().into()),
            };
            context.add_variable_from_value("claims", claims);
        }
        if self.uses.identity {
            context
                .add_variable_from_value("identity", identity.map_or(Value::Null, identity_value));
        }
        if self.uses.request {
            context.add_variable_from_value("request", request_value(request));
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the policy gave {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The variables `expr` reads that no macro (`exists`, `map`, ...) binds:
/// those must be ones the gateway provides.
fn free_variables<'e>(expr: &'e IdedExpr, bound: &mut Vec<&'e str>, out: &mut Vec<&'e str>) {
    match &expr.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(&name.as_str()) {
                out.push(name);
            }
        }
        Expr::Select(select) => free_variables(&select.operand, bound, out),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(target, bound, out);
            }
            for arg in &call.args {
                free_variables(arg, bound, out);
            }
        }
        Expr::List(list) => {
            for e in &list.elements {
                free_variables(e, bound, out);
            }
        }
        Expr::Map(map) => entries_free(&map.entries, bound, out),
        Expr::Struct(s) => entries_free(&s.entries, bound, out),
        Expr::Comprehension(c) => {
            free_variables(&c.iter_range, bound, out);
            free_variables(&c.accu_init, bound, out);
            let depth = bound.len();
            bound.push(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                bound.push(v);
            }
            bound.push(&c.accu_var);
            free_variables(&c.loop_cond, bound, out);
            free_variables(&c.loop_step, bound, out);
            free_variables(&c.result, bound, out);
            bound.truncate(depth);
        }
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entries_free<'e>(
    entries: &'e [IdedEntryExpr],
    bound: &mut Vec<&'e str>,
    out: &mut Vec<&'e str>,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::StructField(f) => free_variables(&f.value, bound, out),
            EntryExpr::MapEntry(e) => {
                free_variables(&e.key, bound, out);
                free_variables(&e.value, bound, out);
            }
        }
    }
}

fn strings(list: &[String]) -> Value {
    Value::List(Arc::new(
        list.iter()
            .map(|s| Value::String(Arc::new(s.clone())))
            .collect(),
    ))
}

fn text(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn identity_value(id: &Identity) -> Value {
    let mut map: HashMap<&str, Value> = HashMap::with_capacity(5);
    map.insert("method", text(id.method.as_str()));
    map.insert("subject", text(&id.subject));
    map.insert("consumer", id.consumer.as_deref().map_or(Value::Null, text));
    map.insert("scopes", strings(&id.scopes));
    map.insert("roles", strings(&id.roles));
    map.into()
}

fn request_value(r: &RequestView<'_>) -> Value {
    let mut headers: HashMap<String, Value> = HashMap::with_capacity(r.headers.keys_len());
    for name in r.headers.keys() {
        // Repeated headers read as one, joined like HTTP joins them; a
        // value that is not text is left out.
        let values: Vec<&str> = r
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            headers.insert(name.as_str().to_string(), text(&values.join(", ")));
        }
    }
    let mut map: HashMap<&str, Value> = HashMap::with_capacity(7);
    map.insert("method", text(r.method));
    map.insert("path", text(r.path));
    map.insert("host", r.host.map_or(Value::Null, text));
    map.insert("headers", headers.into());
    map.insert("query", query_value(r.query));
    map.insert(
        "client_ip",
        r.client_ip.map_or(Value::Null, |ip| text(&ip.to_string())),
    );
    map.insert("time", Value::Timestamp(chrono::Utc::now().fixed_offset()));
    map.into()
}

/// Query parameters, percent-decoded. A parameter given more than once is
/// left out entirely: a policy must not check one copy while the upstream
/// reads another (HTTP parameter pollution), so naming it fails closed.
fn query_value(query: Option<&str>) -> Value {
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        seen.entry(k.into_owned())
            .and_modify(|slot| *slot = None)
            .or_insert_with(|| Some(v.into_owned()));
    }
    let map: HashMap<String, Value> = seen
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, Value::String(Arc::new(v)))))
        .collect();
    map.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthMethod;

    fn identity() -> Identity {
        let claims = serde_json::json!({"tenant": "acme", "realm_access": {"roles": ["admin"]}});
        Identity {
            method: AuthMethod::Jwt,
            provider: "corp".into(),
            subject: "alice".into(),
            consumer: Some("web".into()),
            scopes: vec!["orders:read".into()],
            roles: vec!["admin".into()],
            claims: claims.as_object().cloned().unwrap_or_default(),
        }
    }

    fn eval(source: &str, headers: &[(&str, &str)], query: Option<&str>) -> Result<bool, String> {
        let policy = Policy::compile(source).unwrap();
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let view = RequestView {
            method: "GET",
            path: "/orders/1",
            host: Some("api.test"),
            headers: &map,
            query,
            client_ip: Some("10.1.2.3".parse().unwrap()),
        };
        policy.allows(Some(&identity()), &view)
    }

    #[test]
    fn tenant_isolation() {
        let p = r#"claims.tenant == request.headers["x-tenant-id"]"#;
        assert_eq!(eval(p, &[("x-tenant-id", "acme")], None), Ok(true));
        assert_eq!(eval(p, &[("x-tenant-id", "other")], None), Ok(false));
        assert!(eval(p, &[], None).is_err());
    }

    #[test]
    fn identity_and_request_fields() {
        assert_eq!(
            eval(
                r#"identity.subject == "alice" && "admin" in identity.roles && request.method == "GET" && request.client_ip.startsWith("10.")"#,
                &[],
                None
            ),
            Ok(true)
        );
        assert_eq!(eval(r#"request.time.getHours() >= 0"#, &[], None), Ok(true));
    }

    #[test]
    fn duplicated_query_parameters_are_absent() {
        let p = r#"request.query.tenant == "acme""#;
        assert_eq!(eval(p, &[], Some("tenant=acme")), Ok(true));
        assert!(eval(p, &[], Some("tenant=acme&tenant=evil")).is_err());
        assert_eq!(
            eval(
                r#"has(request.query.tenant)"#,
                &[],
                Some("tenant=a&tenant=b")
            ),
            Ok(false)
        );
    }

    #[test]
    fn macro_variables_are_not_free() {
        assert_eq!(
            eval(
                r#"identity.roles.exists(r, r == "admin") && [1, 2].all(x, x > 0)"#,
                &[],
                None
            ),
            Ok(true)
        );
        assert_eq!(
            Policy::compile("identity.roles.exists(r, r == x)").err(),
            Some(PolicyError::UnknownVariable("x".into()))
        );
    }

    #[test]
    fn non_boolean_denies() {
        assert!(eval("claims.tenant", &[], None).is_err());
    }

    #[test]
    fn compile_errors() {
        assert!(matches!(
            Policy::compile("claims.tenant == "),
            Err(PolicyError::Syntax { .. })
        ));
        assert_eq!(
            Policy::compile("claim.tenant == 'a'").err(),
            Some(PolicyError::UnknownVariable("claim".into()))
        );
    }
}
