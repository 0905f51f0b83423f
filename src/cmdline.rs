//! The kernel command line's `failback.*` parameters, typed, and written back the same
//! way (`Display`: the PXE writer's per-host arguments). Anything given here overrides
//! the preset baked into the image ([`Preset::overlay`]).

use crate::config::{After, Fingerprint, IpConfig, Preset, Progress, Source};
use crate::net::vlan_id;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("failback.{key}={value:?} is not valid: use {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// The parsed command line; `None` where the parameter was not given. `Debug` shows it
/// as kernel arguments, the token redacted.
#[derive(Clone, Default, PartialEq)]
pub struct Cmdline {
    pub progress: Option<Progress>,
    pub after: Option<After>,
    pub host: Option<String>,
    /// `failback.debug` or the kernel's `debug`: keep kernel messages on the console.
    pub debug: bool,
    /// `failback.vlan=ID`: configure the network on 802.1Q VLAN ID (1-4094).
    pub vlan: Option<u16>,
    /// `failback.proxy=http://HOST:PORT`: the HTTPS proxy.
    pub proxy: Option<String>,
    /// `failback.ntp=ADDR[:PORT]` or `NAME[:PORT]`: the NTP server.
    pub ntp: Option<String>,
    /// `failback.source=https://HOST:PORT` or `ebs://snap-ID[?base=snap-ID]`.
    pub source: Option<Source>,
    /// `failback.token=`: the agent's bearer token.
    pub token: Option<String>,
    /// `failback.fingerprint=`: the agent's certificate.
    pub fingerprint: Option<Fingerprint>,
    /// `failback.map=a=/dev/sda,b=EXCLUDE` (or a JSON object): volume -> target or
    /// `EXCLUDE`; replaces the preset's `[map]` as a whole.
    pub map: Option<BTreeMap<String, String>>,
    /// `failback.ip=dhcp` or `ADDR/PREFIX,GATEWAY,DNS[,DNS]`.
    pub ip: Option<IpConfig>,
    /// `failback.dhcp_timeout=SECONDS`: how long to wait for a lease.
    pub dhcp_timeout: Option<Duration>,
    /// `failback.dhcp_renew=SECONDS`: renew the lease this soon (tests), not at T1.
    pub dhcp_renew: Option<Duration>,
    /// `failback.unattended` (any value but `0`): proceed without asking.
    pub unattended: Option<bool>,
    /// `failback.map_by_size` (any value but `0`): unattended, take the only fit by size.
    pub map_by_size: Option<bool>,
    /// `failback.continuous` (any value but `0`): passes until cutover.
    pub continuous: Option<bool>,
    /// `failback.image=ID`: the id of the image booted, to know its own boot medium.
    pub image: Option<String>,
    /// `failback.report=`: the collector's URL (`https://HOST:PORT`).
    pub report: Option<String>,
    /// Kernel-style `MODULE.PARAM[=VALUE]` words: what modprobe would pass to MODULE
    /// (name with `_` for `-`) when loading it, as one `finit_module` argument.
    pub module_params: BTreeMap<String, String>,
}

impl Cmdline {
    /// Parses what it can; a bad value is left unset and returned as an error,
    /// so that the rest (e.g. the progress style to report it with) still holds.
    pub fn parse(text: &str) -> (Self, Vec<Error>) {
        let mut out = Cmdline::default();
        let mut errors = Vec::new();
        for word in split(text) {
            let (key, value) = word.split_once('=').unwrap_or((word.as_str(), ""));
            if key == "debug" {
                out.debug = true;
            }
            if let Some((module, param)) = key.split_once('.')
                && !module.is_empty()
                && !param.is_empty()
                && module != "failback"
            {
                let args = out
                    .module_params
                    .entry(module.replace('-', "_"))
                    .or_default();
                if !args.is_empty() {
                    args.push(' ');
                }
                args.push_str(param);
                if let Some((_, value)) = word.split_once('=') {
                    // The kernel's parser takes a quoted value with spaces.
                    if value.contains(char::is_whitespace) {
                        args.push_str(&format!("=\"{value}\""));
                    } else {
                        args.push_str(&format!("={value}"));
                    }
                }
            }
            let Some(key) = key.strip_prefix("failback.") else {
                continue;
            };
            let bad = |expected| Error::BadValue {
                key: key.into(),
                value: shown(key, value),
                expected,
            };
            match key {
                "progress" => out.progress = value.parse().map_err(|e| errors.push(bad(e))).ok(),
                "after" => out.after = value.parse().map_err(|e| errors.push(bad(e))).ok(),
                "host" => out.host = Some(value.to_string()).filter(|h| !h.is_empty()),
                "debug" => out.debug = value != "0",
                "vlan" => {
                    let id = value.parse::<u16>().map_err(|_| vlan_id(0).unwrap_err());
                    out.vlan = id
                        .and_then(vlan_id)
                        .map_err(|expected| errors.push(bad(expected)))
                        .ok()
                }
                "proxy" => {
                    out.proxy = crate::net::proxy::check(value)
                        .map(|()| value.to_string())
                        .map_err(|_| errors.push(bad("http://HOST:PORT")))
                        .ok()
                }
                "ntp" => {
                    out.ntp = crate::net::clock::Server::parse(value)
                        .map(|_| value.to_string())
                        .map_err(|_| errors.push(bad("ADDR[:PORT] or NAME[:PORT]")))
                        .ok()
                }
                "source" => {
                    out.source = Source::parse(value.into())
                        .map_err(|_| errors.push(bad("https://HOST:PORT or ebs://snap-ID")))
                        .ok()
                }
                "token" => out.token = Some(value.to_string()).filter(|t| !t.is_empty()),
                "fingerprint" => {
                    out.fingerprint = value
                        .parse::<Fingerprint>()
                        .map_err(|_| errors.push(bad("the agent's SHA-256, 24 to 64 hex digits")))
                        .ok()
                }
                "map" => {
                    out.map = crate::mapping::map::parse(&[value.to_string()])
                        .map(|mapping| {
                            mapping
                                .into_iter()
                                .map(|(volume, to)| (volume, to.to_string()))
                                .collect()
                        })
                        .map_err(|_| errors.push(bad("NAME=TARGET[,NAME=TARGET] or a JSON object")))
                        .ok()
                }
                "ip" => {
                    out.ip = IpConfig::parse(value.into())
                        .map_err(|_| errors.push(bad("dhcp or ADDR/PREFIX,GATEWAY,DNS[,DNS]")))
                        .ok()
                }
                "dhcp_timeout" => out.dhcp_timeout = seconds(value, &mut errors, bad),
                "dhcp_renew" => out.dhcp_renew = seconds(value, &mut errors, bad),
                "unattended" => out.unattended = Some(value != "0"),
                "map_by_size" => out.map_by_size = Some(value != "0"),
                "continuous" => out.continuous = Some(value != "0"),
                "image" => out.image = Some(value.to_string()).filter(|i| !i.is_empty()),
                "report" => {
                    out.report = Some(value.to_string())
                        .filter(|u| u.starts_with("https://"))
                        .or_else(|| {
                            errors.push(bad("https://HOST:PORT of a failback agent"));
                            None
                        })
                }
                _ => {}
            }
        }
        (out, errors)
    }
}

/// A value as an error may quote it: a secret's not at all, a URL's without
/// its password.
fn shown(key: &str, value: &str) -> String {
    if crate::secret::is_secret_key(key) {
        crate::secret::REDACTED.to_string()
    } else {
        crate::secret::redact_urls(value)
    }
}

/// A whole number of seconds, else an error for the key.
fn seconds(
    value: &str,
    errors: &mut Vec<Error>,
    bad: impl Fn(&'static str) -> Error,
) -> Option<Duration> {
    value
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| errors.push(bad("a number of seconds")))
        .ok()
}

/// The `failback.*` words, in a fixed order, each value quoted when it holds a space;
/// [`Cmdline::parse`] reads them back to the same `Cmdline` (module parameters aside).
impl fmt::Display for Cmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = Vec::new();
        let mut word = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                if value.contains(char::is_whitespace) {
                    words.push(format!("failback.{key}=\"{value}\""));
                } else {
                    words.push(format!("failback.{key}={value}"));
                }
            }
        };
        let text = |v: &Option<String>| v.clone();
        let shown = |v: Option<&dyn fmt::Display>| v.map(|v| v.to_string());
        word("host", text(&self.host));
        word("ip", shown(self.ip.as_ref().map(|v| v as _)));
        word("source", shown(self.source.as_ref().map(|v| v as _)));
        word(
            "map",
            self.map.as_ref().map(|map| {
                let pairs: Vec<String> = map.iter().map(|(v, t)| format!("{v}={t}")).collect();
                pairs.join(",")
            }),
        );
        word("token", text(&self.token));
        word(
            "fingerprint",
            shown(self.fingerprint.as_ref().map(|v| v as _)),
        );
        word("progress", self.progress.map(|p| p.to_string()));
        word("after", self.after.map(|a| a.to_string()));
        word("vlan", self.vlan.map(|v| v.to_string()));
        word("proxy", text(&self.proxy));
        word("ntp", text(&self.ntp));
        word(
            "dhcp_timeout",
            self.dhcp_timeout.map(|d| d.as_secs().to_string()),
        );
        word(
            "dhcp_renew",
            self.dhcp_renew.map(|d| d.as_secs().to_string()),
        );
        word(
            "unattended",
            self.unattended.map(|u| u8::from(u).to_string()),
        );
        word(
            "map_by_size",
            self.map_by_size.map(|m| u8::from(m).to_string()),
        );
        word(
            "continuous",
            self.continuous.map(|c| u8::from(c).to_string()),
        );
        word("image", text(&self.image));
        word("report", text(&self.report));
        word("debug", self.debug.then(|| "1".to_string()));
        f.write_str(&words.join(" "))
    }
}

