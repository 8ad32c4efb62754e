//! CEL policies: a route's `policy` expression, compiled once at load and
//! evaluated per request against the caller's claims, identity and request.
//!
//! Evaluation fails closed: anything but `true` — `false`, another type, a
//! missing claim or header — denies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use cel::common::ast::{EntryExpr, Expr, IdedEntryExpr};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt,
};
use cel::common::value::Val;
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
    headers: HeaderReads,
}

/// The request headers a policy reads (`request.headers["name"]`,
/// `request.headers.name`, `"name" in request.headers`), or `all` when it
/// reads them in any other way (a key computed at run time, the map
/// whole). Each must arrive exactly once, as visible ASCII: a policy must
/// not judge one copy while the upstream reads another.
#[derive(Debug, Default)]
struct HeaderReads {
    names: Vec<String>,
    all: bool,
}

/// What a policy reads of each variable: only that is built per request.
#[derive(Debug, Default)]
struct Uses {
    claims: Option<Fields>,
    identity: Option<Fields>,
    request: Option<Fields>,
}

#[derive(Debug, Default)]
struct Fields {
    whole: bool,
    names: Vec<String>,
}

impl Fields {
    fn add(&mut self, field: Option<&str>) {
        match field {
            None => self.whole = true,
            Some(f) if !self.names.iter().any(|n| n == f) => self.names.push(f.to_string()),
            Some(_) => {}
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.whole || self.names.iter().any(|n| n == name)
    }
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
        for (name, field) in free {
            let slot = match name {
                "claims" => &mut uses.claims,
                "identity" => &mut uses.identity,
                "request" => &mut uses.request,
                other => return Err(PolicyError::UnknownVariable(other.to_string())),
            };
            slot.get_or_insert_with(Fields::default).add(field);
        }
        let mut headers = HeaderReads::default();
        if uses.request.as_ref().is_some_and(|f| f.wants("headers")) {
            header_reads(program.expression(), &mut headers);
            if uses.request.as_ref().is_some_and(|f| f.whole) {
                headers.all = true;
            }
        }
        Ok(Policy {
            source: source.to_string(),
            program,
            env,
            uses,
            headers,
        })
    }

