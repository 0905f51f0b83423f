//! The preset (`failback.toml`): settings baked into the image at build time
//! as `/etc/failback.toml`, so that a booted host needs no typing. The kernel
//! command line (`failback.KEY=VALUE`) overrides it. Validated when the image is
//! built: an unknown key or a bad value is an error naming the key.

/// The agent certificate's fingerprint: a primitive of its own.
pub use crate::fingerprint::Fingerprint;
/// The preset's `ip` and the hosts' `mac`: the network owns its settings.
pub use crate::net::{IpConfig, Mac};
use crate::secret::{REDACTED, is_secret_key, redact_setting, redact_url};
/// Where to pull from: the sources own their addresses.
pub use crate::source::Source;
/// The preset's `[aws]`: the EBS source owns its settings.
pub use crate::source::ebs::Aws;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The whole preset. Every key is optional. `Debug` redacts its secrets.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Where to pull from: `https://HOST:PORT` (the agent) or `ebs://snap-ID[?base=snap-ID]`.
    pub source: Option<Source>,
    /// The agent's bearer token.
    pub token: Option<String>,
    /// SHA-256 fingerprint of the agent's certificate (64 hex digits, or the first 24 or
    /// more; `:` or `-` between them allowed).
    pub fingerprint: Option<Fingerprint>,
    /// Remote volume -> local disk (`/dev/...`) or `EXCLUDE`.
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// `dhcp` (default) or `ADDR/PREFIX,GATEWAY,DNS[,DNS]`.
    pub ip: Option<IpConfig>,
    /// 802.1Q VLAN id for the network.
    pub vlan: Option<u16>,
    /// HTTPS proxy URL for all outbound HTTPS.
    pub proxy: Option<String>,
    /// NTP server (else DHCP option 42, else the source's HTTP Date).
    pub ntp: Option<String>,
    /// Proceed without asking (only on a mapping given explicitly or proven by identity).
    #[serde(default)]
    pub unattended: bool,
    /// Unattended, also take a volume's only fit by size (no identity proves it).
    #[serde(default)]
    pub map_by_size: bool,
    /// Pull in passes until `failback cutover` (the agent source only), then do `after`.
    #[serde(default)]
    pub continuous: bool,
    /// What to do at the end: wait, reboot, poweroff, shell.
    pub after: Option<After>,
    /// Console output: text or json.
    pub progress: Option<Progress>,
    /// AWS credentials and endpoint for `ebs://` sources.
    pub aws: Option<Aws>,
    /// Per-host settings for PXE fleets, chosen by MAC address.
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// The collector every pull reports its events to (default: the agent pulled from).
    pub report: Option<Report>,
}

/// The preset's `[report]`: a failback agent collecting the fleet's reports (one
/// without volumes is a collector only). `Debug` redacts its token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// `https://HOST:PORT` (`failback.report=`).
    pub url: String,
    /// Its token (a secret); default: `token`.
    pub token: Option<String>,
    /// Its certificate's fingerprint; default: `fingerprint`.
    pub fingerprint: Option<Fingerprint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    Wait,
    Reboot,
    Poweroff,
    Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Progress {
    Text,
    Json,
}

impl std::str::FromStr for After {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wait" => Ok(After::Wait),
            "reboot" => Ok(After::Reboot),
            "poweroff" => Ok(After::Poweroff),
            "shell" => Ok(After::Shell),
            _ => Err("wait, reboot, poweroff or shell"),
        }
    }
}

impl fmt::Display for After {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            After::Wait => "wait",
            After::Reboot => "reboot",
            After::Poweroff => "poweroff",
            After::Shell => "shell",
        })
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Progress::Text => "text",
            Progress::Json => "json",
        })
    }
}

impl std::str::FromStr for Progress {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" | "bar" => Ok(Progress::Text),
            "json" => Ok(Progress::Json),
            _ => Err("json or text"),
        }
    }
}

/// Settings for one host of a fleet, found by its MAC address. `Debug` redacts secrets
/// in its `args`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub mac: Mac,
    /// Host name (`failback.host=`), echoed in the boot event.
    pub name: Option<String>,
    pub source: Option<Source>,
    pub ip: Option<IpConfig>,
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Extra kernel arguments for this host.
    pub args: Option<String>,
}

