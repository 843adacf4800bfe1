//! The IAM documents template.yaml deploys, rendered in Rust for people who deploy without it
//! (Terraform, CDK): the execution role's trust and inline policies, the function's resource
//! policy and the KMS key-policy statements, equal to the template's for the same parameters
//! (integration/policy/compare_rust.py checks that over the whole configuration matrix).
//!
//! [`PolicyParams`] holds the template's parameters that shape these documents, under the names
//! of `pgrotatectl policy`'s flags; [`render`] validates them as CloudFormation would (the
//! parameters' `AllowedPattern`s and the template's `Rules`) and builds the documents.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::config::Strategy;

/// The Secrets Manager actions the function makes on the secrets it rotates.
const ROTATED_SECRET_ACTIONS: [&str; 4] = [
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
];

/// The network-interface actions Lambda documents for a function in a VPC.
const VPC_ACTIONS: [&str; 6] = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
];

const POLICY_VERSION: &str = "2012-10-17";

/// One parameter of [`PolicyParams`]: the `pgrotatectl policy` flag and the template parameter
/// (or pseudo parameter) it stands for, so an error names both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameter {
    Strategy,
    SecretArn,
    MasterSecretArn,
    SingleUserMasterFallback,
    KmsKeyArn,
    MasterKmsKeyArn,
    FunctionName,
    RoleName,
    Partition,
    Region,
    Account,
}

impl Parameter {
    /// The `pgrotatectl policy` flag.
    pub fn flag(self) -> &'static str {
        match self {
            Parameter::Strategy => "--strategy",
            Parameter::SecretArn => "--secret-arn",
            Parameter::MasterSecretArn => "--master-secret-arn",
            Parameter::SingleUserMasterFallback => "--single-user-master-fallback",
            Parameter::KmsKeyArn => "--kms-key-arn",
            Parameter::MasterKmsKeyArn => "--master-kms-key-arn",
            Parameter::FunctionName => "--function-name",
            Parameter::RoleName => "--role-name",
            Parameter::Partition => "--partition",
            Parameter::Region => "--region",
            Parameter::Account => "--account",
        }
    }

    /// The template's parameter (or, for the stack's partition, region and account, its
    /// pseudo parameter; the role's name is chosen by CloudFormation there).
    pub fn template_name(self) -> &'static str {
        match self {
            Parameter::Strategy => "RotationStrategy",
            Parameter::SecretArn => "SecretArns",
            Parameter::MasterSecretArn => "MasterSecretArn",
            Parameter::SingleUserMasterFallback => "SingleUserMasterFallback",
            Parameter::KmsKeyArn => "KmsKeyArn",
            Parameter::MasterKmsKeyArn => "MasterKmsKeyArn",
            Parameter::FunctionName => "FunctionName",
            Parameter::RoleName => "the role's name",
            Parameter::Partition => "AWS::Partition",
            Parameter::Region => "AWS::Region",
            Parameter::Account => "AWS::AccountId",
        }
    }
}

impl std::fmt::Display for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.flag(), self.template_name())
    }
}

/// A parameter set the template would refuse (or, for the values the stack supplies itself,
/// that cannot be an AWS partition, region, account or role name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {problem}")]
pub struct PolicyError {
    pub parameter: Parameter,
    pub problem: String,
}

impl PolicyError {
    fn new(parameter: Parameter, problem: impl Into<String>) -> PolicyError {
        PolicyError {
            parameter,
            problem: problem.into(),
        }
    }
}

