//! `json_schema`: request bodies checked against a JSON Schema before they
//! reach the upstream.
//!
//! The schema is compiled once, when the configuration is loaded, so a
//! broken schema stops the load instead of failing requests. Compilation
//! never leaves the document: `$ref`s that would need another file or a URL
//! are refused, because a configuration file must not be able to make the
//! gateway fetch anything.
//!
//! What the client is told about a failure is deliberately thin: where in
//! the body (a sanitized JSON pointer) and which keyword failed, never the
//! offending value nor the validator's own wording, which quotes it.

use std::fmt;
use std::path::{Path, PathBuf};

use http::HeaderValue;
use jsonschema::error::ValidationErrorKind;
use jsonschema::{PatternOptions, ReferencingError, Retrieve, Uri, ValidationError};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Longest pointer, in characters, that a client-facing message carries.
/// Key names are client-chosen, so an unbounded pointer would let a client
/// grow our responses and log lines at will.
const MAX_POINTER_CHARS: usize = 200;

/// Why a schema file cannot be used. Reported at configuration load.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("json_schema `{path}`: cannot read the file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("json_schema `{path}`: not valid JSON at line {line}, column {column}: {message}")]
    NotJson {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "json_schema `{path}`: `$ref` to `{uri}` points outside the schema file; \
         the gateway resolves only references within the same document"
    )]
    ExternalRef { path: PathBuf, uri: String },
    #[error("json_schema `{path}`: not a valid JSON Schema (at `{location}`): {message}")]
    Invalid {
        path: PathBuf,
        location: String,
        message: String,
    },
}

/// Why a request body was refused. The `Display` text is what the client
/// may be shown (`400 invalid_body`): it never repeats body content beyond
/// a sanitized, bounded pointer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("request body is not valid JSON")]
    NotJson,
    /// Duplicate keys are refused because parsers disagree on which one
    /// wins: the schema would check one value and the upstream read another.
    #[error("request body has a duplicate object key")]
    DuplicateKey,
    #[error(
        "request body does not match the schema at {} ({keyword})",
        describe(pointer)
    )]
    Invalid {
        /// The first failing location in the body, as a JSON pointer,
        /// already sanitized (printable ASCII, at most 200 characters).
        pointer: String,
        /// The schema keyword that failed (`type`, `required`, ...).
        keyword: &'static str,
    },
}

fn describe(pointer: &str) -> &str {
    if pointer.is_empty() {
        "the document root"
    } else {
        pointer
    }
}

/// A compiled `json_schema` of a route.
#[derive(Clone)]
pub struct JsonSchema {
    path: PathBuf,
    /// Kept so that a reload can tell an unchanged schema from an edited one.
    source: Vec<u8>,
    validator: jsonschema::Validator,
}

impl PartialEq for JsonSchema {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.source == other.source
    }
}

impl fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchema")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Refuses every resource that is not part of the schema document itself.
/// The bundled meta-schemas are resolved without asking it.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        _uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err("external references are not resolved".into())
    }
}