/// The settings types' `Debug`: their fields, secrets redacted.
macro_rules! debug_redacted {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                crate::secret::debug_settings(stringify!($name), self, f)
            }
        }
    )*};
}
debug_redacted!(Preset, Report, Host);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the preset {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Preset {
    /// Parses and validates preset text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Self, Error> {
        let preset: Preset = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim().replace('\n', " ");
            if let Some(span) = e.span() {
                // Name the line and quote it: that names the key.
                let start = text[..span.start.min(text.len())]
                    .rfind('\n')
                    .map_or(0, |i| i + 1);
                let number = text[..start].lines().count() + 1;
                let line = text[start..].lines().next().unwrap_or_default().trim();
                message = format!("line {number} `{}`: {message}", redact_setting(line));
                // toml may quote the value itself ("invalid type: integer `5`").
                if let Some((key, value)) = line.split_once('=')
                    && is_secret_key(key)
                {
                    let value = value.trim();
                    for v in [value, value.trim_matches(['"', '\''])] {
                        if !v.is_empty() {
                            message = message.replace(v, REDACTED);
                        }
                    }
                }
            }
            Error::Invalid {
                path: name.into(),
                message,
            }
        })?;
        preset.check(name)?;
        Ok(preset)
    }

    pub fn load(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Checks that need more than one key at a time.
    fn check(&self, name: &str) -> Result<(), Error> {
        let bad = |message: String| {
            Err(Error::Invalid {
                path: name.into(),
                message,
            })
        };
        let maps = std::iter::once(&self.map).chain(self.hosts.iter().map(|h| &h.map));
        for map in maps {
            for (volume, target) in map {
                if target != "EXCLUDE" && !target.starts_with("/dev/") {
                    return bad(format!(
                        "map.{volume} = {target:?}: use a local disk (/dev/...) or EXCLUDE"
                    ));
                }
            }
        }
        let mut macs: Vec<Mac> = self.hosts.iter().map(|h| h.mac).collect();
        macs.sort();
        if let Some(w) = macs.windows(2).find(|w| w[0] == w[1]) {
            return bad(format!("hosts: MAC {} is listed twice", w[0]));
        }
        if let Some(id) = self.vlan
            && let Err(expected) = crate::net::vlan_id(id)
        {
            return bad(format!("vlan = {id}: use {expected}"));
        }
        if self.unattended && self.source.is_none() {
            return bad("unattended = true needs a source".into());
        }
        if let Some(proxy) = &self.proxy
            && !(proxy.starts_with("http://") || proxy.starts_with("https://"))
        {
            return bad(format!(
                "proxy = {:?}: use http://HOST:PORT",
                redact_url(proxy)
            ));
        }
        // [report]'s token and fingerprint may come from failback.token= and
        // failback.fingerprint= at boot: checked there.
        if let Some(report) = &self.report
            && !report.url.starts_with("https://")
        {
            return bad(format!(
                "report.url = {:?}: use https://HOST:PORT of a failback agent",
                report.url
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
source = "https://10.0.2.2:1500"
token = "s3cret"
fingerprint = "AB:cd:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd"
ip = "10.0.0.5/24,10.0.0.1,10.0.0.2,10.0.0.3"
vlan = 42
proxy = "http://proxy:3128"
unattended = true
after = "reboot"
progress = "json"

[map]
system = "/dev/nvme0n1"
scratch = "EXCLUDE"

[aws]
region = "eu-west-1"

[[hosts]]
mac = "52:54:00:12:34:56"
name = "rack1-07"
ip = "dhcp"
"#;

    #[test]
    fn a_full_preset_parses_and_round_trips() {
        let p = Preset::parse(FULL, "failback.toml").unwrap();
        assert_eq!(
            p.source,
            Some(Source::Agent("https://10.0.2.2:1500".into()))
        );
        assert_eq!(
            p.fingerprint.as_ref().unwrap().to_string(),
            "abcd00112233445566778899aabbccddeeff00112233445566778899aabbccdd"
        );
        assert_eq!(
            p.ip,
            Some(IpConfig::Static {
                address: [10, 0, 0, 5].into(),
                prefix: 24,
                gateway: Some([10, 0, 0, 1].into()),
                dns: vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()]
            })
        );
        assert_eq!(p.after, Some(After::Reboot));
        assert_eq!(p.hosts[0].mac, Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(
            Preset::parse(&toml::to_string(&p).unwrap(), "again").unwrap(),
            p
        );
    }

    #[test]
    fn debug_shows_the_preset_without_its_secrets() {
        let text = r#"
token = "agent-token-0123456789"
proxy = "http://ops:proxy-pass@proxy:3128"
[aws]
region = "eu-west-1"
access_key_id = "AKIAEXAMPLE"
secret_access_key = "aws-secret-0123"
session_token = "aws-session-0123"
[report]
url = "https://10.0.0.9:1500"
token = "collector-token-0123"
[[hosts]]
mac = "52:54:00:12:34:56"
args = "failback.token=host-token-0123 failback.debug"
"#;
        let shown = format!("{:?}", Preset::parse(text, "failback.toml").unwrap());
        for secret in [
            "agent-token-0123456789",
            "proxy-pass",
            "aws-secret-0123",
            "aws-session-0123",
            "collector-token-0123",
            "host-token-0123",
        ] {
            assert!(!shown.contains(secret), "{secret}: {shown}");
        }
        for kept in [
            "AKIAEXAMPLE",
            "https://10.0.0.9:1500",
            "failback.debug",
            "52:54:00:12:34:56",
        ] {
            assert!(shown.contains(kept), "{kept}: {shown}");
        }
    }

    fn error(text: &str) -> String {
        Preset::parse(text, "failback.toml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = error("source = \"https://a:1500\"\nsorce = \"x\"\n");
        assert!(
            e.starts_with("failback.toml: line 2 `sorce = \"x\"`: unknown field `sorce`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        let e = error("[aws]\nregion = \"x\"\nsecret = \"y\"\n");
        assert!(e.contains("secret"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, needle) in [
            ("after = \"explode\"", "explode"),
            ("source = \"ftp://x\"", "https://HOST:PORT"),
            ("source = \"ebs://vol-1\"", "ebs://snap-ID"),
            ("fingerprint = \"abc\"", "64 hex digits"),
            ("ip = \"10.0.0.5\"", "ADDR/PREFIX"),
            ("ip = \"10.0.0.5/33,10.0.0.1\"", "ADDR/PREFIX"),
            ("vlan = 70000", "vlan"),
            ("vlan = 0", "vlan = 0: use a VLAN id from 1 to 4094"),
            ("vlan = 4095", "vlan = 4095: use a VLAN id from 1 to 4094"),
            ("[[hosts]]\nmac = \"52:54:00:12:34\"", "MAC address"),
            ("[map]\nsystem = \"sda\"", "map.system"),
            ("unattended = true", "needs a source"),
            ("[report]\nurl = \"http://c:1500\"", "report.url"),
            (
                "[[hosts]]\nmac = \"52:54:00:12:34:56\"\n[[hosts]]\nmac = \"52-54-00-12-34-56\"",
                "listed twice",
            ),
        ] {
            let e = error(text);
            assert!(e.contains(needle), "{text:?} gave {e:?}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn errors_never_quote_a_secret() {
        for text in [
            "[aws]\nsecret_access_key = \"wJalrXUtnFEMI\" oops\n",
            "[aws]\nsecret_access_key = 'wJalrXUtnFEMI\n",
            "[aws]\nsession_token = 12345678\n",
            "token = \"wJalrXUtnFEMI\nsource = \"https://a:1\"\n",
            "token = [\"wJalrXUtnFEMI\"]\n",
            "aws.secret_access_key = \"wJalrXUtnFEMI\" x\n",
            "proxy = \"bob:wJalrXUtnFEMI@proxy:3128\"\n",
            "proxy = \"http://bob:wJalrXUtnFEMI@proxy:3128\" x\n",
        ] {
            let e = error(text);
            assert!(!e.contains("wJalrXUtnFEMI"), "{text:?} gave {e:?}");
            assert!(!e.contains("12345678"), "{text:?} gave {e:?}");
            assert!(e.contains("***"), "{text:?} gave {e:?}");
        }
    }

    #[test]
    fn ebs_sources_with_a_base() {
        let s = Source::parse("ebs://snap-0abc?base=snap-0def".into()).unwrap();
        assert_eq!(
            s,
            Source::Ebs {
                snapshot: "snap-0abc".into(),
                base: Some("snap-0def".into())
            }
        );
        assert_eq!(s.to_string(), "ebs://snap-0abc?base=snap-0def");
    }
}
