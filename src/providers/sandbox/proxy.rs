//! The network proxy: a sandbox's only way out. The launcher creates a listener on
//! `127.0.0.1` inside the command's network namespace and hands it over; the runtime accepts
//! on it here. Each connection asks for one `host:port` (`CONNECT`, or an absolute-form
//! HTTP request); the proxy checks it against the policy's `net:` resources, resolves the
//! name itself, refuses loopback, private, link-local and similar addresses unless a
//! capability names that literal address, refuses a destination any of whose identities
//! (name, addresses, their classes) a deny rule matches, connects to an address it checked,
//! records the decision, then relays bytes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::kernel::netid;
use crate::kernel::sandbox_policy::NetworkPolicy;

/// One connection the command asked for, and what the proxy decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionRecord {
    pub target: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Decisions kept per command; later ones are only counted.
const MAX_RECORDS: usize = 64;
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The decisions of one command's proxy.
#[derive(Clone, Default)]
pub struct ProxyLog(Arc<parking_lot::Mutex<(Vec<ConnectionRecord>, usize)>>);

impl ProxyLog {
    fn record(&self, record: ConnectionRecord) {
        let mut log = self.0.lock();
        log.1 += 1;
        if log.0.len() < MAX_RECORDS {
            log.0.push(record);
        }
    }

    /// The recorded decisions and how many there were in all.
    pub fn take(&self) -> (Vec<ConnectionRecord>, usize) {
        std::mem::take(&mut *self.0.lock())
    }
}

/// Serves connections on `listener` until the returned set is dropped.
pub fn serve(
    listener: std::net::TcpListener,
    policy: NetworkPolicy,
    log: ProxyLog,
) -> std::io::Result<JoinSet<()>> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let policy = Arc::new(policy);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            connections.spawn(handle(stream, policy.clone(), log.clone()));
            while connections.try_join_next().is_some() {}
        }
    });
    Ok(tasks)
}

/// The target a request head asks for: `(host, port, bytes to forward after connecting)`.
#[derive(Debug, PartialEq)]
struct Target {
    host: String,
    port: u16,
    /// For absolute-form requests: the head rewritten to origin form.
    forward: Option<Vec<u8>>,
}

fn parse_head(head: &[u8]) -> Result<Target, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not text".to_string())?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 proxy request: {request_line:?}"));
    }
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host, port) = split_host_port(target)?;
        return Ok(Target {
            host,
            port,
            forward: None,
        });
    }
    let url =
        reqwest::Url::parse(target).map_err(|e| format!("bad request target {target:?}: {e}"))?;
    if url.scheme() != "http" {
        return Err(format!(
            "only http:// URLs are proxied without CONNECT, not {}",
            url.scheme()
        ));
    }
    let host = url
        .host_str()
        .ok_or("the URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let mut forward = format!("{method} {path} {version}\r\n").into_bytes();
    let rest = text.split_once("\r\n").map_or("", |(_, rest)| rest);
    forward.extend_from_slice(rest.as_bytes());
    Ok(Target {
        host: host.to_ascii_lowercase(),
        port,
        forward: Some(forward),
    })
}