    /// `Err` naming the first header the policy reads that is repeated or
    /// not visible ASCII.
    fn check_headers(&self, headers: &http::HeaderMap) -> Result<(), String> {
        let bad = |name: &str| {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => !crate::core::text::is_visible_ascii(v),
                (None, _) => false,
                (Some(_), Some(_)) => true,
            }
        };
        let offending = if self.headers.all {
            headers
                .keys()
                .map(http::HeaderName::as_str)
                .find(|n| bad(n))
        } else {
            self.headers
                .names
                .iter()
                .map(String::as_str)
                .find(|n| bad(n))
        };
        match offending {
            Some(name) => Err(format!("header `{name}` is repeated or not visible ASCII")),
            None => Ok(()),
        }
    }

    /// Whether the policy allows the request: only a boolean `true` does.
    /// `Err` carries why evaluation failed, for the security log.
    pub fn allows(
        &self,
        identity: Option<&Identity>,
        request: &RequestView<'_>,
    ) -> Result<bool, String> {
        self.check_headers(request.headers)?;
        let mut context = Context::with_env(self.env.clone());
        // The variables borrow from the identity and the request: nothing
        // is copied into the interpreter's own values.
        if let Some(fields) = &self.uses.claims {
            let claims: Box<dyn Val + '_> = match identity {
                Some(id) => json_object(&id.claims, fields),
                None => Box::new(CelMap::from(HashMap::new())),
            };
            context.add_variable_as_val("claims", claims);
        }
        if let Some(fields) = &self.uses.identity {
            let value: Box<dyn Val + '_> = match identity {
                Some(id) => identity_val(id, fields),
                None => Box::new(CelNull),
            };
            context.add_variable_as_val("identity", value);
        }
        if let Some(fields) = &self.uses.request {
            context.add_variable_as_val("request", request_val(request, fields));
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("the policy gave {other:?}, not a boolean")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A variable the policy reads, and the field it selects on it (`None`:
/// the variable is used whole, e.g. indexed or passed to a function).
type Use<'e> = (&'e str, Option<&'e str>);

/// The variables `expr` reads that no macro (`exists`, `map`, ...) binds:
/// those must be ones the gateway provides.
fn free_variables<'e>(expr: &'e IdedExpr, bound: &mut Vec<&'e str>, out: &mut Vec<Use<'e>>) {
    match &expr.expr {
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(&name.as_str()) {
                out.push((name, None));
            }
        }
        Expr::Select(select) => match &select.operand.expr {
            Expr::Ident(name) if !name.starts_with('@') && !bound.contains(&name.as_str()) => {
                out.push((name, Some(&select.field)));
            }
            _ => free_variables(&select.operand, bound, out),
        },
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
    out: &mut Vec<Use<'e>>,
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

/// Whether `expr` is `request.headers`.
fn is_request_headers(expr: &IdedExpr) -> bool {
    matches!(&expr.expr, Expr::Select(s)
        if s.field == "headers" && matches!(&s.operand.expr, Expr::Ident(n) if n == "request"))
}

fn string_literal(expr: &IdedExpr) -> Option<&str> {
    match &expr.expr {
        Expr::Literal(cel::common::ast::LiteralValue::String(s)) => Some(s.as_ref()),
        _ => None,
    }
}

/// Collects the header names `expr` reads; see [`HeaderReads`].
fn header_reads(expr: &IdedExpr, out: &mut HeaderReads) {
    let mut name = |n: &str| {
        let n = n.to_ascii_lowercase();
        if !out.names.contains(&n) {
            out.names.push(n);
        }
    };
    match &expr.expr {
        _ if is_request_headers(expr) => out.all = true,
        Expr::Select(s) if is_request_headers(&s.operand) => name(&s.field),
        Expr::Call(call)
            if matches!(
                call.func_name.as_str(),
                cel::common::ast::operators::INDEX | cel::common::ast::operators::OPT_INDEX
            ) && call.args.len() == 2
                && is_request_headers(&call.args[0]) =>
        {
            match string_literal(&call.args[1]) {
                Some(n) => name(n),
                None => {
                    out.all = true;
                    header_reads(&call.args[1], out);
                }
            }
        }
        Expr::Call(call)
            if call.func_name == cel::common::ast::operators::IN
                && call.args.len() == 2
                && is_request_headers(&call.args[1]) =>
        {
            match string_literal(&call.args[0]) {
                Some(n) => name(n),
                None => {
                    out.all = true;
                    header_reads(&call.args[0], out);
                }
            }
        }
        Expr::Select(s) => header_reads(&s.operand, out),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                header_reads(target, out);
            }
            for arg in &call.args {
                header_reads(arg, out);
            }
        }
        Expr::List(list) => list.elements.iter().for_each(|e| header_reads(e, out)),
        Expr::Map(map) => map.entries.iter().for_each(|e| entry_header_reads(e, out)),
        Expr::Struct(st) => st.entries.iter().for_each(|e| entry_header_reads(e, out)),
        Expr::Comprehension(c) => {
            for e in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                header_reads(e, out);
            }
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entry_header_reads(entry: &IdedEntryExpr, out: &mut HeaderReads) {
    match &entry.expr {
        EntryExpr::StructField(f) => header_reads(&f.value, out),
        EntryExpr::MapEntry(e) => {
            header_reads(&e.key, out);
            header_reads(&e.value, out);
        }
    }
}

type Map<'a> = HashMap<CelMapKey<'a>, Box<dyn Val + 'a>>;

fn text(s: &str) -> Box<dyn Val + '_> {
    Box::new(CelString::from(s))
}

fn owned_text<'a>(s: String) -> Box<dyn Val + 'a> {
    Box::new(CelString::from(s))
}

fn texts(list: &[String]) -> Box<dyn Val + '_> {
    Box::new(CelList::from(
        list.iter().map(|s| text(s)).collect::<Vec<_>>(),
    ))
}

fn map<'a>(entries: Map<'a>) -> Box<dyn Val + 'a> {
    Box::new(CelMap::from(entries))
}

/// JSON as CEL: integers are `int` when they fit (as CEL literals are),
/// else `uint` or `double`.
fn json_val(value: &serde_json::Value) -> Box<dyn Val + '_> {
    match value {
        serde_json::Value::Null => Box::new(CelNull),
        serde_json::Value::Bool(b) => Box::new(CelBool::from(*b)),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        serde_json::Value::String(s) => text(s),
        serde_json::Value::Array(items) => Box::new(CelList::from(
            items.iter().map(json_val).collect::<Vec<_>>(),
        )),
        serde_json::Value::Object(o) => json_object(o, &ALL),
    }
}

static ALL: Fields = Fields {
    whole: true,
    names: Vec::new(),
};

fn json_object<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    fields: &Fields,
) -> Box<dyn Val + 'a> {
    map(object
        .iter()
        .filter(|(k, _)| fields.wants(k))
        .map(|(k, v)| (CelMapKey::from(k.as_str()), json_val(v)))
        .collect())
}

