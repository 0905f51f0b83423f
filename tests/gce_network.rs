//! The boot image on a network that answers DHCP as Google Compute Engine does: a /32
//! address whose gateway lies outside it, and classless static routes (option 121, RFC
//! 3442) naming the gateway on the link and the default route through it.
//!
//! The network is played here, frame by frame, on QEMU's UDP socket backend: it answers
//! DHCP and the ARP for the gateway, and watches for the client's first TCP SYN to the
//! agent (an address beyond the gateway), which must go to the gateway's MAC: the routes
//! are in place and work.

mod common;

use common::{Vm, need_qemu, out_dir};
use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, DhcpOptions, Encodable, Encoder, Message, MessageType, Opcode,
    OptionCode,
};
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 1);
const GATEWAY_MAC: [u8; 6] = [0x42, 0x01, 0x0a, 0x80, 0x00, 0x01];
const LEASED: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 5);
/// The agent: beyond the gateway (TEST-NET-1), never answering.
const AGENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// What the network saw.
#[derive(Debug, PartialEq)]
enum Seen {
    ArpForGateway,
    /// A TCP SYN to the agent, sent to this MAC.
    SynToAgent([u8; 6]),
}

/// Option 121 as GCE sends it: 10.128.0.1/32 on the link, 0.0.0.0/0 via 10.128.0.1.
fn gce_routes() -> DhcpOption {
    let mut wire = vec![121u8, 0, 32, 10, 128, 0, 1, 0, 0, 0, 0, 0, 10, 128, 0, 1];
    wire[1] = (wire.len() - 2) as u8;
    wire.push(255);
    DhcpOptions::decode(&mut Decoder::new(&wire))
        .unwrap()
        .get(OptionCode::ClasslessStaticRoute)
        .unwrap()
        .clone()
}

fn dhcp_reply(request: &Message, kind: MessageType) -> Vec<u8> {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(request.xid(), zero, LEASED, GATEWAY, zero, request.chaddr());
    m.set_opcode(Opcode::BootReply);
    m.set_flags(request.flags());
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ServerIdentifier(GATEWAY));
    o.insert(DhcpOption::SubnetMask(Ipv4Addr::BROADCAST));
    // A router the client must ignore: option 121 is there (RFC 3442).
    o.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 128, 0, 254)]));
    o.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
        169, 254, 169, 254,
    )]));
    o.insert(DhcpOption::AddressLeaseTime(86400));
    o.insert(gce_routes());
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame from the gateway holding a UDP datagram 67 -> 68, broadcast.
fn udp_broadcast(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend([0xff; 6]);
    f.extend(GATEWAY_MAC);
    f.extend([0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend(GATEWAY.octets());
    ip.extend(Ipv4Addr::BROADCAST.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend(ip);
    f.extend(67u16.to_be_bytes());
    f.extend(68u16.to_be_bytes());
    f.extend((8 + payload.len() as u16).to_be_bytes());
    f.extend([0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend(payload);
    f
}

/// The ARP reply of the gateway to `request` (an ARP request frame).
fn arp_reply(request: &[u8]) -> Vec<u8> {
    let (sender_mac, sender_ip) = (&request[22..28], &request[28..32]);
    let mut f = Vec::new();
    f.extend(sender_mac);
    f.extend(GATEWAY_MAC);
    f.extend([0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend(GATEWAY_MAC);
    f.extend(GATEWAY.octets());
    f.extend(sender_mac);
    f.extend(sender_ip);
    f
}

/// Plays GCE's network on `socket` (QEMU's peer) until the test ends.
fn play(socket: UdpSocket) -> Receiver<Seen> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, guest)) = socket.recv_from(&mut buf) else {
                return;
            };
            let frame = &buf[..n];
            if n < 42 {
                continue;
            }
            let reply = match [frame[12], frame[13]] {
                // ARP request for the gateway.
                [0x08, 0x06] if frame[21] == 1 && frame[38..42] == GATEWAY.octets() => {
                    let _ = tx.send(Seen::ArpForGateway);
                    Some(arp_reply(frame))
                }
                [0x08, 0x00] => {
                    let ip = &frame[14..];
                    let header = usize::from(ip[0] & 0x0f) * 4;
                    let (proto, dst) = (ip[9], &ip[16..20]);
                    let l4 = &ip[header..];
                    if proto == 17 && l4[2..4] == 67u16.to_be_bytes() {
                        let request = Message::decode(&mut Decoder::new(&l4[8..])).unwrap();
                        match request.opts().msg_type() {
                            Some(MessageType::Discover) => {
                                Some(udp_broadcast(&dhcp_reply(&request, MessageType::Offer)))
                            }
                            Some(MessageType::Request) => {
                                Some(udp_broadcast(&dhcp_reply(&request, MessageType::Ack)))
                            }
                            _ => None,
                        }
                    } else {
                        if proto == 6 && dst == AGENT.octets() && l4[13] & 0x02 != 0 {
                            let _ = tx.send(Seen::SynToAgent(frame[..6].try_into().unwrap()));
                        }
                        None
                    }
                }
                _ => None,
            };
            if let Some(reply) = reply {
                socket.send_to(&reply, guest).unwrap();
            }
        }
    });
    rx
}

#[test]
#[ignore = "boots QEMU: scripts/test.sh runs it (apt-get install qemu-system-x86 ovmf)"]
fn a_gce_lease_routes_through_a_gateway_outside_the_address() {
    need_qemu();
    let network = UdpSocket::bind("127.0.0.1:0").unwrap();
    let guest_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let netdev = format!(
        "socket,id=gce,udp={},localaddr=127.0.0.1:{guest_port}",
        network.local_addr().unwrap()
    );
    let seen = play(network);
    let cmdline = format!(
        "console=ttyS0 failback.progress=json failback.after=poweroff failback.unattended=1 \
         failback.source=https://{AGENT}:1500 failback.token=0123456789abcdef0123 \
         failback.fingerprint={}",
        "ab".repeat(32)
    );
    let mut vm: Vm = common::boot_kernel(
        &out_dir(),
        &cmdline,
        &[
            "-device",
            "virtio-rng-pci",
            "-netdev",
            &netdev,
            "-device",
            "virtio-net-pci,netdev=gce",
        ],
    );
    // The client reaches for the agent (the clock from its Date) through the gateway.
    let mut arp = false;
    let syn_to = loop {
        match seen.recv_timeout(Duration::from_secs(240)) {
            Ok(Seen::ArpForGateway) => arp = true,
            Ok(Seen::SynToAgent(mac)) => break mac,
            Err(e) => panic!("no SYN to the agent ({e}); console:\n{}", vm.log()),
        }
    };
    assert!(arp, "the gateway was asked for on the link");
    assert_eq!(syn_to, GATEWAY_MAC, "the SYN goes to the gateway");
    let (net, _) = vm.event("network", Duration::from_secs(120));
    assert_eq!(net["address"], "10.128.0.5/32", "{net}");
    assert_eq!(
        net["gateway"], "10.128.0.1",
        "option 121 over option 3: {net}"
    );
}
