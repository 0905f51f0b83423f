//! SNTP (RFC 4330): one query to a server given by address or by name.

use super::Error;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX: i64 = 2_208_988_800;
/// Length of an SNTP packet without extensions (RFC 4330 section 4).
pub const PACKET: usize = 48;

/// An NTP timestamp: seconds since 1900 in 32.32 fixed point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub fn from_system(t: SystemTime) -> Self {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                // Before 1970: only a broken clock; keep the arithmetic sane.
                let d = e.duration();
                (-(d.as_secs() as i64), 0)
            }
        };
        let ntp = (secs + NTP_UNIX) as u64 & 0xffff_ffff;
        let frac = (u64::from(nanos) << 32) / 1_000_000_000;
        Timestamp((ntp << 32) | frac)
    }

    /// Seconds since the Unix epoch. Era per RFC 4330 section 3: a timestamp
    /// with the top bit clear is after 2036 (era 1).
    pub fn unix_seconds(self) -> f64 {
        let secs = (self.0 >> 32) as i64;
        let era = if secs & 0x8000_0000 == 0 {
            1i64 << 32
        } else {
            0
        };
        let frac = (self.0 & 0xffff_ffff) as f64 / 4_294_967_296.0;
        (secs + era - NTP_UNIX) as f64 + frac
    }
}

fn read_ts(buf: &[u8], at: usize) -> Timestamp {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    Timestamp(u64::from_be_bytes(b))
}

/// A client request: LI 0, version 4, mode 3 (client), our clock in the
/// transmit timestamp (the server echoes it as the originate timestamp).
pub fn request(transmit: Timestamp) -> [u8; PACKET] {
    let mut p = [0u8; PACKET];
    p[0] = (4 << 3) | 3;
    p[40..48].copy_from_slice(&transmit.0.to_be_bytes());
    p
}

/// The server's receive (T2) and transmit (T3) timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub receive: Timestamp,
    pub transmit: Timestamp,
}

/// Checks an answer against RFC 4330 section 5 and returns its timestamps.
pub fn parse_reply(buf: &[u8], sent: Timestamp) -> Result<Reply, &'static str> {
    if buf.len() < PACKET {
        return Err("shorter than 48 bytes");
    }
    let (leap, version, mode) = (buf[0] >> 6, (buf[0] >> 3) & 7, buf[0] & 7);
    if mode != 4 {
        return Err("not a server reply (mode 4)");
    }
    if !(1..=4).contains(&version) {
        return Err("unknown NTP version");
    }
    if leap == 3 {
        return Err("the server's clock is not synchronized (leap indicator 3)");
    }
    match buf[1] {
        0 => return Err("kiss-o'-death (stratum 0)"),
        16.. => return Err("unsynchronized stratum"),
        _ => {}
    }
    if read_ts(buf, 24) != sent {
        return Err("originate timestamp is not the one sent");
    }
    let reply = Reply {
        receive: read_ts(buf, 32),
        transmit: read_ts(buf, 40),
    };
    if reply.transmit.0 == 0 {
        return Err("no transmit timestamp");
    }
    Ok(reply)
}

/// Clock offset (RFC 4330 section 5): ((T2 - T1) + (T3 - T4)) / 2, in seconds;
/// positive when the local clock is behind.
pub fn offset(t1: f64, reply: Reply, t4: f64) -> f64 {
    ((reply.receive.unix_seconds() - t1) + (reply.transmit.unix_seconds() - t4)) / 2.0
}

/// Asks `server` for the time (three tries within `timeout`); returns the
/// offset of the local clock in seconds.
pub fn query(server: SocketAddr, timeout: Duration) -> Result<f64, Error> {
    let io = |source| Error::Io { server, source };
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = UdpSocket::bind(bind).map_err(io)?;
    socket.connect(server).map_err(io)?;
    socket.set_read_timeout(Some(timeout / 3)).map_err(io)?;
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        let sent = Timestamp::from_system(SystemTime::now());
        socket.send(&request(sent)).map_err(io)?;
        let Some(n) = crate::net::recv_or_timeout(&socket, &mut buf).map_err(io)? else {
            continue;
        };
        let t4 = Timestamp::from_system(SystemTime::now()).unix_seconds();
        let reply = parse_reply(&buf[..n], sent).map_err(|why| Error::Bad { server, why })?;
        return Ok(offset(sent.unix_seconds(), reply, t4));
    }
    Err(Error::NoAnswer {
        server,
        seconds: timeout.as_secs(),
    })
}

/// `HOST[:PORT]` of an NTP server (port 123 by default); IP addresses only,
/// since name resolution may itself need the network configured first.
pub fn server_address(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| SocketAddr::new(ip, 123))
        })
        .map_err(|_| {
            format!(
                "NTP server {text:?} is not an IP address: use ADDR or ADDR:PORT (e.g. 192.0.2.1)"
            )
        })
}

/// An NTP server as given: an address, or a host name to look up, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    Address(SocketAddr),
    Name(String, u16),
}

