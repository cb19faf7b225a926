//! Names and paths inside a tree: what a single name may be, and how a path splits.

use diskcast_block::{Error, Result};

/// Longest name (one path component) a tree holds, in bytes. Linux allows 255; UDF and
/// Rock Ridge names converted to UTF-8 can be longer, so the tree keeps up to this and
/// leaves it to each sink to report what it cannot store.
pub const MAX_NAME: usize = 1024;

/// Most symbolic links followed while resolving one path (Linux's own limit is 40).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Accepts `name` as one directory entry name, or says why not: empty, `.`, `..`, a `/`
/// or a NUL inside, or longer than [`MAX_NAME`]. Sources call this on every name they
/// read, so a hostile name never becomes a path that climbs out of an extraction root.
pub fn check_name(name: &[u8]) -> Result<()> {
    let why = if name.is_empty() {
        "is empty"
    } else if name == b"." || name == b".." {
        "is a dot entry"
    } else if name.contains(&b'/') {
        "contains '/'"
    } else if name.contains(&0) {
        "contains a NUL byte"
    } else if name.len() > MAX_NAME {
        "is too long"
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!("name {} {why}", display_name(name))).with_field("name"))
}

/// The components of a path inside a tree: `/a//b/./c/` is `a`, `b`, `c`. `..` is kept as
/// a component (resolution decides what it means, and never climbs above the root).
pub fn split_path(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

/// A name for messages: UTF-8 as is, other bytes escaped, quoted.
pub fn display_name(name: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(name)).replace('\u{fffd}', "\\u{fffd}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_with_reason() {
        for (name, why) in [(&b""[..], "empty"), (b".", "dot"), (b"..", "dot"), (b"a/b", "'/'"), (b"a\0b", "NUL")] {
            let e = check_name(name).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat);
        }
        let e = check_name(&[b'x'; MAX_NAME + 1]).unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidFormat, "{e}");
        assert!(e.to_string().contains("is too long"), "{e}");
        assert!(check_name(&[b'x'; MAX_NAME]).is_ok());
        assert!(check_name(b"\xff\xfe ok").is_ok());
    }

    #[test]
    fn paths_split_into_components() {
        let parts: Vec<_> = split_path(b"/a//b/./c/").collect();
        assert_eq!(parts, [&b"a"[..], b"b", b"c"]);
        assert_eq!(split_path(b"/").count(), 0);
        assert_eq!(split_path(b"../x").collect::<Vec<_>>(), [&b".."[..], b"x"]);
    }
}
