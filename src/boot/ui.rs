//! The interactive mode: when neither the kernel command line nor the preset names a
//! source (and the console shows text, not JSON for automation), PID 1 asks on the
//! console for the network and the source, shows the disks and the proposed mapping,
//! and pulls through the same path as a configured boot ([`PullSettings`]), whose
//! confirmation lists every target and its volume before anything is written.
//!
//! Plain numbered prompts, one line per answer read from stdin (`/dev/console` for
//! PID 1), the tty's own echo and line editing: they work on a serial console and on
//! the VGA console alike, with no cursor addressing. Secrets (the agent's token, the
//! AWS secret key and session token) are read with the echo off and never reported.

use super::pull::{Finish, PullSettings};
use crate::config::{After, Aws, Fingerprint, IpConfig, Preset, Source};
use crate::disks::Disk;
use crate::mapping::automap::{self, Choice};
use crate::mapping::map;
use crate::report::{Event, Reporter};
use crate::source::agent::{AgentConfig, AgentSource};
use crate::source::{BlockSource, VolumeInfo};
use anyhow::{Result, anyhow};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Where the answers come from, one line at a time.
pub trait Lines {
    /// Reads one answer; `None` at the end of input.
    fn line(&mut self) -> std::io::Result<Option<String>>;
    /// Stops (`true`) or resumes echoing what is typed: set before a secret's prompt
    /// is shown, so that nothing typed after the prompt is echoed.
    fn hide(&mut self, _hidden: bool) {}
}

/// The console: stdin, locked only while a line is read (the plan's confirmation
/// reads it too).
pub struct Console;

impl Lines for Console {
    fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        let read = std::io::stdin().read_line(&mut line)?;
        Ok((read > 0).then_some(line))
    }

    fn hide(&mut self, hidden: bool) {
        super::console::hide_typing(hidden);
    }
}

/// What the boot already knows: defaults for the answers.
pub struct Known<'a> {
    /// The preset with the kernel command line's `failback.*` put over it.
    pub preset: &'a Preset,
    /// The host's name and its collector.
    pub report: crate::sync::session::ReportTo,
    /// The network configuration given (or DHCP).
    pub ip: &'a IpConfig,
}

impl Known<'_> {
    /// The HTTPS proxy given (`failback.proxy=` or the preset).
    fn proxy(&self) -> Option<String> {
        self.preset.proxy.clone()
    }
}

/// What the interactive mode needs from the rest of PID 1.
pub struct Boot<'a> {
    pub reporter: &'a dyn Reporter,
    pub disks: &'a [Disk],
    /// Configures the network (and reports it); called again after a failure.
    pub configure: &'a mut dyn FnMut(&IpConfig) -> Result<()>,
    /// Sets the clock as a configured boot does, now that the source is known
    /// (when NTP has not set it already), and reports it.
    pub clock: &'a mut dyn FnMut(&PullSettings),
    /// What follows a pull, decided with its report open.
    pub finish: Finish<'a>,
}

/// Runs the interactive mode on the console until a pull is done (what `finish` said
/// follows it is returned) or the operator stops (`None`); `Err` only when the console
/// gives no more input.
pub fn run(known: &Known, boot: Boot) -> Result<Option<After>> {
    let mut out = std::io::stdout();
    let mut ask = Ask {
        input: &mut Console,
        out: &mut out,
    };
    Flow {
        ask: &mut ask,
        known,
        agent: AgentAnswers::default(),
    }
    .run(boot)
}

/// Prompts on `out`, answers from `input`.
struct Ask<'a> {
    input: &'a mut dyn Lines,
    out: &'a mut dyn Write,
}

