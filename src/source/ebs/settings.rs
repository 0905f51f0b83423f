//! The AWS settings of one snapshot pull: region, endpoint, credentials, from
//! the command line, the AWS environment variables and the preset.

use super::Error;
use crate::secret::{REDACTED, redact_url};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The preset's `[aws]` section: what PID 1, which has no AWS environment, pulls
/// with. `Debug` shows the key id only.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aws {
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Endpoint URL override (e.g. a VPC endpoint).
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for Aws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| REDACTED);
        f.debug_struct("Aws")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .finish()
    }
}

/// AWS credentials; `Debug` shows the key id only.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &REDACTED)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}

/// Where and how to read one snapshot.
#[derive(Debug, Clone)]
pub struct EbsConfig {
    pub snapshot: String,
    /// The snapshot the target still matches: only the changed blocks are read.
    pub base: Option<String>,
    pub region: String,
    /// `https://ebs.REGION.amazonaws.com` unless overridden.
    pub endpoint: String,
    pub credentials: Credentials,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request for throttling, 5xx and network errors.
    pub attempts: u32,
    /// HTTPS proxy (`http://HOST:PORT`) to tunnel through; `None`: direct.
    pub proxy: Option<String>,
}

impl EbsConfig {
    /// Settles the configuration: `endpoint` (from `--endpoint`) wins over
    /// AWS_ENDPOINT_URL_EBS, then AWS_ENDPOINT_URL, then the regional endpoint;
    /// credentials and region come from the AWS environment variables, filled in
    /// from `preset` where unset. `env` reads a variable (tests pass a map).
    pub fn resolve(
        snapshot: String,
        base: Option<String>,
        endpoint: Option<String>,
        preset: Option<&Aws>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| preset.and_then(|p| p.region.clone()))
            .ok_or(Error::NoRegion)?;
        let endpoint = endpoint
            .filter(|e| !e.is_empty())
            .or_else(|| var("AWS_ENDPOINT_URL_EBS"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| preset.and_then(|p| p.endpoint.clone()))
            .unwrap_or_else(|| format!("https://ebs.{region}.amazonaws.com"));
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            return Err(Error::BadEndpoint(redact_url(&endpoint)));
        }
        let (access_key_id, secret_access_key, session_token) =
            match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
                (Some(a), Some(s)) => (a, s, var("AWS_SESSION_TOKEN")),
                _ => match preset {
                    Some(Aws {
                        access_key_id: Some(a),
                        secret_access_key: Some(s),
                        session_token,
                        ..
                    }) => (a.clone(), s.clone(), session_token.clone()),
                    _ => return Err(Error::NoCredentials),
                },
            };
        Ok(Self {
            snapshot,
            base,
            region,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            credentials: Credentials {
                access_key_id,
                secret_access_key,
                session_token,
            },
            timeout: Duration::from_secs(60),
            attempts: 5,
            proxy: None,
        })
    }
}

impl EbsConfig {
    /// What the operator should be told about these settings before the pull:
    /// a plain `http://` endpoint (tests, or a proxy the operator runs) lets
    /// anyone on the way forge the blocks together with their checksums.
    pub fn warning(&self) -> Option<String> {
        self.endpoint.starts_with("http://").then(|| {
            format!(
                "the EBS endpoint {} is plain http://: block data and checksums can be forged in transit; use https://",
                redact_url(&self.endpoint)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<EbsConfig, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EbsConfig::resolve("snap-1".into(), None, None, None, |k| vars.get(k).cloned())
    }

    #[test]
    fn endpoint_and_credentials_come_from_the_environment() {
        let c = cfg(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "https://ebs.eu-west-3.amazonaws.com");
        assert_eq!(c.warning(), None);
        assert!(!format!("{c:?}").contains("very-secret"));
        let c = cfg(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"),
            ("AWS_ENDPOINT_URL_EBS", "http://127.0.0.1:2/"),
        ])
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:2");
        assert!(
            c.warning().is_some_and(
                |w| w.starts_with("the EBS endpoint http://127.0.0.1:2 is plain http://")
            ),
            "{:?}",
            c.warning()
        );
        assert!(matches!(
            cfg(&[("AWS_REGION", "x")]),
            Err(Error::NoCredentials)
        ));
        assert!(matches!(cfg(&[]), Err(Error::NoRegion)));
    }

    #[test]
    fn the_presets_aws_section_debugs_without_its_secrets() {
        let aws = Aws {
            region: Some("eu-west-3".into()),
            access_key_id: Some("AKIDEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI".into()),
            session_token: Some("FwoGZXIvYXdzEXAMPLE".into()),
            endpoint: None,
        };
        let shown = format!("{aws:?}");
        assert!(
            !shown.contains("wJalrXUtnFEMI") && !shown.contains("FwoGZXIvYXdzEXAMPLE"),
            "{shown}"
        );
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    }
}
