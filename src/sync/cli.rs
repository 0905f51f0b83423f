//! `failback pull`: arguments, reporters and the confirmation prompt around [`Puller`].

use super::{Options, PlanSummary, Puller};
use crate::mapping::map;
use crate::report::agent::AgentReporter;
use crate::report::{ConsoleReporter, Event, Reporter, Style, Tee};
use crate::source::BlockSource;
use crate::source::Source;
use crate::source::agent::{AgentConfig, AgentSource, hex, parse_fingerprint};
use crate::source::ebs::{EbsConfig, EbsSource};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
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
    #[arg(long = "map", required = true)]
    pub map: Vec<String>,
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

/// Runs `failback pull`.
pub fn run(args: PullArgs) -> Result<()> {
    let mapping = map::parse(&args.map)?;
    match Source::parse(args.source.clone()).map_err(|e| anyhow::anyhow!("--source {e}"))? {
        Source::Agent(url) => run_agent(url, mapping, args),
        Source::Ebs { snapshot, base } => {
            let mut cfg = EbsConfig::resolve(snapshot, base, args.endpoint.clone(), None, |k| {
                std::env::var(k).ok()
            })?;
            cfg.timeout = Duration::from_secs(args.timeout.max(1));
            cfg.proxy = args.proxy();
            let source = EbsSource::new(cfg)?;
            let connections = args.connections.unwrap_or(16);
            pull(&source, None, mapping, connections, args)
        }
    }
}

fn run_agent(url: String, mapping: map::Mapping, args: PullArgs) -> Result<()> {
    let Some(fingerprint) = &args.fingerprint else {
        bail!(
            "--fingerprint is needed with an agent: give the 64 hex digits `failback serve` prints"
        );
    };
    let fingerprint = parse_fingerprint(fingerprint).with_context(|| {
        format!(
            "--fingerprint '{fingerprint}' is not a SHA-256 fingerprint: give the 64 hex digits `failback serve` prints"
        )
    })?;
    let Some(token) = args.token.clone() else {
        bail!(
            "--token (or FAILBACK_TOKEN) is needed with an agent: give the token `failback serve` prints"
        );
    };
    let source = Arc::new(AgentSource::new(AgentConfig {
        url,
        token,
        fingerprint,
        timeout: Duration::from_secs(args.timeout.max(1)),
        proxy: args.proxy(),
    })?);
    let mut id = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("no randomness from the kernel for a session id"))?;
    let session = hex(&id);
    let agent = AgentReporter::new(source.clone(), session);
    let connections = args.connections.unwrap_or(4);
    let result = pull(&*source, Some(&agent), mapping, connections, args);
    agent.finish();
    result
}

/// Pulls with the reporters `args` asks for, plus `agent` if any.
fn pull(
    source: &dyn BlockSource,
    agent: Option<&AgentReporter>,
    mapping: map::Mapping,
    connections: usize,
    args: PullArgs,
) -> Result<()> {
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
    let mut reporters = vec![console];
    if let Some(a) = agent {
        reporters.push(a);
    }
    let tee = Tee(reporters);
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
        ..Options::default()
    };
    let result = Puller::new(source, &tee, opts).run(&mapping, &mut ask);
    if let Err(e) = &result {
        // The console gets the error from main as one line; JSON readers and the
        // agent get it as an event too.
        let ev = Event::Error {
            message: e.to_string(),
        };
        if let Some(a) = agent {
            a.report(&ev);
        }
        if args.progress == ProgressMode::Json {
            console.report(&ev);
        }
    }
    result?;
    Ok(())
}

/// Shows the plan and asks on the terminal; anything but "yes" declines.
fn ask(plans: &[PlanSummary]) -> bool {
    confirm(&mut std::io::stderr(), plans)
}

/// Shows the plan on `out` and reads the answer from stdin; anything but "yes" declines.
pub fn confirm(out: &mut dyn Write, plans: &[PlanSummary]) -> bool {
    let _ = writeln!(out, "About to overwrite:");
    for p in plans {
        let _ = writeln!(
            out,
            "  {} <- {}: {} blocks ({:.1} MiB) to pull, {} blocks to zero",
            p.target.display(),
            p.volume,
            p.blocks_to_pull,
            p.bytes_to_pull as f64 / (1u64 << 20) as f64,
            p.zero_blocks
        );
    }
    let _ = write!(out, "Type 'yes' to write these targets: ");
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    line.trim() == "yes"
}
