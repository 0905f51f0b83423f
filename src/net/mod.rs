//! The network: bring links up, configure IPv4 by DHCP or statically on the
//! first link that works (optionally on an 802.1Q VLAN of it), write
//! /etc/resolv.conf, keep the DHCP lease, set the clock; the HTTPS proxy.

pub mod cert_time;
pub mod clock;
pub mod dhcp;
pub mod http;
mod ioctl;
pub mod netlink;
pub mod proxy;
pub mod renew;
mod settings;
#[cfg(test)]
pub(crate) mod test_tls;

use serde::{Deserialize, Serialize};
pub use settings::{IpConfig, Mac, vlan_id};
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

/// An Ethernet interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub mac: Mac,
}

/// The configured network, as reported in the `network` event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub interface: String,
    pub mac: String,
    /// ADDR/PREFIX
    pub address: String,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub method: Method,
    /// NTP servers the DHCP server named (option 42).
    pub ntp: Vec<Ipv4Addr>,
    /// The 802.1Q VLAN id when `interface` is a VLAN of the link.
    pub vlan: Option<u16>,
    /// How the system clock was set (filled in once it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<clock::ClockSet>,
}

/// How the address was configured: `"dhcp"` or `"static"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Dhcp,
    Static,
}

impl Method {
    /// The name on the wire and on the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Dhcp => "dhcp",
            Method::Static => "static",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The configured network and, for DHCP, the lease to keep renewed.
pub struct Configured {
    pub network: Network,
    lease: Option<(Link, dhcp::Lease)>,
}

impl Configured {
    /// Renews the DHCP lease in the background for the rest of the process
    /// (nothing to do for a static address); `notice` gets what to tell.
    /// `first_renewal` replaces the first T1 (to see a renewal happen without
    /// waiting half a lease: `failback.dhcp_renew=SECONDS`).
    pub fn keep_lease(
        &mut self,
        first_renewal: Option<Duration>,
        notice: impl Fn(String) + Send + 'static,
    ) {
        if let Some((link, lease)) = self.lease.take() {
            renew::spawn(link, lease, first_renewal, notice);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no network interface found: the NIC may need a driver this image lacks")]
    NoLinks,
    #[error("no network: {0}; check the cabling or give failback.ip=ADDR/PREFIX,GATEWAY,DNS")]
    Failed(String),
}

/// Ethernet links from `/sys/class/net`, sorted by name (loopback excluded).
pub fn links(sys_class_net: &Path) -> Vec<Link> {
    let mut links: Vec<Link> = fs::read_dir(sys_class_net)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            // ARPHRD_ETHER = 1
            if fs::read_to_string(dir.join("type")).ok()?.trim() != "1" {
                return None;
            }
            let mac = Mac::parse(
                fs::read_to_string(dir.join("address"))
                    .ok()?
                    .trim()
                    .to_string(),
            )
            .ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            (name != "lo").then_some(Link { name, mac })
        })
        .collect();
    links.sort_by(|a, b| a.name.cmp(&b.name));
    links
}

/// Waits up to `timeout` for carrier on `name`.
fn wait_carrier(name: &str, timeout: Duration) -> bool {
    let path = Path::new("/sys/class/net").join(name).join("carrier");
    let deadline = Instant::now() + timeout;
    loop {
        if fs::read_to_string(&path).is_ok_and(|c| c.trim() == "1") {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Configures the first link that works: every link with carrier is tried in
/// order (DHCP with `dhcp_timeout` each), or the first with carrier gets the
/// static configuration. With `vlan`, the configuration goes on VLAN `vlan`
/// of the link (`eth0.42`), created first.
pub fn configure(
    config: &IpConfig,
    dhcp_timeout: Duration,
    vlan: Option<u16>,
) -> Result<Configured, Error> {
    let _ = ioctl::link_up("lo");
    let links = links(Path::new("/sys/class/net"));
    if links.is_empty() {
        return Err(Error::NoLinks);
    }
    for link in &links {
        let _ = ioctl::link_up(&link.name);
    }
    let mut problems = Vec::new();
    for link in &links {
        // Links negotiate in parallel since all were brought up above.
        if !wait_carrier(&link.name, Duration::from_secs(5)) {
            problems.push(format!("{}: no carrier", link.name));
            continue;
        }
        let link = match vlan {
            None => link.clone(),
            Some(id) => match netlink::add_vlan(&link.name, id)
                .and_then(|name| ioctl::link_up(&name).map(|()| name))
            {
                Ok(name) => Link {
                    name,
                    mac: link.mac,
                },
                Err(e) => {
                    problems.push(format!("{}: VLAN {id}: {e}", link.name));
                    continue;
                }
            },
        };
        let attempt = match config {
            IpConfig::Dhcp => dhcp::acquire(&link.name, link.mac.0, dhcp_timeout)
                .map_err(|e| e.to_string())
                .and_then(|lease| {
                    let network = apply(
                        &link,
                        lease.address,
                        lease.prefix,
                        lease.gateway,
                        &lease.dns,
                        Method::Dhcp,
                        lease.ntp.clone(),
                    )?;
                    Ok((network, Some((link.clone(), lease))))
                }),
            IpConfig::Static {
                address,
                prefix,
                gateway,
                dns,
            } => apply(
                &link,
                *address,
                *prefix,
                *gateway,
                dns,
                Method::Static,
                Vec::new(),
            )
            .map(|n| (n, None)),
        };
        match attempt {
            Ok((mut network, lease)) => {
                network.vlan = vlan;
                return Ok(Configured { network, lease });
            }
            Err(e) => problems.push(e),
        }
    }
    Err(Error::Failed(problems.join("; ")))
}

fn apply(
    link: &Link,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: &[Ipv4Addr],
    method: Method,
    ntp: Vec<Ipv4Addr>,
) -> Result<Network, String> {
    let name = &link.name;
    ioctl::set_address(name, address, prefix)
        .map_err(|e| format!("{name}: cannot set {address}/{prefix}: {e}"))?;
    if let Some(gw) = gateway {
        ioctl::add_default_route(name, gw)
            .map_err(|e| format!("{name}: cannot route via {gw}: {e}"))?;
    }
    fs::write("/etc/resolv.conf", resolv_conf(dns))
        .map_err(|e| format!("cannot write /etc/resolv.conf: {e}"))?;
    Ok(Network {
        interface: name.clone(),
        mac: link.mac.to_string(),
        address: format!("{address}/{prefix}"),
        gateway,
        dns: dns.to_vec(),
        method,
        ntp,
        vlan: None,
        clock: None,
    })
}

fn resolv_conf(dns: &[Ipv4Addr]) -> String {
    dns.iter().map(|d| format!("nameserver {d}\n")).collect()
}

/// `recv` on a socket with a read timeout: `None` when the time ran out.
fn recv_or_timeout(socket: &std::net::UdpSocket, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    match socket.recv(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_links_are_found_sorted_without_loopback() {
        let tmp = tempfile::tempdir().unwrap();
        for (name, kind, mac) in [
            ("lo", "772", "00:00:00:00:00:00"),
            ("eth1", "1", "52:54:00:00:00:02"),
            ("eth0", "1", "52:54:00:00:00:01"),
            ("ib0", "32", "x"),
        ] {
            let d = tmp.path().join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        }
        let found = links(tmp.path());
        assert_eq!(
            found.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["eth0", "eth1"]
        );
        assert_eq!(found[0].mac, Mac([0x52, 0x54, 0, 0, 0, 1]));
    }

    #[test]
    fn resolv_conf_lists_the_servers() {
        assert_eq!(
            resolv_conf(&[[10, 0, 2, 3].into(), [1, 1, 1, 1].into()]),
            "nameserver 10.0.2.3\nnameserver 1.1.1.1\n"
        );
    }
}
