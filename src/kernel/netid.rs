//! Canonical identities of network destinations, so a rule about a host holds for every
//! spelling of it. Pure: resolution and the local host's names come from the net provider.
//!
//! A `net:` name is `HOST` or `HOST:PORT`, where HOST is a DNS name, a dotted IPv4 address,
//! a bracketed IPv6 address, or an address class: `loopback` (this machine: `localhost`,
//! `*.localhost`, 127.0.0.0/8, `::1`, `0.0.0.0`, `::`, the machine's own addresses and host
//! name), `private` (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), `link_local`
//! (169.254/16, fe80::/10) or `metadata` (169.254.169.254, fd00:ec2::254). Names are compared
//! in canonical form: lower case, no trailing dot, IPv4-mapped IPv6 as IPv4, and every name
//! of this machine as `loopback`. A request is checked under all of its identities — the host
//! as written, every address it resolved to, and their classes — so `net:localhost` and
//! `net:127.0.0.1` both stop `http://[::ffff:127.0.0.1]/`, `http://0x7f000001/` and the
//! machine's host name.

use std::borrow::Cow;
// `core::net`: address values only; this module performs no I/O.
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The address classes a capability may name.
pub const CLASSES: [&str; 4] = ["loopback", "private", "link_local", "metadata"];

/// What the net provider knows about this machine: its host name and interface addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalHost {
    pub name: Option<String>,
    pub addrs: Vec<IpAddr>,
}

/// Splits `name` into host and optional port text (`[v6]:port`, `host:port`, `host`).
fn split_host_port(name: &str) -> (&str, Option<&str>) {
    if name.starts_with('[') {
        if let Some(end) = name.find(']') {
            let (host, rest) = name.split_at(end + 1);
            return (host, rest.strip_prefix(':'));
        }
        return (name, None);
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (name, None),
    }
}

/// The IP address a host string spells, if it is an address literal.
fn ip_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// An address with an IPv4-mapped IPv6 address written as IPv4.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_this_machine(ip: IpAddr) -> bool {
    let ip = unmapped(ip);
    ip.is_loopback() || ip.is_unspecified()
}

/// The canonical text of an address: `loopback` for this machine, IPv6 in brackets.
fn canonical_ip(ip: IpAddr) -> String {
    match unmapped(ip) {
        ip if is_this_machine(ip) => "loopback".into(),
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The canonical form of a host: lower case, no trailing dot, every name and address of this
/// machine as `loopback`.
pub fn canonical_host(host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return "loopback".into();
    }
    match ip_literal(&host) {
        Some(ip) => canonical_ip(ip),
        None => host,
    }
}

/// The canonical form of a `net:` name (`*`, `**`, `HOST` or `HOST:PORT`).
pub fn canonical_name(name: &str) -> Cow<'_, str> {
    if name == "*" || name == "**" {
        return Cow::Borrowed(name);
    }
    let (host, port) = split_host_port(name);
    let canonical = canonical_host(host);
    match port {
        Some(port) => Cow::Owned(format!("{canonical}:{port}")),
        None if canonical == host => Cow::Borrowed(name),
        None => Cow::Owned(canonical),
    }
}

/// The classes an address belongs to (`local` says the provider found it on this machine).
pub fn classes(ip: IpAddr, local: bool) -> Vec<&'static str> {
    let ip = unmapped(ip);
    let mut out = Vec::new();
    if local || is_this_machine(ip) {
        out.push("loopback");
    }
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                out.push("private");
            }
            if v4.is_link_local() {
                out.push("link_local");
            }
            if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                out.push("metadata");
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if first & 0xfe00 == 0xfc00 {
                out.push("private");
            }
            if first & 0xffc0 == 0xfe80 {
                out.push("link_local");
            }
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                out.push("metadata");
            }
        }
    }
    out
}

/// Every resource a request to `host:port` is checked under, most specific first: the host
/// as written (then in canonical form), each resolved address, then their classes, each with
/// and without the port. With no `addrs` (before resolution) only the written host's own
/// identities. Matching canonicalizes both sides, so the written form names what it means.
pub fn request_resources(
    host: &str,
    port: u16,
    addrs: &[IpAddr],
    local: &LocalHost,
) -> Vec<String> {
    let written = host.trim_end_matches('.').to_ascii_lowercase();
    let mut ids: Vec<String> = vec![written, canonical_host(host)];
    let mut class_ids: Vec<&str> = Vec::new();
    let written_ip = ip_literal(&host.to_ascii_lowercase());
    for ip in addrs.iter().copied().chain(written_ip) {
        ids.push(canonical_ip(ip));
        let on_this_machine = local.addrs.iter().any(|a| unmapped(*a) == unmapped(ip));
        class_ids.extend(classes(ip, on_this_machine));
    }
    let named_local = local
        .name
        .as_deref()
        .is_some_and(|name| canonical_host(name) == ids[1]);
    if named_local || ids.iter().any(|id| id == "loopback") {
        class_ids.push("loopback");
    }
    if class_ids.contains(&"loopback") {
        if let Some(name) = &local.name {
            ids.push(canonical_host(name));
        }
    }
    ids.extend(class_ids.into_iter().map(String::from));
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        for resource in [format!("net:{id}:{port}"), format!("net:{id}")] {
            if !out.contains(&resource) {
                out.push(resource);
            }
        }
    }
    out
}

