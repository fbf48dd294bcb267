//! `--console ADDR` of `threshold serve` and `threshold run`: the web
//! console (`threshold-console`) on its own port, over the node's log and
//! vault, signing in the node's credentials.

use std::net::SocketAddr;
use std::path::Path;

use threshold_auth::{Authenticator, LocalTokens, Role};
use threshold_console::{Console, Models};
use threshold_routing::depot::Fleets;
use threshold_server::Node;

/// Refuses a console served in plaintext off loopback without --insecure,
/// before anything is bound: it carries sessions and sign-in codes.
pub(crate) fn check(addr: Option<SocketAddr>, insecure: bool) -> Result<(), crate::BoxError> {
    if let Some(addr) = addr
        && threshold_server::exposure(addr, false, insecure).is_err()
    {
        return Err(format!(
            "refusing to serve the console on {addr} in plaintext: it has no TLS; give it a \
             loopback address (e.g. 127.0.0.1:8080), or --insecure behind a TLS-terminating proxy"
        )
        .into());
    }
    Ok(())
}

/// The console's listener, bound before the node opens so that a taken
/// port fails the start with nothing opened.
pub(crate) async fn bind(
    addr: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, crate::BoxError> {
    match addr {
        None => Ok(None),
        Some(addr) => {
            Ok(Some(tokio::net::TcpListener::bind(addr).await.map_err(
                |e| format!("cannot listen on {addr} for the console: {e}"),
            )?))
        }
    }
}

/// Starts the console on `listener` over `node`'s models; prints its address
/// and, when the data directory holds local tokens, a one-time sign-in link
/// for a planner and for an analyst. The task runs until aborted.
pub(crate) fn start(
    listener: tokio::net::TcpListener,
    node: &Node,
    fleets: Fleets,
    data: &Path,
) -> Result<tokio::task::JoinHandle<threshold_console::Result<()>>, crate::BoxError> {
    let console = Console::new(
        Models::follow(node.log(), node.vault()),
        fleets,
        Authenticator::new(data),
    );
    let (addr, task) = console.clone().spawn(listener, std::future::pending())?;
    println!("console on http://{addr}/ (sign in with a token, or a one-time link)");
    if let Ok(tokens) = LocalTokens::load(data) {
        for role in [Role::Planner, Role::Analyst] {
            if let Some(path) = tokens
                .token(role)
                .and_then(|t| console.sign_in_path_for_token(t))
            {
                println!(
                    "  {role}: http://{addr}{path} (once, within {} minutes)",
                    threshold_console::CODE_TTL.as_secs() / 60
                );
            }
        }
    }
    Ok(task)
}
