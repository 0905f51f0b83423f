//! The scenario the pull tests share: volumes served by a `failback serve` agent from
//! a temporary directory, and disk images beside them holding older states, which a
//! pull (`failback pull` on the host, or the image booted in QEMU) brings up to date;
//! most often one volume and one such disk.

use super::agent::{Agent, TOKEN, mapping};
use super::image::build_into;
use super::pull::pull_cmd;
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// Served volumes and their agent; on drop the agent stops, then the directory and
/// everything in it go.
pub struct Scenario {
    pub agent: Agent,
    pub dir: TempDir,
}

impl Scenario {
    /// Writes each volume to `served-NAME.img` in a new temporary directory and starts
    /// an agent serving them, its state in `agent-state`.
    pub fn serve(volumes: &[(&str, &[u8])]) -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<(&str, PathBuf)> = volumes
            .iter()
            .map(|&(name, bytes)| {
                let path = dir.path().join(format!("served-{name}.img"));
                std::fs::write(&path, bytes).unwrap();
                (name, path)
            })
            .collect();
        let files: Vec<(&str, &Path)> = files.iter().map(|(n, p)| (*n, p.as_path())).collect();
        let agent = Agent::start(&dir.path().join("agent-state"), &files, 0);
        Scenario { agent, dir }
    }

    /// The temporary directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A disk image `name` in the directory holding `bytes`: the target of a pull.
    pub fn disk(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The agent as a QEMU guest reaches it: user networking shows the host's
    /// 127.0.0.1 as 10.0.2.2.
    pub fn guest_url(&self) -> String {
        format!("https://10.0.2.2:{}", self.agent.port)
    }

    /// The kernel command line's part that sends the booted client to the agent:
    /// source, token and fingerprint.
    pub fn kernel_source(&self) -> String {
        format!(
            "failback.source={} failback.token={TOKEN} failback.fingerprint={}",
            self.guest_url(),
            self.agent.fingerprint
        )
    }

    /// Builds the image into `out` in the directory with a preset, `failback.toml`,
    /// sending it to the agent (source, token, fingerprint) plus the TOML `settings`;
    /// returns the ISO's path.
    pub fn build_preset_iso(&self, settings: &str) -> PathBuf {
        let preset = self.path().join("failback.toml");
        let source = format!(
            "source = \"{}\"\ntoken = \"{TOKEN}\"\nfingerprint = \"{}\"\n",
            self.guest_url(),
            self.agent.fingerprint
        );
        std::fs::write(&preset, source + settings).unwrap();
        let out = self.path().join("out");
        build_into(&out, &["--config", preset.to_str().unwrap()]);
        out.join("failback.iso")
    }

    /// `failback pull` from the agent with its fingerprint, plus `extra` arguments.
    pub fn pull(&self, extra: &[&str]) -> Command {
        self.pull_via(&self.agent.url(), extra)
    }

    /// [`Scenario::pull`] from `url`: a proxy in front of the agent.
    pub fn pull_via(&self, url: &str, extra: &[&str]) -> Command {
        pull_cmd(url, &self.agent.fingerprint, extra)
    }
}

/// The usual pull: one volume served, and a target disk beside it holding an older
/// state of it.
pub struct OneVolume {
    pub served: Scenario,
    pub volume: &'static str,
    /// What the agent serves.
    pub new: Vec<u8>,
    /// What the target holds before the pull.
    pub old: Vec<u8>,
    /// `target.img`.
    pub target: PathBuf,
}

impl OneVolume {
    pub fn serve(volume: &'static str, new: Vec<u8>, old: Vec<u8>) -> OneVolume {
        let served = Scenario::serve(&[(volume, &new)]);
        let target = served.disk("target.img", &old);
        OneVolume {
            served,
            volume,
            new,
            old,
            target,
        }
    }

    /// The kernel command line of the booted client's unattended pull of the volume onto
    /// /dev/vda, with JSON progress, powering off after; `extra` words at its end.
    pub fn kernel_cmdline(&self, extra: &str) -> String {
        let line = format!(
            "console=ttyS0 failback.progress=json failback.after=poweroff failback.unattended=1 \
             {} failback.map={}=/dev/vda {extra}",
            self.served.kernel_source(),
            self.volume
        );
        line.trim_end().to_string()
    }

    /// `failback pull` of the volume onto the target, plus `extra` arguments.
    pub fn pull(&self, extra: &[&str]) -> Command {
        self.pull_via(&self.served.agent.url(), extra)
    }

    /// [`OneVolume::pull`] from `url`: a proxy in front of the agent.
    pub fn pull_via(&self, url: &str, extra: &[&str]) -> Command {
        let map = mapping(self.volume, &self.target);
        self.served
            .pull_via(url, &[&["--map", map.as_str()], extra].concat())
    }
}
