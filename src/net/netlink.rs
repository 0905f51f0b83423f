//! 802.1Q VLAN interfaces over rtnetlink: one RTM_NEWLINK request (rtnetlink(7))
//! with IFLA_LINK (the parent), IFLA_IFNAME and IFLA_LINKINFO { kind "vlan",
//! data { IFLA_VLAN_ID } }, and the kernel's ACK.
//!
//! Hand-rolled on purpose: this is the one netlink message the client sends,
//! 80 bytes, while `netlink-packet-route` + `netlink-sys` (or `rtnetlink`,
//! which also wants tokio) would add five crates and their macro-heavy
//! message model to a static PID 1 for it. The byte layout is pinned by a test.

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use std::io;

const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_VLAN_ID: u16 = 1;

/// The name the VLAN interface on `parent` gets: `eth0.42`, as `ip link` and
/// vconfig name them (kernel names are at most 15 bytes).
pub fn vlan_name(parent: &str, id: u16) -> Result<String, String> {
    let name = format!("{parent}.{id}");
    if name.len() > 15 {
        return Err(format!(
            "VLAN interface name {name} is longer than 15 bytes"
        ));
    }
    Ok(name)
}

/// One netlink attribute (struct rtattr), padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).expect("a small attribute");
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// RTM_NEWLINK creating VLAN `id` named `name` on the interface with index `parent`.
pub fn new_vlan_message(seq: u32, parent: u32, name: &str, id: u16) -> Vec<u8> {
    let mut attrs = Vec::new();
    attr(&mut attrs, IFLA_LINK, &parent.to_ne_bytes());
    attr(&mut attrs, IFLA_IFNAME, &[name.as_bytes(), &[0]].concat());
    let mut data = Vec::new();
    attr(&mut data, IFLA_VLAN_ID, &id.to_ne_bytes());
    let mut info = Vec::new();
    attr(&mut info, IFLA_INFO_KIND, b"vlan\0");
    attr(&mut info, IFLA_INFO_DATA, &data);
    attr(&mut attrs, IFLA_LINKINFO, &info);

    let len = 16 + 16 + attrs.len();
    let mut msg = Vec::with_capacity(len);
    // struct nlmsghdr
    msg.extend_from_slice(&u32::try_from(len).expect("small").to_ne_bytes());
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    // struct ifinfomsg: AF_UNSPEC, no type, index 0 (new), no flags
    msg.extend_from_slice(&[0u8; 16]);
    msg.extend_from_slice(&attrs);
    msg
}

/// The errno of the kernel's answer to request `seq` (0: success), if the
/// buffer holds an NLMSG_ERROR for it.
pub fn ack_errno(buf: &[u8], seq: u32) -> Option<i32> {
    let header = buf.get(..16)?;
    let kind = u16::from_ne_bytes([header[4], header[5]]);
    let got_seq = u32::from_ne_bytes(header[8..12].try_into().ok()?);
    if kind != NLMSG_ERROR || got_seq != seq {
        return None;
    }
    let errno = i32::from_ne_bytes(buf.get(16..20)?.try_into().ok()?);
    Some(-errno)
}

/// Creates VLAN `id` on `parent` (an existing VLAN of that name is fine);
/// returns its name.
pub fn add_vlan(parent: &str, id: u16) -> io::Result<String> {
    let name = vlan_name(parent, id).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let index = nix::net::if_::if_nametoindex(parent)?;
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    let seq = 1;
    let msg = new_vlan_message(seq, index, &name, id);
    sendto(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 4096];
    loop {
        let n = recv(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            &mut buf,
            MsgFlags::empty(),
        )?;
        match ack_errno(&buf[..n], seq) {
            Some(0) => return Ok(name),
            Some(libc::EEXIST) if std::path::Path::new("/sys/class/net").join(&name).exists() => {
                return Ok(name);
            }
            Some(errno) => {
                let e = io::Error::from_raw_os_error(errno);
                let hint = if errno == libc::EOPNOTSUPP {
                    " (is the 8021q module in the image?)"
                } else {
                    ""
                };
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create VLAN {name}: {e}{hint}"),
                ));
            }
            None => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_vlan_message_has_the_rtnetlink_layout() {
        let msg = new_vlan_message(7, 2, "eth0.42", 42);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            // nlmsghdr: len 80, RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE, seq 7, pid 0
            &80u32.to_ne_bytes()[..], &16u16.to_ne_bytes(), &0x0605u16.to_ne_bytes(),
            &7u32.to_ne_bytes(), &0u32.to_ne_bytes(),
            // ifinfomsg
            &[0; 16],
            // IFLA_LINK = 2
            &8u16.to_ne_bytes(), &5u16.to_ne_bytes(), &2u32.to_ne_bytes(),
            // IFLA_IFNAME "eth0.42\0"
            &12u16.to_ne_bytes(), &3u16.to_ne_bytes(), b"eth0.42\0",
            // IFLA_LINKINFO { IFLA_INFO_KIND "vlan\0" (padded), IFLA_INFO_DATA { IFLA_VLAN_ID 42 (padded) } }
            &28u16.to_ne_bytes(), &18u16.to_ne_bytes(),
            &9u16.to_ne_bytes(), &1u16.to_ne_bytes(), b"vlan\0", &[0; 3],
            &12u16.to_ne_bytes(), &2u16.to_ne_bytes(),
            &6u16.to_ne_bytes(), &1u16.to_ne_bytes(), &42u16.to_ne_bytes(), &[0; 2],
        ]
        .concat();
        assert_eq!(msg, expected);
        assert_eq!(msg.len(), 80);
        assert_eq!(msg.len() % 4, 0);
    }

    #[test]
    fn acks_and_errors_from_the_kernel() {
        let mut ack = Vec::new();
        ack.extend_from_slice(&36u32.to_ne_bytes());
        ack.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack.extend_from_slice(&0u16.to_ne_bytes());
        ack.extend_from_slice(&7u32.to_ne_bytes());
        ack.extend_from_slice(&0u32.to_ne_bytes());
        ack.extend_from_slice(&0i32.to_ne_bytes());
        ack.extend_from_slice(&[0; 16]);
        assert_eq!(ack_errno(&ack, 7), Some(0));
        assert_eq!(ack_errno(&ack, 8), None, "another request's answer");
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(ack_errno(&ack, 7), Some(libc::EEXIST));
        assert_eq!(ack_errno(&ack[..10], 7), None);
    }

    #[test]
    fn vlan_names_fit_the_kernel_limit() {
        assert_eq!(vlan_name("eth0", 42).unwrap(), "eth0.42");
        assert_eq!(vlan_name("enp0s31f6", 4094).unwrap(), "enp0s31f6.4094");
        assert!(vlan_name("enx0123456789ab", 7).is_err());
    }
}
