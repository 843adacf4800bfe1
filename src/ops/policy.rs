//! `pgrotatectl policy`: the IAM documents the template would deploy for the given parameters
//! (execution role trust and inline policies, the function's resource policy, KMS key-policy
//! statements), printed for people who deploy with Terraform or CDK. Pure: no AWS call.

use serde_json::{Value, json};

use super::{OpsError, Output};
use crate::policy::{PolicyParams, RenderedPolicies, render};

/// The documents as one JSON object, keyed by the file names the policy proof writes
/// (`kms-key-policy` is null without a customer managed key), with each key-policy statement
/// beside the key and template output it belongs to.
pub fn documents(rendered: &RenderedPolicies) -> Value {
    json!({
        "trust-policy": rendered.trust_policy,
        "role-policy": rendered.role_policy,
        "lambda-resource-policy": rendered.lambda_resource_policy,
        "kms-key-policy": rendered.kms_key_policy(),
        "kms-key-policy-statements": rendered.kms_key_policy_statements,
    })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Renders the documents; a parameter set the template would refuse is refused with the flag,
/// the template parameter and the problem.
pub fn run(params: &PolicyParams) -> Result<Output, OpsError> {
    let rendered = render(params).map_err(|e| {
        OpsError::Refused(format!(
            "{e}; fix the flag (pgrotatectl policy --help lists them)"
        ))
    })?;
    let mut text = String::new();
    text.push_str("# Execution role: trust policy (AssumeRolePolicyDocument)\n");
    text.push_str(&pretty(&rendered.trust_policy));
    text.push_str(
        "\n\n# Execution role: inline policy (the only permissions the function needs)\n",
    );
    text.push_str(&pretty(&rendered.role_policy));
    text.push_str(
        "\n\n# Function resource policy (lets Secrets Manager of this account invoke the function)\n",
    );
    text.push_str(&pretty(&rendered.lambda_resource_policy));
    text.push('\n');
    if rendered.kms_key_policy_statements.is_empty() {
        text.push_str("\n# KMS key policy: nothing to add (the secrets use aws/secretsmanager)\n");
    }
    for statement in &rendered.kms_key_policy_statements {
        text.push_str(&format!(
            "\n# KMS key policy of {} (the template's {} output): add this statement\n",
            statement.key_arn, statement.output
        ));
        text.push_str(&pretty(&statement.statement));
        text.push('\n');
    }
    Ok(Output {
        ok: true,
        json: documents(&rendered),
        text,
    })
}
