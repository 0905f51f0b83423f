//! `failback pull`: arguments and reporters around a [`Session`].

use super::continuous::Continuous;
use super::session::{
    AwsFrom, Missing, REPORT_TIMEOUT, ReportTo, Running, SourceSettings, confirm,
};
use super::{Error, Options, Outcome, PlanSummary, Session};
use crate::disks;
use crate::fingerprint::Fingerprint;
use crate::mapping::{automap, map, safety};
use crate::report::{ConsoleReporter, Event, Reporter, Style};
use crate::source::Source;
use crate::source::agent::AgentConfig;
use anyhow::{Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars per volume and a total, on stderr.
    Bar,
    /// One JSON event per line on stdout.
    Json,
    /// Only the plan, the results and errors, as text.
    None,
}

/// Arguments of `failback pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The agent (https://HOST:PORT) or an EBS snapshot (ebs://snap-ID, or
    /// ebs://snap-NEW?base=snap-OLD to pull only the blocks changed since snap-OLD).
    #[arg(long, env = "FAILBACK_SOURCE")]
    pub source: String,
    /// The agent's token (better passed as FAILBACK_TOKEN).
    #[arg(long, env = "FAILBACK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The agent's certificate fingerprint, as `failback serve` prints it.
    #[arg(long, env = "FAILBACK_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// EBS endpoint URL (default: AWS_ENDPOINT_URL_EBS, AWS_ENDPOINT_URL, else the
    /// region's). Credentials and region: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN, AWS_REGION.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// NAME=TARGET, NAME=EXCLUDE, a,b lists of those, or a JSON object; repeatable.
    /// A target is a path or serial:SERIAL, wwn:WWN, path:PCI-PATH (`failback disks`).
    /// Without it, the mapping is proposed from the local disks as the boot image does:
    /// by identity (GPT disk GUID, MBR signature), else by size, and asked about.
    #[arg(long = "map")]
    pub map: Vec<String>,
    /// With --yes and no --map: also take a volume's only free disk large enough (by
    /// size alone; without it, unattended runs take only mappings proven by identity).
    #[arg(long)]
    pub map_by_size: bool,
    /// Do not ask before writing (unattended: every volume must be mapped or excluded).
    #[arg(long)]
    pub yes: bool,
    /// Print the plan (blocks and bytes to pull) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Progress display.
    #[arg(long, value_enum, default_value = "bar")]
    pub progress: ProgressMode,
    /// Connections fetching blocks at once (default: 4 to an agent, 16 to EBS).
    #[arg(long)]
    pub connections: Option<usize>,
    /// HTTPS proxy (http://HOST:PORT) for all requests (default: HTTPS_PROXY,
    /// https_proxy; NO_PROXY is honoured).
    #[arg(long)]
    pub proxy: Option<String>,
    /// Seconds before a stalled request is abandoned (and retried).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Attempts without progress before giving up.
    #[arg(long, default_value_t = 12)]
    pub max_attempts: u32,
    /// Mount table to check targets against (tests).
    #[arg(long, default_value = "/proc/self/mountinfo", hide = true)]
    pub mountinfo: PathBuf,
    /// Treat this path as the boot disk (tests).
    #[arg(long, hide = true)]
    pub boot_disk: Option<PathBuf>,
    /// This host's name in reports (default: the machine's host name).
    #[arg(long)]
    pub host: Option<String>,
    /// A failback agent to report this pull's events to (https://HOST:PORT; a
    /// `failback serve` without volumes is a collector only). Default: the agent
    /// pulled from, if the source is one.
    #[arg(long, env = "FAILBACK_REPORT")]
    pub report: Option<String>,
    /// The token of --report (better passed as FAILBACK_REPORT_TOKEN; default: --token).
    #[arg(long, env = "FAILBACK_REPORT_TOKEN", hide_env_values = true)]
    pub report_token: Option<String>,
    /// The fingerprint of --report, as its `failback serve` prints it (default:
    /// --fingerprint).
    #[arg(long, env = "FAILBACK_REPORT_FINGERPRINT")]
    pub report_fingerprint: Option<String>,
    /// Pull again and again, each pass only what differs, while the workload runs
    /// at the source, until `failback cutover` (agent sources only).
    #[arg(long)]
    pub continuous: bool,
    /// Seconds between two passes of --continuous.
    #[arg(long, default_value_t = 10.0, requires = "continuous")]
    pub interval: f64,
    /// Blocks planned and pulled at a time (tests: many windows on a small volume).
    #[arg(long, default_value_t = super::options::WINDOW_BLOCKS, hide = true)]
    pub window_blocks: u64,
    /// sysfs, whose block/ lists the disks a mapping is proposed from (tests).
    #[arg(long, default_value = "/sys", hide = true)]
    pub sys: PathBuf,
    /// Where the disks' device files are (tests).
    #[arg(long, default_value = "/dev", hide = true)]
    pub dev_dir: PathBuf,
}