impl fmt::Debug for Cmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmdline")
            .field("args", &crate::secret::redact_words(&self.to_string()))
            .field("module_params", &self.module_params)
            .finish()
    }
}

impl Preset {
    /// The preset with what the command line gives put over it: the settings of one boot.
    pub fn overlay(&self, cmdline: &Cmdline) -> Preset {
        let mut out = self.clone();
        fn over<T: Clone>(field: &mut Option<T>, given: &Option<T>) {
            if given.is_some() {
                field.clone_from(given);
            }
        }
        over(&mut out.source, &cmdline.source);
        over(&mut out.token, &cmdline.token);
        over(&mut out.fingerprint, &cmdline.fingerprint);
        over(&mut out.ip, &cmdline.ip);
        over(&mut out.proxy, &cmdline.proxy);
        over(&mut out.ntp, &cmdline.ntp);
        over(&mut out.after, &cmdline.after);
        over(&mut out.progress, &cmdline.progress);
        if let Some(vlan) = cmdline.vlan {
            out.vlan = Some(vlan);
        }
        if let Some(map) = &cmdline.map {
            out.map.clone_from(map);
        }
        if let Some(unattended) = cmdline.unattended {
            out.unattended = unattended;
        }
        if let Some(map_by_size) = cmdline.map_by_size {
            out.map_by_size = map_by_size;
        }
        if let Some(url) = &cmdline.report {
            let report = out.report.get_or_insert_with(|| crate::config::Report {
                url: String::new(),
                token: None,
                fingerprint: None,
            });
            report.url.clone_from(url);
        }
        if let Some(continuous) = cmdline.continuous {
            out.continuous = continuous;
        }
        out
    }
}

