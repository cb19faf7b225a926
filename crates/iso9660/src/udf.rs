//! UDF (ECMA-167 with the OSTA UDF profile 1.02 to 2.60).

use diskcast_block::{BlockRead, Error, Result};
use diskcast_tree::Tree;
use std::sync::Arc;

/// True when the disc has a UDF anchor.
pub fn probe(_disk: &dyn BlockRead) -> Result<bool> {
    Ok(false)
}

pub fn read_tree(_disk: Arc<dyn BlockRead>) -> Result<Tree> {
    Err(Error::unsupported("UDF"))
}