impl JsonSchema {
    /// Reads and compiles the schema at `path`.
    ///
    /// `pattern`s use the linear-time `regex` engine: patterns run against
    /// client input, and a backtracking engine would let a crafted body
    /// burn CPU. A pattern that needs backtracking (look-around,
    /// back-references) is therefore a load error. `format` is asserted,
    /// not merely annotated, since an operator who writes it expects it
    /// enforced.
    pub fn load(path: &Path) -> Result<JsonSchema, SchemaError> {
        let source = std::fs::read(path).map_err(|source| SchemaError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let document: Value =
            serde_json::from_slice(&source).map_err(|e| SchemaError::NotJson {
                path: path.to_path_buf(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
        let validator = jsonschema::options()
            .with_retriever(NoRetrieval)
            .with_pattern_options(PatternOptions::regex())
            .should_validate_formats(true)
            .build(&document)
            .map_err(|e| schema_error(path, e))?;
        Ok(JsonSchema {
            path: path.to_path_buf(),
            source,
            validator,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a complete request body. Only the first failure is reported,
    /// in the validator's deterministic order, so the same body always gets
    /// the same answer.
    pub fn validate(&self, body: &[u8]) -> Result<(), BodyError> {
        let StrictValue(instance) = serde_json::from_slice(body).map_err(|e| {
            // Syntax and EOF errors come from the parser; the only data
            // error our visitor raises is a duplicate key.
            if e.is_data() {
                BodyError::DuplicateKey
            } else {
                BodyError::NotJson
            }
        })?;
        // The valid case, the common one, skips building error records.
        if self.validator.is_valid(&instance) {
            return Ok(());
        }
        let first = self
            .validator
            .iter_errors(&instance)
            .next()
            .map(|error| BodyError::Invalid {
                pointer: sanitize_pointer(error.instance_path().as_str()),
                keyword: keyword(error.kind()),
            });
        first.map_or(Ok(()), Err)
    }
}

fn schema_error(path: &Path, error: ValidationError<'static>) -> SchemaError {
    if let ValidationErrorKind::Referencing(ReferencingError::Unretrievable { uri, .. }) =
        error.kind()
    {
        return SchemaError::ExternalRef {
            path: path.to_path_buf(),
            uri: uri.clone(),
        };
    }
    SchemaError::Invalid {
        path: path.to_path_buf(),
        location: error.schema_path().as_str().to_owned(),
        message: error.to_string(),
    }
}

/// Keeps printable ASCII only and bounds the length, so that client-chosen
/// key names cannot smuggle control characters, escapes or sheer volume
/// into responses and logs.
fn sanitize_pointer(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len().min(MAX_POINTER_CHARS + 3));
    for (n, c) in pointer.chars().enumerate() {
        if n == MAX_POINTER_CHARS {
            out.push('…');
            break;
        }
        out.push(if (' '..='~').contains(&c) { c } else { '?' });
    }
    out
}

/// The keyword names are ours (static), unlike the validator's messages,
/// which quote the instance.
fn keyword(kind: &ValidationErrorKind) -> &'static str {
    use ValidationErrorKind as K;
    match kind {
        K::AdditionalItems { .. } => "additionalItems",
        K::AdditionalProperties { .. } => "additionalProperties",
        K::AnyOf { .. } => "anyOf",
        K::BacktrackLimitExceeded { .. } | K::Pattern { .. } => "pattern",
        K::Constant { .. } => "const",
        K::Contains => "contains",
        K::ContentEncoding { .. } | K::FromUtf8 { .. } => "contentEncoding",
        K::ContentMediaType { .. } => "contentMediaType",
        K::Custom { .. } => "custom",
        K::Enum { .. } => "enum",
        K::ExclusiveMaximum { .. } => "exclusiveMaximum",
        K::ExclusiveMinimum { .. } => "exclusiveMinimum",
        K::FalseSchema => "false",
        K::Format { .. } => "format",
        K::MaxItems { .. } => "maxItems",
        K::Maximum { .. } => "maximum",
        K::MaxLength { .. } => "maxLength",
        K::MaxProperties { .. } => "maxProperties",
        K::MinItems { .. } => "minItems",
        K::Minimum { .. } => "minimum",
        K::MinLength { .. } => "minLength",
        K::MinProperties { .. } => "minProperties",
        K::MultipleOf { .. } => "multipleOf",
        K::Not { .. } => "not",
        K::OneOfMultipleValid { .. } | K::OneOfNotValid { .. } => "oneOf",
        K::PropertyNames { .. } => "propertyNames",
        K::Required { .. } => "required",
        K::Type { .. } => "type",
        K::UnevaluatedItems { .. } => "unevaluatedItems",
        K::UnevaluatedProperties { .. } => "unevaluatedProperties",
        K::UniqueItems => "uniqueItems",
        K::Referencing(_) => "$ref",
    }
}

/// Whether a `Content-Type` announces JSON: `application/json` or any
/// `application/*+json`, parameters allowed. A missing header is not JSON,
/// so a body cannot dodge the schema by leaving the type out.
pub(crate) fn is_json_content_type(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    if !kind.eq_ignore_ascii_case("application") {
        return false;
    }
    if subtype.eq_ignore_ascii_case("json") {
        return true;
    }
    // `application/+json` has no subtype name: not a media type.
    subtype.len() > "+json".len()
        && subtype
            .get(subtype.len() - "+json".len()..)
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
        && !subtype.contains(char::is_whitespace)
}

/// A JSON value parsed like `serde_json::Value`, except that an object
/// with the same key twice is an error (see [`BodyError::DuplicateKey`]).
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // The JSON parser never yields NaN or infinities; map them to null
        // as `serde_json::Value` does, rather than failing.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Occupied(_) => return Err(de::Error::custom("duplicate key")),
                Entry::Vacant(slot) => {
                    let StrictValue(value) = map.next_value()?;
                    slot.insert(value);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn schema_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }

    const ORDER: &str = r##"{
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["customer", "items"],
        "properties": {
            "customer": {"type": "string", "maxLength": 20},
            "email": {"type": "string", "format": "email"},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "items": {
                "type": "array",
                "items": {"$ref": "#/$defs/item"}
            }
        },
        "$defs": {
            "item": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "minimum": 1}
                }
            }
        }
    }"##;

