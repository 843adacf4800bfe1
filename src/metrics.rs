//! The function's metrics as CloudWatch Embedded Metric Format (EMF) records: one JSON line
//! per step on standard output, which Lambda ships to CloudWatch Logs and CloudWatch turns
//! into metrics, so the function needs no `cloudwatch:PutMetricData` permission.
//!
//! Namespace `pgrotate`; metrics `StepDuration` (milliseconds, every step),
//! `RotationSucceeded` (1 when finishSecret succeeds) and `RotationFailed` (1 when any step
//! fails); dimension sets `[Step, Strategy]` and `[FunctionName]` (the whole function, for
//! the template's alarm: the namespace is shared by every pgrotate stack of an account). The
//! record also carries, as searchable properties, the secret ARN, the version id (`Token`,
//! the ClientRequestToken), the outcome and, on failure, the error's kind and message: the same
//! texts the step's log line holds, which never contain a secret value. `pgrotatectl rotate`
//! follows a rotation by these records.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::event::Step;

pub const NAMESPACE: &str = "pgrotate";

/// What one step did, as the metrics see it.
#[derive(Debug)]
pub struct StepRecord<'a> {
    /// The step as the event named it; anything but the four steps is recorded as
    /// `unknown`, so an event cannot create dimension values.
    pub step: &'a str,
    pub strategy: &'a str,
    pub secret_arn: &'a str,
    pub token: &'a str,
    pub duration_ms: u64,
    pub result: Result<(), &'a Error>,
}

impl StepRecord<'_> {
    fn step_name(&self) -> &'static str {
        Step::parse(self.step).map_or("unknown", Step::as_str)
    }

    /// The EMF document, stamped with `timestamp_ms` (milliseconds since the Unix epoch).
    pub fn to_emf(&self, timestamp_ms: u64) -> Value {
        let step = self.step_name();
        let mut metrics = vec![json!({"Name": "StepDuration", "Unit": "Milliseconds"})];
        let mut record = Map::new();
        match self.result {
            Ok(()) if step == Step::Finish.as_str() => {
                metrics.push(json!({"Name": "RotationSucceeded", "Unit": "Count"}));
                record.insert("RotationSucceeded".into(), json!(1));
            }
            Ok(()) => {}
            Err(_) => {
                metrics.push(json!({"Name": "RotationFailed", "Unit": "Count"}));
                record.insert("RotationFailed".into(), json!(1));
            }
        }
        let mut document = Map::new();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["Step", "Strategy"], ["FunctionName"]],
                    "Metrics": metrics,
                }],
            }),
        );
        // Lambda's JSON log format treats a line without "level" as INFO and drops it under
        // a stricter LogLevel: a failure is recorded at ERROR so RotationFailed always arrives.
        let level = if self.result.is_ok() { "INFO" } else { "ERROR" };
        document.insert("level".into(), json!(level));
        let function =
            std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "unknown".into());
        document.insert("FunctionName".into(), json!(function));
        document.insert("Step".into(), json!(step));
        document.insert("Strategy".into(), json!(self.strategy));
        document.insert("StepDuration".into(), json!(self.duration_ms));
        document.append(&mut record);
        document.insert("SecretArn".into(), json!(self.secret_arn));
        document.insert("Token".into(), json!(self.token));
        match self.result {
            Ok(()) => {
                document.insert("Outcome".into(), json!("succeeded"));
            }
            Err(error) => {
                document.insert("Outcome".into(), json!("failed"));
                document.insert("ErrorType".into(), json!(error.kind()));
                document.insert("ErrorMessage".into(), json!(error.to_string()));
            }
        }
        Value::Object(document)
    }

    /// Writes the record as one line on standard output (where Lambda collects it).
    pub fn emit(&self) {
        let line = self.to_emf(now_ms()).to_string();
        let mut out = std::io::stdout().lock();
        // A closed stdout cannot be reported anywhere else; the step's result stands.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A step's outcome read back from an EMF record (by `pgrotatectl rotate`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepOutcome {
    pub step: String,
    pub succeeded: bool,
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: Option<u64>,
}

