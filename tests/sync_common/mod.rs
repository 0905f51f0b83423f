//! Helpers for the agent/pull tests: start `failback serve`, run `failback pull`,
//! make seeded images, and a fault-injecting TCP proxy. Everything on 127.0.0.1.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BS: usize = 512 * 1024;
/// The token every test agent uses; tests check it never shows up in output.
pub const TOKEN: &str = "t0ken-SECRET-9f3a1c77e2b84d06";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_failback")
}

/// A small, fast, seeded PRNG (xorshift64*).
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Random bytes, seeded.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Rng::new(seed).fill(&mut v);
    v
}

/// A copy of `base` with `changed` blocks (chosen by `seed`) replaced by fresh data.
pub fn mutate(base: &[u8], changed: &[usize], seed: u64) -> Vec<u8> {
    let mut v = base.to_vec();
    let mut rng = Rng::new(seed);
    for &b in changed {
        let end = ((b + 1) * BS).min(v.len());
        rng.fill(&mut v[b * BS..end]);
    }
    v
}

pub fn block_hashes(data: &[u8]) -> Vec<[u8; 32]> {
    data.chunks(BS).map(|c| Sha256::digest(c).into()).collect()
}

/// The whole-volume digest as documented: SHA-256 over the block SHA-256s in order.
pub fn linear_digest(data: &[u8]) -> String {
    let mut h = Sha256::new();
    for b in block_hashes(data) {
        h.update(b);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
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
            cmd.arg("--volume").arg(format!("{n}={}", p.display()));
        }
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

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `failback pull` against `url` with the agent's fingerprint, plus `extra` args.
pub fn pull_cmd(url: &str, fingerprint: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("pull")
        .arg("--source")
        .arg(url)
        .arg("--fingerprint")
        .arg(fingerprint)
        .env("FAILBACK_TOKEN", TOKEN)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

pub fn run(mut cmd: Command) -> Output {
    cmd.output().expect("run failback pull")
}

/// JSON events from a pull's stdout.
pub fn events(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub fn event<'a>(evs: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    evs.iter().find(|e| e["event"] == name)
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Faults the proxy injects into the agent -> client direction.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Probability, per 16 KiB chunk, of cutting the connection.
    pub drop: f64,
    /// Probability, per chunk, of stalling for `stall`.
    pub stall: f64,
    pub stall_for: Duration,
    /// Probability, per chunk, of flipping one byte.
    pub flip: f64,
    /// Bytes per second per connection (0 = unlimited).
    pub rate: u64,
}

/// A TCP proxy on 127.0.0.1 that injects [`Faults`]; stops on drop.
pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub drops: Arc<AtomicU64>,
    pub stalls: Arc<AtomicU64>,
    pub flips: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream: u16, faults: Faults, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (drops, stalls, flips) = Default::default();
        let p = Proxy {
            port,
            stop: stop.clone(),
            drops,
            stalls,
            flips,
        };
        let counters = (p.drops.clone(), p.stalls.clone(), p.flips.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                n += 1;
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue; // agent down: the client sees a closed connection
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(c2, s2, Faults::default(), 0, None));
                let counters = counters.clone();
                let stop = stop.clone();
                std::thread::spawn(move || {
                    pump(
                        server,
                        client,
                        faults,
                        seed ^ (n * 7919),
                        Some((counters, stop)),
                    )
                });
            }
        });
        p
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Counters = (Arc<AtomicU64>, Arc<AtomicU64>, Arc<AtomicU64>);

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    f: Faults,
    seed: u64,
    counters: Option<(Counters, Arc<AtomicBool>)>,
) {
    let mut rng = Rng::new(seed);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(((drops, stalls, flips), stop)) = &counters {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if rng.chance(f.drop) {
                drops.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if rng.chance(f.stall) {
                stalls.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(f.stall_for);
            }
            if rng.chance(f.flip) {
                flips.fetch_add(1, Ordering::Relaxed);
                let i = rng.below(n as u64) as usize;
                buf[i] ^= 1 << rng.below(8);
            }
            if f.rate > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / f.rate as f64));
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Watches `target` while a pull runs: every block must always hold either its old
/// or its new content. A block read that matches neither is read again after a
/// moment (a read racing a 512 KiB write can see part of each); if it still matches
/// neither, the writer put something else there and the watch fails.
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Watch {
    pub fn start(target: &Path, old: &[u8], new: &[u8]) -> Watch {
        let old = block_hashes(old);
        let new = block_hashes(new);
        let target = target.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let f = std::fs::File::open(&target).unwrap();
            let mut buf = vec![0u8; BS];
            let mut scans = 0u64;
            while !s.load(Ordering::Relaxed) {
                for i in 0..old.len() {
                    let ok = |buf: &mut Vec<u8>| {
                        let n = f.read_at(buf, (i * BS) as u64).unwrap();
                        let h: [u8; 32] = Sha256::digest(&buf[..n]).into();
                        h == old[i] || h == new[i]
                    };
                    if !ok(&mut buf) {
                        std::thread::sleep(Duration::from_millis(30));
                        if !ok(&mut buf) {
                            return Err(format!(
                                "block {i} holds neither its old nor its new content"
                            ));
                        }
                    }
                }
                scans += 1;
            }
            Ok(scans)
        });
        Watch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops watching; returns how many full scans were made, or the violation.
    pub fn finish(mut self) -> Result<u64, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}
