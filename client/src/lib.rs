//! ctl client library: a typed client for the ctld REST API (Incus/LXD API 1.0 shaped) over
//! its Unix socket or, for remotes, HTTPS; the exec websocket protocol, output rendering and
//! the `ctl` commands.
//!
//! Layout: [`client`] (HTTP, envelope, operations), [`transport`] (Unix socket or TLS),
//! [`tls`] (client identity, pinned server certificates), [`remotes`] (`config.yml`),
//! [`targets`] (`REMOTE:` prefixes), [`token`] (trust tokens), [`ws`] (websockets and exec streams),
//! [`events`] (the `/1.0/events` stream), [`usage`] (lenient views of instance state),
//! [`output`] (table/CSV/JSON/YAML), [`cmd`] (one module per command group) and [`cli`] (the
//! clap command line and dispatch). The `ctl` binary only parses and reports errors.

pub mod cli;
pub mod client;
pub mod cmd;
pub mod error;
pub mod events;
pub mod output;
pub mod progress;
pub mod remotes;
pub mod targets;
pub mod tls;
pub mod token;
pub mod transport;
pub mod usage;
pub mod ws;

#[cfg(test)]
mod test_support;

pub use client::Client;
pub use error::Error;
