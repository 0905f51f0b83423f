//! Why an EBS request failed, and how an error answer of the service reads.

use super::EbsConfig;

/// Why an EBS request failed. Messages never carry credentials or signatures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION) to the region of the snapshot")]
    NoRegion,
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    NoCredentials,
    #[error("endpoint '{0}' is not an http(s):// URL: check --endpoint or AWS_ENDPOINT_URL_EBS")]
    BadEndpoint(String),
    #[error(
        "access denied to EBS snapshot {snapshot} in {region}: the credentials need ebs:ListSnapshotBlocks, ebs:ListChangedBlocks and ebs:GetSnapshotBlock on it (AWS: {message})"
    )]
    AccessDenied {
        snapshot: String,
        region: String,
        message: String,
    },
    #[error(
        "EBS snapshot {snapshot} was not found in {region}: check the snapshot id and AWS_REGION"
    )]
    NotFound { snapshot: String, region: String },
    #[error(
        "the AWS credentials have expired: get fresh ones (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)"
    )]
    Expired,
    #[error(
        "AWS refused the request's time: the local clock is wrong ({local}); give failback.ntp=SERVER (or fix the BIOS clock) and pull again (AWS: {message})"
    )]
    ClockSkew { local: String, message: String },
    #[error(
        "AWS rejected the credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (AWS: {message})"
    )]
    BadCredentials { message: String },
    #[error(
        "EBS snapshot {snapshot} is not completed yet: wait until its state is 'completed' and pull again"
    )]
    NotCompleted { snapshot: String },
    #[error("EBS throttled {what} (HTTP {status}); slowing down")]
    Throttled { what: String, status: u16 },
    #[error("EBS answered HTTP {status} to {what}")]
    Server { what: String, status: u16 },
    #[error("cannot reach EBS at {endpoint} ({what}): {message}")]
    Transport {
        endpoint: String,
        what: String,
        message: String,
    },
    #[error("EBS refused {what}: HTTP {status} {kind}: {message}")]
    Api {
        what: String,
        status: u16,
        kind: String,
        message: String,
    },
    /// A BlockToken or NextToken past its time (7 days, 1 hour), or invalid: the
    /// source lists the blocks again, and gives this only when that did not help.
    #[error(
        "EBS refused the token of {what} as expired or invalid, even listed afresh: pull again (AWS: {message})"
    )]
    TokenExpired { what: String, message: String },
    #[error("EBS sent a malformed answer to {what}: {message}")]
    Malformed { what: String, message: String },
    #[error(
        "block {index} of {snapshot} does not match its x-amz-Checksum (SHA-256): not written, fetched again"
    )]
    Checksum { snapshot: String, index: u64 },
    #[error(
        "block {index} of {snapshot}: {got} bytes arrived, x-amz-Data-Length says {header:?}, BlockSize is {block_size}: not written, fetched again"
    )]
    Length {
        snapshot: String,
        index: u64,
        got: usize,
        header: Option<u64>,
        block_size: u64,
    },
    #[error(
        "EBS snapshot {snapshot} reports BlockSize {size}: failback reads block sizes that divide 524288"
    )]
    BlockSize { snapshot: String, size: u64 },
    #[error(
        "EBS snapshot {snapshot} reports VolumeSize {gib} GiB: more than EBS's largest volume ({max} GiB)"
    )]
    VolumeSize {
        snapshot: String,
        gib: u64,
        max: u64,
    },
    #[error("SigV4 signing failed: {0}")]
    Sign(String),
    /// A TLS refusal for the certificate's dates: the local clock (one line).
    #[error("{0}")]
    Clock(String),
    #[error(transparent)]
    Date(#[from] crate::net::clock::Error),
}

