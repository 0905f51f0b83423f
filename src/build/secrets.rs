//! Which secrets a build puts where anyone may read them: the preset goes into
//! the initramfs verbatim (and `pxe/initrd.img` is served over TFTP, with no
//! authentication), kernel arguments into plain-text boot menus. The build
//! still goes on (a lab may want exactly that); the operator is told in one
//! line, and the README says what to do instead.

use crate::config::Host;
use crate::secret::is_secret_key;

/// Where secrets were found, by name (never by value).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// Preset keys with a secret value (`token`, `aws.secret_access_key`...),
    /// and secret kernel arguments in its hosts' `args`: all in the initramfs.
    pub image: Vec<String>,
    /// Secret kernel arguments in the boot menus: `--append` (ISO and every PXE
    /// menu) and the hosts' `args` (their PXE menus).
    pub menus: Vec<String>,
}

impl Exposed {
    /// Looks through the preset's text, its hosts and the arguments every
    /// boot menu gets.
    pub fn find(preset: Option<&str>, hosts: &[Host], append: &str) -> Exposed {
        let mut out = Exposed::default();
        if let Some(text) = preset
            && let Ok(value) = text.parse::<toml::Table>()
        {
            keys(&toml::Value::Table(value), "", &mut out.image);
        }
        for word in secret_args(append) {
            out.menus.push(format!("{word} (--append)"));
        }
        for host in hosts {
            for word in secret_args(host.args.as_deref().unwrap_or("")) {
                out.menus.push(format!("{word} (host {})", host.mac));
            }
        }
        out
    }

    /// The warning, one line; `None` when nothing secret was found.
    pub fn warning(&self) -> Option<String> {
        let mut places = Vec::new();
        if !self.image.is_empty() {
            places.push(format!(
                "the image (pxe/initrd.img, failback.iso) holds the preset's {}",
                self.image.join(", ")
            ));
        }
        if !self.menus.is_empty() {
            places.push(format!(
                "the plain-text boot menus hold {}",
                self.menus.join(", ")
            ));
        }
        if places.is_empty() {
            return None;
        }
        Some(format!(
            "secrets in the build: {}; anyone who can read them (TFTP has no authentication) can use them: \
             prefer short-lived STS credentials, a fresh agent token per failback, and an agent reachable \
             from the site's addresses only (README: Secrets in the image)",
            places.join("; ")
        ))
    }
}

/// Secret keys with a non-empty value, as dotted paths; and secret kernel
/// arguments in any string (a host's `args`).
fn keys(value: &toml::Value, path: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                let path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let empty = v.as_str().is_some_and(str::is_empty);
                if is_secret_key(key) && !empty {
                    out.push(path);
                } else {
                    keys(v, &path, out);
                }
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                keys(v, &format!("{path}[{i}]"), out);
            }
        }
        toml::Value::String(s) => {
            for word in secret_args(s) {
                out.push(format!("{path} {word}"));
            }
        }
        _ => {}
    }
}

/// The `failback.KEY=` words of kernel arguments whose key is a secret.
fn secret_args(args: &str) -> Vec<String> {
    args.split_whitespace()
        .filter_map(|word| word.split_once('=').map(|(key, _)| key))
        .filter(|key| key.starts_with("failback.") && is_secret_key(key))
        .map(|key| format!("{key}="))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Preset;

    const PRESET: &str = r#"
source = "https://10.0.2.2:1500"
token = "agent-token-0123456789"
[aws]
region = "eu-west-1"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "wJalrXUtnFEMI"
session_token = ""
[[hosts]]
mac = "52:54:00:aa:bb:01"
args = "console=ttyS0 failback.token=agent-token-0123456789"
"#;

    #[test]
    fn secrets_are_named_where_they_go_never_shown() {
        let hosts = Preset::parse(PRESET, "t").unwrap().hosts;
        let found = Exposed::find(Some(PRESET), &hosts, "quiet failback.token=xyz");
        assert_eq!(
            found.image,
            [
                "aws.secret_access_key",
                "hosts[0].args failback.token=",
                "token"
            ]
        );
        assert_eq!(
            found.menus,
            [
                "failback.token= (--append)",
                "failback.token= (host 52:54:00:aa:bb:01)"
            ]
        );
        let line = found.warning().unwrap();
        assert!(!line.contains('\n'), "{line}");
        for secret in ["agent-token-0123456789", "wJalrXUtnFEMI", "xyz"] {
            assert!(!line.contains(secret), "{line}");
        }
        assert!(line.contains("STS"), "{line}");
    }

    #[test]
    fn a_preset_without_secrets_gives_no_warning() {
        let text = "source = \"ebs://snap-1\"\n[aws]\nregion = \"eu-west-1\"\n";
        let found = Exposed::find(Some(text), &[], "quiet failback.progress=json");
        assert_eq!(found, Exposed::default());
        assert_eq!(found.warning(), None);
        assert_eq!(Exposed::find(None, &[], "").warning(), None);
    }

    #[test]
    fn the_collectors_token_is_a_secret_too() {
        let preset = "[report]\nurl = \"https://10.0.0.5:1500\"\ntoken = \"c0llect0r\"\n";
        let found = Exposed::find(Some(preset), &[], "");
        assert_eq!(found.image, ["report.token"]);
        assert!(!found.warning().unwrap().contains("c0llect0r"));
    }
}
