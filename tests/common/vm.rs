//! A running QEMU VM and its serial console: the client's JSON events, lines, and for
//! interactive VMs the screen as it comes and the keyboard.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// At most this many VMs at once (TCG is CPU bound; the machine has few cores):
/// FAILBACK_QEMU_JOBS, default 2. Use 1 to measure boot times.
static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

fn max_vms() -> usize {
    std::env::var("FAILBACK_QEMU_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

struct Slot;

impl Slot {
    fn take() -> Slot {
        let (count, cv) = &SLOTS;
        let mut n = count.lock().unwrap();
        while *n >= max_vms() {
            n = cv.wait(n).unwrap();
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (count, cv) = &SLOTS;
        *count.lock().unwrap() -= 1;
        cv.notify_one();
    }
}

/// What the console showed: a JSON event or a line matching one of the watched texts.
pub enum Seen {
    Event(serde_json::Value, f64),
    Text(String),
}

/// A running VM whose serial console we read.
pub struct Vm {
    child: Child,
    lines: Receiver<String>,
    started: Instant,
    pub console: Vec<String>,
    _slot: Slot,
    /// Interactive VMs: the serial console's input, and its output as it comes
    /// (prompts end without a newline), read up to `cursor` by `wait_text`.
    stdin: Option<ChildStdin>,
    raw: Option<Receiver<String>>,
    pub screen: String,
    cursor: usize,
}

impl Vm {
    /// Starts `qemu-system-x86_64 -accel tcg -nographic -no-reboot` + `args`, once a
    /// VM slot is free.
    pub fn start<S: AsRef<OsStr>>(args: &[S]) -> Vm {
        Self::spawn(args, false, true)
    }

    /// [`Vm::start`] without `-no-reboot`: a reboot restarts the machine (its
    /// firmware, boot order and disks as they are then) instead of ending QEMU.
    pub fn start_rebooting<S: AsRef<OsStr>>(args: &[S]) -> Vm {
        Self::spawn(args, false, false)
    }

    /// [`Vm::start`] with the serial console's input open: type with [`Vm::send`],
    /// wait for prompts with [`Vm::wait_text`].
    pub fn start_interactive<S: AsRef<OsStr>>(args: &[S]) -> Vm {
        Self::spawn(args, true, true)
    }

    fn spawn<S: AsRef<OsStr>>(args: &[S], interactive: bool, no_reboot: bool) -> Vm {
        let slot = Slot::take();
        let mut child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-nographic", "-monitor", "none"])
            .args(no_reboot.then_some("-no-reboot"))
            .args(args)
            .stdin(if interactive {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start qemu-system-x86_64");
        let (tx, lines) = channel();
        let (raw_tx, raw) = channel::<String>();
        for (i, stream) in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .into_iter()
        .enumerate()
        {
            let tx = tx.clone();
            // The console (stdout) as it comes, for interactive VMs.
            let raw_tx = (interactive && i == 0).then(|| raw_tx.clone());
            std::thread::spawn(move || match raw_tx {
                None => read_lines(stream, &tx),
                Some(raw) => read_screen(stream, &tx, &raw),
            });
        }
        Vm {
            stdin: child.stdin.take(),
            raw: interactive.then_some(raw),
            screen: String::new(),
            cursor: 0,
            child,
            lines,
            started: Instant::now(),
            console: Vec::new(),
            _slot: slot,
        }
    }

    /// Types `text` on the serial console (an interactive VM).
    pub fn send(&mut self, text: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .expect("send needs a VM from Vm::start_interactive");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the console shows `text` after what the previous call saw (prompts
    /// count: no newline is needed); returns the screen from there up to and including
    /// `text`.
    pub fn wait_text(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.screen[self.cursor..].find(text) {
                let end = self.cursor + at + text.len();
                let seen = self.screen[self.cursor..end].to_string();
                self.cursor = end;
                return seen;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let raw = self
                .raw
                .as_ref()
                .expect("wait_text needs a VM from Vm::start_interactive");
            match raw.recv_timeout(left) {
                Ok(chunk) => self.screen.push_str(&chunk),
                Err(e) => {
                    self.drain();
                    let from = (0..=self.screen.len().saturating_sub(3000))
                        .rev()
                        .find(|&i| self.screen.is_char_boundary(i))
                        .unwrap_or(0);
                    let tail = &self.screen[from..];
                    panic!(
                        "the console did not show {text:?} within {timeout:?} ({e}); it shows:\n{tail}\n--- stderr and lines:\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    /// Waits for the event `name` (any event if empty) or a console line containing one
    /// of `texts`.
    pub fn watch(&mut self, name: &str, texts: &[&str], timeout: Duration) -> Seen {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.console.push(line.clone());
                    if let Some(t) = texts.iter().find(|t| line.contains(*t)) {
                        return Seen::Text((*t).to_string());
                    }
                    let Some(at) = line.find("{\"event\":") else {
                        continue;
                    };
                    let Ok(event) = serde_json::from_str::<serde_json::Value>(&line[at..]) else {
                        continue;
                    };
                    if name.is_empty() || event["event"] == name {
                        return Seen::Event(event, self.started.elapsed().as_secs_f64());
                    }
                    assert_ne!(
                        event["event"],
                        "error",
                        "client reported an error:\n{}",
                        self.log()
                    );
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no '{name}' event within {timeout:?}:\n{}", self.log())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("QEMU exited before the '{name}' event:\n{}", self.log())
                }
            }
        }
    }

    /// Waits for the stand-in recovered system's line (`common::recovered_system`) and
    /// asserts that it checked out, not failback booting again; returns the line.
    pub fn recovered_line(&mut self, timeout: Duration) -> String {
        let seen = self.watch("boot", &["RECOVERED ", "RECOVERY CHECK FAILED"], timeout);
        assert!(
            matches!(&seen, Seen::Text(t) if t == "RECOVERED "),
            "the next boot is not the recovered system's, or it did not check out:\n{}",
            self.log()
        );
        self.console.last().unwrap().clone()
    }

    /// Waits for the JSON event `name`; returns it and the seconds since QEMU started.
    pub fn event(&mut self, name: &str, timeout: Duration) -> (serde_json::Value, f64) {
        match self.watch(name, &[], timeout) {
            Seen::Event(e, at) => (e, at),
            Seen::Text(_) => unreachable!(),
        }
    }

    /// Waits for the next JSON event, whichever it is.
    #[allow(dead_code)]
    pub fn next_event(&mut self, timeout: Duration) -> (serde_json::Value, f64) {
        self.event("", timeout)
    }

    /// Waits for QEMU to exit by itself (e.g. the client powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether QEMU still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The JSON events the console showed so far (collected by the waits).
    pub fn events_seen(&self) -> Vec<serde_json::Value> {
        self.console
            .iter()
            .filter_map(|line| {
                let at = line.find("{\"event\":")?;
                serde_json::from_str(&line[at..]).ok()
            })
            .collect()
    }

    /// Collects what the console printed since the last look.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.console.push(line);
        }
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The last console lines, for failure messages.
    pub fn log(&self) -> String {
        let start = self.console.len().saturating_sub(80);
        self.console[start..].join("\n")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends the console's lines to `tx`. Firmware and GRUB draw with escape codes and
/// \r; split on both.
fn read_lines(stream: Box<dyn Read + Send>, tx: &Sender<String>) {
    let mut r = BufReader::new(stream);
    let mut buf = Vec::new();
    while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        if !send_parts(&buf, tx) {
            return;
        }
        buf.clear();
    }
}

/// [`read_lines`], and everything as it comes to `raw` (prompts end without a newline).
fn read_screen(mut stream: Box<dyn Read + Send>, tx: &Sender<String>, raw: &Sender<String>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => {
                send_parts(&buf, tx);
                return;
            }
            Ok(n) => n,
        };
        let _ = raw.send(String::from_utf8_lossy(&chunk[..n]).into_owned());
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            if !send_parts(&line, tx) {
                return;
            }
        }
    }
}

/// Sends the non-blank \r-separated parts of `line`; false when nobody listens.
fn send_parts(line: &[u8], tx: &Sender<String>) -> bool {
    let text = String::from_utf8_lossy(line);
    text.split('\r')
        .filter(|p| !p.trim().is_empty())
        .all(|p| tx.send(p.trim_end().to_string()).is_ok())
}
