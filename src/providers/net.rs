//! Network provider: one HTTP request to a URL the kernel allowed, and nothing more.
//!
//! The kernel checks every identity of the destination — the host as written, the addresses
//! it resolves to ([`Net::resolve`]) and their classes — against the allowlist; this module
//! makes sure the request cannot wander off it: it connects only to the addresses that were
//! checked (the name is not resolved again), redirects are returned instead of followed, no
//! proxy is taken from the environment, the `Host` header cannot be overridden, and the
//! response is cut at a byte cap and a deadline.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

use crate::kernel::authz::CheckedRequest;
use crate::kernel::error::{SysResult, SyscallError};
use crate::kernel::netid::LocalHost;

#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub timeout_ms: u64,
    pub max_response_bytes: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub truncated: bool,
}

#[async_trait]
pub trait Net: Send + Sync {
    /// The addresses `host` resolves to (an address literal, bracketed for IPv6, is itself),
    /// within `timeout_ms`.
    async fn resolve(&self, host: &str, port: u16, timeout_ms: u64) -> SysResult<Vec<IpAddr>>;
    /// This machine's host name and interface addresses: destinations that reach it are
    /// `loopback`, whatever they are called.
    fn local_host(&self) -> LocalHost;
    /// Sends the request to the addresses it was checked with.
    async fn fetch(
        &self,
        req: &CheckedRequest,
        headers: &[(String, String)],
        body: Option<&str>,
        limits: FetchLimits,
    ) -> SysResult<FetchResponse>;
}

/// The allowlist resource of a URL: `("net:<host>:<port>", host, port)`.
///
/// Accepts only `http` and `https` URLs with a host and no credentials; the host is a DNS
/// name (letters, digits, `-`, `_`) or an address, lowercased without a trailing dot (IPv6
/// hosts keep their brackets, `[::1]`; numeric IPv4 spellings such as `127.1` or `2130706433`
/// are already normalized by URL parsing), and the port is explicit or the scheme's default.
pub fn url_resource(url: &str) -> Result<(String, String, u16), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL '{url}': {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported URL scheme '{}': only http and https",
            parsed.scheme()
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("credentials in the URL are not allowed; send them in a header".into());
    }
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| format!("URL '{url}' has no host"))?;
    // One trailing dot is the DNS root (`example.org.`); more, or an empty label, name no
    // host, and trimming them would name another (`0..` would become the address `0`).
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("URL '{url}' has no host"));
    }
    if host.ends_with('.') || host.starts_with('.') || host.contains("..") {
        return Err(format!(
            "URL '{url}' has an empty label in its host '{host}': remove the extra dots"
        ));
    }
    // The resource must name the host the request goes to: spelled as it reads, the host
    // parses back to itself.
    let again = reqwest::Url::parse(&format!("http://{host}/"))
        .ok()
        .and_then(|again| again.host_str().map(str::to_ascii_lowercase));
    if again.as_deref() != Some(host.as_str()) {
        return Err(format!(
            "URL '{url}' has a host '{host}' that does not name itself: write it plainly"
        ));
    }
    let plain = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !plain && !host.starts_with('[') {
        return Err(format!(
            "URL '{url}': host '{host}' is not a DNS name or an address"
        ));
    }
    // The host must be a name a capability can hold (`-.0a` parses as a URL host, but no
    // grant could name it exactly).
    crate::kernel::netid::validate_name(&host).map_err(|why| format!("URL '{url}': {why}"))?;
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| format!("URL '{url}' has no port"))?;
    Ok((format!("net:{host}:{port}"), host, port))
}

/// How long establishing a connection may take, whatever the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP(S) over reqwest with rustls.
#[derive(Default)]
pub struct HttpNet;

impl HttpNet {
    pub fn new() -> Self {
        HttpNet
    }

    /// A client for one checked request: the URL's host name resolves only to the addresses
    /// that were checked, and nothing is pooled for a later request to reuse.
    fn client_for(req: &CheckedRequest, url: &reqwest::Url) -> SysResult<reqwest::Client> {
        let mut builder = reqwest::Client::builder()
            // A redirect to another host would bypass the allowlist: return the 3xx as is.
            .redirect(reqwest::redirect::Policy::none())
            // Proxies from the environment would route requests the kernel did not check.
            .no_proxy()
            .pool_max_idle_per_host(0)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(domain) = url.domain() {
            if req.addrs().is_empty() {
                return Err(SyscallError::internal(format!(
                    "{} was checked without its addresses",
                    req.url()
                )));
            }
            builder = builder.resolve_to_addrs(domain, req.addrs());
        }
        builder
            .build()
            .map_err(|e| SyscallError::Io(format!("cannot build the HTTP client: {e}")))
    }
}

