//! Which settings are secrets, and how text that may hold one is shown: every
//! error, warning and `Debug` that quotes a setting goes through here, so a
//! secret key added once (e.g. a `[report] token`) is redacted everywhere.

/// The keys whose values are secrets, by their last name: the preset's `token`
/// (and any section's, such as a `[report] token`), `[aws] secret_access_key`
/// and `session_token`, and the kernel command line's `failback.token=`.
pub const SECRET_KEYS: &[&str] = &["token", "secret_access_key", "session_token"];

/// What a secret is shown as.
pub const REDACTED: &str = "***";

/// Whether `key` names a secret: `token`, `aws.secret_access_key`,
/// `failback.token`, `report.token`, quoted or not.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.trim().trim_matches(['"', '\'']);
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.trim().trim_matches(['"', '\'']);
    SECRET_KEYS.contains(&last)
}

/// `url` with its password (`user:PASSWORD@host`) shown as `***`; a URL
/// without a scheme too (`user:pass@proxy:3128`).
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let scheme = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    format!("{scheme}{user}:{REDACTED}@{host}")
}

/// `text` (an error line) with the password of every URL in it redacted:
/// in each word (between spaces and quotes) with a `user:password@`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start = 0;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        if c.is_whitespace() || "\"'`".contains(c) {
            out.push_str(&redact_word(&text[word_start..i]));
            if i < text.len() {
                out.push(c);
            }
            word_start = i + c.len_utf8();
        }
    }
    out
}

/// One word: `[KEY=][scheme://]user:password@host...`, the password redacted.
fn redact_word(word: &str) -> String {
    let Some(at) = word.rfind('@') else {
        return word.to_string();
    };
    let start = match word[..at].find("://") {
        Some(i) => i + 3,
        None => {
            let first_colon = word[..at].find(':').unwrap_or(at);
            word[..first_colon]
                .rfind(|c: char| "=(<[,".contains(c))
                .map_or(0, |i| i + 1)
        }
    };
    match word[start..at].find(':') {
        Some(colon) => format!("{}{REDACTED}{}", &word[..start + colon + 1], &word[at..]),
        None => word.to_string(),
    }
}

/// A `KEY = VALUE` line (TOML) or a `KEY=VALUE` word (kernel command line)
/// as it may be quoted in an error: the value of a secret key redacted, and
/// URL passwords anywhere.
pub fn redact_setting(line: &str) -> String {
    match line.split_once('=') {
        Some((key, _)) if is_secret_key(key) => {
            let spaced = if key.ends_with(' ') { " " } else { "" };
            format!("{key}={spaced}{REDACTED}")
        }
        _ => redact_urls(line),
    }
}

/// Text of `KEY=VALUE` words (kernel arguments, a host's `args`) as it may be shown: each
/// word through [`redact_setting`].
pub fn redact_words(text: &str) -> String {
    text.split(' ')
        .map(redact_setting)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `Debug` of settings (the preset, a fleet host, a collector): `name` and the fields
/// as JSON, with the value of every secret key and every secret or URL password inside a
/// string redacted. A test's failed assert or a stray `{:?}` shows no secret.
pub fn debug_settings<T: serde::Serialize>(
    name: &str,
    settings: &T,
    f: &mut std::fmt::Formatter<'_>,
) -> std::fmt::Result {
    fn redact(value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Object(fields) => {
                for (key, v) in fields.iter_mut() {
                    match is_secret_key(key) && !v.is_null() {
                        true => *v = Value::from(REDACTED),
                        false => redact(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(redact),
            Value::String(text) => *text = redact_words(text),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(settings).map_err(|_| std::fmt::Error)?;
    redact(&mut value);
    write!(f, "{name} {value}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_known_by_their_last_name() {
        for key in [
            "token",
            "failback.token",
            "aws.secret_access_key",
            " secret_access_key ",
            "\"session_token\"",
            "report.token",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["source", "access_key_id", "fingerprint", "tokens"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn url_passwords_are_redacted_with_or_without_a_scheme() {
        assert_eq!(
            redact_url("http://u:secret@proxy:3128"),
            "http://u:***@proxy:3128"
        );
        assert_eq!(redact_url("u:secret@proxy:3128"), "u:***@proxy:3128");
        assert_eq!(redact_url("http://proxy:3128"), "http://proxy:3128");
        assert_eq!(
            redact_urls("proxy \"http://u:p@ss@x:1\" is not a proxy URL: mail root@example.org"),
            "proxy \"http://u:***@x:1\" is not a proxy URL: mail root@example.org"
        );
        assert_eq!(
            redact_urls("failback.proxy=\"bob:hunter2@proxy:3128\" is not valid"),
            "failback.proxy=\"bob:***@proxy:3128\" is not valid"
        );
        assert_eq!(
            redact_urls("proxy=http://u:pa=ss,w@p:1 (HTTP) at 10:00"),
            "proxy=http://u:***@p:1 (HTTP) at 10:00"
        );
        assert_eq!(redact_urls("--proxy=bob:pw@p:1"), "--proxy=bob:***@p:1");
    }

    #[test]
    fn secret_settings_are_shown_without_their_value() {
        assert_eq!(
            redact_setting("secret_access_key = \"wJalrXUtnFEMI\" x"),
            "secret_access_key = ***"
        );
        assert_eq!(redact_setting("failback.token=abc"), "failback.token=***");
        assert_eq!(
            redact_setting("proxy = \"http://u:pw@p:1"),
            "proxy = \"http://u:***@p:1"
        );
        assert_eq!(redact_setting("after = \"x\""), "after = \"x\"");
    }

    #[derive(serde::Serialize)]
    struct Settings {
        token: Option<String>,
        proxy: String,
        hosts: Vec<Host>,
    }

    #[derive(serde::Serialize)]
    struct Host {
        args: String,
        session_token: Option<String>,
    }

    struct Shown(Settings);

    impl std::fmt::Debug for Shown {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            debug_settings("Settings", &self.0, f)
        }
    }

    #[test]
    fn settings_debug_shows_no_secret() {
        let shown = format!(
            "{:?}",
            Shown(Settings {
                token: Some("tok-0123456789abcdef".into()),
                proxy: "http://ops:hunter2@proxy:3128".into(),
                hosts: vec![Host {
                    args: "failback.debug failback.token=host-secret-42".into(),
                    session_token: None,
                }],
            })
        );
        for secret in ["tok-0123456789abcdef", "hunter2", "host-secret-42"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.starts_with("Settings {"), "{shown}");
        assert!(shown.contains("ops:***@proxy:3128"), "{shown}");
        assert!(
            shown.contains("failback.debug failback.token=***"),
            "{shown}"
        );
        assert!(
            shown.contains(r#""session_token":null"#),
            "unset stays unset: {shown}"
        );
    }
}
