//! DHCPv4 client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK on one interface.
//! Packets are made and read by `dhcproto`; the replies are asked to be
//! broadcast (flag 0x8000) so that a plain UDP socket bound to the interface
//! receives them before the interface has an address.

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
    let socket = UdpSocket::bind("0.0.0.0:68").map_err(io)?;
    socket.set_broadcast(true).map_err(io)?;
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::BindToDevice,
        &interface.into(),
    )
    .map_err(|e| io(e.into()))?;
    let xid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
        ^ std::process::id().rotate_left(16)
        ^ nanos();
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
    ack.as_ref().and_then(parse_lease).ok_or(Error::NoAck {
        interface: interface.into(),
        server: offered.server,
        address: offered.address,
    })
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// Sends `packet` (again every 2 s) until a reply of `want` with our `xid`
/// arrives or the deadline passes.
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
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            };
            let Ok(msg) = v4::Message::decode(&mut Decoder::new(&buf[..n])) else {
                continue;
            };
            if msg.xid() == xid
                && msg.opcode() == v4::Opcode::BootReply
                && msg.opts().msg_type() == Some(want)
            {
                return Ok(Some(msg));
            }
        }
    }
    Ok(None)
}

const WANTED: [OptionCode; 5] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::NtpServers,
    OptionCode::AddressLeaseTime,
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
    let lease_time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Some(Duration::from_secs(u64::from(*t))),
        _ => None,
    };
    Some(Lease {
        address,
        prefix,
        gateway: list(OptionCode::Router).first().copied(),
        dns: list(OptionCode::DomainNameServer),
        ntp: list(OptionCode::NtpServers),
        server,
        lease_time,
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
}
