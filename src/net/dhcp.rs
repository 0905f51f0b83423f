//! DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK on one interface.
//! Packets are made and read by `dhcproto`; the replies are asked to be
//! broadcast (flag 0x8000) so that a plain UDP socket bound to the interface
//! receives them before the interface has an address.
//!
//! Renewal (RFC 2131 section 4.4.5) sends a REQUEST from the bound address:
//! unicast to the server at T1 ([`renew`] with `rebind: false`), broadcast to
//! any server at T2 (`rebind: true`); [`super::renew`] decides when.

use dhcproto::v4::{
    self, Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, MessageType, OptionCode,
};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub ntp: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
    pub lease_time: Option<Duration>,
    /// T1 (option 58), if the server gave one.
    pub renewal: Option<Duration>,
    /// T2 (option 59), if the server gave one.
    pub rebinding: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no DHCP offer on {interface} within {seconds} s")]
    NoOffer { interface: String, seconds: u64 },
    #[error("DHCP server {server} on {interface} did not acknowledge {address}")]
    NoAck {
        interface: String,
        server: Ipv4Addr,
        address: Ipv4Addr,
    },
    #[error("DHCP server {server} on {interface} refused {address} (NAK)")]
    Nak {
        interface: String,
        server: Ipv4Addr,
        address: Ipv4Addr,
    },
    #[error("DHCP on {interface}: {source}")]
    Socket {
        interface: String,
        source: std::io::Error,
    },
}

/// Runs the exchange on `interface` (up, with carrier) with hardware address `mac`.
pub fn acquire(interface: &str, mac: [u8; 6], timeout: Duration) -> Result<Lease, Error> {
    let io = |source| Error::Socket {
        interface: interface.into(),
        source,
    };
    let socket = client_socket(interface).map_err(io)?;
    let xid = new_xid(mac);
    let deadline = Instant::now() + timeout;
    let server_port = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);

    let offer = exchange(
        &socket,
        &discover(xid, mac),
        server_port,
        xid,
        MessageType::Offer,
        deadline,
    )
    .map_err(io)?
    .ok_or_else(|| Error::NoOffer {
        interface: interface.into(),
        seconds: timeout.as_secs(),
    })?;
    let offered = parse_lease(&offer).ok_or_else(|| Error::NoOffer {
        interface: interface.into(),
        seconds: timeout.as_secs(),
    })?;
    let ack = exchange(
        &socket,
        &request(xid, mac, &offered),
        server_port,
        xid,
        MessageType::Ack,
        deadline,
    )
    .map_err(io)?;
    if ack.as_ref().and_then(|m| m.opts().msg_type()) == Some(MessageType::Nak) {
        return Err(Error::Nak {
            interface: interface.into(),
            server: offered.server,
            address: offered.address,
        });
    }
    ack.as_ref().and_then(parse_lease).ok_or(Error::NoAck {
        interface: interface.into(),
        server: offered.server,
        address: offered.address,
    })
}

/// UDP port 68 on `interface`, allowed to broadcast.
fn client_socket(interface: &str) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind("0.0.0.0:68")?;
    socket.set_broadcast(true)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &interface.into(),
    )?;
    Ok(socket)
}

fn new_xid(mac: [u8; 6]) -> u32 {
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
        ^ std::process::id().rotate_left(16)
        ^ nanos()
}

/// Extends `lease` on `interface` (configured with it): a REQUEST from the
/// bound address, unicast to the server that granted it, or with `rebind`
/// broadcast to any server. Waits up to `timeout` for the ACK.
pub fn renew(
    interface: &str,
    mac: [u8; 6],
    lease: &Lease,
    rebind: bool,
    timeout: Duration,
) -> Result<Lease, Error> {
    let io = |source| Error::Socket {
        interface: interface.into(),
        source,
    };
    let socket = client_socket(interface).map_err(io)?;
    let to = if rebind {
        Ipv4Addr::BROADCAST
    } else {
        lease.server
    };
    renew_via(
        &socket,
        SocketAddrV4::new(to, 67),
        interface,
        mac,
        lease,
        timeout,
    )
}

