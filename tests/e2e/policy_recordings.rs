//! The recordings of the IAM policy proof: one rotation per configuration with moto's request
//! recorder on, written where integration/policy-proof.sh reads them.

use std::path::PathBuf;

use pgrotate::Strategy;
use serde_json::{Value, json};

use crate::common::driver::deployment;
use crate::common::lambda::{self, Lambda};
use crate::common::world::*;

// --- recordings for the IAM policy proof (issue 4) -----------------------------------------

const PROOF_FUNCTION: &str = "pgrotate-proof";

struct ProofConfig {
    strategy: Strategy,
    kms: bool,
    secret_arn: String,
    master_arn: Option<String>,
    kms_key_arn: Option<String>,
    master_kms_key_arn: Option<String>,
}

impl ProofConfig {
    fn name(&self) -> String {
        format!(
            "{}-{}",
            self.strategy.as_str(),
            if self.kms { "kms" } else { "nokms" }
        )
    }

    /// The scenario name policy/matrix.py uses for the same configuration.
    fn scenario(&self) -> String {
        format!(
            "{}{}",
            self.strategy.as_str(),
            if self.kms { "-kms" } else { "" }
        )
    }

    fn secret_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for arn in std::iter::once(&self.secret_arn).chain(self.master_arn.as_ref()) {
            ids.push(arn.clone());
            ids.push(secret_name(arn));
        }
        ids
    }
}