#[async_trait]
impl Net for HttpNet {
    async fn resolve(&self, host: &str, port: u16, timeout_ms: u64) -> SysResult<Vec<IpAddr>> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let lookup = tokio::net::lookup_host((bare, port));
        let found = tokio::time::timeout(Duration::from_millis(timeout_ms), lookup)
            .await
            .map_err(|_| {
                SyscallError::Timeout(format!("resolving {host} took over {timeout_ms} ms"))
            })?
            .map_err(|e| SyscallError::Io(format!("cannot resolve {host}: {e}")))?;
        let mut addrs: Vec<IpAddr> = Vec::new();
        for addr in found {
            if !addrs.contains(&addr.ip()) {
                addrs.push(addr.ip());
            }
        }
        if addrs.is_empty() {
            return Err(SyscallError::Io(format!("{host} resolves to no address")));
        }
        Ok(addrs)
    }

    fn local_host(&self) -> LocalHost {
        this_machine()
    }

    async fn fetch(
        &self,
        req: &CheckedRequest,
        headers: &[(String, String)],
        body: Option<&str>,
        limits: FetchLimits,
    ) -> SysResult<FetchResponse> {
        req.require_method()?;
        let url = parse_url(req.url())?;
        let client = Self::client_for(req, &url)?;
        let mut request = client
            .request(parse_method(req.method())?, url)
            .headers(header_map(headers)?);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        tracing::debug!(method = req.method(), url = req.url(), addrs = ?req.addrs(), "net fetch");
        let deadline = Duration::from_millis(limits.timeout_ms);
        let exchange = async {
            let response = request.send().await.map_err(|e| request_error(e, req))?;
            read_response(response, limits.max_response_bytes, req).await
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .map_err(|_| timed_out(req, limits))?
    }
}

/// This machine's host name and interface addresses.
pub(crate) fn this_machine() -> LocalHost {
    LocalHost {
        name: host_name(),
        addrs: interface_addrs(),
    }
}

/// This machine's host name, if it has one.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// The addresses of this machine's network interfaces.
fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs; each
    // node's address is read according to the family it declares.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut node = list;
        while !node.is_null() {
            let addr = (*node).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(v4.sin_addr.s_addr.to_ne_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            node = (*node).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

fn parse_url(url: &str) -> SysResult<reqwest::Url> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| SyscallError::invalid(format!("invalid URL '{url}': {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SyscallError::invalid(format!(
            "unsupported URL scheme '{}': only http and https",
            parsed.scheme()
        )));
    }
    Ok(parsed)
}

/// The request method, case-insensitively; only the ordinary ones.
fn parse_method(method: &str) -> SysResult<reqwest::Method> {
    const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let upper = method.to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(SyscallError::invalid(format!(
            "unsupported HTTP method '{method}' (expected one of: {})",
            METHODS.join(", ")
        )));
    }
    reqwest::Method::from_bytes(upper.as_bytes())
        .map_err(|_| SyscallError::invalid(format!("invalid HTTP method '{method}'")))
}

/// The request headers. `Host` is refused: the server must see the host the kernel checked,
/// not another virtual host on the same address.
fn header_map(headers: &[(String, String)]) -> SysResult<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SyscallError::invalid(format!("invalid header name '{name}'")))?;
        if header == reqwest::header::HOST {
            return Err(SyscallError::invalid(
                "the Host header cannot be set: it always names the URL's host",
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| SyscallError::invalid(format!("invalid value for header '{name}'")))?;
        map.append(header, value);
    }
    Ok(map)
}

/// Status, headers and up to `max_bytes` of the body, read as a stream.
async fn read_response(
    mut response: reqwest::Response,
    max_bytes: u64,
    req: &CheckedRequest,
) -> SysResult<FetchResponse> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let cap = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(|e| request_error(e, req))? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break; // dropping the response closes the connection
        }
        body.extend_from_slice(&chunk);
    }
    Ok(FetchResponse {
        status,
        headers,
        body: super::decode_lossy(&body, truncated),
        truncated,
    })
}

