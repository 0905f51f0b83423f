//! The IPv4 routes a DHCP lease (or a static configuration) asks for.
//!
//! RFC 3442: when the server sends classless static routes (option 121) the client uses
//! them and ignores the routers of option 3; a route whose router is 0.0.0.0 is on the link.
//! A gateway outside the address's subnet (GCE leases a /32 whose gateway is, say,
//! 10.128.0.1) is first given a host route on the link, else the kernel refuses routes
//! through it as unreachable.

use dhcproto::v4::{DhcpOption, DhcpOptions, OptionCode};
use std::net::Ipv4Addr;

/// A route on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    /// `None`: the destination is on the link.
    pub gateway: Option<Ipv4Addr>,
}

impl Route {
    fn on_link(host: Ipv4Addr) -> Self {
        Route {
            destination: host,
            prefix: 32,
            gateway: None,
        }
    }

    fn default_via(gateway: Ipv4Addr) -> Self {
        Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(gateway),
        }
    }
}

/// The classless static routes of option 121 (empty when the server sent none).
pub fn classless(opts: &DhcpOptions) -> Vec<Route> {
    match opts.get(OptionCode::ClasslessStaticRoute) {
        Some(DhcpOption::ClasslessStaticRoute(routes)) => routes
            .iter()
            .map(|(net, router)| Route {
                destination: net.network(),
                prefix: net.prefix_len(),
                gateway: (!router.is_unspecified()).then_some(*router),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn in_subnet(host: Ipv4Addr, address: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(host) & mask == u32::from(address) & mask
}

/// The routes to add, in order, for `address/prefix` with `router` (option 3, or the
/// static gateway) and the `classless` routes of option 121: on-link routes first (those
/// asked for, and one to each gateway outside the subnet), then the routes through gateways.
pub fn plan(
    address: Ipv4Addr,
    prefix: u8,
    router: Option<Ipv4Addr>,
    classless: &[Route],
) -> Vec<Route> {
    let wanted: Vec<Route> = if classless.is_empty() {
        router.map(Route::default_via).into_iter().collect()
    } else {
        classless.to_vec()
    };
    let mut on_link: Vec<Route> = Vec::new();
    let mut via: Vec<Route> = Vec::new();
    for route in wanted {
        match route.gateway {
            None => on_link.push(route),
            Some(gateway) => {
                if !in_subnet(gateway, address, prefix) {
                    on_link.push(Route::on_link(gateway));
                }
                via.push(route);
            }
        }
    }
    let mut out: Vec<Route> = Vec::new();
    for route in on_link.into_iter().chain(via) {
        if !out.contains(&route) {
            out.push(route);
        }
    }
    out
}

/// Adds `routes` on interface `name`, in order.
pub fn add(name: &str, routes: &[Route]) -> Result<(), String> {
    for r in routes {
        super::ioctl::add_route(name, r).map_err(|e| {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            format!(
                "{name}: cannot add the route to {}/{}{via}: {e}",
                r.destination, r.prefix
            )
        })?;
    }
    Ok(())
}

/// The gateway of the default route among `routes`, if any (for the operator).
pub fn default_gateway(routes: &[Route]) -> Option<Ipv4Addr> {
    routes
        .iter()
        .find(|r| r.prefix == 0)
        .and_then(|r| r.gateway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::{Decodable, Decoder};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn route(destination: &str, prefix: u8, gateway: Option<&str>) -> Route {
        Route {
            destination: ip(destination),
            prefix,
            gateway: gateway.map(ip),
        }
    }

    #[test]
    fn a_gateway_in_the_subnet_is_just_the_default_route() {
        let routes = plan(ip("10.0.2.15"), 24, Some(ip("10.0.2.2")), &[]);
        assert_eq!(routes, [route("0.0.0.0", 0, Some("10.0.2.2"))]);
    }

    #[test]
    fn a_slash_32_lease_gets_an_on_link_route_to_its_gateway_first() {
        // GCE: 10.128.0.5/32, router 10.128.0.1.
        let routes = plan(ip("10.128.0.5"), 32, Some(ip("10.128.0.1")), &[]);
        assert_eq!(
            routes,
            [
                route("10.128.0.1", 32, None),
                route("0.0.0.0", 0, Some("10.128.0.1")),
            ]
        );
        assert_eq!(default_gateway(&routes), Some(ip("10.128.0.1")));
    }

    #[test]
    fn classless_routes_replace_the_routers_option() {
        // RFC 3442: with option 121 the client ignores option 3 (here a wrong router).
        let classless = [
            route("0.0.0.0", 0, Some("10.128.0.1")),
            route("10.128.0.0", 20, None),
            route("192.168.7.0", 24, Some("10.128.0.9")),
        ];
        let routes = plan(ip("10.128.0.5"), 32, Some(ip("10.128.0.254")), &classless);
        assert_eq!(
            routes,
            [
                route("10.128.0.1", 32, None),
                route("10.128.0.0", 20, None),
                route("10.128.0.9", 32, None),
                route("0.0.0.0", 0, Some("10.128.0.1")),
                route("192.168.7.0", 24, Some("10.128.0.9")),
            ]
        );
        assert_eq!(default_gateway(&routes), Some(ip("10.128.0.1")));
    }

    #[test]
    fn no_router_and_no_routes_is_no_route() {
        assert_eq!(plan(ip("10.0.0.5"), 24, None, &[]), []);
    }

    /// Option 121 as RFC 3442 encodes it (width, significant octets of the destination,
    /// router): 0.0.0.0/0 via 10.128.0.1; 10.128.0.1/32 via 0.0.0.0 (on the link).
    fn gce_option_121() -> DhcpOptions {
        let mut wire = vec![121u8, 0, 0, 10, 128, 0, 1, 32, 10, 128, 0, 1, 0, 0, 0, 0];
        wire[1] = (wire.len() - 2) as u8;
        wire.push(255);
        DhcpOptions::decode(&mut Decoder::new(&wire)).unwrap()
    }

    #[test]
    fn option_121_is_read_from_its_wire_form() {
        let opts = gce_option_121();
        assert_eq!(
            classless(&opts),
            [
                route("0.0.0.0", 0, Some("10.128.0.1")),
                route("10.128.0.1", 32, None),
            ]
        );
    }

    #[test]
    fn a_gce_ack_gives_a_slash_32_and_routes_through_the_gateway_outside_it() {
        use crate::net::dhcp::parse_lease;
        use dhcproto::v4::{DhcpOption, Encodable, Encoder, Message, MessageType};
        // The ACK of GCE's metadata server: 255.255.255.255 mask, router 10.128.0.1,
        // and option 121. Sent on the wire and read back, as the client gets it.
        let zero = Ipv4Addr::UNSPECIFIED;
        let mut ack = Message::new_with_id(1, zero, ip("10.128.0.5"), zero, zero, &[2; 6]);
        let opts = ack.opts_mut();
        opts.insert(DhcpOption::MessageType(MessageType::Ack));
        opts.insert(DhcpOption::ServerIdentifier(ip("169.254.169.254")));
        opts.insert(DhcpOption::SubnetMask(ip("255.255.255.255")));
        opts.insert(DhcpOption::Router(vec![ip("10.128.0.1")]));
        opts.insert(
            gce_option_121()
                .get(OptionCode::ClasslessStaticRoute)
                .unwrap()
                .clone(),
        );
        let mut wire = Vec::new();
        ack.encode(&mut Encoder::new(&mut wire)).unwrap();
        let lease = parse_lease(&Message::decode(&mut Decoder::new(&wire)).unwrap()).unwrap();
        assert_eq!((lease.address, lease.prefix), (ip("10.128.0.5"), 32));
        assert_eq!(
            plan(lease.address, lease.prefix, lease.gateway, &lease.routes),
            [
                route("10.128.0.1", 32, None),
                route("0.0.0.0", 0, Some("10.128.0.1")),
            ]
        );
    }
}