/// [`renew`] on a given socket and server address (tests use loopback ports).
pub fn renew_via(
    socket: &UdpSocket,
    to: SocketAddrV4,
    interface: &str,
    mac: [u8; 6],
    lease: &Lease,
    timeout: Duration,
) -> Result<Lease, Error> {
    let xid = new_xid(mac);
    let reply = exchange(
        socket,
        &renewal_request(xid, mac, lease.address),
        to,
        xid,
        MessageType::Ack,
        Instant::now() + timeout,
    )
    .map_err(|source| Error::Socket {
        interface: interface.into(),
        source,
    })?;
    let refused = || Error::Nak {
        interface: interface.into(),
        server: lease.server,
        address: lease.address,
    };
    match reply {
        Some(m) if m.opts().msg_type() == Some(MessageType::Nak) => Err(refused()),
        Some(m) => parse_lease(&m).ok_or_else(refused),
        None => Err(Error::NoAck {
            interface: interface.into(),
            server: lease.server,
            address: lease.address,
        }),
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Sends `packet` (again every 2 s) until a reply of `want` (or a NAK) with
/// our `xid` arrives or the deadline passes.
fn exchange(
    socket: &UdpSocket,
    packet: &[u8],
    to: SocketAddrV4,
    xid: u32,
    want: MessageType,
    deadline: Instant,
) -> std::io::Result<Option<v4::Message>> {
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        socket.send_to(packet, to)?;
        let resend = (Instant::now() + Duration::from_secs(2)).min(deadline);
        while let Some(left) = resend
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        {
            socket.set_read_timeout(Some(left))?;
            let Some(n) = super::recv_or_timeout(socket, &mut buf)? else {
                break;
            };
            let Some(msg) = decode(&buf[..n]) else {
                continue;
            };
            let kind = msg.opts().msg_type();
            if msg.xid() == xid
                && msg.opcode() == v4::Opcode::BootReply
                && (kind == Some(want) || kind == Some(MessageType::Nak))
            {
                return Ok(Some(msg));
            }
        }
    }
    Ok(None)
}

/// A DHCP message, `None` for bytes that are not one (or that dhcproto would panic on).
pub fn decode(bytes: &[u8]) -> Option<v4::Message> {
    if !option_lengths_fit(bytes) {
        return None;
    }
    v4::Message::decode(&mut Decoder::new(bytes)).ok()
}

/// Whether the options dhcproto 0.15 takes to have a fixed length have it: it
/// `debug_assert!`s them (a debug build panics on a hostile reply, found by the
/// dhcp_reply fuzz target) and computes `len - 1` (option 151) and `len - 3` (81).
/// Consecutive options of one code are one option (RFC 3396), as dhcproto reads them.
fn option_lengths_fit(bytes: &[u8]) -> bool {
    let fits = |(code, len): (u8, usize)| match code {
        80 => len == 0,
        94 => len == 3,
        152..=155 => len == 4,
        81 => len >= 3,
        151 => len >= 1,
        _ => true,
    };
    let mut all_fit = true;
    let mut run: Option<(u8, usize)> = None;
    // Options start after the fixed fields and the magic cookie (RFC 2131 section 3).
    let mut at = 240;
    while let Some(&code) = bytes.get(at) {
        if let Some(done) = run.filter(|(c, _)| *c != code) {
            all_fit &= fits(done);
            run = None;
        }
        match code {
            0 => at += 1,
            255 => break,
            _ => {
                let Some(&len) = bytes.get(at + 1) else {
                    break;
                };
                let before = run.map_or(0, |(_, l)| l);
                run = Some((code, before + usize::from(len)));
                at += 2 + usize::from(len);
            }
        }
    }
    all_fit && run.is_none_or(fits)
}

const WANTED: [OptionCode; 7] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::NtpServers,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

fn base(xid: u32, mac: [u8; 6], kind: MessageType) -> v4::Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = v4::Message::new_with_id(xid, zero, zero, zero, zero, &mac);
    msg.set_flags(Flags::default().set_broadcast());
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    msg.opts_mut()
        .insert(DhcpOption::ParameterRequestList(WANTED.to_vec()));
    msg.opts_mut()
        .insert(DhcpOption::ClientIdentifier([&[1u8][..], &mac].concat()));
    msg
}