/// The template parameters that shape the IAM documents, named as `pgrotatectl policy`'s
/// flags (also when read from JSON). Parameters that change no policy (passwords, TLS, hosts,
/// subnet and security group ids) are not here: only whether the function runs in a VPC.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PolicyParams {
    /// `RotationStrategy`.
    #[serde(default = "default_strategy", deserialize_with = "strategy_from_str")]
    pub strategy: Strategy,
    /// `SecretArns`: full ARNs, or the name followed by `-??????` (any random suffix).
    #[serde(rename = "secret-arn")]
    pub secret_arns: Vec<String>,
    /// `MasterSecretArn`; `None` (or empty) for none.
    #[serde(default)]
    pub master_secret_arn: Option<String>,
    /// `SingleUserMasterFallback`.
    #[serde(default)]
    pub single_user_master_fallback: bool,
    /// `KmsKeyArn`: the rotated secrets' customer managed key; `None` (or empty) for
    /// `aws/secretsmanager`.
    #[serde(default)]
    pub kms_key_arn: Option<String>,
    /// `MasterKmsKeyArn`: the master secret's customer managed key.
    #[serde(default)]
    pub master_kms_key_arn: Option<String>,
    /// Whether the function runs in a VPC (`VpcSubnetIds` not empty).
    #[serde(default)]
    pub vpc: bool,
    /// `FunctionName`.
    #[serde(default = "default_function_name")]
    pub function_name: String,
    /// The execution role's name (optionally with its path, `service-role/name`): the
    /// principal of the KMS key-policy statements. The template's role gets a name from
    /// CloudFormation (its `RoleArn` output).
    #[serde(default)]
    pub role_name: Option<String>,
    /// The stack's partition, region and account: `None` takes them from the first secret ARN.
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
}

/// The function name the template defaults to.
pub const DEFAULT_FUNCTION_NAME: &str = "pgrotate";

fn default_strategy() -> Strategy {
    Strategy::SingleUser
}

fn default_function_name() -> String {
    DEFAULT_FUNCTION_NAME.to_string()
}

fn strategy_from_str<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Strategy, D::Error> {
    let raw = String::deserialize(deserializer)?;
    parse_strategy(&raw).map_err(serde::de::Error::custom)
}

/// `single-user` or `alternating-users`, as the template's `RotationStrategy` takes them.
pub fn parse_strategy(raw: &str) -> Result<Strategy, PolicyError> {
    match raw {
        "single-user" => Ok(Strategy::SingleUser),
        "alternating-users" => Ok(Strategy::AlternatingUsers),
        other => Err(PolicyError::new(
            Parameter::Strategy,
            format!("must be single-user or alternating-users, got {other:?}"),
        )),
    }
}

impl PolicyParams {
    /// The template's defaults for the given secrets: single user, no master secret, no
    /// customer managed key, no VPC, function `pgrotate`; partition, region and account from
    /// the first secret ARN.
    pub fn new(secret_arns: Vec<String>) -> PolicyParams {
        PolicyParams {
            strategy: Strategy::SingleUser,
            secret_arns,
            master_secret_arn: None,
            single_user_master_fallback: false,
            kms_key_arn: None,
            master_kms_key_arn: None,
            vpc: false,
            function_name: default_function_name(),
            role_name: None,
            partition: None,
            region: None,
            account: None,
        }
    }
}

/// One statement to add to a KMS key's policy when that policy does not delegate to IAM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyPolicyStatement {
    /// The key whose policy takes the statement.
    pub key_arn: String,
    /// The template output that carries the same statement.
    pub output: &'static str,
    pub statement: Value,
}

/// The documents, as serde_json values in the key order the template renders them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedPolicies {
    /// The execution role's trust policy.
    pub trust_policy: Value,
    /// The execution role's inline policy.
    pub role_policy: Value,
    /// The function's resource policy (the template's `AWS::Lambda::Permission`).
    pub lambda_resource_policy: Value,
    /// Statements for the key policies of `KmsKeyArn` and `MasterKmsKeyArn` (none without a
    /// customer managed key).
    pub kms_key_policy_statements: Vec<KeyPolicyStatement>,
}

impl RenderedPolicies {
    /// All key-policy statements in one policy document, as the policy proof writes
    /// `kms-key-policy.json`; `None` without a customer managed key.
    pub fn kms_key_policy(&self) -> Option<Value> {
        if self.kms_key_policy_statements.is_empty() {
            return None;
        }
        let statements: Vec<Value> = self
            .kms_key_policy_statements
            .iter()
            .map(|s| s.statement.clone())
            .collect();
        Some(json!({"Version": POLICY_VERSION, "Statement": statements}))
    }
}

/// Where the stack is: partition, region, account.
struct Location {
    partition: String,
    region: String,
    account: String,
}

/// The parts of an ARN `arn:partition:service:region:account:resource`, split on the first
/// five colons.
struct Arn<'a> {
    partition: &'a str,
    service: &'a str,
    region: &'a str,
    account: &'a str,
    resource: &'a str,
}