impl Server {
    /// Reads `ADDR`, `ADDR:PORT`, `[V6]:PORT`, `NAME` or `NAME:PORT` (port 123 unless given).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(addr) = server_address(text) {
            return Ok(Server::Address(addr));
        }
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => {
                let port = port
                    .parse()
                    .map_err(|_| format!("NTP server {text:?}: {port:?} is not a port"))?;
                (name, port)
            }
            None => (text, 123),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "NTP server {text:?} is neither an IP address nor a host name: use ADDR[:PORT] or NAME[:PORT]"
            ));
        }
        Ok(Server::Name(name.to_ascii_lowercase(), port))
    }

    /// The server's address: a name is looked up with the DNS servers `dns` gives
    /// (IPv4 preferred, as the network is configured over IPv4), within `timeout`.
    pub fn resolve(
        &self,
        dns: impl FnOnce() -> Result<hickory_resolver::config::ResolverConfig, String>,
        timeout: Duration,
    ) -> Result<SocketAddr, String> {
        let (name, port) = match self {
            Server::Address(addr) => return Ok(*addr),
            Server::Name(name, port) => (name, *port),
        };
        let dns = dns()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot look up NTP server {name}: {e}"))?;
        let mut builder = hickory_resolver::Resolver::builder_with_config(
            dns,
            hickory_resolver::name_server::TokioConnectionProvider::default(),
        );
        builder.options_mut().timeout = timeout;
        builder.options_mut().attempts = 1;
        let resolver = builder.build();
        // A bare name is not completed with search domains: `ntp` is taken as `ntp.`.
        let fqdn = format!("{name}.");
        let found = runtime
            .block_on(async {
                tokio::time::timeout(timeout, resolver.lookup_ip(fqdn.as_str())).await
            })
            .map_err(|_| format!("NTP server {name}: no DNS answer within {timeout:?}"))?
            .map_err(|e| format!("NTP server {name}: DNS lookup failed: {e}"))?;
        let ips: Vec<_> = found.iter().collect();
        ips.iter()
            .find(|ip| ip.is_ipv4())
            .or(ips.first())
            .map(|ip| SocketAddr::new(*ip, port))
            .ok_or_else(|| format!("NTP server {name}: DNS has no address for it"))
    }
}