/// Reads a log line back: `Some` when it is one of these records for version `token`.
pub fn parse_record(line: &str, token: &str) -> Option<StepOutcome> {
    let value: Value = serde_json::from_str(line.trim()).ok()?;
    let namespace = value
        .pointer("/_aws/CloudWatchMetrics/0/Namespace")
        .and_then(Value::as_str)?;
    if namespace != NAMESPACE || value.get("Token").and_then(Value::as_str) != Some(token) {
        return None;
    }
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
    Some(StepOutcome {
        step: text("Step")?,
        succeeded: text("Outcome").as_deref() == Some("succeeded"),
        duration_ms: value.get("StepDuration").and_then(Value::as_u64),
        error_type: text("ErrorType"),
        error_message: text("ErrorMessage"),
        timestamp_ms: value.pointer("/_aws/Timestamp").and_then(Value::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(step: &'a str, result: Result<(), &'a Error>) -> StepRecord<'a> {
        StepRecord {
            step,
            strategy: "single-user",
            secret_arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbCdEf",
            token: "0f0e0d0c-1111-2222-3333-444455556666",
            duration_ms: 42,
            result,
        }
    }

    /// The EMF specification's structural rules, checked on a document.
    fn assert_valid_emf(doc: &Value) {
        let aws = &doc["_aws"];
        assert!(aws["Timestamp"].is_u64(), "Timestamp: {doc}");
        let directives = aws["CloudWatchMetrics"].as_array().expect("an array");
        assert_eq!(directives.len(), 1);
        for directive in directives {
            assert_eq!(directive["Namespace"], NAMESPACE);
            for set in directive["Dimensions"].as_array().expect("dimension sets") {
                for key in set.as_array().expect("a dimension set") {
                    let key = key.as_str().expect("a dimension name");
                    assert!(doc[key].is_string(), "dimension {key} is a string member");
                }
            }
            for metric in directive["Metrics"].as_array().expect("metrics") {
                let name = metric["Name"].as_str().expect("a metric name");
                assert!(doc[name].is_number(), "metric {name} has a numeric value");
                let unit = metric["Unit"].as_str().expect("a unit");
                assert!(["Milliseconds", "Count"].contains(&unit), "{unit}");
            }
        }
    }

    #[test]
    fn a_successful_step_records_its_duration_only() {
        let doc = record("setSecret", Ok(())).to_emf(1_700_000_000_000);
        assert_valid_emf(&doc);
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(doc["Step"], "setSecret");
        assert_eq!(doc["Strategy"], "single-user");
        assert_eq!(doc["StepDuration"], 42);
        assert_eq!(doc["Outcome"], "succeeded");
        assert!(doc.get("RotationSucceeded").is_none());
        assert!(doc.get("RotationFailed").is_none());
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "StepDuration"
        );
    }

    #[test]
    fn finish_secret_counts_a_succeeded_rotation() {
        let doc = record("finishSecret", Ok(())).to_emf(1);
        assert_valid_emf(&doc);
        assert_eq!(doc["RotationSucceeded"], 1);
        let names: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["StepDuration", "RotationSucceeded"]);
    }

    #[test]
    fn a_failed_step_counts_a_failed_rotation_with_its_error_and_no_secret() {
        let error = Error::NoWorkingCredentials {
            user: "app".into(),
            tried: "AWSCURRENT (password refused)".into(),
            hint: String::new(),
        };
        let doc = record("setSecret", Err(&error)).to_emf(1);
        assert_valid_emf(&doc);
        assert_eq!(doc["RotationFailed"], 1);
        assert_eq!(doc["level"], "ERROR");
        assert_eq!(doc["ErrorType"], "NoWorkingCredentials");
        assert!(doc.get("RotationSucceeded").is_none());
        let text = doc.to_string();
        assert!(!text.contains("\"password\":"), "{text}");
        let back = parse_record(&text, "0f0e0d0c-1111-2222-3333-444455556666").unwrap();
        assert_eq!(back.step, "setSecret");
        assert!(!back.succeeded);
        assert_eq!(back.error_type.as_deref(), Some("NoWorkingCredentials"));
        assert_eq!(parse_record(&text, "another-token"), None);
        assert_eq!(parse_record("INFO not json", "x"), None);
    }

    #[test]
    fn an_unknown_step_is_recorded_as_unknown() {
        let error = Error::UnknownStep("deleteSecret".into());
        let doc = record("deleteSecret", Err(&error)).to_emf(1);
        assert_valid_emf(&doc);
        assert_eq!(doc["Step"], "unknown");
    }
}
