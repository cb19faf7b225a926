//! The little of URL handling a remote image needs: telling a URL from a path, naming
//! one in messages without its query (a presigned URL's query is a credential), and
//! resolving a backing file name against the image's URL as qemu does (RFC 3986
//! reference resolution, kept on the same server).

use diskcast_block::{Error, Result};

/// Longest URL taken (from the command line or an image's backing field): far above any
/// real presigned URL, and a bound on what a hostile image can make us build.
pub const MAX_URL_LEN: usize = 8192;

/// The parts of an `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    /// `http` or `https`, as written.
    pub scheme: &'a str,
    /// `host[:port]` (with user info, if any).
    pub authority: &'a str,
    /// The path, `/` when empty.
    pub path: &'a str,
    /// `?...` including the `?`, or empty.
    pub query: &'a str,
}

/// True when `s` names an HTTP(S) URL (scheme case-insensitive, as RFC 3986 says).
pub fn is_url(s: &str) -> bool {
    let lower = |n: usize| s.get(..n).map(str::to_ascii_lowercase);
    lower(7).as_deref() == Some("http://") || lower(8).as_deref() == Some("https://")
}

/// Splits `s` into its parts; anything but an absolute http(s) URL with a host is refused.
pub fn parse(s: &str) -> Result<Url<'_>> {
    if s.len() > MAX_URL_LEN {
        return Err(Error::argument(format!("URL of {} bytes is over the {MAX_URL_LEN}-byte limit", s.len())));
    }
    let (scheme, rest) = s
        .split_once("://")
        .filter(|_| is_url(s))
        .ok_or_else(|| Error::argument(format!("{:?} is not an http:// or https:// URL", redact(s))))?;
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err(Error::argument(format!("URL {:?} names no host", redact(s))));
    }
    let (path, query) = match tail.find('?') {
        Some(q) => tail.split_at(q),
        None => (tail, ""),
    };
    Ok(Url { scheme, authority, path: if path.is_empty() { "/" } else { path }, query })
}

/// `s` as messages show it: without its query string, which for a presigned
/// object-storage URL holds the signature (`?...` marks that there was one).
pub fn redact(s: &str) -> String {
    match s.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => s.to_string(),
    }
}

/// The URL of the file `name`, found in an image read from `base`, as qemu resolves a
/// backing file of an http(s) image: relative to `base`'s directory (a name starting
/// with `/` from the server's root), dot segments removed, never leaving `base`'s
/// scheme and server. Names with a scheme or a `//` server part, and names with
/// characters a URL cannot carry, are refused.
pub fn join(base: &str, name: &str) -> Result<String> {
    let b = parse(base)?;
    let refuse = |why: &str| Error::refused(format!("backing file name {name:?} {why}"));
    if name.is_empty() || name.len() > MAX_URL_LEN {
        return Err(refuse("is empty or too long"));
    }
    if name.starts_with("//") || name.split('/').next().is_some_and(|first| first.contains(':')) {
        return Err(refuse(
            "names another server or protocol; a remote image's backing file is looked up on its own server only",
        ));
    }
    if name.bytes().any(|c| {
        c <= b' ' || c >= 0x7f || matches!(c, b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#')
    }) {
        return Err(refuse("holds characters a URL cannot carry"));
    }
    let (name_path, name_query) = match name.find('?') {
        Some(q) => name.split_at(q),
        None => (name, ""),
    };
    let merged = if name_path.starts_with('/') {
        name_path.to_string()
    } else {
        let dir = b.path.rfind('/').map_or("/", |i| &b.path[..=i]);
        format!("{dir}{name_path}")
    };
    Ok(format!("{}://{}{}{}", b.scheme, b.authority, remove_dots(&merged), name_query))
}

/// RFC 3986 section 5.2.4: `.` and `..` segments removed; `..` never climbs above `/`.
fn remove_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths_and_split() {
        assert!(is_url("https://h/x") && is_url("HTTP://h/x"));
        assert!(!is_url("disk.qcow2") && !is_url("http:/x") && !is_url("ftp://h/x"));
        let u = parse("https://h:8443/a/b.qcow2?X-Amz-Signature=abc#frag").unwrap();
        assert_eq!((u.scheme, u.authority, u.path, u.query), ("https", "h:8443", "/a/b.qcow2", "?X-Amz-Signature=abc"));
        assert_eq!(parse("http://h?x").unwrap().path, "/");
        let e = parse("http:///x").unwrap_err();
        assert_eq!(e.kind(), diskcast_block::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("names no host"), "{e}");
        assert_eq!(redact("https://h/x?sig=secret"), "https://h/x?...");
    }

    #[test]
    fn backing_names_resolve_beside_the_image_on_its_server() {
        let base = "http://h:81/d/e/top.qcow2?sig=1";
        assert_eq!(join(base, "base.qcow2").unwrap(), "http://h:81/d/e/base.qcow2");
        assert_eq!(join(base, "../b/./base.qcow2").unwrap(), "http://h:81/d/b/base.qcow2");
        assert_eq!(join(base, "../../../../x").unwrap(), "http://h:81/x");
        assert_eq!(join(base, "/srv/base.qcow2?v=2").unwrap(), "http://h:81/srv/base.qcow2?v=2");
        for bad in ["//evil/x", "file:/etc/shadow", "json:{}", "http://evil/x", "a b", "", "x\0"] {
            let e = join(base, bad).unwrap_err();
            assert_eq!(e.kind(), diskcast_block::ErrorKind::Refused, "{bad:?}: {e}");
            assert!(e.to_string().contains("backing file name"), "{bad:?}: {e}");
        }
    }
}
