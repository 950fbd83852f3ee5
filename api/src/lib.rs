//! Wire types of the ctl REST API.
//!
//! The API follows the Incus/LXD API 1.0: every answer is wrapped in a [`Response`] envelope,
//! long work is an [`Operation`], and JSON field names are the ones Incus uses, so existing
//! clients can follow. This crate is serde only: no I/O, no async, no database types.

pub mod certificate;
pub mod cluster;
pub mod event;
pub mod expiry;
pub mod image;
pub mod instance;
pub mod network;
pub mod operation;
pub mod profile;
pub mod resources;
pub mod response;
pub mod server;
pub mod status;
pub mod storage;

pub use certificate::{
    Certificate, CertificateAddToken, CertificatePut, CertificatesPost, ServerPut, UiLoginLink,
};
pub use cluster::{
    Cluster, ClusterMember, ClusterMemberJoinToken, ClusterMemberPost, ClusterMemberPut,
    ClusterMemberStatePost, ClusterMembersPost, ClusterPut,
};
pub use event::{Event, EventLifecycle, EventLogging, EventType, UnknownEventType};
pub use image::{
    Image, ImageAlias, ImageAliasesEntry, ImageAliasesPost, ImagePut, ImageSource, ImagesPost,
    ImagesPostSource,
};
pub use instance::{
    Instance, InstanceBackup, InstanceBackupPost, InstanceBackupsPost, InstanceExecPost,
    InstanceFull, InstancePost, InstancePut, InstanceSnapshot, InstanceSnapshotPut,
    InstanceSnapshotsPost, InstanceSource, InstanceState, InstanceStateCpu, InstanceStateMemory,
    InstanceStatePut, InstancesPost, StateAction,
};
pub use network::{
    DnsmasqState, InstanceStateNetwork, Network, NetworkLease, NetworkPut, NetworkState,
    NetworkStateAddress, NetworkStateCounters, NetworksPost,
};
pub use operation::{Operation, OperationClass};
pub use profile::{Profile, ProfilePost, ProfilePut, ProfilesPost};
pub use resources::Resources;
pub use response::{Response, ResponseType};
pub use server::{Server, ServerEnvironment};
pub use status::StatusCode;
pub use storage::{
    StoragePool, StoragePoolPut, StoragePoolResources, StoragePoolsPost, StorageVolume,
    StorageVolumePost, StorageVolumePut, StorageVolumeSnapshot, StorageVolumeSnapshotPost,
    StorageVolumeSnapshotsPost, StorageVolumeSource, StorageVolumeState, StorageVolumesPost,
};

/// The API version this crate describes.
pub const API_VERSION: &str = "1.0";

/// Deserialize `null` as the type's default: clients (Go's `lxc`, pylxd) send `null` for
/// fields they leave unset, empty maps and lists.
pub(crate) fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
