//! An in-memory [`SecretStore`] for tests: real staging-label semantics, a log of every call,
//! and failures that can be injected at any call.
// A test double: a poisoned lock or a secret a test never created is a bug in that test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};

use crate::store::{
    AWSCURRENT, AWSPENDING, AWSPREVIOUS, OperatorStore, SecretDescription, SecretStore, StoreError,
    StoreErrorKind, VersionInfo, VersionRef,
};

/// The four operations, as logged and as targets for injected failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Describe,
    GetValue,
    PutValue,
    UpdateStage,
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    value: Option<String>,
    stages: Vec<String>,
}

#[derive(Debug, Clone)]
struct Secret {
    arn: String,
    name: String,
    rotation_enabled: Option<bool>,
    versions: Vec<Version>,
}

#[derive(Debug, Default)]
struct State {
    secrets: Vec<Secret>,
    calls: Vec<(Op, String)>,
    /// Each entry fails the call of that operation after `skip` more of them succeed.
    failures: VecDeque<(Op, usize, StoreErrorKind)>,
    rotation_tokens: Vec<String>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

fn not_found(operation: &'static str, secret: &str, detail: &str) -> StoreError {
    StoreError {
        operation,
        secret: secret.to_string(),
        kind: StoreErrorKind::NotFound,
        detail: format!("ResourceNotFoundException: {detail}"),
    }
}

fn invalid(operation: &'static str, secret: &str, detail: &str) -> StoreError {
    StoreError {
        operation,
        secret: secret.to_string(),
        kind: StoreErrorKind::Other,
        detail: detail.to_string(),
    }
}

impl State {
    fn secret_mut(&mut self, id: &str) -> Option<&mut Secret> {
        self.secrets
            .iter_mut()
            .find(|s| s.arn == id || s.name == id)
    }

    /// Logs the call and fires an injected failure if one is due.
    fn enter(&mut self, op: Op, operation: &'static str, secret: &str) -> Result<(), StoreError> {
        self.calls.push((op, secret.to_string()));
        let mut due = None;
        for (index, (target, skip, kind)) in self.failures.iter_mut().enumerate() {
            if *target == op {
                if *skip == 0 {
                    due = Some((index, *kind));
                } else {
                    *skip -= 1;
                }
                break;
            }
        }
        if let Some((index, kind)) = due {
            self.failures.remove(index);
            return Err(StoreError {
                operation,
                secret: secret.to_string(),
                kind,
                detail: "injected failure".into(),
            });
        }
        Ok(())
    }
}

fn remove_stage(secret: &mut Secret, stage: &str) {
    for version in &mut secret.versions {
        version.stages.retain(|s| s != stage);
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Creates a secret whose first version (id `v0`) holds `value` as AWSCURRENT.
    pub fn create_secret(&self, arn: &str, value: &str) {
        let name = arn.rsplit(':').next().unwrap_or(arn).to_string();
        self.state.lock().unwrap().secrets.push(Secret {
            arn: arn.to_string(),
            name,
            rotation_enabled: Some(true),
            versions: vec![Version {
                id: "v0".into(),
                value: Some(value.to_string()),
                stages: vec![AWSCURRENT.into()],
            }],
        });
    }

    pub fn set_rotation_enabled(&self, arn: &str, enabled: Option<bool>) {
        let mut state = self.state.lock().unwrap();
        state
            .secret_mut(arn)
            .expect("secret exists")
            .rotation_enabled = enabled;
    }

    /// What RotateSecret does before invoking the function: a new version `token` labelled
    /// AWSPENDING, with no value yet.
    pub fn start_rotation(&self, arn: &str, token: &str) {
        let mut state = self.state.lock().unwrap();
        let secret = state.secret_mut(arn).expect("secret exists");
        remove_stage(secret, AWSPENDING);
        secret.versions.push(Version {
            id: token.to_string(),
            value: None,
            stages: vec![AWSPENDING.into()],
        });
    }

    /// What the service does after finishSecret succeeds.
    pub fn end_rotation(&self, arn: &str) {
        let mut state = self.state.lock().unwrap();
        remove_stage(state.secret_mut(arn).expect("secret exists"), AWSPENDING);
    }

    /// Puts a value directly, as a test's setup (not logged as a call).
    pub fn put_version(&self, arn: &str, id: &str, value: &str, stages: &[&str]) {
        let mut state = self.state.lock().unwrap();
        let secret = state.secret_mut(arn).expect("secret exists");
        for stage in stages {
            remove_stage(secret, stage);
        }
        secret.versions.retain(|v| v.id != id);
        secret.versions.push(Version {
            id: id.to_string(),
            value: Some(value.to_string()),
            stages: stages.iter().map(|s| s.to_string()).collect(),
        });
    }

    /// The value of the version holding `stage`, if any.
    pub fn value(&self, arn: &str, stage: &str) -> Option<String> {
        let mut state = self.state.lock().unwrap();
        let secret = state.secret_mut(arn)?;
        secret
            .versions
            .iter()
            .find(|v| v.stages.iter().any(|s| s == stage))
            .and_then(|v| v.value.clone())
    }

    /// Version id → labels, sorted by version id, for comparing states.
    pub fn labels(&self, arn: &str) -> Vec<(String, Vec<String>)> {
        let mut state = self.state.lock().unwrap();
        let secret = state.secret_mut(arn).expect("secret exists");
        let mut labels: Vec<_> = secret
            .versions
            .iter()
            .map(|v| {
                let mut stages = v.stages.clone();
                stages.sort();
                (v.id.clone(), stages)
            })
            .collect();
        labels.sort();
        labels
    }

    /// Makes a call of `op` fail with `kind`, after `skip` more calls of `op` succeed.
    pub fn fail(&self, op: Op, skip: usize, kind: StoreErrorKind) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push_back((op, skip, kind));
    }

    pub fn calls(&self) -> Vec<(Op, String)> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear_calls(&self) {
        self.state.lock().unwrap().calls.clear();
    }

    /// The RotationTokens PutSecretValue received.
    pub fn rotation_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().rotation_tokens.clone()
    }
}

