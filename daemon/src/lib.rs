//! ctld: the ctl daemon.
//!
//! - [`api`]: HTTP only (axum handlers, the error envelope, websockets).
//! - [`instance`]: instance lifecycle, sequencing, rollback, reconcile at start-up.
//! - [`images`]: the image store and the built-in image builders.
//! - [`operations`]: the in-memory registry of asynchronous operations.
//! - [`events`]: the event bus behind `/1.0/events` (operation, lifecycle, logging).
//! - [`network`]: managed networks (bridges, NIC address management, profiles' NICs),
//!   DHCP/DNS (dnsmasq), NAT and forwarding (nftables), proxy devices.
//! - [`cluster`]: membership, placement and forwarding across a cluster's members.
//! - [`db`]: all SQL.
//! - [`worker`]: all host-kernel code.
//! - [`paths`]: every filesystem location the daemon uses.

pub mod api;
pub mod clock;
pub mod cluster;
pub mod db;
pub mod events;
pub mod images;
pub mod instance;
pub mod network;
pub mod operations;
pub mod paths;
pub mod recover;
pub mod remote;
pub mod resources;
pub mod server;
pub mod storage;
pub mod worker;