impl PullArgs {
    /// `--proxy`, else the environment's HTTPS proxy.
    fn proxy(&self) -> Option<String> {
        self.proxy
            .clone()
            .filter(|p| !p.is_empty())
            .or_else(crate::net::proxy::from_env)
    }
}

/// Prints only what matters when bars are off.
struct Quiet(ConsoleReporter<std::io::Stderr>);

impl Reporter for Quiet {
    fn report(&self, event: &Event) {
        if !matches!(event, Event::Progress { .. }) {
            self.0.report(event);
        }
    }
}

/// The refusals for an agent without a token or a fingerprint.
const MISSING: Missing = Missing {
    token: "--token (or FAILBACK_TOKEN) is needed with an agent: give the token `failback serve` prints",
    fingerprint: "--fingerprint is needed with an agent: give what `failback serve` prints (at least its first 24 hex digits)",
};

/// Runs `failback pull`.
pub fn run(args: PullArgs) -> Result<()> {
    let mapping = map::parse(&args.map)?;
    let source = Source::parse(args.source.clone()).map_err(|e| anyhow::anyhow!("--source {e}"))?;
    if args.continuous {
        if let Source::Ebs { .. } = source {
            bail!("{}", super::Error::ContinuousNeedsAgent);
        }
        if args.dry_run {
            bail!("--continuous writes its targets: drop --dry-run (or --continuous)");
        }
        if !(args.interval.is_finite() && args.interval >= 0.0) {
            bail!("--interval must be a number of seconds, 0 or more");
        }
    }
    let (fingerprint, connections) = match &source {
        Source::Agent(_) => (Some(fingerprint(args.fingerprint.as_deref())?), 4),
        Source::Ebs { .. } => (None, 16),
    };
    let settings = SourceSettings {
        source,
        token: args.token.clone(),
        fingerprint,
        aws: AwsFrom::Env(|k| std::env::var(k).ok()),
        endpoint: args.endpoint.clone(),
        proxy: args.proxy(),
        timeout: Duration::from_secs(args.timeout.max(1)),
        missing: MISSING,
    };
    let report = ReportTo {
        host: args.host.clone(),
        collector: collector(&args, fingerprint)?,
        ..ReportTo::default()
    };
    let session = Session::open(&settings)?.reporting(report);
    pull(
        session,
        mapping,
        args.connections.unwrap_or(connections),
        args,
    )
}

/// The mapping proposed from this machine's disks (a helper VM with the targets
/// attached), as the boot image proposes it; reported as the `mapping` event. Disks
/// that hold the running system or anything mounted are not candidates. Unattended
/// (`--yes`), only choices proven by identity are taken (and the only fit by size with
/// `--map-by-size`); otherwise the plan's confirmation names each target.
fn proposed(
    s: &Running,
    opts: &Options,
    dev: &Path,
    map_by_size: bool,
) -> Result<map::Mapping, Error> {
    let volumes = s.source.volumes()?;
    let mut disks = disks::discover(&opts.sys.join("block"))?;
    disks::identify(&mut disks, dev, None);
    let mountinfo = std::fs::read_to_string(&opts.mountinfo).unwrap_or_default();
    let boot = safety::boot_disk(&opts.sys);
    disks.retain(|d| {
        let path = dev.join(&d.name);
        !safety::is_boot_disk(&opts.sys, &path, boot)
            && safety::mounted(&opts.sys, &path, &mountinfo).is_none()
    });
    let choices = automap::propose(&volumes, &disks, dev)?;
    s.reporter.report(&Event::Mapping {
        choices: choices.clone(),
        map_by_size,
    });
    Ok(automap::to_mapping(&choices, opts.unattended, map_by_size)?)
}