impl Error {
    /// True when trying again may help.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. }
                | Error::Server { .. }
                | Error::Transport { .. }
                | Error::Checksum { .. }
                | Error::Length { .. }
        )
    }

    /// Turns an error answer of EBS (to `what`, about `cfg`'s snapshot) into one
    /// clear error.
    pub(super) fn from_answer(
        cfg: &EbsConfig,
        what: &str,
        status: u16,
        kind_header: Option<String>,
        body: &str,
    ) -> Error {
        let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let field = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let kind = kind_header
            .or_else(|| field("__type"))
            .or_else(|| field("code"))
            .unwrap_or_default();
        // "ResourceNotFoundException:http://..." or "com.amazon...#ResourceNotFoundException".
        let kind = kind.split(':').next().unwrap_or_default();
        let kind = kind.rsplit('#').next().unwrap_or_default().to_string();
        let message: String = field("message")
            .or_else(|| field("Message"))
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let lower = message.to_ascii_lowercase();
        let snapshot = || match &cfg.base {
            Some(b) if what.starts_with("ListChanged") => {
                format!("{} (or its base {b})", cfg.snapshot)
            }
            _ => cfg.snapshot.clone(),
        };
        let region = cfg.region.clone();
        match kind.as_str() {
            k if k.contains("Throttl") || k == "ConcurrentLimitExceededException" => {
                Error::Throttled {
                    what: what.into(),
                    status,
                }
            }
            k if clock_refused(k, &lower) => Error::ClockSkew {
                local: httpdate::fmt_http_date(std::time::SystemTime::now()),
                message,
            },
            "ExpiredTokenException" | "ExpiredToken" => Error::Expired,
            "ValidationException"
                if matches!(
                    field("Reason").as_deref(),
                    Some("INVALID_BLOCK_TOKEN" | "INVALID_PAGE_TOKEN")
                ) =>
            {
                Error::TokenExpired {
                    what: what.into(),
                    message,
                }
            }
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "IncompleteSignatureException"
            | "InvalidClientTokenId"
            | "MissingAuthenticationTokenException" => Error::BadCredentials { message },
            "AccessDeniedException" if lower.contains("expired") => Error::Expired,
            "AccessDeniedException" => Error::AccessDenied {
                snapshot: snapshot(),
                region,
                message,
            },
            "ResourceNotFoundException" => Error::NotFound {
                snapshot: snapshot(),
                region,
            },
            "ValidationException"
                if lower.contains("not completed")
                    || lower.contains("pending")
                    || lower.contains("snapshot state")
                    || lower.contains("not in completed") =>
            {
                Error::NotCompleted {
                    snapshot: snapshot(),
                }
            }
            _ if status == 429 || status == 503 => Error::Throttled {
                what: what.into(),
                status,
            },
            _ if status >= 500 => Error::Server {
                what: what.into(),
                status,
            },
            _ if status == 403 && lower.contains("expired") => Error::Expired,
            _ if status == 403 => Error::AccessDenied {
                snapshot: snapshot(),
                region,
                message,
            },
            _ if status == 404 => Error::NotFound {
                snapshot: snapshot(),
                region,
            },
            _ => Error::Api {
                what: what.into(),
                status,
                kind,
                message,
            },
        }
    }
}

/// SigV4 signs the local time, and AWS refuses a request more than 5 minutes off:
/// with a wrong clock, good credentials look bad.
fn clock_refused(kind: &str, lower_message: &str) -> bool {
    matches!(kind, "RequestExpired" | "RequestTimeTooSkewed")
        || (kind.contains("Signature")
            && (lower_message.contains("signature expired")
                || lower_message.contains("not yet current")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_become_one_clear_line() {
        let vars = |k: &str| match k {
            "AWS_REGION" => Some("r".to_string()),
            "AWS_ACCESS_KEY_ID" => Some("a".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("b".to_string()),
            _ => None,
        };
        let cfg = EbsConfig::resolve("snap-1".into(), None, None, None, vars).unwrap();
        let c = |status, kind: Option<&str>, body: &str| {
            Error::from_answer(&cfg, "X", status, kind.map(str::to_string), body)
        };
        assert!(matches!(
            c(400, Some("RequestThrottledException:http://x"), "{}"),
            Error::Throttled { .. }
        ));
        assert!(c(500, None, "<html>").is_retryable());
        assert!(matches!(
            c(403, Some("AccessDeniedException"), r#"{"message":"no"}"#),
            Error::AccessDenied { .. }
        ));
        assert!(matches!(
            c(
                404,
                None,
                r#"{"__type":"ResourceNotFoundException","Message":"x"}"#
            ),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            c(403, Some("ExpiredTokenException"), "{}"),
            Error::Expired
        ));
        assert!(matches!(
            c(
                400,
                Some("ValidationException"),
                r#"{"message":"The snapshot is not completed"}"#
            ),
            Error::NotCompleted { .. }
        ));
        for reason in ["INVALID_BLOCK_TOKEN", "INVALID_PAGE_TOKEN"] {
            let body = format!(r#"{{"message":"expired","Reason":"{reason}"}}"#);
            let e = c(400, Some("ValidationException"), &body);
            assert!(matches!(e, Error::TokenExpired { .. }), "{reason}: {e:?}");
        }
        assert!(!c(403, None, "{}").is_retryable());
        // A clock 25 years off: SigV4's time check, not the credentials.
        for (kind, body) in [
            (
                "InvalidSignatureException",
                r#"{"message":"Signature expired: 20010101T000000Z is now earlier than 20261122T055500Z (20261122T060000Z - 5 min.)"}"#,
            ),
            (
                "InvalidSignatureException",
                r#"{"message":"Signature not yet current: 20400101T000000Z is still later than 20261122T060500Z"}"#,
            ),
            ("RequestExpired", r#"{"message":"Request has expired."}"#),
            ("RequestTimeTooSkewed", r#"{"message":"too far"}"#),
        ] {
            let e = c(403, Some(kind), body);
            assert!(matches!(e, Error::ClockSkew { .. }), "{kind}: {e:?}");
            assert!(e.to_string().contains("clock is wrong"), "{e}");
            assert!(!e.is_retryable());
        }
        assert!(matches!(
            c(
                403,
                Some("InvalidSignatureException"),
                r#"{"message":"The request signature we calculated does not match"}"#
            ),
            Error::BadCredentials { .. }
        ));
    }
}
