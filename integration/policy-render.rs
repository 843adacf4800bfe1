//! The Rust side of the policy proof's equality check (integration/policy/compare_rust.py):
//! renders `pgrotate::policy` for many parameter sets in one run.
//!
//!     cargo run --release --example policy-render < cases.json
//!
//! Input: a JSON array of `{"id": "...", "params": {...}}`, `params` as `PolicyParams` reads
//! them (the `pgrotatectl policy` flag names). Output: a JSON array, one entry per case in the
//! same order, with either `"documents"` (keyed by the file names the Python renderer writes:
//! trust-policy, role-policy, lambda-resource-policy, kms-key-policy, the last null without a
//! customer managed key) or `"error"` (the message, for parameter sets the template refuses).

use std::io::Read;
use std::process::ExitCode;

use pgrotate::policy::{PolicyParams, render};
use serde_json::{Value, json};

fn run() -> Result<Value, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read standard input: {e}"))?;
    let cases: Vec<Value> =
        serde_json::from_str(&input).map_err(|e| format!("input is not a JSON array: {e}"))?;
    let mut out = Vec::with_capacity(cases.len());
    for case in cases {
        let id = case.get("id").cloned().unwrap_or(Value::Null);
        let params = case.get("params").cloned().unwrap_or(Value::Null);
        let entry = match serde_json::from_value::<PolicyParams>(params) {
            Err(e) => json!({"id": id, "error": e.to_string()}),
            Ok(params) => match render(&params) {
                Err(e) => json!({"id": id, "error": e.to_string()}),
                Ok(r) => json!({"id": id, "documents": {
                    "trust-policy": r.trust_policy,
                    "role-policy": r.role_policy,
                    "lambda-resource-policy": r.lambda_resource_policy,
                    "kms-key-policy": r.kms_key_policy(),
                }}),
            },
        };
        out.push(entry);
    }
    Ok(Value::Array(out))
}

fn main() -> ExitCode {
    match run() {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("policy-render: {e}");
            ExitCode::FAILURE
        }
    }
}
