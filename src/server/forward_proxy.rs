//! The forward-proxy listener, for tools that honour `HTTPS_PROXY` but
//! cannot change their base URL. A `CONNECT server.smartlead.ai:443` is
//! answered by terminating TLS with the `[listen_tls]` certificate, and the
//! requests inside take the gateway's usual path: guard, audit, policy.
//! A `CONNECT` anywhere else is refused (403), or tunnelled unchanged with
//! `allow_other_hosts`. In `gateway_keys` mode the `CONNECT` must carry a
//! gateway key (`Proxy-Authorization: Basic`, the key as the password).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use super::accept::Shared;
use crate::proxy::ProxyService;
use crate::upstream::client::UpstreamClient;

/// How long a tunnel to another host may take to connect.
const TUNNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the TLS handshake inside an intercepted tunnel may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the forward proxy decides about each `CONNECT`.
pub struct ForwardProxy {
    /// The names the listener's certificate answers for.
    pub names: Vec<String>,
    pub allow_other_hosts: bool,
}

impl ForwardProxy {
    fn intercepts(&self, host: &str, port: u16) -> bool {
        port == 443 && self.names.iter().any(|n| crate::tls::name_matches(n, host))
    }
}

/// Accepts forward-proxy connections until `shutdown` turns true; returns
/// the connection tasks still running.
pub async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    proxy: Arc<ForwardProxy>,
    graceful: Arc<GracefulShutdown>,
    client: UpstreamClient,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut connections = JoinSet::new();
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(err) => {
            tracing::error!(error = %err, "cannot accept on the forward-proxy listener");
            return connections;
        }
    };
    loop {
        let (stream, client_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "forward proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            _ = shutdown.changed() => break,
        };
        // Each tunnel holds a slot of max_connections, like a connection to
        // the proxy listener; with none free, the connection is closed.
        let Ok(slot) = shared.slots.clone().try_acquire_owned() else {
            tracing::warn!(client = %client_addr, "forward proxy: connection limit reached; connection closed");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let proxy = proxy.clone();
        let watcher = graceful.watcher();
        let client = client.clone();
        connections.spawn(async move {
            // The tunnel is served here, in this connection's task, once the
            // CONNECT is answered: it is counted, drained and cut as any
            // other connection.
            let (tunnel_tx, tunnel_rx) = oneshot::channel();
            let tunnel_tx = Arc::new(Mutex::new(Some(tunnel_tx)));
            let service = {
                let shared = shared.clone();
                service_fn(move |req| {
                    connect(req, shared.clone(), proxy.clone(), tunnel_tx.clone(), client_addr)
                })
            };
            // The proxy listener's own limits: head timeout and size.
            let conn = shared
                .builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(err) = conn.await {
                tracing::debug!(client = %client_addr, error = %err, "forward proxy: connection ended with an error");
            }
            match tunnel_rx.await {
                Ok(Tunnel::Intercept(on_upgrade)) => match on_upgrade.await {
                    Ok(upgraded) => {
                        intercept(upgraded, &shared, watcher, client, client_addr).await
                    }
                    Err(err) => {
                        tracing::debug!(client = %client_addr, error = %err, "forward proxy: upgrade failed")
                    }
                },
                Ok(Tunnel::Blind(on_upgrade, mut target)) => {
                    if let Ok(upgraded) = on_upgrade.await {
                        let mut upgraded = TokioIo::new(upgraded);
                        let _ = tokio::io::copy_bidirectional(&mut upgraded, &mut target).await;
                    }
                }
                Err(_) => {}
            }
            drop(slot);
        });
    }
    connections
}

type Answer = Response<Full<Bytes>>;

/// What an answered `CONNECT` turns its connection into.
enum Tunnel {
    /// TLS with the gateway's certificate, then the gateway's usual path.
    Intercept(OnUpgrade),
    /// Bytes copied both ways to another host (`allow_other_hosts`).
    Blind(OnUpgrade, tokio::net::TcpStream),
}

type TunnelSender = Arc<Mutex<Option<oneshot::Sender<Tunnel>>>>;