impl Ask<'_> {
    fn say(&mut self, text: &str) {
        // The console is all we have; if it fails there is nobody to tell.
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// Asks until `check` takes the answer; an empty answer is `default` when there is
    /// one (shown in brackets, unless `hidden`). A refused answer is told in one line.
    fn ask<T>(
        &mut self,
        prompt: &str,
        default: Option<&str>,
        hidden: bool,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T> {
        loop {
            let shown = match default {
                Some("") => format!("{prompt}: "),
                Some(d) if !hidden => format!("{prompt} [{d}]: "),
                Some(_) => format!("{prompt} [Enter keeps the one given]: "),
                None => format!("{prompt}: "),
            };
            if hidden {
                self.input.hide(true);
            }
            let _ = write!(self.out, "{shown}");
            let _ = self.out.flush();
            let line = self.input.line();
            if hidden {
                self.input.hide(false);
            }
            let Some(line) = line? else {
                return Err(anyhow!(
                    "the console gave no more input: answer the questions on the console, or set \
                     failback.source= (and token, fingerprint) on the command line or in the preset"
                ));
            };
            let answer = line.trim();
            let answer = match (answer, default) {
                ("", Some(d)) => d,
                (a, _) => a,
            };
            match check(answer) {
                Ok(value) => return Ok(value),
                Err(why) => self.say(&format!("  ! {why}")),
            }
        }
    }

    /// A numbered menu; returns the index chosen.
    fn choose(&mut self, title: &str, options: &[&str], default: usize) -> Result<usize> {
        self.say(title);
        for (i, o) in options.iter().enumerate() {
            self.say(&format!("  {}) {o}", i + 1));
        }
        let n = options.len();
        self.ask("Choice", Some(&(default + 1).to_string()), false, |a| {
            a.parse::<usize>()
                .ok()
                .filter(|c| (1..=n).contains(c))
                .map(|c| c - 1)
                .ok_or_else(|| format!("{a:?} is not a choice: type a number from 1 to {n}"))
        })
    }

    /// A non-empty answer.
    fn text(&mut self, prompt: &str, default: Option<&str>, hidden: bool) -> Result<String> {
        self.ask(prompt, default, hidden, |a| {
            if a.is_empty() {
                Err("an answer is needed here".to_string())
            } else {
                Ok(a.to_string())
            }
        })
    }

    /// Any answer; empty is `None`.
    fn optional(
        &mut self,
        prompt: &str,
        default: Option<&str>,
        hidden: bool,
    ) -> Result<Option<String>> {
        let answer = self.ask(prompt, default, hidden, |a| Ok(a.to_string()))?;
        Ok(Some(answer).filter(|a| !a.is_empty()))
    }
}

struct Flow<'a, 'b> {
    ask: &'a mut Ask<'b>,
    known: &'a Known<'a>,
    /// The agent answers so far: the defaults when asked again.
    agent: AgentAnswers,
}

#[derive(Default)]
struct AgentAnswers {
    url: Option<String>,
    token: Option<String>,
    fingerprint: Option<Fingerprint>,
}

impl Flow<'_, '_> {
    fn run(&mut self, boot: Boot) -> Result<Option<After>> {
        self.ask.say("");
        self.ask.say("== failback: interactive mode ==");
        self.ask.say(
            "No source is configured (failback.source= or the preset). Answer the questions \
             below; Enter takes the [default].",
        );
        self.network(boot.configure)?;
        loop {
            let settings = self.source()?;
            // Before TLS to EBS (the agent's certificate is pinned: its check
            // above needs no clock).
            (boot.clock)(&settings);
            self.ask.say("");
            self.ask.say("Local disks:");
            for d in boot.disks {
                self.ask.say(&format!("  {d}"));
            }
            let mut review = |volumes: &[VolumeInfo], proposal: Result<Vec<Choice>, String>| {
                self.review(volumes, boot.disks, proposal)
            };
            let result =
                settings.run_reviewed(boot.reporter, boot.disks, Some(&mut review), boot.finish);
            match result {
                Ok(Some(after)) => {
                    self.ask.say("The pull is done.");
                    return Ok(Some(after));
                }
                Ok(None) => self.ask.say("Not confirmed: nothing was written."),
                Err(e) => boot.reporter.report(&Event::Error {
                    message: format!("{e:#}"),
                }),
            }
            self.ask.say("");
            if self
                .ask
                .choose("What now?", &["start over (source, mapping)", "stop"], 0)?
                == 1
            {
                return Ok(None);
            }
        }
    }

    /// Asks for the network and configures it, again after a failure.
    fn network(&mut self, configure: &mut dyn FnMut(&IpConfig) -> Result<()>) -> Result<()> {
        let given = self.known.ip.clone();
        loop {
            self.ask.say("");
            let default = usize::from(given != IpConfig::Dhcp);
            let ip = match self.ask.choose(
                "Network:",
                &["DHCP on each link with carrier", "static address"],
                default,
            )? {
                0 => IpConfig::Dhcp,
                _ => {
                    let shown = (given != IpConfig::Dhcp).then(|| given.to_string());
                    self.ask.ask(
                        "Address as ADDR/PREFIX,GATEWAY,DNS[,DNS] (e.g. 10.0.0.5/24,10.0.0.1,10.0.0.2)",
                        shown.as_deref(),
                        false,
                        |a| match IpConfig::parse(a.to_string()) {
                            Ok(IpConfig::Dhcp) => Err("give an address here (choose 1 for DHCP)".into()),
                            other => other,
                        },
                    )?
                }
            };
            self.ask.say(&format!("Configuring the network ({ip})..."));
            match configure(&ip) {
                Ok(()) => return Ok(()),
                Err(e) => self.ask.say(&format!("  ! {e:#}")),
            }
        }
    }

    /// Asks for the source and what it needs.
    fn source(&mut self) -> Result<PullSettings> {
        self.ask.say("");
        let map = super::pull::configured_map(self.known.preset);
        match self.ask.choose(
            "Pull from:",
            &[
                "the failback agent (failback serve on the recovery instance)",
                "an EBS snapshot (EBS direct APIs)",
            ],
            0,
        )? {
            0 => self.agent(map),
            _ => self.ebs(map),
        }
        .map(|s| s.reporting(self.known.report.clone()))
    }

    fn agent(&mut self, map: Vec<String>) -> Result<PullSettings> {
        let preset = self.known.preset;
        let given = &mut self.agent;
        given.token = (given.token.take()).or_else(|| preset.token.clone());
        given.fingerprint = given.fingerprint.or(preset.fingerprint);
        loop {
            let url = self.ask.ask(
                "Agent URL (https://HOST:PORT)",
                self.agent.url.as_deref(),
                false,
                |a| match Source::parse(a.to_string()) {
                    Ok(Source::Agent(url)) => Ok(url),
                    Ok(_) => Err(format!("{a:?} is not an agent: use https://HOST:PORT")),
                    Err(e) => Err(e),
                },
            )?;
            self.agent.url = Some(url.clone());
            let token = self
                .ask
                .text("Token (not shown)", self.agent.token.as_deref(), true)?;
            self.agent.token = Some(token.clone());
            let kept = self.agent.fingerprint.map(|f| f.to_string());
            let pinned = self.ask.ask(
                "Certificate fingerprint (its first 24 hex digits or more, as failback serve prints it)",
                kept.as_deref(),
                false,
                |a| a.parse::<Fingerprint>().map_err(|e| e.to_string()),
            )?;
            self.agent.fingerprint = Some(pinned);
            // Try them now, so that a typo is asked again rather than found later.
            self.ask.say(&format!("Connecting to {url}..."));
            match check_agent(&url, &token, pinned, self.known.proxy()) {
                Ok(volumes) => {
                    self.ask.say(&format!("The agent serves: {volumes}"));
                    return Ok(PullSettings::interactive(
                        Source::Agent(url),
                        Some(token),
                        Some(pinned),
                        None,
                        map,
                        self.known.proxy(),
                    ));
                }
                Err(e) => {
                    self.ask.say(&format!("  ! {e:#}"));
                    self.ask.say("Again (Enter keeps an answer):");
                }
            }
        }
    }

    fn ebs(&mut self, map: Vec<String>) -> Result<PullSettings> {
        let given = self.known.preset.aws.clone().unwrap_or_default();
        let snapshot = |a: &str| {
            Source::parse(format!("ebs://{a}"))
                .map(|_| a.to_string())
                .map_err(|_| format!("{a:?} is not a snapshot id: use snap-ID"))
        };
        let region = self.ask.text(
            "AWS region (e.g. eu-west-1)",
            given.region.as_deref(),
            false,
        )?;
        let access_key_id =
            self.ask
                .text("Access key id", given.access_key_id.as_deref(), false)?;
        let secret_access_key = self.ask.text(
            "Secret access key (not shown)",
            given.secret_access_key.as_deref(),
            true,
        )?;
        let session_token = self.ask.optional(
            "Session token (not shown; Enter if none)",
            given.session_token.as_deref(),
            true,
        )?;
        let snap = self
            .ask
            .ask("Snapshot id (snap-...)", None, false, snapshot)?;
        let base = self.ask.ask(
            "Base snapshot id, the state the local disks still hold (Enter if none)",
            None,
            false,
            |a| {
                if a.is_empty() {
                    Ok(None)
                } else {
                    snapshot(a).map(Some)
                }
            },
        )?;
        let endpoint = self.ask.ask(
            "Endpoint URL (Enter for the region's)",
            given.endpoint.as_deref(),
            false,
            |a| {
                if a.is_empty() || a.starts_with("https://") || a.starts_with("http://") {
                    Ok(Some(a.to_string()).filter(|a| !a.is_empty()))
                } else {
                    Err(format!("{a:?} is not a URL: use https://HOST[:PORT]"))
                }
            },
        )?;
        let aws = Aws {
            region: Some(region),
            access_key_id: Some(access_key_id),
            secret_access_key: Some(secret_access_key),
            session_token,
            endpoint,
        };
        Ok(PullSettings::interactive(
            Source::Ebs {
                snapshot: snap,
                base,
            },
            None,
            None,
            Some(aws),
            map,
            self.known.proxy(),
        ))
    }

    /// After the proposal (shown as the `mapping` event): Enter accepts it, or the
    /// operator types the mapping.
    fn review(
        &mut self,
        volumes: &[VolumeInfo],
        disks: &[Disk],
        proposal: Result<Vec<Choice>, String>,
    ) -> Result<Vec<Choice>> {
        let names: Vec<&str> = volumes.iter().map(|v| v.id.as_str()).collect();
        self.ask.say("");
        self.ask.say(&format!(
            "Volumes: {}",
            volumes
                .iter()
                .map(|v| format!("{} ({} bytes)", v.id, v.size))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let prompt = match &proposal {
            Ok(_) => {
                "Mapping: Enter accepts the mapping above, or type VOLUME=/dev/DISK[,VOLUME=EXCLUDE...]"
            }
            Err(why) => {
                self.ask.say(&format!("No mapping proposed: {why}"));
                "Mapping: type VOLUME=/dev/DISK[,VOLUME=EXCLUDE...]"
            }
        };
        let accepted = proposal.is_ok();
        let answer = self.ask.ask(prompt, accepted.then_some(""), false, |a| {
            if a.is_empty() {
                return if accepted {
                    Ok(None)
                } else {
                    Err("a mapping is needed: type VOLUME=/dev/DISK for each volume to pull".into())
                };
            }
            let mapping = map::parse(&[a.to_string()]).map_err(|e| e.to_string())?;
            if let Some(unknown) = mapping.keys().find(|k| !names.contains(&k.as_str())) {
                return Err(format!(
                    "there is no volume {unknown:?}: the volumes are {}",
                    names.join(", ")
                ));
            }
            let choices =
                automap::explicit(&mapping, disks, Path::new("/dev")).map_err(|e| e.to_string())?;
            Ok(Some(choices))
        })?;
        Ok(match (answer, proposal) {
            (Some(typed), _) => typed,
            (None, Ok(proposed)) => proposed,
            (None, Err(why)) => return Err(anyhow!(why)),
        })
    }
}

/// Lists the agent's volumes with these answers: the URL, the token and the pinned
/// certificate work (a one-line error otherwise).
fn check_agent(
    url: &str,
    token: &str,
    fingerprint: Fingerprint,
    proxy: Option<String>,
) -> Result<String> {
    let source = AgentSource::new(AgentConfig {
        url: url.to_string(),
        token: token.to_string(),
        fingerprint,
        timeout: Duration::from_secs(20),
        proxy,
    })?;
    let volumes = source.volumes()?;
    Ok(volumes
        .iter()
        .map(|v| format!("{} ({} bytes)", v.id, v.size))
        .collect::<Vec<_>>()
        .join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::path::PathBuf;

    /// Scripted answers; records which were read hidden.
    struct Script {
        answers: VecDeque<&'static str>,
        hidden: Vec<bool>,
        hiding: bool,
    }

    impl Lines for Script {
        fn line(&mut self) -> std::io::Result<Option<String>> {
            self.hidden.push(self.hiding);
            Ok(self.answers.pop_front().map(|a| format!("{a}\n")))
        }

        fn hide(&mut self, hidden: bool) {
            self.hiding = hidden;
        }
    }

    fn script(answers: &[&'static str]) -> Script {
        Script {
            answers: answers.iter().copied().collect(),
            hidden: Vec::new(),
            hiding: false,
        }
    }

    /// Runs `f` on a flow over `answers`; returns its result, the screen and the script.
    fn with_flow<T>(
        answers: &[&'static str],
        f: impl FnOnce(&mut Flow) -> Result<T>,
    ) -> (Result<T>, String, Script) {
        let preset = Preset::default();
        let known = Known {
            preset: &preset,
            ip: &IpConfig::Dhcp,
            report: Default::default(),
        };
        let mut input = script(answers);
        let mut out = Vec::new();
        let result = {
            let mut ask = Ask {
                input: &mut input,
                out: &mut out,
            };
            f(&mut Flow {
                ask: &mut ask,
                known: &known,
                agent: AgentAnswers::default(),
            })
        };
        (result, String::from_utf8(out).unwrap(), input)
    }

    #[test]
    fn enter_takes_dhcp_and_a_bad_static_address_is_asked_again() {
        let mut tried = Vec::new();
        let (r, screen, _) = with_flow(&["", ""], |f| {
            f.network(&mut |ip| {
                tried.push(ip.clone());
                Ok(())
            })
        });
        r.unwrap();
        assert_eq!(tried, [IpConfig::Dhcp]);
        assert!(screen.contains("1) DHCP"), "{screen}");

        let mut tried = Vec::new();
        let (r, screen, _) = with_flow(&["2", "10.0.0.5", "10.0.0.5/24,10.0.0.1,10.0.0.2"], |f| {
            f.network(&mut |ip| {
                tried.push(ip.to_string());
                Ok(())
            })
        });
        r.unwrap();
        assert_eq!(tried, ["10.0.0.5/24,10.0.0.1,10.0.0.2"]);
        let refusal = screen
            .lines()
            .find(|l| l.contains("  ! "))
            .expect("the bad address is refused");
        assert!(refusal.contains("ADDR/PREFIX"), "{screen}");
    }

    #[test]
    fn a_network_that_fails_is_asked_again() {
        let mut calls = 0;
        let (r, screen, _) = with_flow(&["1", "2", "10.0.0.5/24,10.0.0.1,10.0.0.2"], |f| {
            f.network(&mut |ip| {
                calls += 1;
                match ip {
                    IpConfig::Dhcp => Err(anyhow!("no DHCP offer on eth0 within 15 s")),
                    _ => Ok(()),
                }
            })
        });
        r.unwrap();
        assert_eq!(calls, 2);
        assert!(screen.contains("! no DHCP offer"), "{screen}");
    }

    #[test]
    fn a_menu_refuses_what_is_not_a_choice() {
        let (r, screen, _) = with_flow(&["3", "x", "2"], |f| f.ask.choose("Pick:", &["a", "b"], 0));
        assert_eq!(r.unwrap(), 1);
        assert_eq!(screen.matches("is not a choice").count(), 2, "{screen}");
    }

    #[test]
    fn ebs_secrets_are_read_hidden_and_never_shown() {
        let (r, screen, input) = with_flow(
            &[
                "2",
                "eu-west-1",
                "AKIDEXAMPLE",
                "SECRET-KEY-123",
                "",
                "vol-1",
                "snap-0abc",
                "snap-0def",
                "",
            ],
            |f| f.source().map(|_| ()),
        );
        r.unwrap();
        assert!(
            screen.contains("\"vol-1\" is not a snapshot id"),
            "{screen}"
        );
        assert!(!screen.contains("SECRET-KEY-123"), "{screen}");
        // menu, region, key id, secret, session token, snapshot (twice), base, endpoint
        assert_eq!(
            input.hidden,
            [false, false, false, true, true, false, false, false, false]
        );
    }

    fn volume(id: &str) -> VolumeInfo {
        VolumeInfo {
            id: id.into(),
            size: 1 << 20,
            block_size: 512 << 10,
            gpt_guid: None,
            mbr_id: None,
        }
    }

    fn proposed() -> Vec<Choice> {
        vec![Choice {
            volume: "system".into(),
            target: Some(PathBuf::from("/dev/vda")),
            reason: automap::Reason::OnlyFit,
            why: "the only free local disk".into(),
        }]
    }

    #[test]
    fn enter_accepts_the_proposed_mapping() {
        let (r, _, _) = with_flow(&[""], |f| {
            f.review(&[volume("system")], &[], Ok(proposed()))
        });
        assert_eq!(r.unwrap(), proposed());
    }

    #[test]
    fn a_typed_mapping_replaces_it_and_unknown_volumes_are_asked_again() {
        let (r, screen, _) = with_flow(&["sytem=/dev/vdb", "system=/dev/vdb,data=EXCLUDE"], |f| {
            f.review(&[volume("system"), volume("data")], &[], Ok(proposed()))
        });
        assert!(
            screen.contains("there is no volume \"sytem\": the volumes are system, data"),
            "{screen}"
        );
        let choices = r.unwrap();
        assert_eq!(choices.len(), 2);
        let system = choices.iter().find(|c| c.volume == "system").unwrap();
        assert_eq!(system.target, Some(PathBuf::from("/dev/vdb")));
        assert_eq!(system.reason, automap::Reason::Explicit);
        assert!(
            choices
                .iter()
                .any(|c| c.volume == "data" && c.target.is_none())
        );
    }

    #[test]
    fn without_a_proposal_a_mapping_must_be_typed() {
        let (r, screen, _) = with_flow(&["", "system=/dev/vdb"], |f| {
            f.review(
                &[volume("system")],
                &[],
                Err("no free local disk is large enough".into()),
            )
        });
        assert!(
            screen.contains("No mapping proposed: no free local disk"),
            "{screen}"
        );
        assert!(screen.contains("a mapping is needed"), "{screen}");
        assert_eq!(r.unwrap()[0].target, Some(PathBuf::from("/dev/vdb")));
    }

    #[test]
    fn the_end_of_input_is_one_clear_error() {
        let (r, _, _) = with_flow(&[], |f| f.source().map(|_| ()));
        let e = r.err().unwrap().to_string();
        assert!(
            e.contains("no more input") && e.contains("failback.source="),
            "{e}"
        );
    }
}