fn split_host_port(target: &str) -> Result<(String, u16), String> {
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("CONNECT target {target:?} has no port"))?;
    let port = port
        .parse()
        .map_err(|_| format!("bad port in {target:?}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("CONNECT target {target:?} has no host"));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Addresses a name must not lead to unless a capability names the literal address:
/// loopback, private, link-local (cloud metadata), unspecified, multicast, shared and
/// documentation ranges, IPv4-mapped forms of those.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Whether an allow rule names this literal address (not through a wildcard).
fn names_literal(policy: &NetworkPolicy, host: &str, port: u16) -> bool {
    host.parse::<IpAddr>().is_ok()
        && policy
            .allow
            .iter()
            .any(|p| *p == format!("net:{host}:{port}") || *p == format!("net:{host}"))
}

async fn decide(
    target: &Target,
    policy: &NetworkPolicy,
) -> Result<Vec<std::net::SocketAddr>, String> {
    let local = crate::providers::net::this_machine();
    let denied_identity = |ips: &[IpAddr]| {
        netid::request_resources(&target.host, target.port, ips, &local)
            .into_iter()
            .find(|id| policy.denies(id))
            .map(|denied| {
                format!(
                    "{}:{} is {denied}, which a capability denies",
                    target.host, target.port
                )
            })
    };
    if let Some(reason) = denied_identity(&[]) {
        return Err(reason);
    }
    if !policy.permits(&target.host, target.port) {
        return Err(format!(
            "no net: capability allows {}:{}",
            target.host, target.port
        ));
    }
    let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{} has no address", target.host));
    }
    // A deny holds for every identity of the destination, as for `net.fetch`: the name as
    // written, the addresses it resolved to, their classes (`net:loopback`, `net:private`…).
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
    if let Some(reason) = denied_identity(&ips) {
        return Err(reason);
    }
    if !names_literal(policy, &target.host, target.port) {
        if let Some(internal) = addrs.iter().find(|a| is_internal(a.ip())) {
            return Err(format!(
                "{} resolves to the internal address {} (name that address in a capability to allow it)",
                target.host,
                internal.ip()
            ));
        }
    }
    Ok(addrs)
}

async fn handle(mut client: TcpStream, policy: Arc<NetworkPolicy>, log: ProxyLog) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
        Ok(Ok(head)) => head,
        _ => return,
    };
    let target = match parse_head(&head.0) {
        Ok(target) => target,
        Err(reason) => {
            refuse(&mut client, "400 Bad Request", &reason).await;
            return;
        }
    };
    let name = format!("{}:{}", target.host, target.port);
    let addrs = match decide(&target, &policy).await {
        Ok(addrs) => addrs,
        Err(reason) => {
            refuse(&mut client, "403 Forbidden", &reason).await;
            log.record(ConnectionRecord {
                target: name,
                allowed: false,
                reason: Some(reason),
            });
            return;
        }
    };
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addrs[..])).await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            let reason = format!("connecting to {name}: {e}");
            refuse(&mut client, "502 Bad Gateway", &reason).await;
            log.record(ConnectionRecord {
                target: name,
                allowed: true,
                reason: Some(reason),
            });
            return;
        }
        Err(_) => {
            refuse(&mut client, "504 Gateway Timeout", "connect timed out").await;
            log.record(ConnectionRecord {
                target: name,
                allowed: true,
                reason: Some("connect timed out".into()),
            });
            return;
        }
    };
    log.record(ConnectionRecord {
        target: name,
        allowed: true,
        reason: None,
    });
    let mut upstream = upstream;
    let sent = match &target.forward {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
        }
        Some(forward) => upstream.write_all(forward).await,
    };
    if sent.is_err() || upstream.write_all(&head.1).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Reads up to the end of the request head; returns (head, bytes read after it).
async fn read_head(client: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

async fn refuse(client: &mut TcpStream, status: &str, reason: &str) {
    let body = format!("agent-libos sandbox proxy: {reason}\n");
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_name_their_target() {
        let t = parse_head(b"CONNECT Example.org:443 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.forward.is_none()),
            ("example.org", 443, true)
        );
        let t = parse_head(b"CONNECT [::1]:8080 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        let t = parse_head(b"GET http://h:81/a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("h", 81));
        assert_eq!(
            t.forward.unwrap(),
            b"GET /a?b=1 HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        for bad in [
            &b"CONNECT host HTTP/1.1\r\n\r\n"[..],
            b"GET ftp://x/ HTTP/1.1\r\n\r\n",
            b"\xff\r\n\r\n",
            b"SSH-2.0\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn internal_addresses_are_recognized() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::ffff:127.0.0.1",
            "fd00::1",
            "fe80::1",
            "100.64.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
