//! Cutover on the agent's side (see [`cutover`](super::cutover)): `POST /v1/cutover`
//! and `GET /v1/cutover`, the answer a client's progress POST gets, and `--freeze`
//! (the served file systems frozen for the final passes, see [`freeze`](super::freeze)).

use super::log::printable;
use super::{Resp, State, Volume, body, freeze, full, text};
use hyper::Request;
use hyper::StatusCode;
use hyper::body::Incoming;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Takes session `id`'s event: whether it is to cut over. Thaws a `--freeze` once
/// every client asked ended its final pass.
pub(super) fn heard(state: &State, id: &str, event: &serde_json::Value) -> bool {
    let (answer, ended) = {
        let mut c = state.cutover.lock().unwrap_or_else(|p| p.into_inner());
        let answer = c.heard(id, event, std::time::Instant::now());
        let ended = c.ended();
        c.spend();
        (answer, ended)
    };
    if ended && let Some(f) = &state.freeze {
        f.thaw(&*state.log, "every client asked ended its final pass");
    }
    answer
}

/// The file systems `--freeze` freezes for a cutover.
pub(super) struct Freeze {
    mounts: Vec<PathBuf>,
    timeout: Duration,
    active: Mutex<Option<freeze::Freezer<freeze::Ioctl>>>,
}

impl Freeze {
    /// The mount points of the served volumes' file systems, shown.
    pub fn new(volumes: &BTreeMap<String, Volume>, timeout_s: u64) -> Self {
        let mounts = served_mounts(volumes);
        let shown: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        match shown.is_empty() {
            true => println!("  freeze:      no file system is mounted from the served volumes"),
            false => println!(
                "  freeze:      {} for the final pass of a cutover (at most {timeout_s} s)",
                shown.join(", ")
            ),
        }
        Freeze {
            mounts,
            timeout: Duration::from_secs(timeout_s.max(1)),
            active: Mutex::default(),
        }
    }

    /// Thaws what is frozen, saying so (`why`).
    fn thaw(&self, log: &dyn Fn(String), why: &str) {
        let taken = self.active.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut f) = taken {
            match f.thaw() {
                Ok(()) => log(format!("thawed the served file systems ({why})")),
                Err(e) => log(format!("THAW FAILED ({why}): {e}")),
            }
        }
    }
}

/// The file systems mounted from the served block devices (or their partitions).
fn served_mounts(volumes: &BTreeMap<String, Volume>) -> Vec<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let devices: Vec<(u64, u64)> = volumes
        .values()
        .filter_map(|v| v.file.metadata().ok())
        .filter(|m| m.file_type().is_block_device())
        .map(|m| (libc::major(m.rdev()) as u64, libc::minor(m.rdev()) as u64))
        .collect();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    freeze::mounts_on(&info, &devices, freeze::sysfs_parent)
}

/// Thaws the frozen file systems when the agent is stopped (SIGINT, SIGTERM),
/// then exits.
pub(super) fn thaw_on_stop(state: Arc<State>) {
    use tokio::signal::unix::{SignalKind, signal};
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if let Some(f) = &state.freeze {
            f.thaw(&*state.log, "the agent is stopping");
        }
        std::process::exit(130);
    });
}

/// `POST /v1/cutover`: asks one host (`{"host": NAME}`) or every client (`{}`)
/// to cut over; answers the clients as `GET /v1/cutover` does.
pub(super) async fn ask(state: Arc<State>, req: Request<Incoming>) -> Resp {
    let Some(body) = body(&state, req, 4 << 10).await else {
        return text(
            StatusCode::BAD_REQUEST,
            "body too large, too slow or broken",
        );
    };
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        host: Option<String>,
    }
    let ask = if body.is_empty() {
        Ask { host: None }
    } else {
        match serde_json::from_slice::<Ask>(&body) {
            Ok(ask) => ask,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "body must be {\"host\": NAME} or {} (every client)",
                );
            }
        }
    };
    let who = ask
        .host
        .as_deref()
        .map_or("every client".into(), |h| format!("host {h}"));
    if let Some(refused) = freeze_for_cutover(&state) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, refused);
    }
    drop_cached(&state);
    (state.log)(printable(&format!("cutover asked for {who}")));
    state
        .cutover
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ask(ask.host);
    status(&state)
}

/// `--freeze`: freezes the served file systems for the final passes (once), and
/// thaws them at the timeout whatever happens; the error if a freeze failed
/// (then nothing is frozen, and cutover is not asked).
fn freeze_for_cutover(state: &Arc<State>) -> Option<String> {
    let f = state.freeze.as_ref()?;
    let mut active = f.active.lock().unwrap_or_else(|p| p.into_inner());
    if active.is_some() || f.mounts.is_empty() {
        return None;
    }
    match freeze::Freezer::freeze(freeze::Ioctl, &f.mounts) {
        Ok(frozen) => {
            (state.log)(format!(
                "froze {} for the final passes (at most {} s)",
                frozen
                    .frozen()
                    .iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                f.timeout.as_secs()
            ));
            *active = Some(frozen);
            let (state, timeout) = (state.clone(), f.timeout);
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(f) = &state.freeze {
                    f.thaw(&*state.log, "--freeze-timeout");
                }
            });
            None
        }
        Err(e) => Some(format!("{e}: cutover not asked")),
    }
}

/// Drops the served volumes' cached pages: a block device's page cache is not
/// kept in step with the file system mounted on it, so the final passes must read
/// what the (stopped or frozen) file system wrote to the device.
fn drop_cached(state: &State) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    for v in state.volumes.values() {
        let _ = posix_fadvise(&*v.file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    }
}

/// `GET /v1/cutover`: the continuous clients and where each is.
pub(super) fn status(state: &State) -> Resp {
    let status = state
        .cutover
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .status(std::time::Instant::now());
    full(StatusCode::OK, "application/json", status.to_string())
}
