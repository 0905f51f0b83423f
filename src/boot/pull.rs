//! The pull step of the boot image: from the preset and the command line to a
//! mapping (explicit, or proposed from the disks' identity) and a pull in a [`Session`]
//! from the agent (reported on the console and to the agent) or an EBS snapshot.

use crate::config::{After, Aws, Fingerprint, Preset, Source};
use crate::disks::Disk;
use crate::mapping::automap::{self, Choice};
use crate::mapping::map::{self, MapTo, Mapping};
use crate::mapping::select::Selector;
use crate::report::{Event, Reporter};
use crate::source::VolumeInfo;
use crate::source::agent::AgentConfig;
use crate::sync::continuous::{self, Continuous};
use crate::sync::session::{
    AwsFrom, Missing, REPORT_TIMEOUT, ReportTo, Running, SourceSettings, confirm,
};
use crate::sync::{Options, Outcome, PlanSummary, Session, Summary};
use anyhow::{Result, anyhow};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The operator's look at the mapping (the interactive mode): given the volumes and
/// the proposal (or why there is none), returns the choices to pull with.
pub type Review<'a> =
    &'a mut dyn FnMut(&[VolumeInfo], Result<Vec<Choice>, String>) -> Result<Vec<Choice>>;

/// What follows a pull (the reboot prepared, or `already_recovered`), decided while the
/// pull's report is open, so that its events reach the collector too.
pub type Finish<'a> = &'a mut dyn FnMut(&dyn Reporter, &Pulled) -> After;

/// A pull that ended: what it did, and the target of each volume.
pub struct Pulled {
    pub summary: Summary,
    pub targets: BTreeMap<String, PathBuf>,
}

/// What to pull and from where, resolved from the preset and `failback.*`.
pub struct PullSettings {
    from: SourceSettings,
    map: Vec<String>,
    unattended: bool,
    /// Unattended, the only fit by size is taken too.
    map_by_size: bool,
    /// The host's name and its collector.
    report: ReportTo,
    /// Passes until cutover (`continuous = true`, `failback.continuous=1`).
    continuous: Option<Continuous>,
}

/// Where this host reports: its name (`failback.host=`), and the preset's `[report]`
/// (`failback.report=`) with its token and fingerprint, else the preset's own.
pub fn report_to(preset: &Preset, host: Option<String>) -> Result<ReportTo> {
    let collector = match &preset.report {
        None => None,
        Some(r) => Some(AgentConfig {
            url: r.url.clone(),
            token: r.token.clone().or_else(|| preset.token.clone()).ok_or_else(|| {
                anyhow!("failback.report= needs a token: set report.token (or token) in the preset")
            })?,
            fingerprint: r.fingerprint.or(preset.fingerprint).ok_or_else(|| {
                anyhow!("failback.report= needs the collector's fingerprint: set report.fingerprint (or fingerprint) in the preset")
            })?,
            timeout: REPORT_TIMEOUT,
            proxy: preset.proxy.clone(),
        }),
    };
    Ok(ReportTo {
        host,
        collector,
        ..ReportTo::default()
    })
}

impl PullSettings {
    /// `None` when no source is configured (nothing to pull).
    pub fn resolve(preset: &Preset) -> Option<Self> {
        let mut settings = Self::interactive(
            preset.source.clone()?,
            preset.token.clone(),
            preset.fingerprint,
            preset.aws.clone(),
            configured_map(preset),
            preset.proxy.clone(),
        );
        settings.unattended = preset.unattended;
        settings.map_by_size = preset.map_by_size;
        settings.continuous = preset.continuous.then_some(Continuous {
            interval: continuous::INTERVAL,
            host: None,
            console: true,
        });
        Some(settings)
    }

    /// What the operator answered in the interactive mode (never unattended); `map`
    /// is the mapping configured anyway (see [`configured_map`]), else empty. The
    /// EBS settings come from `aws` (the preset's `[aws]` or the answers), never
    /// from the environment.
    pub fn interactive(
        source: Source,
        token: Option<String>,
        fingerprint: Option<Fingerprint>,
        aws: Option<Aws>,
        map: Vec<String>,
        proxy: Option<String>,
    ) -> Self {
        let from = SourceSettings {
            source,
            token,
            fingerprint,
            aws: AwsFrom::Given(aws),
            endpoint: None,
            proxy,
            timeout: Duration::from_secs(60),
            missing: Missing {
                token: "no token for the agent: set failback.token= or token in the preset",
                fingerprint: "no valid agent fingerprint: set failback.fingerprint= or fingerprint in the preset",
            },
        };
        PullSettings {
            from,
            map,
            unattended: false,
            map_by_size: false,
            report: ReportTo::default(),
            continuous: None,
        }
    }

    /// Reports to `report`'s collector under its host name.
    pub fn reporting(mut self, report: ReportTo) -> Self {
        // A continuous pull's passes carry the host's name (`failback cutover --host`).
        if let Some(c) = &mut self.continuous {
            c.host.clone_from(&report.host);
        }
        self.report = report;
        self
    }

    /// The source's URL and how far the local clock is from the source's: see
    /// [`SourceSettings::date_offset`].
    pub fn date_offset(&self) -> Result<(String, f64)> {
        self.from.date_offset()
    }