/// Whether a capability's `net:` name can match only once addresses are known (an address
/// or a class, rather than a DNS name or a wildcard).
pub fn names_addresses(name: &str) -> bool {
    let (host, _) = split_host_port(name);
    let host = canonical_host(host);
    CLASSES.contains(&host.as_str()) || ip_literal(&host).is_some()
}

/// Checks a capability's `net:` name.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name == "*" || name == "**" {
        return Ok(());
    }
    let (host, port) = split_host_port(name);
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(format!(
                    "'{port}' is not a port (1-65535); a net name is HOST or HOST:PORT"
                ))
            }
        }
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if CLASSES.contains(&host.as_str()) {
        return Ok(());
    }
    if host.starts_with('[') {
        return ip_literal(&host)
            .map(|_| ())
            .ok_or_else(|| format!("'{host}' is not an IPv6 address"));
    }
    let labels_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !labels_ok {
        return Err(format!(
            "'{host}' is not a host name or address (wildcards such as *.example.org are not supported; name each host, or an address class: {})",
            CLASSES.join(", ")
        ));
    }
    let last = host.rsplit('.').next().unwrap_or_default();
    if last.starts_with(|c: char| c.is_ascii_digit()) && host.parse::<Ipv4Addr>().is_err() {
        return Err(format!(
            "'{host}' is not a dotted IPv4 address; write it as four decimal numbers (e.g. 127.0.0.1)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_name_of_this_machine_is_loopback() {
        for host in [
            "localhost",
            "LOCALHOST.",
            "app.localhost",
            "127.0.0.1",
            "127.0.0.2",
            "0.0.0.0",
            "[::1]",
            "[::]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
        ] {
            assert_eq!(canonical_host(host), "loopback", "{host}");
        }
        assert_eq!(canonical_host("Example.ORG."), "example.org");
        assert_eq!(canonical_host("[::ffff:10.0.0.1]"), "10.0.0.1");
        assert_eq!(canonical_host("[2001:DB8::1]"), "[2001:db8::1]");
        assert_eq!(canonical_name("localhost:8080"), "loopback:8080");
        assert_eq!(canonical_name("example.org"), "example.org");
        assert_eq!(canonical_name("[::1]:443"), "loopback:443");
    }

    #[test]
    fn classes_of_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(classes(ip("127.0.0.1"), false), vec!["loopback"]);
        assert_eq!(classes(ip("10.1.2.3"), false), vec!["private"]);
        assert_eq!(classes(ip("100.64.0.1"), false), vec!["private"]);
        assert_eq!(
            classes(ip("169.254.169.254"), false),
            vec!["link_local", "metadata"]
        );
        assert_eq!(classes(ip("fe80::1"), false), vec!["link_local"]);
        assert_eq!(
            classes(ip("fd00:ec2::254"), false),
            vec!["private", "metadata"]
        );
        assert_eq!(classes(ip("::ffff:192.168.1.1"), false), vec!["private"]);
        assert!(classes(ip("93.184.216.34"), false).is_empty());
        assert_eq!(classes(ip("93.184.216.34"), true), vec!["loopback"]);
    }

    #[test]
    fn requests_carry_all_their_identities() {
        let local = LocalHost {
            name: Some("build-box".into()),
            addrs: vec!["172.17.0.2".parse().unwrap()],
        };
        let addrs = ["172.17.0.2".parse().unwrap()];
        let ids = request_resources("build-box", 80, &addrs, &local);
        for want in [
            "net:build-box:80",
            "net:172.17.0.2",
            "net:loopback:80",
            "net:loopback",
            "net:private",
        ] {
            assert!(ids.iter().any(|i| i == want), "{want} missing from {ids:?}");
        }
        assert_eq!(ids[0], "net:build-box:80");
        // An address literal of this machine names the host name too.
        let ids = request_resources("[::1]", 9000, &[], &local);
        assert_eq!(ids[0], "net:[::1]:9000");
        assert!(ids.iter().any(|i| i == "net:build-box"), "{ids:?}");
        // A public name has no class.
        let ids = request_resources(
            "example.org",
            443,
            &["93.184.216.34".parse().unwrap()],
            &local,
        );
        assert_eq!(
            ids,
            vec![
                "net:example.org:443",
                "net:example.org",
                "net:93.184.216.34:443",
                "net:93.184.216.34"
            ]
        );
    }

    #[test]
    fn names_are_validated() {
        for ok in [
            "example.org",
            "a-b_c.example.org:8080",
            "10.0.0.1",
            "[::1]:443",
            "loopback",
            "metadata:80",
            "EXAMPLE.org.",
        ] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "*.example.org",
            "127.1",
            "2130706433",
            "0x7f000001",
            "[::1",
            "[zz]",
            "a..b",
            "host:0",
            "host:http",
            "ex ample",
            "a/b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Canonicalization and validation never panic, and canonical names are stable.
        #[test]
        fn canonical_names_are_stable(name in "\\PC{0,40}") {
            let _ = validate_name(&name);
            let once = canonical_name(&name).into_owned();
            prop_assert_eq!(canonical_name(&once).into_owned(), once.clone());
        }
    }
}