impl SecretStore for MemoryStore {
    async fn describe(&self, secret_id: &str) -> Result<SecretDescription, StoreError> {
        let mut state = self.state.lock().unwrap();
        state.enter(Op::Describe, "DescribeSecret", secret_id)?;
        let secret = state
            .secret_mut(secret_id)
            .ok_or_else(|| not_found("DescribeSecret", secret_id, "no such secret"))?;
        Ok(SecretDescription {
            arn: secret.arn.clone(),
            rotation_enabled: secret.rotation_enabled,
            versions: secret
                .versions
                .iter()
                .filter(|v| !v.stages.is_empty())
                .map(|v| (v.id.clone(), v.stages.clone()))
                .collect(),
            name: Some(secret.name.clone()),
            ..SecretDescription::default()
        })
    }

    async fn get_value(
        &self,
        secret_id: &str,
        version: VersionRef<'_>,
    ) -> Result<SecretString, StoreError> {
        let mut state = self.state.lock().unwrap();
        state.enter(Op::GetValue, "GetSecretValue", secret_id)?;
        let secret = state
            .secret_mut(secret_id)
            .ok_or_else(|| not_found("GetSecretValue", secret_id, "no such secret"))?;
        let found = match version {
            VersionRef::Stage(stage) => secret
                .versions
                .iter()
                .find(|v| v.stages.iter().any(|s| s == stage)),
            VersionRef::Pending(token) => {
                let v = secret.versions.iter().find(|v| v.id == token);
                if v.is_some_and(|v| !v.stages.iter().any(|s| s == AWSPENDING)) {
                    return Err(invalid(
                        "GetSecretValue",
                        secret_id,
                        "the version does not hold AWSPENDING",
                    ));
                }
                v
            }
        };
        match found.and_then(|v| v.value.clone()) {
            Some(value) => Ok(SecretString::from(value)),
            None => Err(not_found(
                "GetSecretValue",
                secret_id,
                "can't find the specified secret value",
            )),
        }
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretString,
        rotation_token: Option<&SecretString>,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        state.enter(Op::PutValue, "PutSecretValue", secret_id)?;
        if let Some(rt) = rotation_token {
            state.rotation_tokens.push(rt.expose_secret().to_string());
        }
        let secret = state
            .secret_mut(secret_id)
            .ok_or_else(|| not_found("PutSecretValue", secret_id, "no such secret"))?;
        let value = value.expose_secret().to_string();
        if let Some(existing) = secret.versions.iter().find(|v| v.id == token) {
            match &existing.value {
                Some(old) if *old == value => return Ok(()),
                Some(_) => {
                    return Err(invalid(
                        "PutSecretValue",
                        secret_id,
                        "ResourceExistsException: a version with this ClientRequestToken already holds another value",
                    ));
                }
                None => {}
            }
        }
        remove_stage(secret, AWSPENDING);
        secret.versions.retain(|v| v.id != token);
        secret.versions.push(Version {
            id: token.to_string(),
            value: Some(value),
            stages: vec![AWSPENDING.into()],
        });
        Ok(())
    }