    fn order() -> (tempfile::TempDir, JsonSchema) {
        let dir = tempfile::tempdir().unwrap();
        let path = schema_file(&dir, "order.json", ORDER);
        let schema = JsonSchema::load(&path).unwrap();
        (dir, schema)
    }

    fn invalid(pointer: &str, keyword: &'static str) -> Result<(), BodyError> {
        Err(BodyError::Invalid {
            pointer: pointer.to_owned(),
            keyword,
        })
    }

    #[test]
    fn valid_body_passes() {
        let (_dir, s) = order();
        let body = br#"{"customer":"acme","items":[{"sku":"a-1","qty":2}]}"#;
        assert_eq!(s.validate(body), Ok(()));
    }

    #[test]
    fn wrong_type_is_reported_at_its_nested_pointer_without_the_value() {
        let (_dir, s) = order();
        let body = br#"{"customer":"acme","items":[{"sku":"a","qty":"secret-ish"}]}"#;
        let err = s.validate(body).unwrap_err();
        assert_eq!(Err(err.clone()), invalid("/items/0/qty", "type"));
        let msg = err.to_string();
        assert_eq!(
            msg,
            "request body does not match the schema at /items/0/qty (type)"
        );
        assert!(!msg.contains("secret-ish"));
    }

    #[test]
    fn missing_property_is_reported_at_its_object() {
        let (_dir, s) = order();
        let body = br#"{"customer":"acme","items":[{"sku":"a","qty":1},{"sku":"b"}]}"#;
        assert_eq!(s.validate(body), invalid("/items/1", "required"));
        let err = s.validate(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "request body does not match the schema at the document root (required)"
        );
    }

