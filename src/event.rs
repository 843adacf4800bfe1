//! The rotation event Secrets Manager sends, parsed strictly, with `RotationToken` kept secret.

use secrecy::SecretString;
use serde_json::Value;

use crate::error::Error;

/// The four steps of a rotation, in the order Secrets Manager runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub fn parse(raw: &str) -> Result<Step, Error> {
        match raw {
            "createSecret" => Ok(Step::Create),
            "setSecret" => Ok(Step::Set),
            "testSecret" => Ok(Step::Test),
            "finishSecret" => Ok(Step::Finish),
            other => Err(Error::UnknownStep(other.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }
}

/// One invocation's event. The step stays a raw string here: an unknown step is reported only
/// after the checks every step shares (SPEC section 2).
pub struct RotationEvent {
    pub secret_id: String,
    pub token: String,
    pub step: String,
    /// Opaque and sensitive: passed back on PutSecretValue, never logged.
    pub rotation_token: Option<SecretString>,
}

impl std::fmt::Debug for RotationEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotationEvent")
            .field("secret_id", &self.secret_id)
            .field("token", &self.token)
            .field("step", &self.step)
            .field(
                "rotation_token",
                &self.rotation_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

impl RotationEvent {
    /// Parses the event JSON; unknown fields are ignored.
    pub fn from_json(value: &Value) -> Result<RotationEvent, Error> {
        let object = value.as_object().ok_or_else(|| {
            Error::Event(
                "the event must be a JSON object with SecretId, ClientRequestToken and Step".into(),
            )
        })?;
        let required = |name: &str| -> Result<String, Error> {
            match object.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::String(_)) => Err(Error::Event(format!("{name} is empty"))),
                Some(_) => Err(Error::Event(format!("{name} must be a string"))),
                None => Err(Error::Event(format!(
                    "{name} is missing (the event needs SecretId, ClientRequestToken and Step)"
                ))),
            }
        };
        let rotation_token = match object.get("RotationToken") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(SecretString::from(s.clone())),
            Some(_) => return Err(Error::Event("RotationToken must be a string".into())),
        };
        Ok(RotationEvent {
            secret_id: required("SecretId")?,
            token: required("ClientRequestToken")?,
            step: required("Step")?,
            rotation_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use serde_json::json;

    #[test]
    fn parses_a_full_event_and_ignores_unknown_fields() {
        let event = RotationEvent::from_json(&json!({
            "SecretId": "arn:s", "ClientRequestToken": "t1", "Step": "setSecret",
            "RotationToken": "rt-secret", "Extra": 5
        }))
        .unwrap();
        assert_eq!(event.secret_id, "arn:s");
        assert_eq!(event.token, "t1");
        assert_eq!(Step::parse(&event.step).unwrap(), Step::Set);
        assert_eq!(event.rotation_token.unwrap().expose_secret(), "rt-secret");
    }

    #[test]
    fn debug_output_redacts_the_rotation_token() {
        let event = RotationEvent::from_json(&json!({
            "SecretId": "a", "ClientRequestToken": "t", "Step": "testSecret", "RotationToken": "rt-very-secret"
        }))
        .unwrap();
        let shown = format!("{event:?}");
        assert!(!shown.contains("rt-very-secret"), "{shown}");
        assert!(shown.contains("REDACTED"));
    }

    #[test]
    fn missing_or_mistyped_fields_are_named_in_the_error() {
        let err = RotationEvent::from_json(&json!({"SecretId": "a", "Step": "x"})).unwrap_err();
        assert!(
            err.to_string().contains("ClientRequestToken is missing"),
            "{err}"
        );
        let err = RotationEvent::from_json(
            &json!({"SecretId": 1, "ClientRequestToken": "t", "Step": "x"}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("SecretId must be a string"),
            "{err}"
        );
        let err = RotationEvent::from_json(&json!("createSecret")).unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
    }

    #[test]
    fn unknown_step_error_lists_the_four_valid_steps() {
        let err = Step::parse("deleteSecret").unwrap_err().to_string();
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            assert!(err.contains(step), "{err}");
        }
    }
}