    /// Maps (explicitly or by identity), plans, confirms on the console (unless
    /// unattended), pulls and verifies, from the agent or an EBS snapshot, then
    /// `finish`es. A declined plan is an error here: nobody is asked again.
    pub fn run(&self, console: &dyn Reporter, disks: &[Disk], finish: Finish) -> Result<After> {
        self.run_reviewed(console, disks, None, finish)?
            .ok_or_else(|| crate::sync::Error::Declined.into())
    }

    /// [`run`](Self::run), with `review` asked about the mapping before the plan;
    /// `None`: the operator declined the plan.
    pub fn run_reviewed(
        &self,
        console: &dyn Reporter,
        disks: &[Disk],
        review: Option<Review>,
        finish: Finish,
    ) -> Result<Option<After>> {
        let mut after = None;
        Session::open(&self.from)?
            .reporting(self.report.clone())
            .run(console, |s| {
                let mut mapping = Mapping::new();
                let outcome = self.pull(s, disks, review, &mut mapping)?;
                if let Outcome::Pulled(summary) = &outcome {
                    let targets = mapping
                        .into_iter()
                        .filter_map(|(volume, to)| match to {
                            // The choices' mapping names every target by its path.
                            MapTo::Target(Selector::Path(path)) => Some((volume, path)),
                            _ => None,
                        })
                        .collect();
                    let summary = summary.clone();
                    after = Some(finish(s.reporter, &Pulled { summary, targets }));
                }
                anyhow::Ok(outcome)
            })?;
        Ok(after)
    }

    /// Maps, then pulls; `mapped` gets the mapping pulled.
    fn pull(
        &self,
        session: &Running,
        disks: &[Disk],
        review: Option<Review>,
        mapped: &mut Mapping,
    ) -> Result<Outcome> {
        let Running {
            source, reporter, ..
        } = *session;
        let volumes = || {
            source
                .volumes()
                .map_err(|e| anyhow!("cannot list the volumes of {}: {e}", self.from.source))
        };
        let choices = match review {
            None => {
                let choices = if self.map.is_empty() {
                    automap::propose(&volumes()?, disks, Path::new("/dev"))?
                } else {
                    automap::explicit(&map::parse(&self.map)?, disks, Path::new("/dev"))?
                };
                reporter.report(&Event::Mapping {
                    choices: choices.clone(),
                    map_by_size: self.map_by_size,
                });
                choices
            }
            Some(review) => {
                // The proposal is shown (or why there is none), then the operator's
                // answer, if it differs, before anything is planned.
                let volumes = volumes()?;
                let proposal = if self.map.is_empty() {
                    automap::propose(&volumes, disks, Path::new("/dev")).map_err(|e| e.to_string())
                } else {
                    map::parse(&self.map)
                        .map_err(|e| e.to_string())
                        .and_then(|m| {
                            automap::explicit(&m, disks, Path::new("/dev"))
                                .map_err(|e| e.to_string())
                        })
                };
                if let Ok(proposed) = &proposal {
                    reporter.report(&Event::Mapping {
                        choices: proposed.clone(),
                        map_by_size: self.map_by_size,
                    });
                }
                let choices = review(&volumes, proposal.clone())?;
                if proposal.as_ref() != Ok(&choices) {
                    reporter.report(&Event::Mapping {
                        choices: choices.clone(),
                        map_by_size: self.map_by_size,
                    });
                }
                choices
            }
        };
        let mapping = automap::to_mapping(&choices, self.unattended, self.map_by_size)?;
        let opts = Options {
            unattended: self.unattended,
            // The image's own boot medium is refused as a target with the others.
            disks: disks.to_vec(),
            ..Options::default()
        };
        let confirm = &mut |plans: &[PlanSummary]| confirm(&mut std::io::stdout(), plans);
        let outcome = match &self.continuous {
            Some(c) => session.pull_continuous(&mapping, opts, c, confirm)?,
            None => session.pull(&mapping, opts, confirm)?,
        };
        *mapped = mapping;
        Ok(outcome)
    }
}

/// The mapping configured (`failback.map=` over the preset's `[map]`), as `--map` values.
pub fn configured_map(preset: &Preset) -> Vec<String> {
    preset
        .map
        .iter()
        .map(|(volume, target)| format!("{volume}={target}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::Cmdline;

    const FP: &str = "e40cb27758bfec9820c4ed9a0d3c1b2a3e4f5061728394a5b6c7d8e9f0a1b2c3";

    #[test]
    fn failback_report_sends_to_the_collector_with_the_presets_token_and_fingerprint() {
        let preset =
            Preset::parse(&format!("token = \"t0k3n\"\nfingerprint = \"{FP}\"\n"), "p").unwrap();
        let (cmdline, errors) =
            Cmdline::parse("failback.report=https://collector:1500 failback.host=rack1-07");
        assert!(errors.is_empty());
        let report = report_to(&preset.overlay(&cmdline), cmdline.host.clone()).unwrap();
        assert_eq!(report.host.as_deref(), Some("rack1-07"));
        let to = report.collector.unwrap();
        assert_eq!(
            (to.url.as_str(), to.token.as_str()),
            ("https://collector:1500", "t0k3n")
        );
        assert_eq!(to.fingerprint.to_string(), FP);
        // Without a token anywhere: one line naming the setting.
        let bare = Preset::default().overlay(&cmdline);
        let e = report_to(&bare, None).unwrap_err().to_string();
        assert!(e.contains("report.token") && !e.contains('\n'), "{e}");
        // Without [report]: the agent pulled from is the collector.
        assert!(report_to(&preset, None).unwrap().collector.is_none());
    }
}