    #[test]
    fn other_keywords_are_named() {
        let (_dir, s) = order();
        let long = format!(r#"{{"customer":"{}","items":[]}}"#, "x".repeat(21));
        assert_eq!(
            s.validate(long.as_bytes()),
            invalid("/customer", "maxLength")
        );
        let body = br#"{"customer":"a","items":[],"email":"not an address"}"#;
        assert_eq!(s.validate(body), invalid("/email", "format"));
        let body = br#"{"customer":"a","items":[],"code":"abc"}"#;
        assert_eq!(s.validate(body), invalid("/code", "pattern"));
        let body = br#"{"customer":"a","items":[{"sku":"a","qty":0}]}"#;
        assert_eq!(s.validate(body), invalid("/items/0/qty", "minimum"));
    }

    #[test]
    fn not_json_does_not_echo_the_body() {
        let (_dir, s) = order();
        for body in [
            &b"{\"customer\": tok3n"[..],
            b"",
            b"{} {}",
            b"\xff\xfe",
            b"{\"a\":1,}",
        ] {
            let err = s.validate(body).unwrap_err();
            assert_eq!(err, BodyError::NotJson);
            assert_eq!(err.to_string(), "request body is not valid JSON");
        }
        let lone_surrogate = br#"{"customer":"\ud800","items":[]}"#;
        assert_eq!(s.validate(lone_surrogate), Err(BodyError::NotJson));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(s.validate(deep.as_bytes()), Err(BodyError::NotJson));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let (_dir, s) = order();
        let body = br#"{"customer":"a","customer":"b","items":[]}"#;
        assert_eq!(s.validate(body), Err(BodyError::DuplicateKey));
        let body = br#"{"customer":"a","items":[{"sku":"a","qty":1,"qty":-1}]}"#;
        assert_eq!(s.validate(body), Err(BodyError::DuplicateKey));
    }

    #[test]
    fn hostile_key_names_are_sanitized_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = schema_file(
            &dir,
            "s.json",
            r#"{"additionalProperties": {"type": "integer"}}"#,
        );
        let s = JsonSchema::load(&path).unwrap();

        let body = "{\"a\\u0000\\n\\u001b[31m\\u00e9/~\":\"x\"}";
        assert_eq!(
            s.validate(body.as_bytes()),
            invalid("/a???[31m?~1~0", "type")
        );

        let key = "k".repeat(1000);
        let body = format!(r#"{{"{key}":"x"}}"#);
        let Err(BodyError::Invalid { pointer, .. }) = s.validate(body.as_bytes()) else {
            panic!("expected an invalid body");
        };
        assert_eq!(pointer.chars().count(), MAX_POINTER_CHARS + 1);
        assert!(pointer.ends_with('…'));
        assert!(pointer.starts_with("/kkk"));
    }

    #[test]
    fn first_error_is_deterministic() {
        let (_dir, s) = order();
        let body = br#"{"customer":1,"items":[{"qty":"x"}],"code":"no"}"#;
        let first = s.validate(body);
        for _ in 0..20 {
            assert_eq!(s.validate(body), first);
        }
    }

    #[test]
    fn unreadable_and_non_json_schema_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = JsonSchema::load(&missing).unwrap_err();
        assert!(matches!(err, SchemaError::Read { .. }), "{err}");
        assert!(err.to_string().contains("cannot read the file"), "{err}");

        let path = schema_file(&dir, "bad.json", "{\n  \"type\": \"object\",\n  oops\n}");
        let err = JsonSchema::load(&path).unwrap_err();
        let SchemaError::NotJson { line, column, .. } = &err else {
            panic!("expected NotJson, got {err}");
        };
        assert_eq!((*line, *column), (3, 3));
        assert!(err.to_string().contains("line 3, column 3"), "{err}");
    }

    #[test]
    fn invalid_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = schema_file(&dir, "s.json", r#"{"type": "no-such-type"}"#);
        let err = JsonSchema::load(&path).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("not a valid JSON Schema"), "{err}");