fn split_arn(raw: &str) -> Option<Arn<'_>> {
    let mut parts = raw.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    Some(Arn {
        partition: parts.next()?,
        service: parts.next()?,
        region: parts.next()?,
        account: parts.next()?,
        resource: parts.next()?,
    })
}

/// `aws[a-z-]*`
fn is_partition(s: &str) -> bool {
    s.strip_prefix("aws")
        .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
}

/// `[a-z0-9-]+`
fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `[0-9]{12}`
fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The template's secret ARN pattern:
/// `^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@!?-]+$`.
fn is_secret_arn(raw: &str) -> bool {
    let Some(arn) = split_arn(raw) else {
        return false;
    };
    let Some(name) = arn.resource.strip_prefix("secret:") else {
        return false;
    };
    is_partition(arn.partition)
        && arn.service == "secretsmanager"
        && is_region(arn.region)
        && is_account(arn.account)
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@!?-".contains(&b))
}

/// The template's KMS key ARN pattern:
/// `^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$`.
fn is_kms_key_arn(raw: &str) -> bool {
    let Some(arn) = split_arn(raw) else {
        return false;
    };
    let Some(id) = arn.resource.strip_prefix("key/") else {
        return false;
    };
    is_partition(arn.partition)
        && arn.service == "kms"
        && is_region(arn.region)
        && is_account(arn.account)
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The template's `FunctionName` pattern: `^[A-Za-z0-9_-]{1,64}$`.
fn is_function_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An IAM role name (1 to 64 of `[A-Za-z0-9+=,.@_-]`), optionally after a path of such
/// segments (`service-role/name`, at most 512 characters in all).
fn is_role_name(s: &str) -> bool {
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b);
    let (path, name) = s.rsplit_once('/').unwrap_or(("", s));
    (1..=64).contains(&name.len())
        && name.bytes().all(name_char)
        && s.len() <= 512
        && path
            .split('/')
            .all(|seg| path.is_empty() || (!seg.is_empty() && seg.bytes().all(name_char)))
}

/// An optional string parameter, empty meaning unset (as the template's `''` defaults).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

fn location(params: &PolicyParams) -> Result<Location, PolicyError> {
    // The defaults come from the first secret ARN, validated before this is called.
    let first = params.secret_arns.first().and_then(|s| split_arn(s));
    let pick = |given: &Option<String>,
                from_arn: Option<&str>,
                parameter: Parameter,
                valid: fn(&str) -> bool,
                what: &str|
     -> Result<String, PolicyError> {
        let value = match (given.as_deref(), from_arn) {
            (Some(v), _) => v,
            (None, Some(v)) => v,
            (None, None) => {
                return Err(PolicyError::new(
                    parameter,
                    "not given, and there is no secret ARN to take it from",
                ));
            }
        };
        if valid(value) {
            Ok(value.to_string())
        } else {
            Err(PolicyError::new(
                parameter,
                format!("must be {what}, got {value:?}"),
            ))
        }
    };
    Ok(Location {
        partition: pick(
            &params.partition,
            first.as_ref().map(|a| a.partition),
            Parameter::Partition,
            is_partition,
            "an AWS partition (aws, aws-cn, aws-us-gov, ...)",
        )?,
        region: pick(
            &params.region,
            first.as_ref().map(|a| a.region),
            Parameter::Region,
            is_region,
            "a region name such as eu-west-1",
        )?,
        account: pick(
            &params.account,
            first.as_ref().map(|a| a.account),
            Parameter::Account,
            is_account,
            "a 12-digit account id",
        )?,
    })
}

