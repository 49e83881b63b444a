//! Validates JSON bodies against Persona's OpenAPI spec (the subset in `tests/spec/`), so the
//! simulator's wire format is checked by the spec itself and not by our reading of it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use jsonschema::{Draft, Registry, Validator};
use serde_json::{Value, json};

const SPEC_URI: &str = "urn:persona-openapi:2025-12-08";

static SPEC: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!(
        "../../spec/persona-openapi-2025-12-08.subset.json"
    ))
    .expect("the spec subset is valid JSON")
});

static REGISTRY: LazyLock<Registry<'static>> = LazyLock::new(|| {
    Registry::new()
        .draft(Draft::Draft202012)
        .add(SPEC_URI, &*SPEC)
        .expect("spec URI is valid")
        .prepare()
        .expect("the spec resolves")
});

static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<Validator>>>> =
    LazyLock::new(Default::default);

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as a URI fragment: braces (path templates) must be percent-encoded.
fn fragment(pointer: &str) -> String {
    pointer.replace('{', "%7B").replace('}', "%7D")
}

fn at<'a>(node: &'a Value, pointer: &str) -> Option<&'a Value> {
    node.pointer(pointer)
}

/// Follows a `$ref` to a component (responses are referenced whole, not through schemas).
fn follow(pointer: String) -> Result<String, Vec<String>> {
    let node = at(&SPEC, &pointer).ok_or_else(|| vec![format!("spec has no {pointer}")])?;
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => Ok(r.trim_start_matches('#').to_owned()),
        None => Ok(pointer),
    }
}

fn validator_at(schema_pointer: &str) -> Result<Arc<Validator>, Vec<String>> {
    if at(&SPEC, schema_pointer).is_none() {
        return Err(vec![format!("spec has no schema at {schema_pointer}")]);
    }
    let mut cache = VALIDATORS.lock().expect("validator cache");
    if let Some(v) = cache.get(schema_pointer) {
        return Ok(v.clone());
    }
    let validator = jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_registry(&REGISTRY)
        .should_validate_formats(true)
        .build(&json!({ "$ref": format!("{SPEC_URI}#{}", fragment(schema_pointer)) }))
        .map_err(|e| {
            vec![format!(
                "cannot build a validator for {schema_pointer}: {e}"
            )]
        })?;
    let validator = Arc::new(validator);
    cache.insert(schema_pointer.to_owned(), validator.clone());
    Ok(validator)
}

fn check(schema_pointer: &str, body: &Value) -> Result<(), Vec<String>> {
    let validator = validator_at(schema_pointer)?;
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn operation(method: &str, path_template: &str) -> String {
    format!(
        "/paths/{}/{}",
        escape(path_template),
        method.to_ascii_lowercase()
    )
}

/// Checks a response body against the schema the spec gives for this operation and status.
/// A status the operation does not document is itself an error.
pub fn validate_response(
    method: &str,
    path_template: &str,
    status: u16,
    body: &Value,
) -> Result<(), Vec<String>> {
    let response = follow(format!(
        "{}/responses/{status}",
        operation(method, path_template)
    ))
    .map_err(|_| {
        vec![format!(
            "{method} {path_template} does not document status {status}"
        )]
    })?;
    check(
        &format!("{response}/content/application~1json/schema"),
        body,
    )
}

/// Checks a request body against the operation's request schema.
pub fn validate_request_body(
    method: &str,
    path_template: &str,
    body: &Value,
) -> Result<(), Vec<String>> {
    check(
        &format!(
            "{}/requestBody/content/application~1json/schema",
            operation(method, path_template)
        ),
        body,
    )
}

/// Checks a webhook body against the spec's definition of that event (`inquiry.completed`, …).
pub fn validate_webhook(event: &str, body: &Value) -> Result<(), Vec<String>> {
    check(
        &format!(
            "/webhooks/{}/post/requestBody/content/application~1json/schema",
            escape(event)
        ),
        body,
    )
}
