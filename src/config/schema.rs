//! `portcullis schema`: a JSON Schema of the configuration, made by the
//! reader itself so that it cannot drift from what `check` accepts.
//!
//! The configuration is read by code, not by a declared schema, so the
//! schema is recorded while that code runs: every accessor of
//! [`super::reader::Table`] names its key and the shape it accepts (a
//! string, an integer in a range, one of some words, a table…). Reading
//! once, in recording mode, over [`PROBE`] visits every table: a table or
//! array of tables that the probe lacks is read as an empty one, and the
//! probe itself only names what cannot be found that way — one entry of
//! each map of tables (`[upstreams.NAME]`) and one table per value of a
//! variant key (`kind = "jwt"`). A variant with no probe table is an error,
//! so adding a variant without probing it fails the schema's test.
//!
//! The schema is about shape (names, types, ranges, choices); what the
//! reader checks across keys (files that exist, `upstream` naming a real
//! upstream, one of two keys) stays with `check`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use serde_json::{json, Map, Value};
use toml::de::DeTable;

use super::diag::Diagnostics;
use super::reader::{MapOf, Table};

/// The shape one key accepts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// Read raw, its shape checked by the caller.
    Any,
    String,
    Boolean,
    Integer(u64, u64),
    Fraction,
    Keyword(Vec<&'static str>),
    /// The key that decides which other keys its table may hold.
    Variant(&'static [&'static str]),
    Array(Items),
    Table,
}

/// What an array holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Items {
    Strings,
    Integers,
    Tables,
    /// `"IP:port"` or `{ address, weight }`.
    StringsOrTables,
}

/// What recording learnt of the tables at one schema path.
#[derive(Debug, Default)]
struct Node {
    /// Keys asked before any variant key was read.
    keys: BTreeMap<&'static str, Kind>,
    /// The variant key, and the keys asked under each of its values.
    variant: Option<&'static str>,
    variants: BTreeMap<String, BTreeMap<&'static str, Kind>>,
    map: Option<MapOf>,
}

type Recording = BTreeMap<String, Node>;

thread_local! {
    static RECORDING: RefCell<Option<Recording>> = const { RefCell::new(None) };
}

/// An empty table for the reader to descend into while recording; `None`
/// when not recording, so an absent table stays absent.
pub(crate) fn probe() -> Option<&'static DeTable<'static>> {
    static EMPTY: LazyLock<DeTable<'static>> = LazyLock::new(DeTable::new);
    RECORDING.with(|r| r.borrow().is_some()).then(|| &*EMPTY)
}

fn with_node(path: &str, f: impl FnOnce(&mut Node)) {
    RECORDING.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            f(rec.entry(path.to_string()).or_default());
        }
    });
}

pub(crate) fn record(path: &str, variant: Option<&str>, key: &'static str, kind: Kind) {
    with_node(path, |node| {
        let keys = match variant {
            Some(v) => node.variants.entry(v.to_string()).or_default(),
            None => &mut node.keys,
        };
        match keys.get(key) {
            Some(known) if kind == Kind::Any || *known == kind => {}
            _ => {
                keys.insert(key, kind);
            }
        }
    });
}

pub(crate) fn record_map(path: &str, values: MapOf) {
    with_node(path, |node| node.map = Some(values));
}

pub(crate) fn record_variant(path: &str, key: &'static str, value: &str) {
    with_node(path, |node| {
        node.variant = Some(key);
        node.variants.entry(value.to_string()).or_default();
    });
}

/// One table of each map entry and variant the reader cannot find alone.
const PROBE: &str = r#"
[upstreams.u]

[auth.jwt]
kind = "jwt"
[auth.introspection]
kind = "introspection"
[auth.api_key]
kind = "api_key"
[auth.mtls]
kind = "mtls"
"#;

/// Which file a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum File {
    /// `portcullis.toml`.
    Config,
    /// An API keys file (`keys_file` of an `api_key` provider).
    Keys,
}

/// The JSON Schema of `file`, or what keeps it from being complete.
pub fn json_schema(file: File) -> Result<Value, String> {
    let (title, recording) = match file {
        File::Config => (
            "Portcullis configuration (portcullis.toml)",
            recording(PROBE, |d, root, path| {
                let _ = super::parse::config(d, root, path, String::new());
            })?,
        ),
        File::Keys => (
            "Portcullis API keys file",
            recording("", |d, root, _| {
                let _ = super::keys::file(d, root);
            })?,
        ),
    };
    let mut out = Map::new();
    out.insert(
        "$schema".into(),
        json!("http://json-schema.org/draft-07/schema#"),
    );
    out.insert("title".into(), json!(title));
    if let Value::Object(body) = object(&recording, "")? {
        out.extend(body);
    }
    Ok(Value::Object(out))
}

