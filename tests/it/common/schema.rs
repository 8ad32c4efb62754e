//! Every configuration a test starts the gateway with is also checked
//! against `portcullis schema`: the suite's few hundred configurations are
//! what keeps the schema honest about what the reader accepts.

use std::process::Command;
use std::sync::OnceLock;

use super::gateway::BIN;

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let out = Command::new(BIN)
            .arg("schema")
            .output()
            .expect("run portcullis schema");
        assert!(out.status.success(), "portcullis schema failed");
        let schema: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    })
}

/// Panics with every schema error of `toml_text`, a configuration the
/// gateway has just accepted.
pub fn assert_accepted(toml_text: &str) {
    let doc: toml::Value = toml::from_str(toml_text).expect("config is TOML");
    let instance = serde_json::to_value(doc).expect("TOML as JSON");
    let errors: Vec<String> = validator()
        .iter_errors(&instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the gateway accepted a configuration `portcullis schema` refuses:\n{}\n---\n{toml_text}",
        errors.join("\n")
    );
}
