//! `GET /1.0/resources`: the host's hardware, in Incus' shape (the parts ctld reports).

use serde::{Deserialize, Serialize};

/// What the host has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu: ResourcesCpu,
    pub memory: ResourcesMemory,
    pub gpu: ResourcesList<serde_json::Value>,
    pub network: ResourcesNetwork,
    pub storage: ResourcesStorage,
    pub usb: ResourcesDevices,
    pub pci: ResourcesDevices,
    pub system: ResourcesSystem,
}

/// CPUs by socket, core and thread.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesCpu {
    pub architecture: String,
    pub sockets: Vec<CpuSocket>,
    /// Threads (logical CPUs).
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuSocket {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vendor: String,
    pub socket: u64,
    pub cores: Vec<CpuCore>,
    /// MHz.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frequency: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuCore {
    pub core: u64,
    pub die: u64,
    pub threads: Vec<CpuThread>,
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuThread {
    pub id: i64,
    pub numa_node: u64,
    pub thread: u64,
    pub online: bool,
    pub isolated: bool,
}

/// Bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesMemory {
    pub hugepages_total: u64,
    pub hugepages_used: u64,
    pub hugepages_size: u64,
    pub used: u64,
    pub total: u64,
}

/// A list with its length (the shape of every Incus resource list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourcesList<T> {
    pub cards: Vec<T>,
    pub total: u64,
}

impl<T> Default for ResourcesList<T> {
    fn default() -> Self {
        ResourcesList {
            cards: Vec::new(),
            total: 0,
        }
    }
}

/// Physical network cards (virtual links are not cards).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesNetwork {
    pub cards: Vec<NetworkCard>,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkCard {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver: String,
    pub ports: Vec<NetworkPort>,
    pub numa_node: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pci_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkPort {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub port: u64,
    pub protocol: String,
    /// Whether the link is up.
    pub link_detected: bool,
    /// Mbit/s, when the link reports it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub link_speed: u64,
}

/// Block devices (loop, RAM and zram devices left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesStorage {
    pub disks: Vec<StorageDisk>,
    pub total: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageDisk {
    pub id: String,
    /// `major:minor`.
    pub device: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    pub read_only: bool,
    /// Bytes.
    pub size: u64,
    pub removable: bool,
    pub numa_node: u64,
    pub block_size: u64,
    pub rpm: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial: String,
    pub partitions: Vec<StoragePartition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoragePartition {
    pub id: String,
    pub device: String,
    pub read_only: bool,
    pub size: u64,
    pub partition: u64,
}

/// USB or PCI devices: not reported (an empty list).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesDevices {
    pub devices: Vec<serde_json::Value>,
    pub total: u64,
}

/// The machine (from DMI where the host has it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesSystem {
    pub uuid: String,
    pub vendor: String,
    pub product: String,
    pub family: String,
    pub version: String,
    pub sku: String,
    pub serial: String,
    /// `physical` or `virtual-machine`.
    #[serde(rename = "type")]
    pub kind: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