/// Splits like the kernel does: on spaces, except inside double quotes
/// (which are removed).
fn split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_arguments_without_the_token() {
        let (c, errors) =
            Cmdline::parse("failback.token=boot-token-0123 failback.host=web-1 e1000e.debug=2");
        assert!(errors.is_empty(), "{errors:?}");
        let shown = format!("{c:?}");
        assert!(!shown.contains("boot-token-0123"), "{shown}");
        for kept in ["failback.token=***", "failback.host=web-1", "e1000e"] {
            assert!(shown.contains(kept), "{kept}: {shown}");
        }
    }

    #[test]
    fn module_parameters_are_gathered_per_module() {
        let (c, errors) = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz-6.1.0 console=ttyS0 mpt3sas.max_queue_depth=128 \
             mpt3sas.prot_mask=0x7 snd-hda.enable mlx4_core.log_num_mgm_entry_size=-1 \
             foo.msg=\"a b\" failback.progress=json .x=1 y.=2",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let want: BTreeMap<String, String> = [
            ("mpt3sas", "max_queue_depth=128 prot_mask=0x7"),
            ("snd_hda", "enable"),
            ("mlx4_core", "log_num_mgm_entry_size=-1"),
            ("foo", "msg=\"a b\""),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
        assert_eq!(c.module_params, want);
    }

    #[test]
    fn parses_the_failback_parameters() {
        let (c, errors) = Cmdline::parse(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 failback.progress=json failback.after=poweroff \
             failback.host=rack1-07 failback.map=\"a=/dev/sda, b=/dev/sdb\"\n",
        );
        assert!(errors.is_empty());
        assert_eq!(c.progress, Some(Progress::Json));
        assert_eq!(c.after, Some(After::Poweroff));
        assert_eq!(c.host.as_deref(), Some("rack1-07"));
        assert!(!c.debug);
        let map = c.map.unwrap();
        assert_eq!(
            (map["a"].as_str(), map["b"].as_str()),
            ("/dev/sda", "/dev/sdb")
        );
    }

    #[test]
    fn every_parameter_is_typed_and_written_back_the_same() {
        let text = "failback.host=rack1-07 failback.ip=10.0.0.7/24,10.0.0.1,10.0.0.2 \
             failback.source=ebs://snap-0123456789abcdef0?base=snap-0fedcba9876543210 \
             failback.map=data=EXCLUDE,system=/dev/nvme0n1 failback.token=t0k3n \
             failback.fingerprint=e40cb27758bfec9820c4ed9a0d3c1b2a3e4f5061728394a5b6c7d8e9f0a1b2c3 \
             failback.progress=json failback.after=reboot failback.vlan=42 \
             failback.proxy=http://proxy:3128 failback.ntp=ntp.example:123 \
             failback.dhcp_timeout=30 failback.dhcp_renew=5 failback.unattended=1 \
             failback.map_by_size=1 failback.continuous=1 failback.image=0123abcd \
             failback.report=https://collector:1500 failback.debug=1";
        let (c, errors) = Cmdline::parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.dhcp_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.unattended, Some(true));
        assert_eq!(c.continuous, Some(true));
        assert!(matches!(c.source, Some(Source::Ebs { .. })));
        assert!(matches!(c.ip, Some(IpConfig::Static { .. })));
        assert_eq!(
            c.to_string(),
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        assert_eq!(Cmdline::parse(&c.to_string()), (c, Vec::new()));
        // A value with a space is quoted, and read back whole.
        let spaced = Cmdline {
            host: Some("rack 1".into()),
            ..Cmdline::default()
        };
        assert_eq!(spaced.to_string(), "failback.host=\"rack 1\"");
        assert_eq!(Cmdline::parse(&spaced.to_string()).0, spaced);
        assert_eq!(Cmdline::default().to_string(), "");
    }

    #[test]
    fn bad_pull_parameters_name_the_key_and_the_form() {
        let (c, errors) = Cmdline::parse(
            "failback.source=ftp://x failback.fingerprint=abc failback.map=nonsense \
             failback.ip=10.0.0.7 failback.dhcp_timeout=soon failback.progress=json",
        );
        assert_eq!(c.progress, Some(Progress::Json));
        assert_eq!(
            (c.source, c.fingerprint, c.map, c.ip, c.dhcp_timeout),
            Default::default()
        );
        let keys: Vec<String> = errors
            .iter()
            .map(|e| e.to_string().split('=').next().unwrap().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "failback.source",
                "failback.fingerprint",
                "failback.map",
                "failback.ip",
                "failback.dhcp_timeout"
            ]
        );
    }

    #[test]
    fn the_command_line_overrides_the_preset_field_by_field() {
        let preset = Preset::parse(
            "source = \"https://10.0.0.1:8443\"\ntoken = \"preset\"\nunattended = true\n\
             vlan = 7\n[map]\nsystem = \"/dev/sda\"\n",
            "failback.toml",
        )
        .unwrap();
        let (c, _) =
            Cmdline::parse("failback.token=given failback.map=data=/dev/sdb failback.unattended=0");
        let both = preset.overlay(&c);
        assert_eq!(both.token.as_deref(), Some("given"));
        assert_eq!(both.source, preset.source, "not given: the preset's");
        assert_eq!(both.vlan, Some(7));
        assert!(!both.unattended);
        assert_eq!(
            both.map.len(),
            1,
            "the command line's map replaces the preset's"
        );
        assert_eq!(both.map["data"], "/dev/sdb");
        assert_eq!(preset.overlay(&Cmdline::default()), preset);
    }

    #[test]
    fn unset_parameters_stay_unset() {
        let (c, _) = Cmdline::parse("quiet debug");
        assert_eq!(c.after, None);
        assert_eq!(c.progress, None);
        assert!(c.debug);
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_choices_and_spares_the_rest() {
        let (c, errors) = Cmdline::parse("failback.after=explode failback.progress=json");
        assert_eq!(c.progress, Some(Progress::Json));
        assert_eq!(c.after, None);
        let err = errors[0].to_string();
        assert_eq!(
            err,
            "failback.after=\"explode\" is not valid: use wait, reboot, poweroff or shell"
        );
    }

    #[test]
    fn network_parameters_are_typed_and_checked() {
        let (c, errors) = Cmdline::parse(
            "failback.vlan=42 failback.proxy=http://proxy:3128 failback.ntp=10.0.2.2:1123",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(c.vlan, Some(42));
        assert_eq!(c.proxy.as_deref(), Some("http://proxy:3128"));
        assert_eq!(c.ntp.as_deref(), Some("10.0.2.2:1123"));

        let (c, errors) =
            Cmdline::parse("failback.vlan=4095 failback.proxy=proxy:3128 failback.ntp=pool_1");
        assert_eq!((c.vlan, c.proxy, c.ntp), (None, None, None));
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            errors,
            [
                "failback.vlan=\"4095\" is not valid: use a VLAN id from 1 to 4094",
                "failback.proxy=\"proxy:3128\" is not valid: use http://HOST:PORT",
                "failback.ntp=\"pool_1\" is not valid: use ADDR[:PORT] or NAME[:PORT]",
            ]
        );
    }

    #[test]
    fn a_refused_proxy_is_quoted_without_its_password() {
        let (_, errors) = Cmdline::parse("failback.proxy=bob:hunter2@proxy:3128");
        assert_eq!(
            errors[0].to_string(),
            "failback.proxy=\"bob:***@proxy:3128\" is not valid: use http://HOST:PORT"
        );
    }
}
