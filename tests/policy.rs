//! `pgrotate::policy::render` gives, for representative parameter sets, exactly the documents
//! template.yaml renders (tests/fixtures/policy/, written by integration/policy/compare_rust.py
//! from the template; the policy proof checks every configuration of the matrix the same way
//! and that these fixtures are still what the template renders), and `pgrotatectl policy`
//! prints them for the same parameters given as flags.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pgrotate::policy::{PolicyParams, render};
use serde_json::Value;

const DOCUMENTS: [&str; 4] = [
    "trust-policy",
    "role-policy",
    "lambda-resource-policy",
    "kms-key-policy",
];

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/policy");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// The text Python's `json.dumps(doc, indent=2)` writes: same layout, keys in their order.
fn text(doc: &Value) -> String {
    serde_json::to_string_pretty(doc).unwrap() + "\n"
}

#[test]
fn rendered_documents_equal_the_templates_for_the_fixture_configurations() {
    let dirs = fixtures();
    assert!(
        dirs.len() >= 4,
        "expected the fixture configurations, found {dirs:?}"
    );
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let params: PolicyParams =
            serde_json::from_str(&fs::read_to_string(dir.join("params.json")).unwrap())
                .unwrap_or_else(|e| panic!("{name}/params.json: {e}"));
        let rendered = render(&params).unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        let ours = [
            Some(rendered.trust_policy.clone()),
            Some(rendered.role_policy.clone()),
            Some(rendered.lambda_resource_policy.clone()),
            rendered.kms_key_policy(),
        ];
        for (document, ours) in DOCUMENTS.iter().zip(ours) {
            let path = dir.join(format!("{document}.json"));
            let expected = fs::read_to_string(&path).ok();
            assert_eq!(
                ours.as_ref().map(text),
                expected,
                "{name}: {document} differs from the template's ({})",
                path.display()
            );
        }
    }
}

#[test]
fn key_policy_statements_name_their_keys_and_template_outputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/policy/aws-cn-single-user-fallback-two-keys-vpc");
    let params: PolicyParams =
        serde_json::from_str(&fs::read_to_string(dir.join("params.json")).unwrap()).unwrap();
    let rendered = render(&params).unwrap();
    let keys: Vec<(&str, &str)> = rendered
        .kms_key_policy_statements
        .iter()
        .map(|s| (s.output, s.key_arn.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (
                "KmsKeyPolicyStatement",
                params.kms_key_arn.as_deref().unwrap()
            ),
            (
                "MasterKmsKeyPolicyStatement",
                params.master_kms_key_arn.as_deref().unwrap()
            ),
        ]
    );
}

#[test]
fn without_a_role_name_the_key_policy_principal_is_function_name_role() {
    let mut params = PolicyParams::new(vec![
        "arn:aws:secretsmanager:eu-west-1:111122223333:secret:app-??????".into(),
    ]);
    params.function_name = "rotate-app".into();
    params.kms_key_arn =
        Some("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab".into());
    let rendered = render(&params).unwrap();
    assert_eq!(
        rendered.kms_key_policy_statements[0].statement["Principal"]["AWS"],
        "arn:aws:iam::111122223333:role/rotate-app-role"
    );
    assert_eq!(
        rendered.role_policy["Statement"][1]["Condition"]["StringEquals"]["kms:ViaService"],
        "secretsmanager.eu-west-1.amazonaws.com"
    );
}

/// `pgrotatectl policy`'s flags for a fixture's parameters (`PolicyParams` read from JSON
/// uses the flag names).
fn flags(params: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in params.as_object().unwrap() {
        match value {
            Value::Bool(true) => out.push(format!("--{name}")),
            Value::Bool(false) | Value::Null => {}
            Value::String(s) => out.push(format!("--{name}={s}")),
            Value::Array(items) => {
                for item in items {
                    out.push(format!("--{name}={}", item.as_str().unwrap()));
                }
            }
            other => panic!("{name}: unexpected {other}"),
        }
    }
    out
}

#[test]
fn pgrotatectl_policy_prints_the_templates_documents_for_the_same_flags() {
    for dir in fixtures() {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let params: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("params.json")).unwrap()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_pgrotatectl"))
            .args(["--json", "policy"])
            .args(flags(&params))
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        for document in DOCUMENTS {
            let expected = fs::read_to_string(dir.join(format!("{document}.json"))).ok();
            let have = match &printed[document] {
                Value::Null => None,
                doc => Some(text(doc)),
            };
            assert_eq!(have, expected, "{name}: {document}");
        }
        // The text output carries the same documents under headings.
        let out = Command::new(env!("CARGO_BIN_EXE_pgrotatectl"))
            .arg("policy")
            .args(flags(&params))
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {out:?}");
        let text_out = String::from_utf8(out.stdout).unwrap();
        assert!(
            text_out.contains("# Execution role: inline policy"),
            "{text_out}"
        );
        assert!(
            text_out.contains(&serde_json::to_string_pretty(&printed["role-policy"]).unwrap()),
            "{name}: the text output lacks the role policy"
        );
    }
}

#[test]
fn pgrotatectl_policy_refuses_bad_parameters_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_pgrotatectl"))
        .args([
            "policy",
            "--secret-arn",
            "arn:aws:ssm:us-east-1:123456789012:parameter/x",
        ])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--secret-arn (SecretArns)"), "{err}");
    assert!(err.contains("fix the flag"), "{err}");
    // Without a secret, clap's usage error (status 2).
    let out = Command::new(env!("CARGO_BIN_EXE_pgrotatectl"))
        .arg("policy")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