/// What the template's `AllowedPattern`s and `Rules` check, in the same terms.
fn validate(params: &PolicyParams) -> Result<(), PolicyError> {
    if !is_function_name(&params.function_name) {
        return Err(PolicyError::new(
            Parameter::FunctionName,
            format!(
                "must be 1 to 64 letters, digits, - or _, got {:?}",
                params.function_name
            ),
        ));
    }
    if params.secret_arns.is_empty() {
        return Err(PolicyError::new(
            Parameter::SecretArn,
            "at least one secret ARN is needed",
        ));
    }
    for arn in &params.secret_arns {
        if arn.is_empty() {
            return Err(PolicyError::new(
                Parameter::SecretArn,
                "must list at least one secret ARN, with no empty entry",
            ));
        }
        if !is_secret_arn(arn) {
            return Err(PolicyError::new(
                Parameter::SecretArn,
                format!(
                    "{arn:?} is not a secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME; \
                     the last six characters may be ??????, no * wildcards)"
                ),
            ));
        }
    }
    let master = given(&params.master_secret_arn);
    if let Some(arn) = master
        && !is_secret_arn(arn)
    {
        return Err(PolicyError::new(
            Parameter::MasterSecretArn,
            format!("{arn:?} is not a secret ARN (no * wildcards)"),
        ));
    }
    for (parameter, key) in [
        (Parameter::KmsKeyArn, given(&params.kms_key_arn)),
        (
            Parameter::MasterKmsKeyArn,
            given(&params.master_kms_key_arn),
        ),
    ] {
        if let Some(arn) = key
            && !is_kms_key_arn(arn)
        {
            return Err(PolicyError::new(
                parameter,
                format!(
                    "{arn:?} is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID; not an alias)"
                ),
            ));
        }
    }
    if let Some(role) = params.role_name.as_deref()
        && !is_role_name(role)
    {
        return Err(PolicyError::new(
            Parameter::RoleName,
            format!(
                "must be an IAM role name, optionally after its path (service-role/name), got {role:?}"
            ),
        ));
    }
    // The template's Rules.
    let single = params.strategy == Strategy::SingleUser;
    if !single && master.is_none() {
        return Err(PolicyError::new(
            Parameter::MasterSecretArn,
            "alternating-users needs MasterSecretArn (the master secret's ARN)",
        ));
    }
    if params.single_user_master_fallback {
        if !single {
            return Err(PolicyError::new(
                Parameter::SingleUserMasterFallback,
                "SingleUserMasterFallback applies to single-user only",
            ));
        }
        if master.is_none() {
            return Err(PolicyError::new(
                Parameter::SingleUserMasterFallback,
                "SingleUserMasterFallback=true needs MasterSecretArn (the master secret's ARN)",
            ));
        }
    }
    if single && master.is_some() && !params.single_user_master_fallback {
        return Err(PolicyError::new(
            Parameter::MasterSecretArn,
            "single-user reads MasterSecretArn only with SingleUserMasterFallback=true (the master \
             may then reset the password of any unprivileged role a rotated secret names); set it, \
             or leave MasterSecretArn empty",
        ));
    }
    if given(&params.master_kms_key_arn).is_some() && master.is_none() {
        return Err(PolicyError::new(
            Parameter::MasterKmsKeyArn,
            "MasterKmsKeyArn is only used with MasterSecretArn",
        ));
    }
    Ok(())
}

fn strings(items: &[&str]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String((*s).to_string()))
            .collect(),
    )
}

