//! The network's settings as the operator gives them: how to configure IPv4 (DHCP or
//! static) and MAC addresses (a fleet's hosts are found by theirs).

use crate::parse::{invalid, string_newtype};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// Network configuration: DHCP or static.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum IpConfig {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
}

impl IpConfig {
    pub fn parse(s: String) -> Result<Self, String> {
        if s == "dhcp" {
            return Ok(IpConfig::Dhcp);
        }
        let expected =
            "use dhcp or ADDR/PREFIX,GATEWAY,DNS[,DNS] (e.g. 10.0.0.5/24,10.0.0.1,10.0.0.2)";
        let mut parts = s.split(',');
        let (addr, prefix) = parts
            .next()
            .unwrap_or_default()
            .split_once('/')
            .unwrap_or(("", ""));
        let address = addr
            .parse()
            .or_else(|_| invalid("an IP configuration", &s, expected))?;
        let prefix = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .map_or_else(|| invalid("an IP configuration", &s, expected), Ok)?;
        let gateway = match parts.next() {
            None | Some("") => None,
            Some(g) => Some(
                g.parse()
                    .or_else(|_| invalid("an IP configuration", &s, expected))?,
            ),
        };
        let dns = parts
            .map(|d| {
                d.parse()
                    .or_else(|_| invalid("an IP configuration", &s, expected))
            })
            .collect::<Result<_, _>>()?;
        Ok(IpConfig::Static {
            address,
            prefix,
            gateway,
            dns,
        })
    }
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpConfig::Dhcp => f.write_str("dhcp"),
            IpConfig::Static {
                address,
                prefix,
                gateway,
                dns,
            } => {
                write!(f, "{address}/{prefix},")?;
                if let Some(g) = gateway {
                    write!(f, "{g}")?;
                }
                for d in dns {
                    write!(f, ",{d}")?;
                }
                Ok(())
            }
        }
    }
}
string_newtype!(IpConfig, IpConfig::parse);

/// An 802.1Q VLAN id the kernel takes (0 and 4095 are reserved), else what
/// would be right: one check for the preset and the kernel command line.
pub fn vlan_id(id: u16) -> Result<u16, &'static str> {
    if (1..=4094).contains(&id) {
        Ok(id)
    } else {
        Err("a VLAN id from 1 to 4094")
    }
}

/// An Ethernet MAC address, kept as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub fn parse(s: String) -> Result<Self, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let mut mac = [0u8; 6];
        if parts.len() != 6
            || parts
                .iter()
                .zip(&mut mac)
                .any(|(p, b)| p.len() != 2 || u8::from_str_radix(p, 16).map(|v| *b = v).is_err())
        {
            return invalid("a MAC address", &s, "six hex pairs, e.g. 52:54:00:12:34:56");
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}
string_newtype!(Mac, Mac::parse);
