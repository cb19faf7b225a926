//! Making a container's root filesystem boot as a VM.

use diskcast_block::Result;
use diskcast_part::Uuid;
use diskcast_tree::Tree;

/// What to change in the guest.
#[derive(Debug, Clone, Default)]
pub struct GuestOptions {}

/// The partitions the guest mounts.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    /// The root partition's unique GUID.
    pub root: Uuid,
    /// The ESP's unique GUID.
    pub esp: Uuid,
}

/// Applies `opts` to `tree`; returns one line per change.
pub fn prepare(_tree: &mut Tree, _opts: &GuestOptions, _ids: &Ids, _now: i64) -> Result<Vec<String>> {
    Ok(Vec::new())
}
