//! Whether a peer's address is on one of this host's own subnets: a second way, beside
//! mDNS, to know a peer is on the LAN.
//!
//! mDNS finds peers one way round: a node that starts queries, the others answer, so the
//! newcomer learns of them at once, but they learn of the newcomer only at their own next
//! query (libp2p-mdns backs off to one query every few minutes). Meanwhile the newcomer
//! dials them, and the connection's remote address is on their subnet: that is as good a
//! sign of "same LAN" as mDNS, and it is there on the first connection. Loopback does not
//! count (every process on the host shares it).

use std::net::IpAddr;

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// Whether `addr`'s IP is on a subnet of one of this host's interfaces (not loopback).
pub fn on_local_subnet(addr: &Multiaddr) -> bool {
    let Some(ip) = ip_of(addr) else {
        return false;
    };
    if ip.is_loopback() || ip.is_unspecified() {
        return false;
    }
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return false;
    };
    interfaces
        .iter()
        .filter(|i| !i.is_loopback())
        .any(|i| match &i.addr {
            if_addrs::IfAddr::V4(a) => within(ip, IpAddr::V4(a.ip), IpAddr::V4(a.netmask)),
            if_addrs::IfAddr::V6(a) => within(ip, IpAddr::V6(a.ip), IpAddr::V6(a.netmask)),
        })
}

/// The first IP address in `addr`.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Whether `ip` is in the subnet of `own` with `netmask` (same family only).
fn within(ip: IpAddr, own: IpAddr, netmask: IpAddr) -> bool {
    match (ip, own, netmask) {
        (IpAddr::V4(ip), IpAddr::V4(own), IpAddr::V4(mask)) => {
            let m = u32::from(mask);
            m != 0 && u32::from(ip) & m == u32::from(own) & m
        }
        (IpAddr::V6(ip), IpAddr::V6(own), IpAddr::V6(mask)) => {
            let m = u128::from(mask);
            m != 0 && u128::from(ip) & m == u128::from(own) & m
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_within_its_subnet_only() {
        let (own, mask) = (v4("10.77.0.2"), v4("255.255.255.0"));
        assert!(within(v4("10.77.0.1"), own, mask));
        assert!(within(v4("10.77.0.254"), own, mask));
        assert!(!within(v4("10.78.0.2"), own, mask));
        // A zero mask (a point-to-point or odd interface) matches nothing.
        assert!(!within(v4("10.78.0.2"), own, v4("0.0.0.0")));
        assert!(!within("fe80::1".parse().unwrap(), own, mask));
        let (own6, mask6): (IpAddr, IpAddr) = (
            "fe80::2".parse().unwrap(),
            "ffff:ffff:ffff:ffff::".parse().unwrap(),
        );
        assert!(within("fe80::1".parse().unwrap(), own6, mask6));
        assert!(!within("2001:db8::1".parse().unwrap(), own6, mask6));
    }

    #[test]
    fn loopback_and_addresses_without_an_ip_are_not_lan() {
        assert!(!on_local_subnet(
            &"/ip4/127.0.0.1/tcp/4001".parse().unwrap()
        ));
        assert!(!on_local_subnet(&"/ip6/::1/tcp/4001".parse().unwrap()));
        assert!(!on_local_subnet(
            &"/dns4/example.org/tcp/4001".parse().unwrap()
        ));
    }

    #[test]
    fn a_neighbour_on_this_hosts_own_subnet_is_lan() {
        // Take this host's first non-loopback IPv4 interface, if it has one.
        let Some((ip, mask)) = if_addrs::get_if_addrs()
            .unwrap()
            .into_iter()
            .filter(|i| !i.is_loopback())
            .find_map(|i| match i.addr {
                if_addrs::IfAddr::V4(a) if a.prefixlen > 0 && a.prefixlen < 31 => {
                    Some((a.ip, a.netmask))
                }
                _ => None,
            })
        else {
            eprintln!("no IPv4 interface besides loopback: nothing to check");
            return;
        };
        // The neighbour: another host number in the same subnet.
        let host = u32::from(ip) & !u32::from(mask);
        let other = (u32::from(ip) & u32::from(mask)) | if host == 1 { 2 } else { 1 };
        let addr: Multiaddr = format!("/ip4/{}/tcp/4001", std::net::Ipv4Addr::from(other))
            .parse()
            .unwrap();
        assert!(on_local_subnet(&addr), "{addr} is on {ip}/{mask}");
        // An address outside every subnet of the host (TEST-NET-3).
        assert!(!on_local_subnet(
            &"/ip4/203.0.113.7/tcp/4001".parse().unwrap()
        ));
    }
}
