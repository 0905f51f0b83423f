//! The events the client reports: what it sees and what it does, from boot to the end.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One thing worth telling. Serialized as `{"event":"<name>", ...fields}`; the agent
/// reads the events its clients post back with `Deserialize`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// PID 1 is running.
    Boot {
        version: String,
        uptime_s: f64,
        secure_boot: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        /// The consoles the client writes to and reads from, when more than one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        consoles: Vec<String>,
    },
    /// Kernel modules loaded by coldplug.
    Drivers {
        loaded: Vec<String>,
        failed: Vec<String>,
        /// Module parameters from the kernel command line, as the kernel holds them
        /// (`MODULE.PARAM` -> value).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<String, String>,
        uptime_s: f64,
    },
    /// Local disks found.
    Disks { disks: Vec<crate::disks::Disk> },
    /// The network is configured.
    Network {
        #[serde(flatten)]
        network: crate::net::Network,
        uptime_s: f64,
    },
    /// The client waits for something outside its control.
    Waiting { what: String },
    /// Something the operator should know that is not an error.
    Notice { message: String },
    /// Something went wrong; what follows is `failback.after`.
    Error { message: String },
    /// Which local disk receives which volume, and why.
    Mapping {
        choices: Vec<crate::mapping::automap::Choice>,
        /// Unattended runs may take a volume's only fit by size (`map_by_size`).
        #[serde(default)]
        map_by_size: bool,
    },
    /// The plan for one volume: what differs between it and its local target.
    Plan {
        volume: String,
        target: String,
        size: u64,
        blocks: u64,
        /// Blocks whose remote content differs from the target's.
        differing: u64,
        /// Of those, blocks that are all zero remotely: written locally, never fetched.
        zero_blocks: u64,
        /// Bytes of block data to fetch (before compression).
        bytes_to_pull: u64,
        dry_run: bool,
    },
    /// How far a volume got in its current phase.
    Progress {
        volume: String,
        phase: Phase,
        done_bytes: u64,
        total_bytes: u64,
        wire_bytes: u64,
        retries: u64,
    },
    /// A volume is written, flushed and verified.
    VolumeDone {
        volume: String,
        target: String,
        /// Whole-volume digest of the target after the pull (SHA-256 over the ordered
        /// 512 KiB block SHA-256s, the EBS "LINEAR" aggregation).
        sha256: String,
        /// The same digest computed from the remote volume's block hashes.
        remote_sha256: String,
        pulled_blocks: u64,
        zero_blocks: u64,
        wire_bytes: u64,
        retries: u64,
        seconds: f64,
    },
    /// The pull is over (or, with `dry_run`, the plan is).
    Done {
        volumes: u64,
        pulled_blocks: u64,
        wire_bytes: u64,
        retries: u64,
        seconds: f64,
        dry_run: bool,
    },
    /// `after = reboot`, yet every target already held its volume: this machine
    /// booted failback again after its recovery (its medium is still first in the
    /// boot order). It waits for the operator instead of rebooting into a loop.
    AlreadyRecovered {
        /// Each volume and the target found identical to it.
        volumes: BTreeMap<String, String>,
        /// The failback medium booted (`/dev/sr0`), when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        boot_medium: Option<String>,
    },
    /// A pass of a continuous pull is over (`failback pull --continuous`): the
    /// targets hold the volumes as they were during the pass, not yet a
    /// consistent copy (`consistent` is false: only cutover makes one).
    Pass {
        pass: u64,
        seconds: f64,
        pulled_blocks: u64,
        /// Bytes over the wire.
        bytes: u64,
        /// Age of the oldest state the targets may still hold: the start of the
        /// last complete pass (the RPO).
        lag_s: f64,
        consistent: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    /// Cutover is over: the final pass ran after the workload stopped, and every
    /// volume was verified whole; the targets are a consistent copy.
    CutoverDone {
        pass: u64,
        /// Seconds of the final pass: the downtime cutover added.
        seconds: f64,
        consistent: bool,
        /// Every volume's target digest equals its remote digest.
        matched: bool,
        volumes: Vec<FinalDigest>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
}

/// A volume's whole-volume digests after the final pass of a cutover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalDigest {
    pub volume: String,
    pub target: String,
    pub sha256: String,
    pub remote_sha256: String,
}

/// The phase of a volume a `progress` event tells of: `"hashing"`, `"pulling"` or
/// `"verifying"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The local target is hashed and compared with the remote block hashes.
    Hashing,
    /// The differing blocks are fetched and written.
    Pulling,
    /// The written target is read back and its digest checked.
    Verifying,
}

