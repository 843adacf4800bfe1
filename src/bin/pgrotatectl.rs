//! `pgrotatectl`, the operator CLI: parses the command line, runs a command from
//! `pgrotate::ops` and prints its result (text, or JSON with `--json`) on stdout, progress on
//! stderr. Exit status: 0 when the command succeeded and found nothing wrong, 1 otherwise,
//! 2 for a usage error.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use pgrotate::Strategy;
use pgrotate::ops::resume::{Choice, ResumeOptions};
use pgrotate::ops::rotate::RotateOptions;
use pgrotate::ops::{Context, OpsError, Output, Progress};
use pgrotate::policy::PolicyParams;
use tracing_subscriber::filter::LevelFilter;

const ENVIRONMENT: &str = "\
ENVIRONMENT:
  The same variables as the function: ROTATION_STRATEGY, DEFAULT_SSL_MODE, SSL_CA_BUNDLE,
  DB_CONNECT_TIMEOUT, PASSWORD_LENGTH, EXCLUDE_*, REQUIRE_EACH_INCLUDED_TYPE,
  CLONE_DEFAULT_ROLE, ALLOWED_DB_HOSTS, SINGLE_USER_MASTER_FALLBACK,
  SECRETS_MANAGER_ENDPOINT, SECRETS_MANAGER_TIMEOUT; AWS_ENDPOINT_URL and the
  service-specific AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL_CLOUDWATCH_LOGS;
  the usual AWS credentials, profile and region variables. RUST_LOG=debug shows the
  steps' own log on stderr.

EXIT STATUS:
  0 done and nothing wrong; 1 a check failed, the secret is unhealthy, or the command failed;
  2 bad command line.";

#[derive(Debug, Parser)]
#[command(
    name = "pgrotatectl",
    version,
    about = "Operate pgrotate: check a secret before a rotation, see where a rotation stands, finish or drop a stuck one, start one and follow it",
    after_help = ENVIRONMENT
)]
struct Cli {
    /// Print the result as one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,

    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StrategyArg {
    SingleUser,
    AlternatingUsers,
}

impl From<StrategyArg> for Strategy {
    fn from(value: StrategyArg) -> Strategy {
        match value {
            StrategyArg::SingleUser => Strategy::SingleUser,
            StrategyArg::AlternatingUsers => Strategy::AlternatingUsers,
        }
    }
}

#[derive(Debug, Args)]
struct SecretArgs {
    /// The secret: its ARN or name.
    #[arg(long, value_name = "ARN")]
    secret_id: String,

    /// The function's rotation strategy (default: ROTATION_STRATEGY, else single-user).
    #[arg(long, value_enum)]
    strategy: Option<StrategyArg>,
}

/// `pgrotatectl policy`'s flags: the template parameters that shape the IAM documents.
#[derive(Debug, Args)]
struct PolicyArgs {
    /// A secret the function rotates (the template's SecretArns): its full ARN, or its name
    /// followed by -?????? for any random suffix. Repeat for several.
    #[arg(long = "secret-arn", value_name = "ARN", required = true)]
    secret_arns: Vec<String>,

    /// The rotation strategy (RotationStrategy).
    #[arg(long, value_enum, default_value = "single-user")]
    strategy: StrategyArg,

    /// The master secret (MasterSecretArn): alternating users, or the single-user fallback.
    #[arg(long, value_name = "ARN")]
    master_secret_arn: Option<String>,

    /// Let the master user reset a single user's password (SingleUserMasterFallback).
    #[arg(long)]
    single_user_master_fallback: bool,

    /// The rotated secrets' customer managed KMS key (KmsKeyArn).
    #[arg(long, value_name = "ARN")]
    kms_key_arn: Option<String>,

    /// The master secret's customer managed KMS key (MasterKmsKeyArn).
    #[arg(long, value_name = "ARN")]
    master_kms_key_arn: Option<String>,

    /// The function runs in a VPC (VpcSubnetIds set): adds Lambda's network-interface actions.
    #[arg(long)]
    vpc: bool,

    /// The function's name (FunctionName).
    #[arg(long, value_name = "NAME", default_value = pgrotate::policy::DEFAULT_FUNCTION_NAME)]
    function_name: String,

    /// The execution role's name (with its path, if any): the KMS key-policy statements'
    /// principal (default: <function name>-role; the template's RoleArn output gives the name
    /// CloudFormation chose).
    #[arg(long, value_name = "NAME")]
    role_name: Option<String>,

    /// The partition (default: the first secret ARN's).
    #[arg(long)]
    partition: Option<String>,

    /// The region (default: the first secret ARN's).
    #[arg(long)]
    region: Option<String>,