/// The collector `--report` names, with its token and fingerprint (by default the
/// pull's own).
fn collector(args: &PullArgs, pulled: Option<Fingerprint>) -> Result<Option<AgentConfig>> {
    let Some(url) = &args.report else {
        return Ok(None);
    };
    if !url.starts_with("https://") {
        bail!("--report '{url}' is not an agent: give https://HOST:PORT of a `failback serve`");
    }
    let token = args.report_token.clone().or_else(|| args.token.clone());
    let Some(token) = token else {
        bail!("--report needs a token: give --report-token (or FAILBACK_REPORT_TOKEN)");
    };
    let fingerprint = match &args.report_fingerprint {
        Some(f) => f.parse().map_err(|_| {
            anyhow::anyhow!(
                "--report-fingerprint '{f}' is not a SHA-256 fingerprint: give what the collector's `failback serve` prints (at least its first 24 hex digits)"
            )
        })?,
        None => pulled.ok_or_else(|| {
            anyhow::anyhow!(
                "--report needs the collector's fingerprint: give --report-fingerprint as its `failback serve` prints it"
            )
        })?,
    };
    Ok(Some(AgentConfig {
        url: url.clone(),
        token,
        fingerprint,
        timeout: REPORT_TIMEOUT,
        proxy: args.proxy(),
    }))
}

/// `--fingerprint`, needed with an agent.
fn fingerprint(given: Option<&str>) -> Result<Fingerprint> {
    let Some(given) = given else {
        bail!(MISSING.fingerprint);
    };
    given.parse().map_err(|_| {
        anyhow::anyhow!(
            "--fingerprint '{given}' is not a SHA-256 fingerprint: give what `failback serve` prints (at least its first 24 hex digits)"
        )
    })
}

/// Pulls with the reporters `args` asks for, plus the report to the agent if any.
fn pull(session: Session, mapping: map::Mapping, connections: usize, args: PullArgs) -> Result<()> {
    let bars;
    let json;
    let quiet;
    let console: &dyn Reporter = match args.progress {
        ProgressMode::Bar => {
            bars = crate::report::bars::Bars::new();
            &bars
        }
        ProgressMode::Json => {
            json = ConsoleReporter::new(std::io::stdout(), Style::Json);
            &json
        }
        ProgressMode::None => {
            quiet = Quiet(ConsoleReporter::new(std::io::stderr(), Style::Text));
            &quiet
        }
    };
    let opts = Options {
        dry_run: args.dry_run,
        unattended: args.yes,
        connections,
        max_attempts: args.max_attempts.max(1),
        tick: if args.progress == ProgressMode::Bar {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(1)
        },
        mountinfo: args.mountinfo,
        boot_disk: args.boot_disk,
        window_blocks: args.window_blocks.max(1),
        sys: args.sys.clone(),
        ..Options::default()
    };
    let ask = &mut |plans: &[PlanSummary]| confirm(&mut std::io::stderr(), plans);
    let continuous = args.continuous.then(|| Continuous {
        interval: Duration::from_secs_f64(args.interval),
        host: Some(args.host.clone().unwrap_or_else(super::session::host_name)),
        console: true,
    });
    let result = session
        .run(console, |s| {
            let mapping = if mapping.is_empty() {
                proposed(s, &opts, &args.dev_dir, args.map_by_size)?
            } else {
                mapping
            };
            match &continuous {
                Some(c) => s.pull_continuous(&mapping, opts, c, ask),
                None => s.pull(&mapping, opts, ask),
            }
        })
        .and_then(Outcome::pulled);
    // The console gets the error from main as one line; JSON readers get it as an
    // event too (and the agent did from the session).
    if let Err(e) = &result
        && args.progress == ProgressMode::Json
    {
        console.report(&Event::Error {
            message: e.to_string(),
        });
    }
    result?;
    Ok(())
}
