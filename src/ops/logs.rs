//! Reading the function's CloudWatch log for the step records ([`crate::metrics`]) of one
//! rotation, when the caller may read it (`logs:FilterLogEvents` on the function's log group).

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};

use crate::metrics::{StepOutcome, parse_record};

/// The CloudWatch Logs client (the SDK honours `AWS_ENDPOINT_URL` and
/// `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`).
#[derive(Debug, Clone)]
pub struct FunctionLogs {
    client: aws_sdk_cloudwatchlogs::Client,
}

/// Why the log could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the function's log group {group} cannot be read: {reason}")]
pub struct LogUnavailable {
    pub group: String,
    pub reason: String,
}

/// The log group Lambda writes a function's log to: `/aws/lambda/<name>` for
/// `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
pub fn log_group_of(function_arn: &str) -> Option<String> {
    let mut parts = function_arn.split(':');
    let name = parts.nth(6)?;
    (function_arn.starts_with("arn:") && !name.is_empty()).then(|| format!("/aws/lambda/{name}"))
}

impl FunctionLogs {
    pub async fn from_env(timeout: std::time::Duration) -> FunctionLogs {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(3).min(timeout))
            .operation_attempt_timeout(timeout)
            .operation_timeout(timeout * 2)
            .build();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(timeouts);
        if let Ok(app_name) = aws_config::AppName::new(super::APP_NAME) {
            loader = loader.app_name(app_name);
        }
        let shared = loader.load().await;
        FunctionLogs {
            client: aws_sdk_cloudwatchlogs::Client::new(&shared),
        }
    }

    /// The step records of version `token` in `group` since `since_ms`, oldest first.
    pub async fn step_outcomes(
        &self,
        group: &str,
        token: &str,
        since_ms: i64,
    ) -> Result<Vec<StepOutcome>, LogUnavailable> {
        let mut outcomes = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let out = self
                .client
                .filter_log_events()
                .log_group_name(group)
                .start_time(since_ms)
                // A quoted term: events holding the version id (the records carry it as Token).
                .filter_pattern(format!("\"{token}\""))
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| LogUnavailable {
                    group: group.to_string(),
                    reason: reason(&e),
                })?;
            for event in out.events() {
                if let Some(outcome) = event.message().and_then(|m| parse_record(m, token)) {
                    outcomes.push(outcome);
                }
            }
            match out.next_token().filter(|t| !t.is_empty()) {
                Some(token) => next_token = Some(token.to_string()),
                None => break,
            }
        }
        outcomes.sort_by_key(|o| o.timestamp_ms);
        Ok(outcomes)
    }
}

fn reason<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match error {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("UnknownError");
            let hint = match code {
                "ResourceNotFoundException" => {
                    " (no such log group: the function never ran, or logs to another group)"
                }
                "AccessDeniedException" => " (the caller needs logs:FilterLogEvents on the group)",
                _ => "",
            };
            format!("{code}: {}{hint}", e.message().unwrap_or("no message"))
        }
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_group_comes_from_the_function_name() {
        assert_eq!(
            log_group_of("arn:aws:lambda:us-east-1:123456789012:function:pgrotate").as_deref(),
            Some("/aws/lambda/pgrotate")
        );
        assert_eq!(
            log_group_of("arn:aws:lambda:us-east-1:123456789012:function:pgrotate:live").as_deref(),
            Some("/aws/lambda/pgrotate")
        );
        assert_eq!(log_group_of("pgrotate"), None);
    }
}
