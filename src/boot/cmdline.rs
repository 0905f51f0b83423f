//! The kernel command line's `failback.*` parameters, typed. Anything given here
//! overrides the preset baked into the image.

use crate::config::{After, Progress};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("failback.{key}={value:?} is not valid: use {expected}")]
    BadValue {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// The parsed command line; `None` where the parameter was not given.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// Every `failback.KEY=VALUE`, for the parts that read their own keys.
    pub params: BTreeMap<String, String>,
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
                value: value.into(),
                expected,
            };
            match key {
                "progress" => out.progress = value.parse().map_err(|e| errors.push(bad(e))).ok(),
                "after" => out.after = value.parse().map_err(|e| errors.push(bad(e))).ok(),
                "host" => out.host = Some(value.to_string()).filter(|h| !h.is_empty()),
                "debug" => out.debug = value != "0",
                "vlan" => {
                    out.vlan = value
                        .parse::<u16>()
                        .ok()
                        .filter(|id| (1..=4094).contains(id))
                        .or_else(|| {
                            errors.push(bad("a VLAN id from 1 to 4094"));
                            None
                        })
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
                _ => {}
            }
            out.params.insert(key.to_string(), value.to_string());
        }
        (out, errors)
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
             failback.host=rack1-07 failback.map=\"a=/dev/sda b=/dev/sdb\"\n",
        );
        assert!(errors.is_empty());
        assert_eq!(c.progress, Some(Progress::Json));
        assert_eq!(c.after, Some(After::Poweroff));
        assert_eq!(c.host.as_deref(), Some("rack1-07"));
        assert!(!c.debug);
        assert_eq!(c.params["map"], "a=/dev/sda b=/dev/sdb");
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
}