fn timed_out(req: &CheckedRequest, limits: FetchLimits) -> SyscallError {
    SyscallError::Timeout(format!(
        "{} {} did not complete within {} ms",
        req.method(),
        req.url(),
        limits.timeout_ms
    ))
}

/// A transport failure, with its root cause (e.g. "Connection refused").
fn request_error(err: reqwest::Error, req: &CheckedRequest) -> SyscallError {
    if err.is_timeout() {
        return SyscallError::Timeout(format!(
            "{} {}: {}",
            req.method(),
            req.url(),
            root_cause(&err)
        ));
    }
    let what = if err.is_connect() {
        "cannot connect"
    } else if err.is_body() || err.is_decode() {
        "error reading the response"
    } else {
        "request failed"
    };
    SyscallError::Io(format!(
        "{} {}: {what}: {}",
        req.method(),
        req.url(),
        root_cause(&err)
    ))
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use crate::kernel::capability::Right;

    const LIMITS: FetchLimits = FetchLimits {
        timeout_ms: 5_000,
        max_response_bytes: 1 << 20,
    };

    /// A loopback HTTP/1.1 server answering fixed responses by path; returns its base URL.
    async fn serve() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream));
            }
        });
        format!("http://{addr}")
    }

    /// Reads one request: (request line, headers text, body per Content-Length).
    async fn read_request(stream: &mut TcpStream) -> (String, String, Vec<u8>) {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            data.extend_from_slice(&buf[..n]);
            if let Some(pos) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
        };
        let head = String::from_utf8(data[..head_end].to_vec()).unwrap();
        let (line, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
        let length: usize = headers
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = data[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut buf).await.unwrap();
            body.extend_from_slice(&buf[..n]);
        }
        (line.to_string(), headers.to_string(), body)
    }

    async fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &[u8]) {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let _ = stream.write_all(body).await;
        let _ = stream.shutdown().await;
    }

    async fn answer(mut stream: TcpStream) {
        let (line, headers, body) = read_request(&mut stream).await;
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        match path.as_str() {
            "/hello" => respond(&mut stream, "200 OK", "X-Test: yes\r\n", b"hello").await,
            "/big" => respond(&mut stream, "200 OK", "", &vec![b'x'; 1_000_000]).await,
            "/redirect" => {
                let location = "Location: http://example.invalid/elsewhere\r\n";
                respond(&mut stream, "302 Found", location, b"").await
            }
            "/echo" => {
                let method = line.split(' ').next().unwrap_or("");
                let mut reply = format!("{method} ").into_bytes();
                reply.extend_from_slice(&body);
                let header = headers
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("x-agent:"))
                    .unwrap_or("")
                    .to_string();
                respond(
                    &mut stream,
                    "200 OK",
                    &format!("X-Saw: {header}\r\n"),
                    &reply,
                )
                .await
            }
            "/hang" => tokio::time::sleep(Duration::from_secs(30)).await,
            _ => respond(&mut stream, "404 Not Found", "", b"no").await,
        }
    }

    async fn fetch(
        url: &str,
        method: &str,
        body: Option<&str>,
        limits: FetchLimits,
    ) -> SysResult<FetchResponse> {
        let headers = vec![("X-Agent".to_string(), "libos".to_string())];
        HttpNet::new()
            .fetch(
                &CheckedRequest::for_test(url, method, &[]),
                &headers,
                body,
                limits,
            )
            .await
    }

    fn header<'a>(response: &'a FetchResponse, name: &str) -> Option<&'a str> {
        response
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn a_read_proof_cannot_send_a_post() {
        let base = serve().await;
        let proof =
            CheckedRequest::for_test_with_right(&format!("{base}/echo"), "POST", Right::Read);
        let err = HttpNet::new()
            .fetch(&proof, &[], Some("x"), LIMITS)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "PermissionDenied", "{err}");
    }

    #[tokio::test]
    async fn get_returns_status_headers_and_body() {
        let base = serve().await;
        let response = fetch(&format!("{base}/hello"), "get", None, LIMITS)
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "hello");
        assert!(!response.truncated);
        assert_eq!(header(&response, "x-test"), Some("yes"));
    }

    #[tokio::test]
    async fn connects_only_to_the_checked_addresses() {
        let base = serve().await;
        let port = base.rsplit(':').next().unwrap();
        // A name that never resolves reaches the server through the checked address.
        let url = format!("http://checked.invalid:{port}/hello");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let response = HttpNet::new()
            .fetch(
                &CheckedRequest::for_test(&url, "GET", &[addr]),
                &[],
                None,
                LIMITS,
            )
            .await
            .unwrap();
        assert_eq!(response.body, "hello");
        // `localhost` is not resolved again: the checked (other) address is what is dialed.
        let url = format!("http://localhost:{port}/hello");
        let elsewhere: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
        let err = HttpNet::new()
            .fetch(
                &CheckedRequest::for_test(&url, "GET", &[elsewhere]),
                &[],
                None,
                LIMITS,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot connect"), "{err}");
        // A name checked without addresses is refused rather than resolved.
        let err = HttpNet::new()
            .fetch(
                &CheckedRequest::for_test(&url, "GET", &[]),
                &[],
                None,
                LIMITS,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "InternalError", "{err}");
    }

    #[tokio::test]
    async fn resolve_returns_addresses_and_literals() {
        let net = HttpNet::new();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(net.resolve("127.0.0.1", 80, 1000).await.unwrap(), vec![ip]);
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(net.resolve("[::1]", 80, 1000).await.unwrap(), vec![v6]);
        let local = net.resolve("localhost", 80, 5000).await.unwrap();
        assert!(local.iter().all(|a| a.is_loopback()), "{local:?}");
        assert!(net.local_host().addrs.contains(&ip));
    }

    #[tokio::test]
    async fn large_body_is_truncated_at_the_cap() {
        let base = serve().await;
        let limits = FetchLimits {
            max_response_bytes: 1000,
            ..LIMITS
        };
        let response = fetch(&format!("{base}/big"), "GET", None, limits)
            .await
            .unwrap();
        assert!(response.truncated);
        assert_eq!(response.body.len(), 1000);
    }

    #[tokio::test]
    async fn redirect_is_returned_not_followed() {
        let base = serve().await;
        let response = fetch(&format!("{base}/redirect"), "GET", None, LIMITS)
            .await
            .unwrap();
        assert_eq!(response.status, 302);
        assert_eq!(
            header(&response, "location"),
            Some("http://example.invalid/elsewhere")
        );
    }

    #[tokio::test]
    async fn post_sends_body_and_headers() {
        let base = serve().await;
        let response = fetch(&format!("{base}/echo"), "POST", Some("payload"), LIMITS)
            .await
            .unwrap();
        assert_eq!(response.body, "POST payload");
        assert_eq!(header(&response, "x-saw"), Some("x-agent: libos"));
    }

    #[tokio::test]
    async fn server_that_never_answers_times_out() {
        let base = serve().await;
        let limits = FetchLimits {
            timeout_ms: 300,
            ..LIMITS
        };
        let err = fetch(&format!("{base}/hang"), "GET", None, limits)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "Timeout", "{err}");
    }

    #[tokio::test]
    async fn refused_connection_is_an_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = fetch(&format!("http://{addr}/"), "GET", None, LIMITS)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "IoError", "{err}");
        assert!(err.to_string().contains("cannot connect"), "{err}");
    }

    #[tokio::test]
    async fn bad_method_and_host_header_are_invalid() {
        let base = serve().await;
        let err = fetch(&format!("{base}/hello"), "BREW", None, LIMITS)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
        let err = HttpNet::new()
            .fetch(
                &CheckedRequest::for_test(&format!("{base}/hello"), "GET", &[]),
                &[("Host".to_string(), "other.example".to_string())],
                None,
                LIMITS,
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "InvalidArgument");
    }

    #[test]
    fn url_resource_uses_explicit_or_default_ports() {
        assert_eq!(
            url_resource("http://127.0.0.1:8080/x?y=1").unwrap(),
            (
                "net:127.0.0.1:8080".to_string(),
                "127.0.0.1".to_string(),
                8080
            )
        );
        assert_eq!(
            url_resource("https://Example.ORG/path").unwrap(),
            (
                "net:example.org:443".to_string(),
                "example.org".to_string(),
                443
            )
        );
        assert_eq!(
            url_resource("http://example.org./").unwrap().0,
            "net:example.org:80"
        );
        assert_eq!(
            url_resource("http://[::1]:9000/").unwrap().0,
            "net:[::1]:9000"
        );
        // WHATWG parsing normalizes numeric hosts, so the allowlist sees the real address.
        for numeric in ["http://2130706433/", "http://0x7f000001/", "http://127.1/"] {
            assert_eq!(url_resource(numeric).unwrap().0, "net:127.0.0.1:80");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// No URL makes parsing panic; an accepted one names a host of plain characters.
        #[test]
        fn url_parsing_never_panics(tail in "\\PC{0,40}", scheme in "(http|https|ftp|)") {
            let url = format!("{scheme}://{tail}");
            if let Ok((resource, host, _)) = url_resource(&url) {
                proptest::prop_assert!(resource.starts_with("net:"));
                proptest::prop_assert!(!host.contains(['*', '?', '{', '}', '\\', '/']), "{}", host);
            }
        }
    }

    #[test]
    fn url_resource_rejects_what_it_cannot_check() {
        for url in [
            "ftp://example.org/",
            "file:///etc/passwd",
            "http://user@example.org/",
            "http://user:pw@example.org/",
            "not a url",
            "http://",
            "data:text/plain,hi",
            "http://0../",
            "http://example.org../",
            "http://a..b/",
            "http://-.0a/",
            "http://*.example.org/",
            "http://a{b}.example.org/",
        ] {
            assert!(url_resource(url).is_err(), "{url}");
        }
    }
}

