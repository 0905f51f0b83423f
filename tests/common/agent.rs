//! `failback serve` on 127.0.0.1: the agent every test starts, with the token it is
//! given and the certificate fingerprint it prints.

use super::paths::bin;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The token every test agent uses; tests check it never shows up in output.
pub const TOKEN: &str = "t0ken-SECRET-9f3a1c77e2b84d06";

/// `VOLUME=PATH`, as `failback serve --volume` and `failback pull --map` take it.
pub fn mapping(volume: &str, path: &Path) -> String {
    format!("{volume}={}", path.display())
}

/// A running agent; killed on drop.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    pub fingerprint: String,
    pub state: PathBuf,
    pub volumes: Vec<(String, PathBuf)>,
    pub out: Arc<Mutex<String>>,
}

impl Agent {
    pub fn start(state: &Path, volumes: &[(&str, &Path)], port: u16) -> Agent {
        Agent::start_with(state, volumes, port, |_| {})
    }

    /// [`Agent::start`] with the command changed by `tweak` first (environment, limits).
    pub fn start_with(
        state: &Path,
        volumes: &[(&str, &Path)],
        port: u16,
        tweak: impl FnOnce(&mut Command),
    ) -> Agent {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(state)
            .env("FAILBACK_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (n, p) in volumes {
            cmd.arg("--volume").arg(mapping(n, p));
        }
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("start failback serve");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut port = 0;
        let mut fingerprint = String::new();
        let out = Arc::new(Mutex::new(String::new()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while port == 0 || fingerprint.is_empty() {
            assert!(Instant::now() < deadline, "agent did not start");
            let Some(Ok(line)) = lines.next() else {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).ok();
                panic!("agent exited early: {err}");
            };
            out.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(a) = line.strip_prefix("failback agent listening on ") {
                port = a.rsplit(':').next().unwrap().parse().unwrap();
            }
            if let Some(f) = line.trim().strip_prefix("fingerprint: ") {
                fingerprint = f.to_string();
            }
        }
        let o = out.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                o.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let o = out.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            stderr.read_to_string(&mut s).ok();
            o.lock().unwrap().push_str(&s);
        });
        Agent {
            child,
            port,
            fingerprint,
            state: state.to_path_buf(),
            volumes: volumes
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_path_buf()))
                .collect(),
            out,
        }
    }

    /// Another agent on the same port with the same state directory (so the same
    /// certificate) and volumes: this one restarted.
    pub fn start_again(&self) -> Agent {
        let volumes: Vec<(&str, &Path)> = self
            .volumes
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_path()))
            .collect();
        Agent::start(&self.state, &volumes, self.port)
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits until the agent's output contains `text`, or panics after `timeout`.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output().contains(text) {
            assert!(Instant::now() < deadline, "no {text:?}: {}", self.output());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `failback cutover` against the agent at `url` with its `fingerprint` and the
/// token, plus `extra` arguments; what it did.
pub fn cutover(url: &str, fingerprint: &str, extra: &[&str]) -> Output {
    Command::new(bin())
        .args(["cutover", "--source", url, "--fingerprint", fingerprint])
        .args(extra)
        .env("FAILBACK_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}