/// The documents template.yaml deploys for these parameters, or the first parameter it would
/// refuse.
pub fn render(params: &PolicyParams) -> Result<RenderedPolicies, PolicyError> {
    validate(params)?;
    let Location {
        partition,
        region,
        account,
    } = location(params)?;
    let function = &params.function_name;
    let function_arn = format!("arn:{partition}:lambda:{region}:{account}:function:{function}");
    let via_secrets_manager = format!("secretsmanager.{region}.amazonaws.com");
    let secrets: Vec<Value> = params
        .secret_arns
        .iter()
        .map(|s| Value::String(s.clone()))
        .collect();
    // The template's conditions ReadsMasterSecret and ReadsMasterKmsKey (the Rules above
    // leave no master secret that is not read; the condition is kept all the same).
    let master = given(&params.master_secret_arn).filter(|_| {
        params.strategy == Strategy::AlternatingUsers || params.single_user_master_fallback
    });
    let master_key = given(&params.master_kms_key_arn).filter(|_| master.is_some());
    let key = given(&params.kms_key_arn);

    let mut statements = vec![json!({
        "Sid": "RotatedSecrets",
        "Effect": "Allow",
        "Action": strings(&ROTATED_SECRET_ACTIONS),
        "Resource": secrets.clone(),
        "Condition": {
            "ArnEquals": {"secretsmanager:resource/AllowRotationLambdaArn": function_arn.clone()}
        }
    })];
    if let Some(master) = master {
        statements.push(json!({
            "Sid": "MasterSecret",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": master
        }));
    }
    if let Some(key) = key {
        statements.push(json!({
            "Sid": "RotatedSecretsKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": key,
            "Condition": {
                "StringEquals": {"kms:ViaService": via_secrets_manager.clone()},
                "StringLike": {"kms:EncryptionContext:SecretARN": secrets.clone()}
            }
        }));
    }
    if let (Some(master), Some(master_key)) = (master, master_key) {
        statements.push(json!({
            "Sid": "MasterSecretKey",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": master_key,
            "Condition": {
                "StringEquals": {"kms:ViaService": via_secrets_manager.clone()},
                "StringLike": {"kms:EncryptionContext:SecretARN": master}
            }
        }));
    }
    if params.vpc {
        statements.push(json!({
            "Sid": "VpcNetworkInterfaces",
            "Effect": "Allow",
            "Action": strings(&VPC_ACTIONS),
            "Resource": "*"
        }));
        statements.push(json!({
            "Sid": "VpcNetworkInterfacesNotFromCode",
            "Effect": "Deny",
            "Action": strings(&VPC_ACTIONS),
            "Resource": "*",
            "Condition": {"ArnEquals": {"lambda:SourceFunctionArn": function_arn.clone()}}
        }));
    }
    statements.push(json!({
        "Sid": "OwnLogGroup",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": format!("arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{function}:*")
    }));
    let role_policy = json!({"Version": POLICY_VERSION, "Statement": statements});

    let trust_policy = json!({
        "Version": POLICY_VERSION,
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    });

    let lambda_resource_policy = json!({
        "Version": POLICY_VERSION,
        "Id": "default",
        "Statement": [{
            "Sid": "InvokePermission",
            "Effect": "Allow",
            "Principal": {"Service": "secretsmanager.amazonaws.com"},
            "Action": "lambda:InvokeFunction",
            "Resource": function_arn,
            "Condition": {"StringEquals": {"aws:SourceAccount": account.clone()}}
        }]
    });

    let role_name = params
        .role_name
        .clone()
        .unwrap_or_else(|| format!("{function}-role"));
    let role_arn = format!("arn:{partition}:iam::{account}:role/{role_name}");
    let mut kms_key_policy_statements = Vec::new();
    if let Some(key) = key {
        kms_key_policy_statements.push(KeyPolicyStatement {
            key_arn: key.to_string(),
            output: "KmsKeyPolicyStatement",
            statement: json!({
                "Sid": "AllowPgrotateRotationViaSecretsManager",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn.clone()},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": via_secrets_manager.clone()},
                    "StringLike": {"kms:EncryptionContext:SecretARN": secrets}
                }
            }),
        });
    }
    if let (Some(master), Some(master_key)) = (master, master_key) {
        kms_key_policy_statements.push(KeyPolicyStatement {
            key_arn: master_key.to_string(),
            output: "MasterKmsKeyPolicyStatement",
            statement: json!({
                "Sid": "AllowPgrotateMasterSecretViaSecretsManager",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": via_secrets_manager},
                    "StringLike": {"kms:EncryptionContext:SecretARN": master}
                }
            }),
        });
    }

    Ok(RenderedPolicies {
        trust_policy,
        role_policy,
        lambda_resource_policy,
        kms_key_policy_statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/app-??????";
    const MASTER: &str = "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/master-AbCdEf";
    const KEY: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn params() -> PolicyParams {
        PolicyParams::new(vec![SECRET.to_string()])
    }

    fn refused(p: &PolicyParams) -> PolicyError {
        render(p).unwrap_err()
    }

    #[test]
    fn location_defaults_to_the_first_secret_arn() {
        let out = render(&params()).unwrap();
        assert_eq!(
            out.lambda_resource_policy["Statement"][0]["Resource"],
            "arn:aws:lambda:eu-west-1:111122223333:function:pgrotate"
        );
        assert!(out.kms_key_policy().is_none());
    }

    #[test]
    fn errors_name_the_flag_and_the_template_parameter() {
        let mut p = params();
        p.strategy = Strategy::AlternatingUsers;
        let e = refused(&p);
        assert_eq!(e.parameter, Parameter::MasterSecretArn);
        assert!(
            e.to_string()
                .starts_with("--master-secret-arn (MasterSecretArn): ")
        );
    }

    #[test]
    fn a_star_in_a_secret_arn_is_refused() {
        let p = PolicyParams::new(vec![SECRET.replace("??????", "*")]);
        assert_eq!(refused(&p).parameter, Parameter::SecretArn);
    }

    #[test]
    fn no_secret_or_an_empty_entry_is_refused() {
        assert_eq!(
            refused(&PolicyParams::new(vec![])).parameter,
            Parameter::SecretArn
        );
        let p = PolicyParams::new(vec![SECRET.to_string(), String::new()]);
        assert_eq!(refused(&p).parameter, Parameter::SecretArn);
    }

    #[test]
    fn a_kms_alias_is_refused() {
        let mut p = params();
        p.kms_key_arn = Some("arn:aws:kms:eu-west-1:111122223333:alias/secrets".into());
        assert_eq!(refused(&p).parameter, Parameter::KmsKeyArn);
    }

    #[test]
    fn single_user_master_secret_needs_the_fallback() {
        let mut p = params();
        p.master_secret_arn = Some(MASTER.into());
        assert_eq!(refused(&p).parameter, Parameter::MasterSecretArn);
        p.single_user_master_fallback = true;
        let out = render(&p).unwrap();
        assert_eq!(out.role_policy["Statement"][1]["Sid"], "MasterSecret");
    }

    #[test]
    fn the_fallback_is_single_user_only_and_needs_a_master_secret() {
        let mut p = params();
        p.single_user_master_fallback = true;
        assert_eq!(refused(&p).parameter, Parameter::SingleUserMasterFallback);
        p.strategy = Strategy::AlternatingUsers;
        p.master_secret_arn = Some(MASTER.into());
        assert_eq!(refused(&p).parameter, Parameter::SingleUserMasterFallback);
    }

    #[test]
    fn a_master_key_needs_a_master_secret() {
        let mut p = params();
        p.master_kms_key_arn = Some(KEY.into());
        assert_eq!(refused(&p).parameter, Parameter::MasterKmsKeyArn);
    }

    #[test]
    fn empty_optional_values_count_as_unset() {
        let mut p = params();
        p.master_secret_arn = Some(String::new());
        p.kms_key_arn = Some(String::new());
        assert_eq!(render(&p).unwrap(), render(&params()).unwrap());
    }

    #[test]
    fn bad_function_role_partition_region_account_are_refused() {
        let mut p = params();
        p.function_name = "has space".into();
        assert_eq!(refused(&p).parameter, Parameter::FunctionName);
        let mut p = params();
        p.function_name = "x".repeat(65);
        assert_eq!(refused(&p).parameter, Parameter::FunctionName);
        let mut p = params();
        p.role_name = Some("service-role//x".into());
        assert_eq!(refused(&p).parameter, Parameter::RoleName);
        let mut p = params();
        p.partition = Some("azure".into());
        assert_eq!(refused(&p).parameter, Parameter::Partition);
        let mut p = params();
        p.region = Some("EU-WEST-1".into());
        assert_eq!(refused(&p).parameter, Parameter::Region);
        let mut p = params();
        p.account = Some("12345".into());
        assert_eq!(refused(&p).parameter, Parameter::Account);
    }

    #[test]
    fn role_name_may_carry_a_path() {
        let mut p = params();
        p.kms_key_arn = Some(KEY.into());
        p.role_name = Some("service-role/pgrotate-exec".into());
        let out = render(&p).unwrap();
        assert_eq!(
            out.kms_key_policy_statements[0].statement["Principal"]["AWS"],
            "arn:aws:iam::111122223333:role/service-role/pgrotate-exec"
        );
        assert_eq!(out.kms_key_policy_statements[0].key_arn, KEY);
    }

    #[test]
    fn parameters_read_from_json_use_the_flag_names() {
        let p: PolicyParams = serde_json::from_value(json!({
            "strategy": "alternating-users",
            "secret-arn": [SECRET],
            "master-secret-arn": MASTER,
            "vpc": true
        }))
        .unwrap();
        assert_eq!(p.strategy, Strategy::AlternatingUsers);
        assert!(p.vpc);
        let bad = serde_json::from_value::<PolicyParams>(json!({
            "strategy": "multi-user", "secret-arn": [SECRET]
        }));
        assert!(bad.unwrap_err().to_string().contains("--strategy"));
        let unknown = serde_json::from_value::<PolicyParams>(json!({
            "secret-arn": [SECRET], "subnets": ["subnet-1"]
        }));
        assert!(unknown.is_err());
    }
}