/// Property tests: no URL makes the allowlist resource panic, and every accepted URL names
/// one canonical host, the one its own resource parses back to.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::kernel::capability::validate_resource;
    use crate::proptest_support::{config, tricky_string};
    use proptest::prelude::*;

    fn host() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "localhost",
                "LOCALHOST.",
                "127.0.0.1",
                "0x7f.1",
                "2130706433",
                "[::1]",
                "[::ffff:127.0.0.1]",
                "[0:0:0:0:0:0:0:1]",
                "0.0.0.0",
                "Example.ORG..",
                "xn--bcher-kva.de",
                "bücher.de",
                "%31%32%37.0.0.1",
                "a..b",
                "[",
                "]",
                "@",
                "",
            ])
            .prop_map(str::to_string),
            "[a-zA-Z0-9.-]{1,12}",
            tricky_string(),
        ]
    }

    fn url_like() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![
            Just("http://"),
            Just("https://"),
            Just("HTTP://"),
            Just("ftp://"),
            Just("http:"),
            Just(""),
        ];
        let userinfo = prop_oneof![3 => Just(String::new()), 1 => tricky_string().prop_map(|u| format!("{u}@"))];
        let port = prop_oneof![
            2 => Just(String::new()),
            1 => any::<u32>().prop_map(|p| format!(":{p}")),
            1 => tricky_string().prop_map(|p| format!(":{p}")),
        ];
        (scheme, userinfo, host(), port, tricky_string()).prop_map(
            |(scheme, userinfo, host, port, path)| format!("{scheme}{userinfo}{host}{port}/{path}"),
        )
    }

    proptest! {
        #![proptest_config(config(2048))]

        #[test]
        fn any_url_names_one_canonical_host_or_is_refused(url in url_like(), raw in tricky_string()) {
            let _ = url_resource(&raw);
            let _ = parse_url(&raw);
            if let Ok((resource, host, port)) = url_resource(&url) {
                prop_assert_eq!(&resource, &format!("net:{host}:{port}"));
                prop_assert!(validate_resource(&resource).is_ok(), "{resource}");
                prop_assert!(!host.is_empty() && !host.ends_with('.'), "{url:?} -> {host:?}");
                prop_assert_eq!(host.to_ascii_lowercase(), host.clone());
                prop_assert!(!host.contains(['@', '/', '?', '#', ' ']), "{url:?} -> {host:?}");
                // The canonical form is a fixed point: spelled as it was resolved, it names
                // the same resource.
                let again = url_resource(&format!("http://{host}:{port}/"));
                prop_assert_eq!(again.map(|r| r.0), Ok(resource));
            }
        }
    }
}