/// What `read` asks of `probe`, read in recording mode.
fn recording(
    probe: &str,
    read: impl FnOnce(&mut Diagnostics, &Table, &Path),
) -> Result<Recording, String> {
    let (doc, errors) = DeTable::parse_recoverable(probe);
    if !errors.is_empty() {
        return Err("the schema probe does not parse".into());
    }
    let path = Path::new("schema-probe.toml");
    let mut d = Diagnostics::new(path, probe);
    RECORDING.with(|r| *r.borrow_mut() = Some(Recording::new()));
    read(&mut d, &Table::new(doc.get_ref(), doc.span(), ""), path);
    Ok(RECORDING
        .with(|r| r.borrow_mut().take())
        .unwrap_or_default())
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn object(rec: &Recording, path: &str) -> Result<Value, String> {
    let Some(node) = rec.get(path) else {
        return Ok(json!({"type": "object"}));
    };
    let common = properties(rec, path, &node.keys)?;
    if let Some(key) = node.variant {
        let Some(Kind::Variant(choices)) = node.keys.get(key) else {
            return Err(format!(
                "`{key}` of `{path}` was read as a variant only sometimes"
            ));
        };
        let mut branches = Vec::new();
        for choice in choices.iter() {
            let Some(keys) = node.variants.get(*choice) else {
                return Err(format!(
                    "`{path}` with {key} = \"{choice}\" is not in the schema probe"
                ));
            };
            let mut props = common.clone();
            props.extend(properties(rec, path, keys)?);
            props.insert(key.to_string(), json!({"const": choice}));
            branches.push(json!({
                "properties": props,
                "required": [key],
                "additionalProperties": false,
            }));
        }
        return Ok(json!({"type": "object", "oneOf": branches}));
    }
    let additional = match node.map {
        None => json!(false),
        Some(MapOf::Strings) => json!({"type": "string"}),
        Some(MapOf::Tables) => object(rec, &child(path, "*"))?,
    };
    Ok(json!({
        "type": "object",
        "properties": common,
        "additionalProperties": additional,
    }))
}

fn properties(
    rec: &Recording,
    path: &str,
    keys: &BTreeMap<&'static str, Kind>,
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (key, kind) in keys {
        out.insert(key.to_string(), shape(rec, &child(path, key), kind)?);
    }
    Ok(out)
}

fn shape(rec: &Recording, path: &str, kind: &Kind) -> Result<Value, String> {
    Ok(match kind {
        Kind::Any => json!({}),
        Kind::String => json!({"type": "string"}),
        Kind::Boolean => json!({"type": "boolean"}),
        Kind::Integer(min, max) => json!({"type": "integer", "minimum": min, "maximum": max}),
        Kind::Fraction => json!({"type": "number", "minimum": 0, "maximum": 1}),
        Kind::Keyword(names) => json!({"type": "string", "enum": names}),
        Kind::Variant(names) => json!({"type": "string", "enum": names}),
        Kind::Table => object(rec, path)?,
        Kind::Array(items) => {
            let items = match items {
                Items::Strings => json!({"type": "string"}),
                Items::Integers => json!({"type": "integer"}),
                Items::Tables => object(rec, &format!("{path}[]"))?,
                Items::StringsOrTables => json!({
                    "anyOf": [{"type": "string"}, object(rec, &format!("{path}[]"))?]
                }),
            };
            json!({"type": "array", "items": items})
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn validates(schema: &Value, toml_text: &str) -> Vec<String> {
        let doc: toml::Value = toml::from_str(toml_text).unwrap();
        let instance = serde_json::to_value(doc).unwrap();
        let validator = jsonschema::validator_for(schema).unwrap();
        validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    #[test]
    fn the_shipped_configurations_validate() {
        let schema = json_schema(File::Config).unwrap();
        for file in ["conf/portcullis.toml", "conf/demo.toml"] {
            let text = std::fs::read_to_string(file).unwrap();
            assert_eq!(validates(&schema, &text), Vec::<String>::new(), "{file}");
        }
    }

    #[test]
    fn unknown_keys_wrong_types_and_ranges_are_refused() {
        let schema = json_schema(File::Config).unwrap();
        let base = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:1\"\n";
        assert!(validates(&schema, base).is_empty());
        for bad in [
            "[server]\nthreds = 2\n",
            "[server]\nthreads = \"2\"\n",
            "[server]\nthreads = 0\n",
            "[server]\nunderscore_headers = \"keep\"\n",
            "[auth.a]\nkind = \"saml\"\n",
            "[auth.a]\nkind = \"api_key\"\njwks_url = \"https://x\"\n",
            "[tracing]\notlp_endpoint = \"http://x\"\nsample_ratio = 2\n",
            "[[routes]]\nname = \"r\"\npath = \"/\"\npublic = true\nrespond = { status = 200 }\nfrobnicate = 1\n",
        ] {
            let text = format!("{base}{bad}");
            assert!(!validates(&schema, &text).is_empty(), "accepted:\n{text}");
        }
    }

    #[test]
    fn the_demo_keys_file_validates() {
        let schema = json_schema(File::Keys).unwrap();
        let text = std::fs::read_to_string("conf/demo-api-keys.toml").unwrap();
        assert_eq!(validates(&schema, &text), Vec::<String>::new());
        let bad =
            "[[keys]]\nid = \"a\"\nconsumer = \"c\"\nhash = \"sha256:00\"\nkey = \"pc_a_secret\"\n";
        assert!(!validates(&schema, bad).is_empty());
    }

    #[test]
    fn variants_keep_their_own_keys() {
        let schema = json_schema(File::Config).unwrap();
        let text = "[[listeners]]\nname = \"p\"\nlisten = \"127.0.0.1:1\"\n\
                    [auth.k]\nkind = \"api_key\"\nkeys_file = \"k.toml\"\n\
                    [auth.j]\nkind = \"jwt\"\nissuer = \"https://i\"\njwks_uri = \"https://i/j\"\n";
        assert_eq!(validates(&schema, text), Vec::<String>::new());
    }
}