        let path = schema_file(&dir, "p.json", r##"{"$ref": "#/$defs/missing"}"##);
        let err = JsonSchema::load(&path).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid { .. }), "{err}");

        let path = schema_file(&dir, "m.json", r#"{"minLength": -1}"#);
        assert!(matches!(
            JsonSchema::load(&path),
            Err(SchemaError::Invalid { .. })
        ));
    }

    #[test]
    fn backtracking_patterns_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = schema_file(&dir, "s.json", r#"{"pattern": "^(a)\\1$"}"#);
        assert!(matches!(
            JsonSchema::load(&path),
            Err(SchemaError::Invalid { .. })
        ));
    }

    #[test]
    fn references_outside_the_document_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, uri) in [
            ("http.json", "https://schemas.example.com/item.json"),
            ("file.json", "file:///etc/passwd"),
            ("relative.json", "item.json#/properties/x"),
        ] {
            let text = format!(r#"{{"properties": {{"x": {{"$ref": "{uri}"}}}}}}"#);
            let path = schema_file(&dir, name, &text);
            let err = JsonSchema::load(&path).unwrap_err();
            assert!(matches!(err, SchemaError::ExternalRef { .. }), "{err}");
            assert!(
                err.to_string().contains("points outside the schema file"),
                "{err}"
            );
        }
        let path = schema_file(
            &dir,
            "meta.json",
            r#"{"$schema": "https://schemas.example.com/meta", "type": "object"}"#,
        );
        // An unknown `$schema` is refused without being fetched either.
        let err = JsonSchema::load(&path).unwrap_err();
        assert!(matches!(err, SchemaError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("Unknown meta-schema"), "{err}");
    }

    #[test]
    fn references_within_the_document_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = schema_file(
            &dir,
            "s.json",
            r#"{
                "$id": "https://schemas.example.com/root.json",
                "properties": {"x": {"$ref": "item.json"}},
                "$defs": {"item": {"$id": "item.json", "type": "integer"}}
            }"#,
        );
        let s = JsonSchema::load(&path).unwrap();
        assert_eq!(s.validate(br#"{"x":1}"#), Ok(()));
        assert_eq!(s.validate(br#"{"x":"y"}"#), invalid("/x", "type"));
    }

    #[test]
    fn equality_is_path_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = schema_file(&dir, "a.json", r#"{"type":"object"}"#);
        let b = schema_file(&dir, "b.json", r#"{"type":"object"}"#);
        let first = JsonSchema::load(&a).unwrap();
        assert_eq!(first, JsonSchema::load(&a).unwrap());
        assert_ne!(first, JsonSchema::load(&b).unwrap());
        schema_file(&dir, "a.json", r#"{"type": "object"}"#);
        assert_ne!(first, JsonSchema::load(&a).unwrap());
        let debug = format!("{first:?}");
        assert!(
            debug.contains("a.json") && !debug.contains("object"),
            "{debug}"
        );
    }

    #[test]
    fn json_content_types() {
        let yes = [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            " application/json ",
            "application/problem+json",
            "application/vnd.api+JSON; charset=utf-8",
        ];
        for v in yes {
            assert!(
                is_json_content_type(Some(&HeaderValue::from_static(v))),
                "{v}"
            );
        }
        let no = [
            "",
            "text/json",
            "application/jsonx",
            "application/xml",
            "application/+json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json-patch",
            "json",
            "application",
        ];
        for v in no {
            assert!(
                !is_json_content_type(Some(&HeaderValue::from_static(v))),
                "{v}"
            );
        }
        let opaque = HeaderValue::from_bytes(b"application/json\xff").unwrap();
        assert!(!is_json_content_type(Some(&opaque)));
        assert!(!is_json_content_type(None));
    }

    /// `cargo test --release --lib schema_validate_timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn schema_validate_timing() {
        let (_dir, s) = order();
        let body = br#"{"customer":"acme-industries","email":"buyer@acme.example","code":"ABC","items":[{"sku":"sku-0001","qty":2},{"sku":"sku-0002","qty":1},{"sku":"sku-0003","qty":12},{"sku":"sku-0004","qty":3}]}"#;
        assert_eq!(s.validate(body), Ok(()));
        // The machine may be busy: report the best of several batches.
        let batch = 20_000;
        let best = (0..15)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    std::hint::black_box(s.validate(std::hint::black_box(body))).unwrap();
                }
                start.elapsed() / batch
            })
            .min()
            .unwrap();
        let bad = br#"{"customer":"acme-industries","email":"buyer@acme.example","code":"ABC","items":[{"sku":"sku-0001","qty":2},{"sku":"sku-0002","qty":1},{"sku":"sku-0003","qty":"12"},{"sku":"sku-0004","qty":3}]}"#;
        assert!(s.validate(bad).is_err());
        let best_bad = (0..15)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    std::hint::black_box(s.validate(std::hint::black_box(bad))).unwrap_err();
                }
                start.elapsed() / batch
            })
            .min()
            .unwrap();
        println!(
            "validate: {} bytes, valid {best:?}, invalid {best_bad:?} per call",
            body.len()
        );
    }
}