/// Standard base64 (moto's recorder encodes request bodies with it).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The secret a recorded request is about (its SecretId, or the Name of a CreateSecret).
fn recorded_secret_id(entry: &Value) -> Option<String> {
    let body = entry["body"].as_str()?;
    let body = if entry["body_encoded"].as_bool() == Some(true) {
        String::from_utf8(base64_decode(body)?).ok()?
    } else {
        body.to_string()
    };
    let body: Value = serde_json::from_str(&body).ok()?;
    body.get("SecretId")
        .or_else(|| body.get("Name"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// One full rotation per configuration in {single user, alternating users} x {no KMS,
/// customer managed key}, through the binary, with moto's request recorder on; writes
/// `target/recordings/<strategy>-<kms|nokms>.json` per configuration, and the same as a
/// recording set for `policy/recording.py` in `target/recordings/e2e/`. Only this test
/// toggles the recorder; other tests' traffic is filtered out by secret name and ARN.
#[tokio::test]
async fn recordings_for_the_policy_proof() {
    let world = World::new(PROOF_FUNCTION).await;
    let key = world.driver.create_kms_key("pgrotate proof secrets").await;
    let master_key = world.driver.create_kms_key("pgrotate proof master").await;

    let mut configs = Vec::new();
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        for kms in [false, true] {
            let (kms_key, master_kms) = match (kms, strategy) {
                (false, _) => (None, None),
                (true, Strategy::SingleUser) => (Some(key.clone()), None),
                (true, Strategy::AlternatingUsers) => (Some(key.clone()), Some(master_key.clone())),
            };
            let (arn, _) = world
                .user_secret_with_master(strategy, kms_key.as_deref(), master_kms.as_deref())
                .await;
            let master_arn = world.current(&arn).await["masterarn"]
                .as_str()
                .map(str::to_string);
            configs.push(ProofConfig {
                strategy,
                kms,
                secret_arn: arn,
                master_arn,
                kms_key_arn: kms_key,
                master_kms_key_arn: master_kms,
            });
        }
    }

    world.driver.recorder_stop().await;
    world.driver.recorder_reset().await;
    world.driver.recorder_start().await;
    let mut failures = Vec::new();
    for strategy in [Strategy::SingleUser, Strategy::AlternatingUsers] {
        let mut lambda = Lambda::start(deployment(&world.stack, strategy, PROOF_FUNCTION)).await;
        for config in configs.iter().filter(|c| c.strategy == strategy) {
            let before = Before::take(&world, &config.secret_arn, None).await;
            match world.driver.rotate(&lambda, &config.secret_arn, None).await {
                Ok(token) => {
                    check_rotated(
                        &world,
                        &config.secret_arn,
                        strategy,
                        &token,
                        &before,
                        &config.name(),
                    )
                    .await;
                }
                Err(e) => failures.push(format!("{}: {e}\n{}", config.name(), lambda.logs())),
            }
        }
        lambda.stop().await;
    }
    world.driver.recorder_stop().await;
    let dump = world.driver.recorder_download().await;
    // moto keeps the recording in a file in its working directory: empty it.
    world.driver.recorder_reset().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/recordings");
    let set = out.join("e2e");
    std::fs::create_dir_all(&set).expect("create target/recordings/e2e");
    let lambda_arn = lambda::function_arn(PROOF_FUNCTION);
    for config in &configs {
        let ids = config.secret_ids();
        let kept: Vec<&str> = dump
            .lines()
            .filter(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|entry| recorded_secret_id(&entry))
                    .is_some_and(|id| ids.contains(&id))
            })
            .collect();
        let function_requests = kept.iter().filter(|l| l.contains("app/pgrotate")).count();
        let expected = match config.strategy {
            Strategy::SingleUser => 11,
            Strategy::AlternatingUsers => 12,
        };
        assert!(
            (4..=expected).contains(&function_requests),
            "{}: {function_requests} Secrets Manager calls by the function for one rotation, at most {expected} expected",
            config.name()
        );
        let mut recording = kept.join("\n");
        recording.push('\n');
        let file = json!({
            "config": config.name(),
            "strategy": config.strategy.as_str(),
            "region": "us-east-1",
            "account": "123456789012",
            "lambda_arn": lambda_arn,
            "secret_arn": config.secret_arn,
            "master_arn": config.master_arn,
            "kms_key_arn": config.kms_key_arn,
            "master_kms_key_arn": config.master_kms_key_arn,
            "recording": recording,
        });
        let path = out.join(format!("{}.json", config.name()));
        std::fs::write(&path, serde_json::to_string_pretty(&file).unwrap() + "\n")
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));

        // The same as a recording set for policy/recording.py (PGROTATE_RECORDINGS).
        let scenario = config.scenario();
        let mut secrets = serde_json::Map::new();
        secrets.insert(
            config.secret_arn.clone(),
            json!({"Name": secret_name(&config.secret_arn), "RotationLambdaARN": lambda_arn, "KmsKeyArn": config.kms_key_arn}),
        );
        if let Some(master) = &config.master_arn {
            secrets.insert(
                master.clone(),
                json!({"Name": secret_name(master), "RotationLambdaARN": null, "KmsKeyArn": config.master_kms_key_arn}),
            );
        }
        let meta = json!({
            "name": scenario,
            "strategy": config.strategy.as_str(),
            "function_name": PROOF_FUNCTION,
            "function_arn": lambda_arn,
            "region": "us-east-1",
            "account": "123456789012",
            "rotated": [config.secret_arn],
            "master": config.master_arn,
            "key": config.kms_key_arn,
            "master_key": config.master_kms_key_arn,
            "secrets": secrets,
            "recording": format!("{scenario}.moto.jsonl"),
        });
        std::fs::write(
            set.join(format!("{scenario}.moto.jsonl")),
            file["recording"].as_str().unwrap(),
        )
        .expect("write the dump");
        std::fs::write(
            set.join(format!("{scenario}.meta.json")),
            serde_json::to_string_pretty(&meta).unwrap() + "\n",
        )
        .expect("write the metadata");
    }
}

/// A secret's name from its ARN (the part after `secret:`, without the random suffix).
fn secret_name(arn: &str) -> String {
    let name = arn.splitn(7, ':').nth(6).unwrap_or_default();
    name.get(..name.len().saturating_sub(7))
        .unwrap_or_default()
        .to_string()
}