impl Phase {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Hashing => "hashing",
            Phase::Pulling => "pulling",
            Phase::Verifying => "verifying",
        }
    }

    /// The name for people: unattended, blocks are pulled while the disk is still
    /// being hashed (`wire_bytes` > 0), and the hashing phase says so.
    pub fn label(self, wire_bytes: u64) -> &'static str {
        match self {
            Phase::Hashing if wire_bytes > 0 => "hash+pull",
            _ => self.as_str(),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_their_names_on_the_wire() {
        for phase in [Phase::Hashing, Phase::Pulling, Phase::Verifying] {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
            assert_eq!(serde_json::from_str::<Phase>(&json).unwrap(), phase);
            assert_eq!(phase.to_string(), phase.as_str());
        }
        assert_eq!(Phase::Hashing.label(0), "hashing");
        assert_eq!(Phase::Hashing.label(1), "hash+pull");
        assert_eq!(Phase::Pulling.label(1), "pulling");
    }

    /// What a client sends, read back by the agent, is the same event: the JSON
    /// of every kind survives a round trip byte for byte.
    #[test]
    fn events_read_back_as_they_were_written() {
        use crate::net::{Method, Network, clock};
        let network = Network {
            interface: "eth0.7".into(),
            mac: "52:54:00:12:34:56".into(),
            address: "10.0.2.15/24".into(),
            gateway: Some([10, 0, 2, 2].into()),
            dns: vec![[10, 0, 2, 3].into()],
            method: Method::Dhcp,
            ntp: vec![],
            vlan: Some(7),
            clock: Some(clock::ClockSet {
                source: clock::ClockSource::HttpDate,
                server: Some("https://agent:8443".into()),
                step_s: 12.5,
                problem: None,
            }),
        };
        let json = serde_json::to_string(&network).unwrap();
        assert!(
            json.contains(r#""method":"dhcp""#)
                && json.contains(r#""clock":{"source":"http-date","#),
            "{json}"
        );
        for (source, name) in [
            (clock::ClockSource::Ntp, "ntp"),
            (clock::ClockSource::HttpDate, "http-date"),
            (clock::ClockSource::Unset, "none"),
        ] {
            assert_eq!(
                serde_json::to_string(&source).unwrap(),
                format!("\"{name}\"")
            );
            assert_eq!(source.to_string(), name);
        }
        assert_eq!(
            serde_json::to_string(&Method::Static).unwrap(),
            r#""static""#
        );
        let events = [
            r#"{"event":"boot","version":"1","uptime_s":1.5,"secure_boot":false}"#,
            r#"{"event":"drivers","loaded":["e1000"],"failed":[],"params":{"a.b":"1"},"uptime_s":2.0}"#,
            r#"{"event":"disks","disks":[{"name":"vda","size":1,"model":null,"serial":"s","removable":false,"gpt_guid":"g"}]}"#,
            r#"{"event":"mapping","choices":[{"volume":"v","target":"/dev/vda","reason":"gpt-guid","why":"w"},{"volume":"x","target":null,"reason":"explicit","why":"y"}],"map_by_size":false}"#,
            r#"{"event":"mapping","choices":[{"volume":"v","target":"/dev/vda","reason":"only-fit","why":"w"}],"map_by_size":true}"#,
            r#"{"event":"progress","volume":"v","phase":"verifying","done_bytes":1,"total_bytes":2,"wire_bytes":3,"retries":4}"#,
            r#"{"event":"done","volumes":1,"pulled_blocks":2,"wire_bytes":3,"retries":0,"seconds":1.0,"dry_run":true}"#,
            r#"{"event":"already_recovered","volumes":{"data":"/dev/vda","system":"/dev/nvme0n1"},"boot_medium":"/dev/sr0"}"#,
            r#"{"event":"already_recovered","volumes":{}}"#,
            r#"{"event":"pass","pass":7,"seconds":3.5,"pulled_blocks":12,"bytes":6291456,"lag_s":3.5,"consistent":false,"host":"rack1-07"}"#,
            r#"{"event":"cutover_done","pass":8,"seconds":1.5,"consistent":true,"matched":true,"volumes":[{"volume":"v","target":"/dev/vda","sha256":"ab","remote_sha256":"ab"}]}"#,
        ]
        .map(str::to_string)
        .into_iter()
        .chain([
            serde_json::to_string(&Event::Network {
                network: network.clone(),
                uptime_s: 3.0,
            })
            .unwrap(),
            serde_json::to_string(&Event::Network {
                network: Network {
                    method: Method::Static,
                    clock: Some(clock::ClockSet {
                        source: clock::ClockSource::Unset,
                        server: None,
                        step_s: 0.0,
                        problem: Some("no answer".into()),
                    }),
                    ..network
                },
                uptime_s: 3.0,
            })
            .unwrap(),
        ]);
        for json in events {
            let event: Event = serde_json::from_str(&json).unwrap();
            assert_eq!(serde_json::to_string(&event).unwrap(), json);
        }
        // A mapping event from a client before map_by_size reads as without it.
        let older = r#"{"event":"mapping","choices":[]}"#;
        assert!(matches!(
            serde_json::from_str(older).unwrap(),
            Event::Mapping {
                map_by_size: false,
                ..
            }
        ));
    }
}