    async fn move_current(
        &self,
        secret_id: &str,
        token: &str,
        from_version: &str,
    ) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        state.enter(Op::UpdateStage, "UpdateSecretVersionStage", secret_id)?;
        let secret = state
            .secret_mut(secret_id)
            .ok_or_else(|| not_found("UpdateSecretVersionStage", secret_id, "no such secret"))?;
        let holds_current = secret
            .versions
            .iter()
            .any(|v| v.id == from_version && v.stages.iter().any(|s| s == AWSCURRENT));
        if !holds_current {
            return Err(invalid(
                "UpdateSecretVersionStage",
                secret_id,
                "InvalidParameterException: RemoveFromVersionId does not hold AWSCURRENT",
            ));
        }
        if !secret.versions.iter().any(|v| v.id == token) {
            return Err(invalid(
                "UpdateSecretVersionStage",
                secret_id,
                "InvalidParameterException: MoveToVersionId is not a version of the secret",
            ));
        }
        remove_stage(secret, AWSPREVIOUS);
        for version in &mut secret.versions {
            if version.id == from_version {
                version.stages.retain(|s| s != AWSCURRENT);
                version.stages.push(AWSPREVIOUS.into());
            } else if version.id == token {
                version.stages.push(AWSCURRENT.into());
            }
        }
        Ok(())
    }
}

impl OperatorStore for MemoryStore {
    async fn list_versions(&self, secret_id: &str) -> Result<Vec<VersionInfo>, StoreError> {
        let mut state = self.state.lock().unwrap();
        let secret = state
            .secret_mut(secret_id)
            .ok_or_else(|| not_found("ListSecretVersionIds", secret_id, "no such secret"))?;
        Ok(secret
            .versions
            .iter()
            .filter(|v| !v.stages.is_empty())
            .map(|v| VersionInfo {
                id: v.id.clone(),
                stages: v.stages.clone(),
                created: None,
            })
            .collect())
    }

    async fn rotate_secret(&self, secret_id: &str) -> Result<String, StoreError> {
        let token = {
            let mut state = self.state.lock().unwrap();
            let secret = state
                .secret_mut(secret_id)
                .ok_or_else(|| not_found("RotateSecret", secret_id, "no such secret"))?;
            format!("r{}", secret.versions.len())
        };
        MemoryStore::start_rotation(self, secret_id, &token);
        Ok(token)
    }

    async fn remove_pending(&self, secret_id: &str, version: &str) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap();
        let secret = state
            .secret_mut(secret_id)
            .ok_or_else(|| not_found("UpdateSecretVersionStage", secret_id, "no such secret"))?;
        match secret.versions.iter_mut().find(|v| v.id == version) {
            Some(v) if v.stages.iter().any(|s| s == AWSPENDING) => {
                v.stages.retain(|s| s != AWSPENDING);
                Ok(())
            }
            _ => Err(invalid(
                "UpdateSecretVersionStage",
                secret_id,
                "InvalidParameterException: RemoveFromVersionId does not hold AWSPENDING",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operator_calls_keep_the_label_semantics() {
        let store = MemoryStore::new();
        store.create_secret("arn:s", "{}");
        let token = store.rotate_secret("arn:s").await.unwrap();
        let versions = store.list_versions("arn:s").await.unwrap();
        assert_eq!(versions.len(), 2);
        assert!(
            versions
                .iter()
                .any(|v| v.id == token && v.stages == [AWSPENDING])
        );
        store.remove_pending("arn:s", &token).await.unwrap();
        assert!(store.remove_pending("arn:s", &token).await.is_err());
        assert_eq!(
            store.labels("arn:s"),
            vec![
                (token, vec![]),
                ("v0".to_string(), vec![AWSCURRENT.to_string()]),
            ]
        );
    }
}