fn encode(msg: &v4::Message) -> Vec<u8> {
    let mut buf = Vec::new();
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("a DHCP message encodes");
    buf
}

pub fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    encode(&base(xid, mac, MessageType::Discover))
}

pub fn request(xid: u32, mac: [u8; 6], offer: &Lease) -> Vec<u8> {
    let mut msg = base(xid, mac, MessageType::Request);
    msg.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.address));
    msg.opts_mut()
        .insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&msg)
}

/// A REQUEST in the RENEWING or REBINDING state: `ciaddr` holds the bound
/// address, no requested-address or server-identifier option, and no
/// broadcast flag (the client can receive unicast now).
pub fn renewal_request(xid: u32, mac: [u8; 6], bound: Ipv4Addr) -> Vec<u8> {
    let mut msg = base(xid, mac, MessageType::Request);
    msg.set_flags(Flags::default());
    msg.set_ciaddr(bound);
    encode(&msg)
}

/// The lease an OFFER or ACK describes.
pub fn parse_lease(msg: &v4::Message) -> Option<Lease> {
    let opts = msg.opts();
    let address = msg.yiaddr();
    if address.is_unspecified() {
        return None;
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => u32::from(*mask).leading_ones() as u8,
        _ => 24,
    };
    let list = |code| match opts.get(code) {
        Some(
            DhcpOption::Router(v) | DhcpOption::DomainNameServer(v) | DhcpOption::NtpServers(v),
        ) => v.clone(),
        _ => Vec::new(),
    };
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => *s,
        _ => msg.siaddr(),
    };
    let seconds = |code| match opts.get(code) {
        Some(
            DhcpOption::AddressLeaseTime(t) | DhcpOption::Renewal(t) | DhcpOption::Rebinding(t),
        ) => Some(Duration::from_secs(u64::from(*t))),
        _ => None,
    };
    Some(Lease {
        address,
        prefix,
        gateway: list(OptionCode::Router).first().copied(),
        dns: list(OptionCode::DomainNameServer),
        ntp: list(OptionCode::NtpServers),
        server,
        lease_time: seconds(OptionCode::AddressLeaseTime),
        renewal: seconds(OptionCode::Renewal),
        rebinding: seconds(OptionCode::Rebinding),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn decode(bytes: &[u8]) -> v4::Message {
        v4::Message::decode(&mut Decoder::new(bytes)).unwrap()
    }

    #[test]
    fn discover_asks_for_a_broadcast_reply_and_the_options_we_use() {
        let msg = decode(&discover(7, MAC));
        assert_eq!(msg.xid(), 7);
        assert_eq!(msg.chaddr(), MAC);
        assert!(msg.flags().broadcast());
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        match msg.opts().get(OptionCode::ParameterRequestList) {
            Some(DhcpOption::ParameterRequestList(l)) => {
                assert!(l.contains(&OptionCode::DomainNameServer))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_offer_becomes_a_lease_and_the_request_names_it() {
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut offer = v4::Message::new_with_id(7, zero, [10, 0, 2, 15].into(), zero, zero, &MAC);
        offer.set_opcode(v4::Opcode::BootReply);
        let o = offer.opts_mut();
        o.insert(DhcpOption::MessageType(MessageType::Offer));
        o.insert(DhcpOption::SubnetMask([255, 255, 255, 0].into()));
        o.insert(DhcpOption::Router(vec![[10, 0, 2, 2].into()]));
        o.insert(DhcpOption::DomainNameServer(vec![[10, 0, 2, 3].into()]));
        o.insert(DhcpOption::ServerIdentifier([10, 0, 2, 2].into()));
        o.insert(DhcpOption::AddressLeaseTime(86400));
        let lease = parse_lease(&decode(&encode(&offer))).unwrap();
        assert_eq!(
            lease,
            Lease {
                address: [10, 0, 2, 15].into(),
                prefix: 24,
                gateway: Some([10, 0, 2, 2].into()),
                dns: vec![[10, 0, 2, 3].into()],
                ntp: vec![],
                server: [10, 0, 2, 2].into(),
                lease_time: Some(Duration::from_secs(86400)),
                renewal: None,
                rebinding: None,
            }
        );
        let req = decode(&request(7, MAC, &lease));
        assert_eq!(req.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            req.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress([10, 0, 2, 15].into()))
        );
        assert_eq!(
            req.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier([10, 0, 2, 2].into()))
        );
    }

    #[test]
    fn an_offer_without_an_address_is_no_lease() {
        let zero = Ipv4Addr::UNSPECIFIED;
        let msg = v4::Message::new_with_id(7, zero, zero, zero, zero, &MAC);
        assert_eq!(parse_lease(&msg), None);
    }

    #[test]
    fn a_renewal_request_comes_from_the_bound_address() {
        let msg = decode(&renewal_request(9, MAC, [10, 0, 2, 15].into()));
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(msg.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(!msg.flags().broadcast());
        assert_eq!(msg.opts().get(OptionCode::RequestedIpAddress), None);
        assert_eq!(msg.opts().get(OptionCode::ServerIdentifier), None);
    }

    fn lease(address: [u8; 4]) -> Lease {
        Lease {
            address: address.into(),
            prefix: 24,
            gateway: None,
            dns: vec![],
            ntp: vec![],
            server: [127, 0, 0, 1].into(),
            lease_time: Some(Duration::from_secs(600)),
            renewal: None,
            rebinding: None,
        }
    }

    /// A DHCP server on loopback that answers one REQUEST with `kind`,
    /// granting `grant` with T1 and T2; returns the request it saw.
    fn one_shot_server(
        kind: MessageType,
        grant: [u8; 4],
    ) -> (SocketAddrV4, std::thread::JoinHandle<v4::Message>) {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = server.local_addr().unwrap() else {
            unreachable!()
        };
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let req = decode(&buf[..n]);
            let zero = Ipv4Addr::UNSPECIFIED;
            let mut ack = v4::Message::new_with_id(req.xid(), zero, grant.into(), zero, zero, &MAC);
            ack.set_opcode(v4::Opcode::BootReply);
            let o = ack.opts_mut();
            o.insert(DhcpOption::MessageType(kind));
            o.insert(DhcpOption::ServerIdentifier([127, 0, 0, 1].into()));
            o.insert(DhcpOption::AddressLeaseTime(3600));
            o.insert(DhcpOption::Renewal(1000));
            o.insert(DhcpOption::Rebinding(3000));
            server.send_to(&encode(&ack), from).unwrap();
            req
        });
        (addr, t)
    }

    #[test]
    fn renewal_over_loopback_gets_the_new_lease() {
        let (server, t) = one_shot_server(MessageType::Ack, [10, 0, 2, 16]);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let old = lease([10, 0, 2, 15]);
        let new = renew_via(&client, server, "lo", MAC, &old, Duration::from_secs(3)).unwrap();
        let req = t.join().unwrap();
        assert_eq!(req.ciaddr(), old.address);
        assert_eq!(new.address, Ipv4Addr::new(10, 0, 2, 16));
        assert_eq!(new.lease_time, Some(Duration::from_secs(3600)));
        assert_eq!(new.renewal, Some(Duration::from_secs(1000)));
        assert_eq!(new.rebinding, Some(Duration::from_secs(3000)));
    }

    #[test]
    fn a_nak_to_a_renewal_is_an_error() {
        let (server, t) = one_shot_server(MessageType::Nak, [0, 0, 0, 0]);
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = renew_via(
            &client,
            server,
            "lo",
            MAC,
            &lease([10, 0, 2, 15]),
            Duration::from_secs(3),
        )
        .unwrap_err();
        t.join().unwrap();
        assert!(matches!(err, Error::Nak { .. }), "{err}");
    }
}