    /// The account (default: the first secret ARN's).
    #[arg(long)]
    account: Option<String>,
}

impl PolicyArgs {
    fn params(&self) -> PolicyParams {
        PolicyParams {
            strategy: self.strategy.into(),
            secret_arns: self.secret_arns.clone(),
            master_secret_arn: self.master_secret_arn.clone(),
            single_user_master_fallback: self.single_user_master_fallback,
            kms_key_arn: self.kms_key_arn.clone(),
            master_kms_key_arn: self.master_kms_key_arn.clone(),
            vpc: self.vpc,
            function_name: self.function_name.clone(),
            role_name: self.role_name.clone(),
            partition: self.partition.clone(),
            region: self.region.clone(),
            account: self.account.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read-only checklist of what a rotation of the secret needs, each line ✓ or ✗ with the fix.
    #[command(after_help = ENVIRONMENT)]
    Preflight(SecretArgs),

    /// Versions, labels, last and next rotation, and whether a rotation is stuck and at which step.
    #[command(after_help = ENVIRONMENT)]
    Status(SecretArgs),

    /// Finish an interrupted rotation here, or drop its stale AWSPENDING, whichever is safe.
    ///
    /// Decides from which credentials log in now: pending credentials that log in are
    /// finished (setSecret, testSecret, finishSecret run here with the function's code and
    /// the pending token, then AWSPENDING is removed); a pending version that does not log in
    /// while AWSCURRENT does is dropped. It never takes a label from the only working
    /// credentials, and asks before changing anything unless --yes.
    #[command(after_help = ENVIRONMENT)]
    Resume {
        #[command(flatten)]
        secret: SecretArgs,

        /// Change without asking (needed when standard input is not a terminal).
        #[arg(long, short)]
        yes: bool,

        /// Finish the rotation whatever the logins say (still never drops working credentials).
        #[arg(long, conflicts_with = "drop")]
        finish: bool,

        /// Drop AWSPENDING (refused when the pending credentials are the only ones that work).
        #[arg(long)]
        drop: bool,

        /// Refuse to touch a pending version younger than this many seconds: its rotation may
        /// still be running.
        #[arg(long, value_name = "SECONDS", default_value_t = 900)]
        min_age: u64,
    },

    /// Print the IAM documents the template deploys for these parameters (for Terraform, CDK).
    ///
    /// The execution role's trust and inline policies, the function's resource policy and the
    /// statements to add to customer managed KMS keys' policies: exactly what template.yaml
    /// renders for the same parameters. Makes no AWS call.
    Policy(PolicyArgs),

    /// Start a rotation (RotateSecret) and, with --wait, follow it to the end.
    #[command(after_help = ENVIRONMENT)]
    Rotate {
        /// The secret: its ARN or name.
        #[arg(long, value_name = "ARN")]
        secret_id: String,

        /// Follow the labels (and the function's log, when readable) until the rotation ends.
        #[arg(long)]
        wait: bool,

        /// How long --wait waits, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 300)]
        timeout: u64,

        /// The function's log group (default: /aws/lambda/<function name>).
        #[arg(long, value_name = "NAME")]
        log_group: Option<String>,
    },
}

fn print(json: bool, output: &Output) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&output.json).unwrap_or_default()
        );
    } else {
        print!("{}", output.text);
    }
}

fn print_error(json: bool, error: &OpsError) {
    if json {
        let document = serde_json::json!({
            "ok": false,
            "error": {"type": error.kind(), "message": error.to_string()},
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    } else {
        eprintln!("pgrotatectl: {error}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Quiet by default: the steps' own log lines only with RUST_LOG.
    let level = match std::env::var("RUST_LOG") {
        Ok(_) => pgrotate::logging::level_from(|name| std::env::var(name).ok()),
        Err(_) => LevelFilter::OFF,
    };
    pgrotate::logging::init_with(level, false, std::io::stderr);
    let progress = Progress::new(!cli.quiet);
    let strategy = match &cli.command {
        Command::Preflight(s) | Command::Status(s) => s.strategy,
        Command::Resume { secret, .. } => secret.strategy,
        Command::Policy(_) | Command::Rotate { .. } => None,
    };
    let result = async {
        // Pure: no configuration, no client.
        if let Command::Policy(args) = &cli.command {
            return pgrotate::ops::policy::run(&args.params());
        }
        let ctx = Context::from_env(strategy.map(Strategy::from), progress).await?;
        match &cli.command {
            Command::Policy(args) => pgrotate::ops::policy::run(&args.params()),
            Command::Preflight(s) => pgrotate::ops::preflight::run(&ctx, &s.secret_id).await,
            Command::Status(s) => pgrotate::ops::status::run(&ctx, &s.secret_id).await,
            Command::Resume {
                secret,
                yes,
                finish,
                drop,
                min_age,
            } => {
                let choice = match (finish, drop) {
                    (true, _) => Choice::Finish,
                    (_, true) => Choice::Drop,
                    _ => Choice::Auto,
                };
                let options = ResumeOptions {
                    choice,
                    yes: *yes,
                    min_age: *min_age,
                };
                pgrotate::ops::resume::run(&ctx, &secret.secret_id, options).await
            }
            Command::Rotate {
                secret_id,
                wait,
                timeout,
                log_group,
            } => {
                let options = RotateOptions {
                    wait: *wait,
                    timeout: Duration::from_secs(*timeout),
                    log_group: log_group.clone(),
                };
                pgrotate::ops::rotate::run(&ctx, secret_id, &options).await
            }
        }
    }
    .await;
    match result {
        Ok(output) => {
            print(cli.json, &output);
            if output.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            print_error(cli.json, &error);
            ExitCode::FAILURE
        }
    }
}