/// The DNS servers of /etc/resolv.conf (written when the network came up).
pub fn system_dns() -> Result<hickory_resolver::config::ResolverConfig, String> {
    hickory_resolver::system_conf::read_system_conf()
        .map(|(config, _)| config)
        .map_err(|e| format!("cannot read /etc/resolv.conf to look up the NTP server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::clock::at;

    #[test]
    fn timestamps_convert_both_ways_and_across_the_2036_era() {
        // 2026-01-01T00:00:00Z
        let t = Timestamp::from_system(at(1_767_225_600));
        assert_eq!(t.0 >> 32, 1_767_225_600 + 2_208_988_800);
        assert_eq!(t.unix_seconds(), 1_767_225_600.0);
        // 2040-01-01 is in era 1: the 32-bit seconds wrapped.
        let t = Timestamp::from_system(at(2_208_988_800));
        assert!(t.0 >> 32 < 0x8000_0000);
        assert_eq!(t.unix_seconds(), 2_208_988_800.0);
        // Half a second is half of 2^32 in the fraction.
        let t = Timestamp::from_system(at(1_000_000_000) + Duration::from_millis(500));
        assert_eq!(t.0 & 0xffff_ffff, 1 << 31);
    }

    #[test]
    fn the_request_is_a_version_4_client_packet_with_our_time() {
        let sent = Timestamp(0x0123_4567_89ab_cdef);
        let p = request(sent);
        assert_eq!(p.len(), 48);
        assert_eq!(p[0], 0x23, "LI 0, VN 4, mode 3");
        assert!(p[1..40].iter().all(|&b| b == 0));
        assert_eq!(&p[40..], &0x0123_4567_89ab_cdefu64.to_be_bytes());
    }

    fn reply(sent: Timestamp, receive: Timestamp, transmit: Timestamp) -> [u8; 48] {
        let mut p = [0u8; 48];
        p[0] = (4 << 3) | 4;
        p[1] = 2;
        p[24..32].copy_from_slice(&sent.0.to_be_bytes());
        p[32..40].copy_from_slice(&receive.0.to_be_bytes());
        p[40..48].copy_from_slice(&transmit.0.to_be_bytes());
        p
    }

    #[test]
    fn a_reply_gives_the_offset_and_bad_replies_are_refused() {
        let t1 = Timestamp::from_system(at(978_307_200)); // 2001-01-01, the wrong clock
        let t2 = Timestamp::from_system(at(1_767_225_600));
        let t3 = Timestamp::from_system(at(1_767_225_601));
        let p = reply(t1, t2, t3);
        let r = parse_reply(&p, t1).unwrap();
        // Two seconds on our clock between sending and receiving.
        let off = offset(t1.unix_seconds(), r, 978_307_202.0);
        assert_eq!(off, (1_767_225_600.0 - 978_307_200.0) - 0.5);

        assert_eq!(parse_reply(&p[..47], t1), Err("shorter than 48 bytes"));
        assert!(parse_reply(&p, Timestamp(5)).is_err(), "originate mismatch");
        let mut kod = p;
        kod[1] = 0;
        assert!(parse_reply(&kod, t1).is_err());
        let mut client = p;
        client[0] = 0x23;
        assert!(parse_reply(&client, t1).is_err());
        let mut unsync = p;
        unsync[0] |= 0xc0;
        assert!(parse_reply(&unsync, t1).is_err());
    }

    #[test]
    fn servers_are_addresses_or_host_names() {
        let addr = |s: &str| Server::Address(s.parse().unwrap());
        assert_eq!(Server::parse("192.0.2.1"), Ok(addr("192.0.2.1:123")));
        assert_eq!(Server::parse("192.0.2.1:1123"), Ok(addr("192.0.2.1:1123")));
        assert_eq!(
            Server::parse("[2001:db8::1]:124"),
            Ok(addr("[2001:db8::1]:124"))
        );
        assert_eq!(
            Server::parse("NTP.corp-1.example."),
            Ok(Server::Name("ntp.corp-1.example".into(), 123))
        );
        assert_eq!(
            Server::parse("pool.ntp.org:1123"),
            Ok(Server::Name("pool.ntp.org".into(), 1123))
        );
        for bad in ["pool_1", "a..b", "-a.example", "ntp:port", "", "a b"] {
            assert!(Server::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// A DNS server on 127.0.0.1 answering every A question with 192.0.2.7.
    fn dns_server() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                // Header (12 bytes), then the question: name labels, 0, type, class.
                let mut end = 12;
                while end < n && buf[end] != 0 {
                    end += 1 + buf[end] as usize;
                }
                let question = &buf[12..end + 5];
                let is_a = question[question.len() - 4..question.len() - 2] == [0, 1];
                let mut reply = buf[..2].to_vec(); // the query's id
                reply.extend([0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
                reply.extend(question);
                if is_a {
                    // Name (a pointer to the question's), A, IN, TTL 60, 4 bytes.
                    reply.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
                }
                let _ = socket.send_to(&reply, from);
            }
        });
        addr
    }

    #[test]
    fn a_host_name_is_looked_up_in_dns() {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        // The DNS server at `at` alone, as resolv.conf would give it.
        let dns_at = |at: SocketAddr| {
            move || {
                let mut c = ResolverConfig::new();
                c.add_name_server(NameServerConfig::new(
                    at,
                    hickory_resolver::proto::xfer::Protocol::Udp,
                ));
                Ok(c)
            }
        };
        let server = Server::parse("ntp.failback.test:1123").unwrap();
        let got = server.resolve(dns_at(dns_server()), Duration::from_secs(3));
        assert_eq!(got, Ok("192.0.2.7:1123".parse().unwrap()));
        // An address needs no DNS at all.
        let none = || Err("no DNS here".to_string());
        let addr = Server::parse("192.0.2.9").unwrap();
        assert_eq!(
            addr.resolve(none, Duration::from_secs(1)),
            Ok("192.0.2.9:123".parse().unwrap())
        );
        // No server answering: a clear error, in time.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let quiet = silent.local_addr().unwrap();
        let started = std::time::Instant::now();
        let err = server
            .resolve(dns_at(quiet), Duration::from_millis(500))
            .unwrap_err();
        assert!(err.contains("ntp.failback.test"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn query_asks_a_server_on_loopback() {
        // A server 1000 s ahead of us, answering once.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 48];
            let (n, from) = server.recv_from(&mut buf).unwrap();
            assert_eq!(n, 48);
            assert_eq!(buf[0] & 7, 3, "a client request");
            let sent = read_ts(&buf, 40);
            let now = SystemTime::now() + Duration::from_secs(1000);
            let ts = Timestamp::from_system(now);
            server.send_to(&reply(sent, ts, ts), from).unwrap();
        });
        let off = query(addr, Duration::from_secs(3)).unwrap();
        t.join().unwrap();
        assert!((off - 1000.0).abs() < 0.5, "offset {off}");
    }

    #[test]
    fn query_of_a_silent_server_fails_in_time() {
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let started = std::time::Instant::now();
        let err = query(silent.local_addr().unwrap(), Duration::from_millis(600)).unwrap_err();
        assert!(matches!(err, Error::NoAnswer { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn server_addresses_are_ip_addresses_with_port_123_by_default() {
        assert_eq!(
            server_address("10.0.2.2").unwrap(),
            "10.0.2.2:123".parse().unwrap()
        );
        assert_eq!(
            server_address("10.0.2.2:1123").unwrap(),
            "10.0.2.2:1123".parse().unwrap()
        );
        assert!(
            server_address("pool.ntp.org")
                .unwrap_err()
                .contains("ADDR:PORT")
        );
    }
}