/// Answers one request on the forward-proxy port; a `CONNECT` that is let
/// through hands its tunnel to the connection's task.
async fn connect(
    mut req: Request<Incoming>,
    shared: Arc<Shared>,
    proxy: Arc<ForwardProxy>,
    tunnel: TunnelSender,
    client_addr: SocketAddr,
) -> Result<Answer, Infallible> {
    if req.method() != Method::CONNECT {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            "safedelete: this is the forward-proxy port: use it as HTTPS_PROXY for https:// URLs; plain requests go to the gateway's listen address",
        ));
    }
    let Some((host, port)) = req
        .uri()
        .authority()
        .and_then(|a| Some((a.host().to_string(), a.port_u16()?)))
    else {
        return Ok(answer(
            StatusCode::BAD_REQUEST,
            "safedelete: CONNECT needs HOST:PORT",
        ));
    };
    if let Some(identities) = shared
        .state
        .identities
        .as_ref()
        .filter(|i| i.gateway_keys())
    {
        let key = proxy_key(req.headers());
        if let Err(why) = identities.authenticate(key.as_deref()) {
            tracing::info!(client = %client_addr, host = %host, reason = why.reason(), "forward proxy: CONNECT refused (407)");
            let mut refused = answer(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "safedelete: this proxy takes a gateway key: send it as the proxy password (for example HTTPS_PROXY=http://NAME:sdg_...@HOST:PORT)",
            );
            refused.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"safedelete\""),
            );
            return Ok(refused);
        }
    }
    if proxy.intercepts(&host, port) {
        hand_over(&tunnel, Tunnel::Intercept(hyper::upgrade::on(&mut req)));
        return Ok(Response::new(Full::default()));
    }
    if !proxy.allow_other_hosts {
        tracing::info!(client = %client_addr, host = %host, port, "forward proxy: CONNECT to another host refused (403)");
        return Ok(answer(
            StatusCode::FORBIDDEN,
            &format!(
                "safedelete: this proxy carries SmartLead's API only ({}:443); {host}:{port} is refused (forward_proxy.allow_other_hosts = true tunnels other hosts unchanged)",
                proxy.names.first().map_or("server.smartlead.ai", String::as_str)
            ),
        ));
    }
    let target = match tokio::time::timeout(
        TUNNEL_CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        _ => {
            return Ok(answer(
                StatusCode::BAD_GATEWAY,
                &format!("safedelete: cannot connect to {host}:{port}"),
            ))
        }
    };
    tracing::info!(client = %client_addr, host = %host, port, "forward proxy: tunnel to another host (allow_other_hosts)");
    hand_over(&tunnel, Tunnel::Blind(hyper::upgrade::on(&mut req), target));
    Ok(Response::new(Full::default()))
}

fn hand_over(sender: &TunnelSender, tunnel: Tunnel) {
    let sender = sender.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(sender) = sender {
        let _ = sender.send(tunnel);
    }
}

/// Serves the requests inside an intercepted tunnel as the proxy listener
/// serves its own connections: TLS with the listener's certificate, then
/// the gateway's usual path.
async fn intercept(
    upgraded: hyper::upgrade::Upgraded,
    shared: &Shared,
    watcher: Watcher,
    client: UpstreamClient,
    client_addr: SocketAddr,
) {
    let Some(acceptor) = &shared.tls else {
        return;
    };
    let tls = match tokio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        acceptor.accept(TokioIo::new(upgraded)),
    )
    .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::info!(client = %client_addr, error = %err, "forward proxy: TLS handshake in the tunnel failed (does the tool trust the gateway's CA?)");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %client_addr, "forward proxy: TLS handshake in the tunnel timed out");
            return;
        }
    };
    let service = ProxyService::new(shared.state.clone(), client, client_addr, "https");
    let conn = shared.builder.serve_connection(TokioIo::new(tls), service);
    if let Err(err) = watcher.watch(conn).await {
        tracing::debug!(client = %client_addr, error = %err, "forward proxy: tunnelled connection ended with an error");
    }
}

/// The key in `Proxy-Authorization: Basic base64(user:password)`: the
/// password, or the user name when the password is empty.
fn proxy_key(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    let key = if password.is_empty() { user } else { password };
    (!key.is_empty()).then(|| key.to_string())
}

fn answer(status: StatusCode, message: &str) -> Answer {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_the_proxy_password_or_else_the_user() {
        let basic = |s: &str| {
            let mut h = http::HeaderMap::new();
            let v = base64::engine::general_purpose::STANDARD.encode(s);
            h.insert(
                header::PROXY_AUTHORIZATION,
                format!("Basic {v}").parse().unwrap(),
            );
            proxy_key(&h)
        };
        assert_eq!(basic("alice:sdg_abc").as_deref(), Some("sdg_abc"));
        assert_eq!(basic("sdg_abc:").as_deref(), Some("sdg_abc"));
        assert_eq!(basic("sdg_abc").as_deref(), Some("sdg_abc"));
        assert_eq!(basic(":"), None);
        assert_eq!(proxy_key(&http::HeaderMap::new()), None);
    }
}