fn identity_val<'a>(id: &'a Identity, fields: &Fields) -> Box<dyn Val + 'a> {
    let mut m: Map<'a> = HashMap::with_capacity(5);
    let mut put = |name: &'static str, value: &dyn Fn() -> Box<dyn Val + 'a>| {
        if fields.wants(name) {
            m.insert(name.into(), value());
        }
    };
    put("method", &|| text(id.method.as_str()));
    put("subject", &|| text(&id.subject));
    put("consumer", &|| {
        id.consumer
            .as_deref()
            .map_or_else(|| Box::new(CelNull) as _, text)
    });
    put("scopes", &|| texts(&id.scopes));
    put("roles", &|| texts(&id.roles));
    map(m)
}

fn request_val<'a>(r: &RequestView<'a>, fields: &Fields) -> Box<dyn Val + 'a> {
    let mut m: Map<'a> = HashMap::with_capacity(7);
    let mut put = |name: &'static str, value: &dyn Fn() -> Box<dyn Val + 'a>| {
        if fields.wants(name) {
            m.insert(name.into(), value());
        }
    };
    put("method", &|| text(r.method));
    put("path", &|| text(r.path));
    put("host", &|| {
        r.host.map_or_else(|| Box::new(CelNull) as _, text)
    });
    put("headers", &|| headers_val(r.headers));
    put("query", &|| query_val(r.query));
    put("client_ip", &|| {
        r.client_ip
            .map_or_else(|| Box::new(CelNull) as _, |ip| owned_text(ip.to_string()))
    });
    put("time", &|| {
        Box::new(CelTimestamp::from(chrono::Utc::now().fixed_offset()))
    });
    map(m)
}

/// The headers that arrived exactly once as visible ASCII; the policy's
/// reads were checked against exactly that rule before evaluation.
fn headers_val(h: &http::HeaderMap) -> Box<dyn Val + '_> {
    let mut headers: Map<'_> = HashMap::with_capacity(h.keys_len());
    for name in h.keys() {
        let mut values = h.get_all(name).iter();
        if let (Some(value), None) = (values.next(), values.next()) {
            if let (true, Ok(text_value)) =
                (crate::core::text::is_visible_ascii(value), value.to_str())
            {
                headers.insert(CelMapKey::from(name.as_str()), text(text_value));
            }
        }
    }
    map(headers)
}

/// Query parameters, percent-decoded. A parameter given more than once is
/// left out entirely: a policy must not check one copy while the upstream
/// reads another (HTTP parameter pollution), so naming it fails closed.
fn query_val<'a>(query: Option<&'a str>) -> Box<dyn Val + 'a> {
    let mut seen: HashMap<String, Option<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        seen.entry(k.into_owned())
            .and_modify(|slot| *slot = None)
            .or_insert_with(|| Some(v.into_owned()));
    }
    map(seen
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (CelMapKey::from(k), owned_text(v))))
        .collect())
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
            forwarded: Default::default(),
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
    fn a_read_header_must_arrive_once_as_visible_ascii() {
        let p = r#"claims.tenant == request.headers["x-tenant-id"]"#;
        assert!(eval(p, &[("x-tenant-id", "acme"), ("x-tenant-id", "acme")], None).is_err());
        let mut map = http::HeaderMap::new();
        map.append(
            "x-tenant-id",
            http::HeaderValue::from_bytes(b"m\xfcller").unwrap(),
        );
        map.append("x-tenant-id", http::HeaderValue::from_static("acme"));
        let policy = Policy::compile(p).unwrap();
        let view = RequestView {
            method: "GET",
            path: "/",
            host: None,
            headers: &map,
            query: None,
            client_ip: None,
        };
        assert!(policy.allows(Some(&identity()), &view).is_err());
        // Absence checks fail closed too, and other headers do not matter.
        let p = r#"!("x-admin" in request.headers)"#;
        assert_eq!(eval(p, &[("accept", "a"), ("accept", "b")], None), Ok(true));
        assert!(eval(p, &[("x-admin", "1"), ("x-admin", "1")], None).is_err());
        let p = r#"request.headers.x_debug == "1" || has(request.headers.x_other)"#;
        assert!(eval(p, &[("x_other", "1"), ("x_other", "2")], None).is_err());
        // A computed key reads every header.
        let p = r#"request.headers["x-" + "a"] == "1""#;
        assert!(eval(p, &[("x-a", "1"), ("b", "1"), ("b", "2")], None).is_err());
        assert_eq!(eval(p, &[("x-a", "1"), ("b", "1")], None), Ok(true));
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
